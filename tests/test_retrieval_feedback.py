"""Dense pseudo-relevance feedback in hybrid search, on a real SQLite store with the real MiniLM model."""

from __future__ import annotations

import numpy as np

from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.retriever import build_retriever
from medkb.settings import Settings
from tests.test_retrieval_bm25 import add_doc

TEXTS = [
    "Imatinib inhibits the BCR-ABL tyrosine kinase in chronic myeloid leukaemia.",
    "Chronic myeloid leukaemia is driven by the Philadelphia chromosome fusion gene.",
    "Nilotinib and dasatinib are second-generation kinase inhibitors used after imatinib resistance.",
    "Influenza vaccination lowers hospital admissions in older adults.",
    "Bisphosphonates reduce hip fractures in postmenopausal osteoporosis.",
    "Gout flares respond to colchicine taken early.",
]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_hybrid_searches_the_dense_leg_again_from_the_query_moved_towards_its_top_hits(
        sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    ids = [add_doc(sqlite_store, embedder, "public", f"d{i}", [t]).chunk_ids[0] for i, t in enumerate(TEXTS)]
    add_doc(sqlite_store, embedder, "other", "x", ["Imatinib in another hospital's leukaemia notes."])
    f, query = SearchFilters(tenant_id="public"), "Which drug treats chronic myeloid leukaemia?"
    vec = {cid: _unit(np.asarray(v, dtype=np.float64))
           for cid, v in zip(ids, embedder.embed_passages(TEXTS))}

    off = Settings()
    off.retrieval.feedback_depth = 0
    plain = build_retriever(sqlite_store, off, embedder=embedder).search(query, f, k=10)
    assert "feedback" not in plain.timings

    r = build_retriever(sqlite_store, Settings(), embedder=embedder)
    assert (r.rs.feedback_depth, r.rs.feedback_beta) == (2, 1.0)
    res = r.search(query, f, k=10)
    # The feedback query: the unit query + beta x the first fusion's top 2 hits (the plain ranking) weighted
    # 1 and 1/2, in that order.
    top = [h.chunk.id for h in plain.hits[:2]]
    q = _unit(_unit(np.asarray(embedder.embed_query(query), dtype=np.float64))
              + 1.0 * (vec[top[0]] + 0.5 * vec[top[1]]) / 1.5)
    want = sorted((float(q @ v) for v in vec.values()), reverse=True)
    assert np.allclose(res.run_scores["feedback"], want, atol=1e-4)
    # Fusion used the feedback pass; the first pass stays as it was (traces and the evidence gate read
    # query-passage cosines from it).
    assert np.allclose(res.run_scores["dense"], plain.run_scores["dense"], atol=1e-6)
    assert not np.allclose(res.run_scores["feedback"], plain.run_scores["dense"], atol=1e-4)
    assert all("feedback" in h.trace["generators"] for h in res.hits)
    assert "feedback" in res.timings
    assert {h.chunk.id for h in res.hits} == set(ids)  # the other tenant's chunk stays out of the second pass
    assert res.hits[0].chunk.id in top[:2]


def test_feedback_query_needs_vectors(sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    r = build_retriever(sqlite_store, Settings(), embedder=embedder)
    q = np.asarray(embedder.embed_query("gout"), dtype=np.float32)
    assert r.dense.feedback_query(q, [], 1.5) is None
    assert r.dense.feedback_query(q, [12345], 1.5) is None
    cid = add_doc(sqlite_store, embedder, "public", "g", ["Gout flares respond to colchicine."]).chunk_ids[0]
    moved = r.dense.feedback_query(q, [cid], 1.5)
    assert moved is not None and abs(float(np.linalg.norm(moved)) - 1.0) < 1e-5
