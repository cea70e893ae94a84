"""Record rows link to graph entities by code, then by description; chunks get mentions after an ontology loads."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import select

from medkb.ingest.ontologies import load_ontology
from medkb.kb import models as m
from medkb.kb.factory import init_store, open_store
from medkb.kb.graph.relink import RecordLinker, link_rows, relink_mentions
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings
from tests.conftest import shared_data

LABELS = Path(__file__).parent / "data" / "synthea_links_50.tsv"
# Synthea's CSV export: conditions carry SNOMED CT codes, medications RxNorm codes with no system column.
SYSTEMS = {"conditions": "SNOMEDCT", "medications": "RXNORM"}


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeStore:
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path_factory.mktemp('link') / 'kb.db'}"))
    init_store(store)
    for name in ("interactions", "drugs", "icd10cm", "hpo"):
        load_ontology(store, name, relink=False)
    return store


@pytest.fixture(scope="module")
def links(kb: KnowledgeStore) -> dict[str, dict[int, int | None]]:
    """Per table: CSV line → linked entity id, as `medkb graph relink` computes it."""
    root = shared_data("synthea")
    rl = RecordLinker(kb)
    out = {}
    for table in SYSTEMS:
        with (root / f"{table}.csv").open(newline="") as f:
            rows = [(line, SYSTEMS[table], r["CODE"], r["DESCRIPTION"])
                    for line, r in enumerate(csv.DictReader(f), start=2)]
        out[table] = link_rows(rl, table, rows)
    return out


def test_link_rates_on_shared_synthea(links: dict[str, dict[int, int | None]]) -> None:
    meds, conds = links["medications"], links["conditions"]
    assert len(meds) == 993 and len(conds) == 1558
    assert sum(v is not None for v in meds.values()) / len(meds) >= 0.95
    assert sum(v is not None for v in conds.values()) / len(conds) >= 0.85


def test_fifty_hand_labelled_rows_link_precisely(kb: KnowledgeStore, links: dict[str, dict[int, int | None]]) -> None:
    with LABELS.open() as f:
        rows = list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))
    assert len(rows) == 50
    ids = {links[r["table"]][int(r["line"])] for r in rows} - {None}
    with kb.session() as s:
        codes = {eid: {f"{sy}:{c}" for sy, cs in (cds or {}).items() for c in cs}
                 for eid, cds in s.execute(select(m.Entity.id, m.Entity.codes).where(m.Entity.id.in_(ids)))}
    linked = [r for r in rows if links[r["table"]][int(r["line"])] is not None]
    right = [r for r in linked if codes[links[r["table"]][int(r["line"])]] & set(r["acceptable"].split("|"))]
    wrong = [(r["description"], sorted(codes[links[r["table"]][int(r["line"])]])) for r in linked if r not in right]
    assert len(right) / len(linked) >= 0.95, wrong
    assert len(linked) >= 42  # 44 of the 50 link; "Surgery", "Infection" and the like name no specific entity
    # brand names resolve to their ingredient; a row described only as "RxNorm Code" resolves by its code
    by_desc = {r["description"]: r for r in right}
    assert {"Gilenya", "Endoxan", "RxNorm Code", "Clinically isolated syndrome"} <= set(by_desc)


def test_documents_ingested_before_an_ontology_get_mentions_without_reembedding(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from medkb.ingest.pipeline import ingest_documents

    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    init_store(store)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "note.md").write_text("# Anticoagulation\n\nWarfarin with clarithromycin raises the INR.\n")
    ingest_documents(store, embedder, [tmp_path / "docs"], tenant_id=m.PUBLIC_TENANT, source="notes",
                     doc_type="guideline", lang="en")
    with store.session() as s:
        before = s.execute(select(m.Chunk.id, m.Chunk.embedding)).all()
        assert s.scalar(select(m.Mention.chunk_id).limit(1)) is None
    load_ontology(store, "interactions")  # relinks on load
    with store.session() as s:
        named = set(s.scalars(select(m.Entity.name).join(m.Mention, m.Mention.entity_id == m.Entity.id)))
        after = s.execute(select(m.Chunk.id, m.Chunk.embedding)).all()
    assert {"Warfarin", "Clarithromycin"} <= named
    assert [(c, bytes(e)) for c, e in before] == [(c, bytes(e)) for c, e in after]
    assert relink_mentions(store).mentions_added == 0  # a second pass changes nothing
