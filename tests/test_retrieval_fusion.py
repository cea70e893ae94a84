"""Fusion maths on hand-made rankings: weighted RRF, z-score CombSUM, near-duplicates, MMR."""

from __future__ import annotations

import numpy as np
import pytest

from medkb.retrieval.fusion import fuse, mmr, near_duplicates, weighted_rrf, zscore_sum
from medkb.retrieval.types import Candidate


def run(*pairs: tuple[int, float]) -> list[Candidate]:
    return [Candidate(c, s) for c, s in pairs]


RUNS = {
    "bm25": run((1, 9.0), (2, 5.0), (3, 1.0)),
    "dense": run((3, 0.9), (1, 0.8), (4, 0.7)),
}


def test_weighted_rrf_matches_the_formula() -> None:
    got = weighted_rrf(RUNS, {"bm25": 2.0, "dense": 1.0}, k=10)
    assert got[1] == pytest.approx(2 / 11 + 1 / 12)
    assert got[2] == pytest.approx(2 / 12)
    assert got[3] == pytest.approx(2 / 13 + 1 / 11)
    assert got[4] == pytest.approx(1 / 13)
    assert set(got) == {1, 2, 3, 4}


def test_zero_weight_removes_a_generator() -> None:
    got = weighted_rrf(RUNS, {"bm25": 0.0, "dense": 1.0}, k=60)
    assert set(got) == {3, 1, 4}


def test_fuse_orders_by_score_then_id() -> None:
    ranked = fuse(RUNS, {"bm25": 1.0, "dense": 1.0}, method="rrf", k=60)
    assert [c for c, _ in ranked] == [1, 3, 2, 4]
    # 2 and 4 tie only when both generators weigh the same at equal ranks: ids break the tie.
    tie = fuse({"a": run((7, 1.0)), "b": run((5, 1.0))}, {}, method="rrf", k=60)
    assert [c for c, _ in tie] == [5, 7]
    with pytest.raises(ValueError):
        fuse(RUNS, {}, method="borda")


def test_zscore_keeps_score_gaps_and_floors_missing() -> None:
    got = zscore_sum(RUNS, {"bm25": 1.0, "dense": 1.0})
    b = np.array([9.0, 5.0, 1.0])
    zb = (b - b.mean()) / b.std()
    d = np.array([0.9, 0.8, 0.7])
    zd = (d - d.mean()) / d.std()
    assert got[1] == pytest.approx(zb[0] + zd[1])
    assert got[2] == pytest.approx(zb[1] + zd.min())  # dense missed 2: its floor counts
    assert got[4] == pytest.approx(zb.min() + zd[2])
    # bm25's big lead for chunk 1 survives fusion, unlike under RRF where 1 and 3 are close.
    assert max(got, key=got.get) == 1


def test_near_duplicates_point_at_the_first_copy() -> None:
    base = "metformin is the first line drug for type two diabetes in adults"
    texts = [base, "aspirin lowers fever", base + ".", base.upper(), "something else entirely here"]
    assert near_duplicates(texts, 0.9) == [None, None, 0, 0, None]
    assert near_duplicates(texts, 1.01) == [None] * 5


def test_mmr_prefers_a_diverse_second_pick() -> None:
    e = np.array([[1, 0, 0], [0.999, 0.0447, 0], [0, 1, 0]], dtype=np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert mmr([1.0, 0.95, 0.9], e, 2, lam=0.5) == [0, 2]
    assert mmr([1.0, 0.95, 0.9], e, 2, lam=1.0) == [0, 1]  # λ=1 is plain relevance order
    assert mmr([], e[:0], 3) == []
