"""Metric definitions against hand-computed values, and against trec_eval's own code (pytrec_eval)."""

from __future__ import annotations

import math
import random

import pytest

from medkb.errors import InvalidInput
from medkb.eval.metrics import (
    best_chunk_per_doc,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    percentile,
    recall_at_k,
)

# A tiny judged set: q1 has graded judgements (2, 1) and a judged-irrelevant doc; q2 has one relevant doc.
QRELS = {
    "q1": {"d1": 2, "d2": 1, "d9": 0},
    "q2": {"d5": 1},
    "q3": {"d7": 0},  # no relevant document: not scored
}
RUN = {
    "q1": ["d3", "d2", "d9", "d1"],  # relevant at ranks 2 (gain 1) and 4 (gain 2)
    "q2": ["d4", "d6", "d8"],  # relevant doc not retrieved
    "q3": ["d7"],
}


def test_ndcg_hand_computed() -> None:
    # DCG@10 = 1/log2(3) + 2/log2(5); IDCG = 2/log2(2) + 1/log2(3)
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    idcg = 2 / 1 + 1 / math.log2(3)
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(dcg / idcg)
    # @2 only d2 counts; the ideal is cut at 2 too
    assert ndcg_at_k(RUN["q1"], QRELS["q1"], 2) == pytest.approx((1 / math.log2(3)) / idcg)
    assert ndcg_at_k(["d1", "d2"], QRELS["q1"], 10) == pytest.approx(1.0)
    assert ndcg_at_k(RUN["q2"], QRELS["q2"], 10) == 0.0


def test_ideal_dcg_uses_all_judged_relevant_not_only_retrieved() -> None:
    # Retrieving only the gain-1 doc at rank 1 must not score 1.0: the ideal has the gain-2 doc first.
    got = ndcg_at_k(["d2"], QRELS["q1"], 10)
    assert got == pytest.approx(1.0 / (2 + 1 / math.log2(3)))


def test_recall_and_mrr_hand_computed() -> None:
    assert recall_at_k(RUN["q1"], QRELS["q1"], 1) == 0.0
    assert recall_at_k(RUN["q1"], QRELS["q1"], 2) == pytest.approx(0.5)
    assert recall_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(1.0)
    assert mrr_at_k(RUN["q1"], QRELS["q1"], 10) == pytest.approx(0.5)
    assert mrr_at_k(RUN["q1"], QRELS["q1"], 1) == 0.0
    assert mrr_at_k(RUN["q2"], QRELS["q2"], 10) == 0.0


def test_evaluate_averages_over_judged_queries_with_a_relevant_doc() -> None:
    got = evaluate(RUN, QRELS, ["recall@2", "mrr@10", "recall@10"])
    assert got == {"recall@2": pytest.approx(0.25), "mrr@10": pytest.approx(0.25), "recall@10": pytest.approx(0.5)}
    # A judged query the system returned nothing for counts as zero, not as absent.
    assert evaluate({"q1": RUN["q1"]}, QRELS, ["recall@10"])["recall@10"] == pytest.approx(0.5)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="twice"):
        ndcg_at_k(["d1", "d1"], QRELS["q1"], 10)
    with pytest.raises(InvalidInput, match="k must be"):
        recall_at_k(["d1"], QRELS["q1"], 0)
    with pytest.raises(InvalidInput, match="unknown metric"):
        parse_metric("map@10")
    with pytest.raises(InvalidInput):
        parse_metric("ndcg@x")


def test_best_chunk_per_doc_keeps_first_occurrence() -> None:
    assert best_chunk_per_doc(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_percentile_matches_definition() -> None:
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([10.0], 95) == 10.0
    assert percentile([], 50) == 0.0


def trec_eval_scores(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], cut: int = 10,
                     deep: int = 100) -> dict[str, float]:
    """nDCG@cut, Recall@cut, Recall@deep and MRR@cut by trec_eval's own C code (pytrec_eval)."""
    import pytrec_eval

    judged = {q: r for q, r in qrels.items() if any(v > 0 for v in r.values())}
    # Strictly decreasing scores, so trec_eval's tie-breaking (by doc id) cannot reorder a ranking.
    as_run = {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in run.items() if q in judged and ds}
    top = {q: {d: s for d, s in docs.items() if s > len(docs) - cut} for q, docs in as_run.items()}
    full = pytrec_eval.RelevanceEvaluator(judged, {f"ndcg_cut.{cut}", f"recall.{cut}", f"recall.{deep}"})
    rr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"})
    a, b = full.evaluate(as_run), rr.evaluate(top)
    n = len(judged)  # a judged query with no results scores 0, as in ours
    return {
        f"ndcg@{cut}": sum(v[f"ndcg_cut_{cut}"] for v in a.values()) / n,
        f"recall@{cut}": sum(v[f"recall_{cut}"] for v in a.values()) / n,
        f"recall@{deep}": sum(v[f"recall_{deep}"] for v in a.values()) / n,
        f"mrr@{cut}": sum(v["recip_rank"] for v in b.values()) / n,
    }


def test_agrees_with_trec_eval_on_random_graded_runs() -> None:
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(60)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, list[str]] = {}
    for q in range(60):
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        run[f"q{q}"] = rng.sample(docs, rng.randint(0, 40))
    theirs = trec_eval_scores(run, qrels, cut=10, deep=30)
    ours = evaluate(run, qrels, list(theirs))
    assert any(v > 0 for v in ours.values())
    for m in theirs:
        assert ours[m] == pytest.approx(theirs[m], abs=1e-9), m
