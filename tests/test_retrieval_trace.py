"""Hybrid search end to end on a real store: traces, fused scores, de-duplication, timings and errors."""

from __future__ import annotations

import pytest

from medkb.errors import InvalidInput
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.retriever import build_retriever
from medkb.settings import RetrievalSettings, Settings
from tests.test_retrieval_bm25 import add_doc

TEXTS = {
    "met": "Metformin is the first-line drug for type 2 diabetes mellitus.",
    "ins": "Basal insulin is added when glycaemic targets are not met.",
    "asp": "Low-dose aspirin for secondary prevention of myocardial infarction.",
    "mig": "Triptans relieve acute migraine attacks.",
}


@pytest.fixture
def kb(sqlite_store: KnowledgeStore, embedder):  # type: ignore[no-untyped-def]
    ids = {k: add_doc(sqlite_store, embedder, "public", k, [t]).chunk_ids[0] for k, t in TEXTS.items()}
    return sqlite_store, ids


def test_trace_names_generators_ranks_and_the_rrf_score(kb, embedder) -> None:  # type: ignore[no-untyped-def]
    store, ids = kb
    s = Settings(retrieval=RetrievalSettings(fusion="rrf", bm25_weight=1.5, dense_weight=0.5, rrf_k=10))
    r = build_retriever(store, s, embedder=embedder)
    res = r.search("which drug is first line for type 2 diabetes", SearchFilters(), k=3)
    top = res.hits[0]
    assert top.chunk.id == ids["met"]
    tr = top.trace
    assert set(tr["generators"]) >= {"bm25", "dense"} and tr["fusion"] == "rrf" and tr["rank"] == 1
    expect = sum(w / (10 + tr["generators"][g]["rank"]) for g, w in (("bm25", 1.5), ("dense", 0.5)))
    assert tr["fused_score"] == pytest.approx(expect, rel=1e-5) and top.score == pytest.approx(expect)
    assert [h.trace["rank"] for h in res.hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(res.hits, res.hits[1:]))
    assert res.timings["embed_query"] > 0 and res.timings["total"] >= res.timings["embed_query"]
    assert {"bm25", "dense", "fuse"} <= set(res.timings)
    r.close()


def test_single_modes_report_only_their_generator(kb, embedder) -> None:  # type: ignore[no-untyped-def]
    store, ids = kb
    r = build_retriever(store, Settings(), embedder=embedder)
    for mode in ("bm25", "dense"):
        res = r.search("aspirin after myocardial infarction", SearchFilters(), k=2, mode=mode)
        assert res.hits[0].chunk.id == ids["asp"]
        assert set(res.hits[0].trace["generators"]) == {mode}
        assert res.hits[0].score == pytest.approx(res.hits[0].trace["generators"][mode]["score"], abs=1e-5)
    assert "embed_query" not in r.search("aspirin", SearchFilters(), k=1, mode="bm25").timings
    assert r.search("aspirin", SearchFilters(), k=5, mode="graph").hits == []  # no entities loaded
    r.close()


def test_zscore_fusion_and_near_duplicates(kb, embedder) -> None:  # type: ignore[no-untyped-def]
    store, ids = kb
    copy = add_doc(store, embedder, "public", "met-copy", [TEXTS["met"] + " "], source="mirror").chunk_ids[0]
    r = build_retriever(store, Settings(retrieval=RetrievalSettings(fusion="zscore")), embedder=embedder)
    res = r.search("metformin type 2 diabetes", SearchFilters(), k=4)
    got = [h.chunk.id for h in res.hits]
    assert got[0] in (ids["met"], copy) and len(set(got) & {ids["met"], copy}) == 1
    assert res.hits[0].trace["duplicates"] == [({ids["met"], copy} - {got[0]}).pop()]
    assert res.hits[0].trace["fusion"] == "zscore"
    r.close()


def test_bad_input_is_refused(kb, embedder) -> None:  # type: ignore[no-untyped-def]
    store, _ = kb
    r = build_retriever(store, Settings(), embedder=embedder)
    with pytest.raises(InvalidInput, match="mode"):
        r.search("x", SearchFilters(), mode="fuzzy")
    with pytest.raises(InvalidInput, match="k"):
        r.search("x", SearchFilters(), k=0)
    with pytest.raises(InvalidInput, match="query"):
        r.search("  ", SearchFilters())
    with pytest.raises(InvalidInput, match="fusion"):
        build_retriever(store, Settings(retrieval=RetrievalSettings(fusion="borda")))
    r.close()


def test_mmr_keeps_k_hits_and_reranker_reorders(kb, embedder) -> None:  # type: ignore[no-untyped-def]
    store, ids = kb

    class ByLength:
        """A real (if naive) reranker: prefers shorter passages."""

        name = "by-length"

        def score(self, query: str, passages):  # type: ignore[no-untyped-def]
            return [-len(p) for p in passages]

    r = build_retriever(store, Settings(retrieval=RetrievalSettings(mmr_lambda=0.5)), embedder=embedder,
                        reranker=ByLength())
    res = r.search("diabetes drugs", SearchFilters(), k=3)
    lens = [len(h.chunk.text) for h in res.hits]
    assert len(res.hits) == 3 and lens == sorted(lens)
    assert all(h.trace["rerank_score"] == -len(h.chunk.text) for h in res.hits)
    r.close()
