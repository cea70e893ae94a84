"""Ranking metrics with the standard (trec_eval / BEIR) definitions: nDCG@k, Recall@k, MRR@k, latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from medkb.errors import InvalidInput

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> graded relevance (0 = judged not relevant)
Ranking = Sequence[str]  # doc ids, best first, no duplicates


def _check(ranking: Ranking, k: int) -> None:
    if k < 1:
        raise InvalidInput(f"cutoff k must be >= 1 (got {k})")
    if len(set(ranking)) != len(ranking):
        raise InvalidInput("a ranking lists a document twice; map chunks to documents (best chunk) first")


def dcg_at_k(ranking: Ranking, rels: Mapping[str, int], k: int) -> float:
    """Discounted cumulative gain with linear gains (trec_eval's ndcg_cut, what BEIR reports) and log2 discount."""
    return sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))


def ndcg_at_k(ranking: Ranking, rels: Mapping[str, int], k: int) -> float:
    """DCG@k over the ideal DCG@k built from *all* judged relevant documents (not only the retrieved ones)."""
    _check(ranking, k)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal[:k]))
    return dcg_at_k(ranking, rels, k) / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Ranking, rels: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k over all relevant documents (BEIR / trec_eval recall_k)."""
    _check(ranking, k)
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Ranking, rels: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    _check(ranking, k)
    for i, d in enumerate(ranking[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


def parse_metric(name: str) -> tuple[str, int]:
    """'ndcg@10' -> ('ndcg', 10); anything else is an InvalidInput naming the metric."""
    base, _, cut = name.partition("@")
    if base not in METRICS or not cut.isdigit() or int(cut) < 1:
        raise InvalidInput(f"unknown metric {name!r}; use ndcg@K, recall@K or mrr@K")
    return base, int(cut)


def evaluate(run: Mapping[str, Ranking], qrels: Qrels, metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over the queries that have at least one relevant judgement.

    A judged query missing from ``run`` scores 0 (the system returned nothing), as in trec_eval with -c.
    """
    scored = [q for q, rels in qrels.items() if any(r > 0 for r in rels.values())]
    parsed = [(m, *parse_metric(m)) for m in metrics]
    out: dict[str, float] = {}
    for name, base, k in parsed:
        vals = [METRICS[base](list(run.get(q, ())), qrels[q], k) for q in scored]
        out[name] = float(np.mean(vals)) if vals else 0.0
    return out


def per_query(run: Mapping[str, Ranking], qrels: Qrels, metric: str) -> dict[str, float]:
    """One metric for every judged query (for paired comparisons and distributions)."""
    base, k = parse_metric(metric)
    return {
        q: METRICS[base](list(run.get(q, ())), rels, k)
        for q, rels in qrels.items() if any(r > 0 for r in rels.values())
    }


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default); 0 for an empty list."""
    return float(np.percentile(np.asarray(values, dtype=float), p)) if len(values) else 0.0


def best_chunk_per_doc(doc_ids: Sequence[str]) -> list[str]:
    """Chunk hits (best first) → document ranking: a document ranks where its best chunk does."""
    return list(dict.fromkeys(doc_ids))
