"""The lexical index follows writes incrementally (change log, no rebuild), persists, and refuses a bad file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import AddResult, ChunkIn, DocumentIn
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.bm25 import BM25Generator
from medkb.settings import DatabaseSettings

ALL = SearchFilters(include_superseded=True)
QUERIES = ["warfarin dosing", "sepsis antibiotics elderly", "apixaban", "metformin kidney", "aspirin"]


def add(store: KnowledgeStore, ext: str, texts: list[str], **kw) -> AddResult:  # type: ignore[no-untyped-def]
    return store.add_document(DocumentIn(
        tenant_id="public", source="lit", external_id=ext, title=kw.pop("title", f"doc {ext}"),
        chunks=[ChunkIn(text=t) for t in texts], **kw))


def seed(store: KnowledgeStore) -> dict[str, AddResult]:
    return {
        "a": add(store, "a", ["warfarin interacts with aspirin", "bleeding risk rises with warfarin"]),
        "b": add(store, "b", ["early antibiotics in sepsis", "sepsis in the elderly"]),
        "c": add(store, "c", ["metformin is contraindicated in severe kidney disease"]),
    }


def ranked(g: BM25Generator, q: str, f: SearchFilters = ALL) -> list[int]:
    return [c.chunk_id for c in g.search(q, f, 20)]


def assert_same_as_fresh_build(g: BM25Generator, store: KnowledgeStore) -> None:
    """Scores equal those of an index built from scratch over the same rows (BM25 statistics of live rows)."""
    fresh = BM25Generator(store, index_path=None)
    for q in QUERIES:
        ids_a, s_a = g.scores(q, ALL)
        ids_b, s_b = fresh.scores(q, ALL)
        got = dict(zip(ids_a[s_a > 0].tolist(), s_a[s_a > 0].tolist()))
        want = dict(zip(ids_b[s_b > 0].tolist(), s_b[s_b > 0].tolist()))
        assert got.keys() == want.keys(), q
        assert np.allclose([got[i] for i in want], list(want.values()), rtol=1e-5), q


def test_add_replace_delete_are_applied_without_a_rebuild(sqlite_store: KnowledgeStore) -> None:
    g = BM25Generator(sqlite_store, index_path=None)
    docs = seed(sqlite_store)
    assert set(ranked(g, "warfarin")) == set(docs["a"].chunk_ids)
    assert g.builds == 1
    new = add(sqlite_store, "d", ["apixaban dosing in atrial fibrillation"])
    assert ranked(g, "apixaban") == list(new.chunk_ids)
    # Same key, new content: the old chunks are gone, the new ones found.
    rep = add(sqlite_store, "b", ["sepsis bundles: lactate and fluids"])
    assert rep.status == "replaced"
    assert ranked(g, "antibiotics") == [] and ranked(g, "lactate") == list(rep.chunk_ids)
    # A new version supersedes: its old chunks stay in the index but no default search returns them.
    v2 = add(sqlite_store, "c", ["metformin dose reduced when eGFR is below 45"], version="2")
    assert ranked(g, "metformin", SearchFilters()) == list(v2.chunk_ids)
    assert set(ranked(g, "metformin")) == {*docs["c"].chunk_ids, *v2.chunk_ids}
    sqlite_store.delete_document(docs["a"].document_id)
    assert ranked(g, "warfarin") == [] and ranked(g, "aspirin") == []
    sqlite_store.delete_source("public", "lit")
    assert ranked(g, "apixaban") == [] and g.index().n_docs == 0
    assert g.builds == 1  # every change above came from the change log
    again = add(sqlite_store, "e", ["warfarin reversal with vitamin k"])
    assert ranked(g, "warfarin") == list(again.chunk_ids)
    assert_same_as_fresh_build(g, sqlite_store)


def test_incremental_scores_equal_a_full_rebuild_after_compaction(sqlite_store: KnowledgeStore) -> None:
    g = BM25Generator(sqlite_store, index_path=None)
    seed(sqlite_store)
    g.index()
    for i in range(12):  # more small segments than MAX_SEGMENTS: they are merged
        add(sqlite_store, f"n{i}", [f"warfarin note {i} on sepsis and aspirin" + " elderly" * (i % 3)])
        g.index()
    assert len(g.index().segments) <= 9
    add(sqlite_store, "b", ["apixaban replaces warfarin in the elderly"])  # a replacement: dead rows
    assert_same_as_fresh_build(g, sqlite_store)
    assert g.builds == 1


def test_persisted_index_is_loaded_caught_up_and_a_corrupt_one_rebuilt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    store = open_store(DatabaseSettings(url=url))
    init_store(store)
    seed(store)
    first = BM25Generator(store)
    assert first.path == tmp_path / "kb.db.lexical.npz"
    first.index()
    assert first.builds == 1 and first.path.exists()
    late = add(store, "d", ["apixaban dosing"])  # written after the file was saved: it is stale now

    restarted = BM25Generator(store)
    assert ranked(restarted, "apixaban") == list(late.chunk_ids)
    assert restarted.builds == 0 and restarted.loaded_from_file
    assert_same_as_fresh_build(restarted, store)

    # A flipped byte in the middle of the file: a checksum catches it, the index is rebuilt, not served.
    raw = bytearray(first.path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    first.path.write_bytes(bytes(raw))
    healed = BM25Generator(store)
    assert ranked(healed, "apixaban") == list(late.chunk_ids)
    assert healed.builds == 1 and not healed.loaded_from_file
    again = BM25Generator(store)
    again.index()
    assert again.loaded_from_file  # the rebuilt index replaced the bad file

    # Another knowledge base's file (copied over this one's) is not served either.
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = open_store(DatabaseSettings(url=other_url))
    init_store(other)
    add(other, "x", ["zoster vaccine"])
    BM25Generator(other).index()
    (tmp_path / "kb.db.lexical.npz").write_bytes((tmp_path / "other.db.lexical.npz").read_bytes())
    fooled = BM25Generator(store)
    assert ranked(fooled, "zoster") == [] and ranked(fooled, "apixaban") == list(late.chunk_ids)
    assert fooled.builds == 1
    store.close()
    other.close()


def test_a_follower_moves_queries_to_another_process_write_in_the_background(tmp_path: Path) -> None:
    from medkb.retrieval.follow import Follower

    url = f"sqlite:///{tmp_path / 'kb.db'}"
    writer, reader = open_store(DatabaseSettings(url=url)), open_store(DatabaseSettings(url=url))
    init_store(writer)
    seed(writer)
    g = BM25Generator(reader, index_path=None)
    follower = Follower(reader, g, interval=3600)  # stepped by hand below: no timing in the test
    follower.start()
    try:
        before = g.index()
        assert ranked(g, "sepsis", SearchFilters()) != []  # the filter set is cached at the pinned generation
        new = add(writer, "d", ["apixaban dosing in sepsis"])
        # Queries neither catch up nor re-read the filter sets: they keep the previous, complete state.
        assert g.index() is before and ranked(g, "apixaban", SearchFilters()) == []
        assert reader.generation() < reader.read_generation()
        assert follower.step()
        assert ranked(g, "apixaban", SearchFilters()) == list(new.chunk_ids)
        assert reader.generation() == reader.read_generation()
        assert not follower.step() and g.builds == 1
    finally:
        follower.stop()
        writer.close()
        reader.close()


def test_filter_sets_a_follower_prepares_never_evict_the_pinned_generations(sqlite_store: KnowledgeStore) -> None:
    seed(sqlite_store)
    gen = sqlite_store.read_generation()
    sqlite_store.pin_generation(gen)
    try:
        served = SearchFilters(tenant_id="public")
        sqlite_store.allowed_chunk_ids(served)
        for i in range(80):  # a long ingest: the follower prepares the next generations' sets
            sqlite_store.allowed_chunk_ids(SearchFilters(tenant_id=f"t{i % 3}"), generation=gen + 1 + i)
        assert (gen, served) in sqlite_store._filter_cache  # queries still find theirs: no recompute
    finally:
        sqlite_store.pin_generation(None)


@pytest.mark.mariadb
def test_mariadb_processes_catch_up_by_log_position_including_late_commits(_mariadb_contract_db: str) -> None:
    from tests.conftest import _mariadb_store

    s1 = _mariadb_store(_mariadb_contract_db)
    s2 = open_store(DatabaseSettings(url=_mariadb_contract_db))
    try:
        docs = seed(s1)
        g = BM25Generator(s2)
        assert g.path is None  # a server keeps no file unless told where
        assert set(ranked(g, "warfarin")) == set(docs["a"].chunk_ids)
        seq0 = g.index().seq
        new = add(s1, "d", ["apixaban dosing"])
        assert ranked(g, "apixaban") == list(new.chunk_ids) and g.index().seq > seq0 and g.builds == 1

        # A writer whose log row takes a lower position but commits after a later writer's (InnoDB hands
        # out auto-increment values at INSERT): the index must not skip it once it commits.
        victim = docs["c"].chunk_ids[0]
        slow = s1.engine.connect()
        tx = slow.begin()
        slow.execute(text("INSERT INTO chunk_changes (chunk_id) VALUES (:c)"), {"c": victim})
        slow.execute(text("DELETE FROM chunks WHERE id = :c"), {"c": victim})
        fast = add(s1, "e", ["lactate in sepsis"])
        assert ranked(g, "lactate") == list(fast.chunk_ids)
        assert ranked(g, "metformin") == [victim]  # not committed yet
        slow.execute(text("UPDATE kb_meta SET value = CAST(CAST(value AS SIGNED) + 1 AS CHAR) "
                          "WHERE `key` = 'chunk_generation'"))
        tx.commit()
        slow.close()
        assert ranked(g, "metformin") == []
        assert g.builds == 1
        assert_same_as_fresh_build(g, s2)
    finally:
        s1.close()
        s2.close()


def test_an_index_file_written_by_the_previous_tokeniser_is_rebuilt_not_misread(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokenisation version 1 kept question words ("what", "which"); a file it wrote must not be served."""
    from medkb.retrieval import lexical as lx
    from medkb.text import STOPWORDS_EN, terms

    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    init_store(store)
    seed(store)
    add(store, "q", ["what which how does what which how does"])
    old = BM25Generator(store)
    # Tokenisation version 1: Lucene's 33 stop words, case not looked at.
    old.tokenize, old.stop, old.acronyms = (lambda t: terms(t, STOPWORDS_EN, frozenset())), STOPWORDS_EN, frozenset()
    with monkeypatch.context() as mp:
        mp.setattr(lx, "TOKENS_VERSION", 1)
        old.index()
    assert old.path.exists() and "what" in old.index().vocab

    now = BM25Generator(store)
    assert ranked(now, "what does warfarin do") == ranked(BM25Generator(store, index_path=None), "warfarin")
    assert now.builds == 1 and not now.loaded_from_file and "what" not in now.index().vocab
    assert_same_as_fresh_build(now, store)
    store.close()


def test_a_change_of_tokenisation_comes_with_a_new_index_version() -> None:
    """If this fails, the tokeniser changed: bump lexical.TOKENS_VERSION (old files are then rebuilt) and re-pin."""
    from medkb.retrieval import lexical as lx
    from medkb.text import terms

    sample = "What is the role of ALL and WHO guidance, and how do all of us treat children's infections? 糖尿病患者的治疗"
    assert (lx.TOKENS_VERSION, terms(sample)) == (
        2, ["role", "all", "who", "guidanc", "treat", "children", "infect", "糖尿病", "患者", "治疗"])
