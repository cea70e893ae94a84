"""End to end on each backend (SQLite file, the real MariaDB server): ingest documents, records and a
small ontology; search in every mode; chat in evidence mode; re-ingest unchanged; delete a source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medkb.api import create_app
from medkb.api.auth import create_key
from medkb.ingest.ontologies import load_ontology
from medkb.ingest.pipeline import ingest_documents, load_linker
from medkb.ingest.records import ingest_records
from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.retrieval.retriever import build_retriever
from medkb.retrieval.types import MODES
from medkb.sample.slicer import DATA
from medkb.settings import Settings
from tests.conftest import BACKEND_NAMES, backend_url

TENANT = "demo"


def _slices(tmp: Path) -> tuple[Path, Path]:
    data = json.loads((DATA / "pubmedqa" / "pubmedqa_sample.json").read_text())
    picked = {k: data[k] for k in list(data)[:6]}
    docs = tmp / "abstracts.json"
    docs.write_text(json.dumps(picked))
    rec = tmp / "synthea"
    rec.mkdir()
    with (DATA / "synthea" / "patients.csv").open(newline="") as f:
        ids = {r["Id"] for r in list(csv.DictReader(f))[:3]}
    for name, key in (("patients", "Id"), ("conditions", "PATIENT"), ("medications", "PATIENT")):
        with (DATA / "synthea" / f"{name}.csv").open(newline="") as f, (rec / f"{name}.csv").open("w", newline="") as g:
            r = csv.DictReader(f)
            w = csv.DictWriter(g, fieldnames=r.fieldnames or [], lineterminator="\n")
            w.writeheader()
            w.writerows(row for row in r if row[key] in ids)
    return docs, rec


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_end_to_end(backend: str, tmp_path: Path, request: pytest.FixtureRequest, embedder) -> None:  # type: ignore[no-untyped-def]
    url = backend_url(backend, tmp_path, request)
    settings = Settings().with_database(url)
    settings = settings.model_copy(update={"llm": settings.llm.model_copy(update={"model": None})})
    store = open_store(settings.database)
    assert store.backend == {"sqlite": "sqlite", "mariadb": "mariadb"}[backend]
    try:
        init_store(store, embedder.dim)
        onto = load_ontology(store, "diseases-basic")  # small and quick; the backend is what is tested
        assert onto.entities_added > 100
        linker = load_linker(store)
        docs, rec = _slices(tmp_path)
        first = ingest_documents(store, embedder, [docs], source="pubmedqa", fmt="pubmedqa", linker=linker)
        assert first.ok and first.added == 6 and first.chunks > 6
        recs = ingest_records(store, rec, fmt="synthea-csv", tenant_id=TENANT, secret="s3cret",
                              embedder=embedder, linker=linker)
        assert recs.ok and recs.added == 3
        assert store.count("mentions") > 0 and store.count("conditions") > 0

        retriever = build_retriever(store, settings, embedder=embedder)
        try:
            public = SearchFilters(tenant_id=TENANT)
            for mode in MODES:
                res = retriever.search("type 2 diabetes insulin exposure atherosclerosis", public, k=5, mode=mode)
                if mode == "graph":
                    assert res.linked_entities, "the ontology links 'diabetes'"
                    continue
                assert res.hits, mode
                assert res.hits[0].chunk.external_id == "15939071", (mode, [h.chunk.external_id for h in res.hits])
                assert all(h.chunk.tenant_id in ("public", TENANT) for h in res.hits)

            gen = store.generation()
            counts = store.stats()
            again = ingest_documents(store, embedder, [docs], source="pubmedqa", fmt="pubmedqa", linker=linker)
            recs2 = ingest_records(store, rec, fmt="synthea-csv", tenant_id=TENANT, secret="s3cret",
                                   embedder=embedder, linker=linker)
            assert again.unchanged == 6 and again.added == 0 and recs2.unchanged == 3 and recs2.added == 0
            assert store.generation() == gen and store.stats() == counts

            _, key = create_key(store, TENANT, "clinician", name="e2e")
            with TestClient(create_app(settings, store)) as c:
                r = c.post("/v1/chat", headers={"Authorization": f"Bearer {key}"},
                           json={"messages": [{"role": "user", "content":
                                               "Is streptococcal infection related to multiple sclerosis?"}]})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["mode"] == "evidence" and body["citations"]
                cited = {c2["chunk_id"] for c2 in body["citations"]}
                got = store.get_chunks(sorted(cited))
                assert "18049437" in {v.external_id for v in got}

            info = store.delete_source("public", "pubmedqa")
            assert info.documents == 6
            assert store.count("documents") == 3  # the three record notes remain
            res = retriever.search("multiple sclerosis streptococcal", public, k=5, mode="hybrid")
            assert all(h.chunk.source != "pubmedqa" for h in res.hits)
            assert store.count("entities") == counts["entities"]  # the ontology is untouched
        finally:
            retriever.close()
    finally:
        store.close()
