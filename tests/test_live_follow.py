"""A serving process's follower prepares every cache for a new generation before it pins it; the change log is
pruned below the persisted indexes' positions, and an index that falls behind a pruned log is re-read, never wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.bm25 import BM25Generator
from medkb.retrieval.follow import Follower
from medkb.settings import DatabaseSettings

DIM = 384
TEXTS = ["warfarin interacts with aspirin", "early antibiotics in sepsis", "metformin in kidney disease",
         "apixaban dosing in atrial fibrillation", "lactate and fluids in septic shock"]


def add(store: KnowledgeStore, ext: str, texts: list[str], rng: np.random.Generator, tenant: str = "public"):  # type: ignore[no-untyped-def]
    v = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    return store.add_document(DocumentIn(tenant_id=tenant, source="lit", external_id=ext, title=f"doc {ext}",
                                         chunks=[ChunkIn(text=t, embedding=e) for t, e in zip(texts, v)]))


def pair(tmp_path: Path) -> tuple[KnowledgeStore, KnowledgeStore]:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    writer, reader = open_store(DatabaseSettings(url=url)), open_store(DatabaseSettings(url=url))
    init_store(writer, DIM)
    return writer, reader


def test_follower_prepares_vectors_masks_and_filter_sets_before_it_pins(tmp_path: Path) -> None:
    writer, reader = pair(tmp_path)
    rng = np.random.default_rng(1)
    for i, t in enumerate(TEXTS):
        add(writer, f"d{i}", [t, t + " in the elderly"], rng, tenant="hosp-a" if i % 2 else "public")
    g = BM25Generator(reader, index_path=None)
    follower = Follower(reader, g, interval=3600)  # stepped by hand: no timing in the test
    filters = [SearchFilters(), SearchFilters(tenant_id="hosp-a")]
    q = rng.standard_normal(DIM).astype(np.float32)
    seen_at_pin: list[dict] = []
    pin = reader.pin_generation

    def spy(gen):  # type: ignore[no-untyped-def]
        if gen is not None and new_ids:  # the step under test (not the start)
            view = g._view
            seen_at_pin.append({
                "gen": gen, "matrix": reader._mat.generation if reader._mat else None,
                "bm25_masks": all((view.version, gen, f) in g._masks for f in filters),
                "vector_masks": all((reader._mat.generation, f) in reader._masks for f in filters),
                "allowed": all((gen, f) in reader._filter_cache for f in filters),
                "view_has_new": bool(view.ids.size and view.ids.max() >= new_ids[0]) if new_ids else None,
            })
        pin(gen)

    new_ids: list[int] = []
    reader.pin_generation = spy  # type: ignore[method-assign]
    follower.start()
    try:
        for f in filters:  # queries used these filters: the follower prepares them ahead
            g.search("sepsis", f, 10)
            reader.vector_search(q, 5, f)
        new_ids += add(writer, "n", ["zoster vaccine in adults", "zoster after transplant"], rng).chunk_ids
        assert follower.step()
        at = seen_at_pin[-1]
        assert at == {"gen": reader.read_generation(), "matrix": at["gen"], "bm25_masks": True,
                      "vector_masks": True, "allowed": True, "view_has_new": True}
        # The first queries at the new generation find everything ready: no catch-up, no SQL for filter sets.
        calls = reader.matrix_stats["catch_ups"], reader.matrix_stats["full_reads"]
        allowed = reader.allowed_chunk_ids
        reader.allowed_chunk_ids = lambda *a, **k: pytest.fail("filter set computed on the query path")  # type: ignore[method-assign]
        for f in filters:
            hits = reader.vector_search(q, 20, f)
            assert set(new_ids) <= {h.chunk_id for h in hits}  # public chunks: every filter here sees them
            assert sorted(c.chunk_id for c in g.search("zoster", f, 10)) == sorted(new_ids)
        reader.allowed_chunk_ids = allowed  # type: ignore[method-assign]
        assert (reader.matrix_stats["catch_ups"], reader.matrix_stats["full_reads"]) == calls
        assert calls == (1, 1)  # one read whole at the first query, one catch-up by the follower
    finally:
        follower.stop()
        writer.close()
        reader.close()


def test_follower_prunes_the_log_below_persisted_positions_and_a_lagging_index_rereads(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    import medkb.retrieval.follow as follow

    writer, reader = pair(tmp_path)
    rng = np.random.default_rng(2)
    for i, t in enumerate(TEXTS):
        add(writer, f"d{i}", [t], rng)
    lagging = open_store(DatabaseSettings(url=str(writer.engine.url)))
    behind = BM25Generator(lagging, index_path=None)
    behind.index()
    q = rng.standard_normal(DIM).astype(np.float32)
    lagging.vector_search(q, 3, SearchFilters())
    g = BM25Generator(reader)  # persisted beside the file: its saved position bounds pruning
    follower = Follower(reader, g, interval=3600)
    monkeypatch.setattr(follow, "PRUNE_KEEP", 0)
    follower.start()
    try:
        for i in range(3):
            add(writer, f"x{i}", [f"zoster note {i}"], rng)
        assert follower.step()
        first_saved = g.saved_seq
        assert first_saved is not None and first_saved < writer.last_change_seq()
        assert follower.prune_if_due(force=True) == first_saved  # up to the file's position, not one row more
        assert writer.first_change_seq() == first_saved + 1
        g.close()  # saved at the newest position
        saved = g.saved_seq
        assert saved == writer.last_change_seq()
        assert follower.prune_if_due(force=True) == saved - first_saved - 1
        assert writer.first_change_seq() == saved  # all below the saved position went; the newest row stays
        # A process that was far behind the pruned log re-reads whole (never serves a state with a gap).
        assert {c.chunk_id for c in behind.search("zoster", SearchFilters(), 10)} == \
            {c.chunk_id for c in g.search("zoster", SearchFilters(), 10)} != set()
        assert behind.builds == 2
        reads = lagging.matrix_stats["full_reads"]
        hits = lagging.vector_search(q, 50, SearchFilters())
        assert lagging.matrix_stats["full_reads"] == reads + 1 and len(hits) == len(TEXTS) + 3
        # The persisted index still loads: its position is inside the log.
        again = BM25Generator(open_store(DatabaseSettings(url=str(writer.engine.url))))
        again.index()
        assert again.loaded_from_file
    finally:
        follower.stop()
        writer.close()
        reader.close()
        lagging.close()


def test_filter_set_catch_up_looks_chunks_up_by_id_not_through_every_allowed_document(tmp_path: Path) -> None:
    """The next generation's allowed set reads only the changed chunks: each of its queries is planned from the
    chunk ids (primary key), whatever the filter. As a join, SQLite drove 20+ ids from the documents the filter
    allows and read every allowed chunk: 8.4 s a generation at 1M chunks."""
    from sqlalchemy import event

    writer, reader = pair(tmp_path)
    rng = np.random.default_rng(5)
    for d in range(40):
        add(writer, f"base-{d}", TEXTS[:2], rng, tenant=("public", "hosp-a")[d % 2])
    filters = [SearchFilters(), SearchFilters(tenant_id="hosp-a"), SearchFilters(sources=("lit",))]
    for f in filters:
        reader.allowed_chunk_ids(f)
    gone = [add(writer, f"new-{d}", TEXTS, rng, tenant=("public", "hosp-a")[d % 2]) for d in range(12)]
    writer.delete_document(gone[0].document_id)

    seen: list[tuple[str, tuple]] = []

    def capture(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if "chunks.id IN" in statement:
            seen.append((statement, tuple(params)))

    event.listen(reader.engine, "before_cursor_execute", capture)
    try:
        gen = reader.read_generation()
        got = {f: reader.allowed_chunk_ids(f, generation=gen) for f in filters}
    finally:
        event.remove(reader.engine, "before_cursor_execute", capture)
    fresh = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    for f in filters:
        assert np.array_equal(got[f], fresh.allowed_chunk_ids(f)), f
    assert len(seen) == len(filters)  # caught up from the log, one id query each (55 changed chunks)
    with reader.engine.connect() as c:
        for statement, params in seen:
            plan = [r[3] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            assert plan[0].startswith("SEARCH chunks USING INTEGER PRIMARY KEY"), plan
            assert not any("documents" in p and "PRIMARY KEY" not in p for p in plan), plan
    fresh.close()
    writer.close()
    reader.close()
