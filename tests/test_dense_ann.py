"""Approximate dense search on SQLite (kb/ann.py, kb/sqlite.py): recall against exact search on bioasq-dev,
filters inside the search (tenant isolation, full k), incremental catch-up, persisted index checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkb.kb.ann import AnnConfig
from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.kb.sqlite import SQLiteStore
from medkb.settings import DatabaseSettings
from tests.conftest import shared_data

ARTICLES = 1500
QUERIES = 200


def tenant_of(i: int) -> str:
    return "hosp-a" if i % 5 == 1 else "hosp-b" if i % 5 == 2 else "public"


def source_of(i: int) -> str:
    return "rare" if i % 50 == 1 else "bioasq-dev" if i % 3 else "other"  # "rare": 30 of hosp-a's chunks


@pytest.fixture(scope="module")
def bioasq(tmp_path_factory: pytest.TempPathFactory, embedder):  # type: ignore[no-untyped-def]
    """A real SQLite file holding the first 1,500 bioasq-dev articles (real MiniLM vectors) over three tenants,
    and 200 real bioasq-dev query vectors."""
    data = shared_data("bioasq-dev")
    with (data / "corpus.jsonl").open() as f:
        docs = [json.loads(line) for _, line in zip(range(ARTICLES), f)]
    with (data / "queries.jsonl").open() as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(QUERIES), f)]
    db = tmp_path_factory.mktemp("ann") / "kb.db"
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    store.set_embedding_model(embedder.name, embedder.dim)
    vecs = embedder.embed_passages([f"{d.get('title', '')}. {d['text']}" for d in docs])
    for i, (d, v) in enumerate(zip(docs, vecs)):
        store.add_document(DocumentIn(tenant_id=tenant_of(i), source=source_of(i),
                                      external_id=str(d["_id"]), title=d.get("title", ""),
                                      chunks=[ChunkIn(text=d["text"], embedding=v)]))
    store.close()
    return db, np.asarray(embedder.embed_passages(queries))


def open_kb(db: Path, threshold: int) -> SQLiteStore:
    """threshold 0: exact; 1: approximate, the graph walked for any allowed set over 5% of it (in production an
    allowed set under ``exact_rows`` is scanned exactly: every set in a 1,500-chunk knowledge base)."""
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}", ann_threshold=threshold))
    assert isinstance(store, SQLiteStore)
    store.ann = AnnConfig(threshold=threshold, exact_rows=0)
    return store


def path_taken(store: SQLiteStore, f: SearchFilters) -> str:
    bitmap, rows, _ = store._selections[(store._graph_gen, f)]
    return "rows" if rows is not None else "graph+selector" if bitmap is not None else "graph"


def copy_kb(db: Path, tmp_path: Path) -> Path:
    """A private copy of the module's knowledge base (tests that write must not disturb the others)."""
    dst = tmp_path / "kb.db"
    shutil.copy(db, dst)
    return dst


def ids(store: SQLiteStore, q: np.ndarray, f: SearchFilters, k: int = 10) -> list[int]:
    return [h.chunk_id for h in store.vector_search(q, k, f)]


@pytest.mark.parametrize("filters", [SearchFilters(), SearchFilters(tenant_id="hosp-a"),
                                     SearchFilters(tenant_id="hosp-b", sources=("bioasq-dev",))],
                         ids=["public", "tenant", "tenant+source"])
def test_recall_at_10_against_exact_on_bioasq_queries(bioasq, tmp_path: Path, filters: SearchFilters) -> None:
    db, qs = bioasq
    db = copy_kb(db, tmp_path)
    exact, ann = open_kb(db, 0), open_kb(db, 1)
    assert not exact.uses_ann() and ann.uses_ann()
    allowed = set(exact.allowed_chunk_ids(filters).tolist())
    recall = []
    for q in qs:
        e, a = ids(exact, q, filters), ids(ann, q, filters)
        assert len(a) == len(e) == 10  # filtered inside the search: the full k, not what survives a post-filter
        assert set(a) <= allowed  # tenant isolation: nothing outside the filter's rows, ever
        recall.append(len(set(a) & set(e)) / len(e))
    assert ann.last_ann_load["how"] == "built"
    assert path_taken(ann, filters) == "graph+selector"  # even "public" hides the hospitals' rows
    assert np.mean(recall) >= 0.97, np.mean(recall)


def test_small_allowed_set_is_searched_exactly(bioasq, tmp_path: Path) -> None:
    """A filter that allows a handful of rows returns exactly those rows, best first (no graph walk misses)."""
    db, qs = bioasq
    db = copy_kb(db, tmp_path)
    ann, exact = open_kb(db, 1), open_kb(db, 0)
    f = SearchFilters(tenant_id="hosp-a", sources=("rare",))
    n_allowed = exact.allowed_chunk_ids(f).size
    assert n_allowed == len([i for i in range(ARTICLES) if source_of(i) == "rare"]) == 30
    for q in qs[:20]:
        got, want = ann.vector_search(q, 10, f), exact.vector_search(q, 10, f)
        assert [h.chunk_id for h in got] == [h.chunk_id for h in want]
        assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    assert path_taken(ann, f) == "rows"


def test_writes_are_caught_up_incrementally_and_deletes_disappear(bioasq, tmp_path: Path, embedder) -> None:
    db, qs = bioasq
    db = copy_kb(db, tmp_path)
    ann = open_kb(db, 1)
    ann.prepare_vectors()
    assert ann.last_ann_load["how"] == "built"
    build_s = ann.last_ann_load["build_s"]
    # Another store (as another process would) writes a new document; its vector is the first query's.
    writer = open_kb(db, 0)
    added = writer.add_document(DocumentIn(
        tenant_id="hosp-a", source="new", external_id="n1", title="new",
        chunks=[ChunkIn(text="a brand new guideline", embedding=qs[0])]))
    new_id = added.chunk_ids[0]
    assert ids(ann, qs[0], SearchFilters(tenant_id="hosp-a"))[0] == new_id
    assert new_id not in ids(ann, qs[0], SearchFilters(tenant_id="hosp-b"))
    assert ann.last_ann_load["added"] == 1 and ann.last_ann_load["removed"] == 0
    assert ann.last_ann_load["build_s"] == build_s  # caught up, not rebuilt
    assert ann.last_ann_load["catch_up"] == "log"  # from the change log: O(changes), not a diff of every id
    writer.delete_document(added.document_id)
    assert new_id not in ids(ann, qs[0], SearchFilters(tenant_id="hosp-a"))
    assert ann.last_ann_load["removed"] == 1 and ann.last_ann_load["catch_up"] == "log"
    # The log pruned past the graph's position: the catch-up falls back to diffing the ids (still exact).
    again = writer.add_document(DocumentIn(
        tenant_id="hosp-a", source="new", external_id="n1b", title="new",
        chunks=[ChunkIn(text="another new guideline", embedding=qs[0])])).chunk_ids[0]
    writer.add_document(DocumentIn(tenant_id="hosp-a", source="new", external_id="n1c", title="new",
                                   chunks=[ChunkIn(text="and one more", embedding=qs[1])]))
    writer.prune_chunk_changes(writer.last_change_seq())
    assert ids(ann, qs[0], SearchFilters(tenant_id="hosp-a"))[0] == again
    assert ann.last_ann_load["catch_up"] == "id diff" and ann.last_ann_load["added"] == 2


def test_restart_loads_the_saved_index_and_catches_up(bioasq, tmp_path: Path) -> None:
    db, qs = bioasq
    db = copy_kb(db, tmp_path)
    first = open_kb(db, 1)
    before = [ids(first, q, SearchFilters()) for q in qs[:20]]
    first.close()
    again = open_kb(db, 1)
    assert [ids(again, q, SearchFilters()) for q in qs[:20]] == before
    assert again.last_ann_load["how"] == "loaded" and "rejected" not in again.last_ann_load
    # Written while no server ran: the saved index is stale, and is caught up (not rebuilt) on load.
    writer = open_kb(db, 0)
    new = writer.add_document(DocumentIn(tenant_id="public", source="new", external_id="n2", title="t",
                                         chunks=[ChunkIn(text="x", embedding=qs[1])])).chunk_ids[0]
    third = open_kb(db, 1)
    assert ids(third, qs[1], SearchFilters())[0] == new
    assert third.last_ann_load["how"] == "loaded" and third.last_ann_load["added"] == 1
    assert third.last_ann_load["catch_up"] == "log"


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "older-build"])
def test_corrupt_or_foreign_index_is_rebuilt_never_served(bioasq, tmp_path: Path, damage: str) -> None:
    db, qs = bioasq
    db = copy_kb(db, tmp_path)
    first = open_kb(db, 1)
    before = [ids(first, q, SearchFilters()) for q in qs[:10]]
    folder = first.ann_folder
    assert folder is not None
    index = folder / "hnsw.faiss"
    if damage == "flip":  # a bit flipped inside the stored vectors: readable by faiss, but wrong
        raw = bytearray(index.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        index.write_bytes(bytes(raw))
    elif damage == "truncate":
        index.write_bytes(index.read_bytes()[: index.stat().st_size // 3])
    else:  # another knowledge base's index left in this one's place, or one built with older graph parameters
        from medkb.kb.checked import load_arrays, save_arrays

        meta, arrays = load_arrays(folder / "manifest.ck")
        changed = {"kb_id": "0" * 32} if damage == "foreign" else {"ef_construction": 64}
        if damage == "older-build":  # a manifest written before the build parameters were recorded
            meta = {k: v for k, v in meta.items() if k not in ("m", "ef_construction")}
            changed = {}
        save_arrays(folder / "manifest.ck", {k: np.array(v) for k, v in arrays.items()}, {**meta, **changed})
    again = open_kb(db, 1)
    assert [ids(again, q, SearchFilters()) for q in qs[:10]] == before
    assert again.last_ann_load["how"] == "built" and again.last_ann_load["rejected"]
