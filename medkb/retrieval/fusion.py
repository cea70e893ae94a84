"""Fusion: weighted reciprocal rank fusion, z-score CombSUM, near-duplicate removal, MMR and a reranker hook."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from medkb.retrieval.types import Candidate

FUSIONS = ("rrf", "zscore")


def weighted_rrf(
    runs: Mapping[str, Sequence[Candidate]], weights: Mapping[str, float], k: int = 60
) -> dict[int, float]:
    """score(c) = Σ_g w_g / (k + rank_g(c)), ranks starting at 1; a generator that missed c adds 0."""
    out: dict[int, float] = {}
    for name, cands in runs.items():
        w = weights.get(name, 1.0)
        if w == 0:
            continue
        for rank, c in enumerate(cands, start=1):
            out[c.chunk_id] = out.get(c.chunk_id, 0.0) + w / (k + rank)
    return out


def zscore_sum(
    runs: Mapping[str, Sequence[Candidate]], weights: Mapping[str, float]
) -> dict[int, float]:
    """CombSUM of per-generator z-scores; a generator that missed c contributes its own worst z-score.

    Unlike RRF this keeps how far apart scores are: a BM25 hit far above the rest stays far above.
    """
    out: dict[int, float] = {}
    floors: dict[str, float] = {}
    zs: dict[str, dict[int, float]] = {}
    for name, cands in runs.items():
        w = weights.get(name, 1.0)
        if w == 0 or not cands:
            continue
        s = np.array([c.score for c in cands], dtype=np.float64)
        sd = float(s.std()) or 1.0
        z = (s - float(s.mean())) / sd
        zs[name] = {c.chunk_id: w * float(v) for c, v in zip(cands, z)}
        floors[name] = w * float(z.min())
    every = {cid for d in zs.values() for cid in d}
    for cid in every:
        out[cid] = sum(d.get(cid, floors[n]) for n, d in zs.items())
    return out


def fuse(
    runs: Mapping[str, Sequence[Candidate]], weights: Mapping[str, float], *, method: str = "rrf",
    k: int = 60,
) -> list[tuple[int, float]]:
    """(chunk id, fused score), best first, ties by chunk id."""
    if method == "rrf":
        scores = weighted_rrf(runs, weights, k)
    elif method == "zscore":
        scores = zscore_sum(runs, weights)
    else:
        raise ValueError(f"fusion must be one of {FUSIONS}, not {method!r}")
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


_WORD = re.compile(r"\w+")


def _shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def near_duplicates(texts: Sequence[str], threshold: float = 0.9) -> list[int | None]:
    """For each text in rank order, the index of an earlier text it nearly repeats (Jaccard of word
    3-shingles ≥ threshold), else None. The same passage often arrives from two versions or sources."""
    seen: list[frozenset[tuple[str, ...]]] = []
    out: list[int | None] = []
    for t in texts:
        sh = _shingles(t)
        dup = None
        for j, prev in enumerate(seen):
            # Jaccard ≥ t needs the smaller set to be ≥ t × the larger: skips nearly every pair cheaply.
            if min(len(sh), len(prev)) < threshold * max(len(sh), len(prev)):
                continue
            union = len(sh | prev)
            if union and len(sh & prev) / union >= threshold:
                dup = j
                break
        out.append(dup)
        seen.append(sh)
    return out


def mmr(
    relevance: Sequence[float], embeddings: np.ndarray, k: int, lam: float = 0.7
) -> list[int]:
    """Maximal marginal relevance over candidates (rows of ``embeddings``, L2-normalised): indices chosen.

    Relevance is rescaled to [0, 1] first so ``lam`` means the same for RRF and z-score fusion.
    """
    n = len(relevance)
    if n == 0 or k <= 0:
        return []
    rel = np.asarray(relevance, dtype=np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    sim = embeddings @ embeddings.T
    chosen: list[int] = []
    max_sim = np.full(n, -np.inf)
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = np.where(free, lam * rel - (1 - lam) * penalty, -np.inf)
        i = int(np.argmax(score))
        chosen.append(i)
        free[i] = False
        max_sim = np.maximum(max_sim, sim[i])
    return chosen


class Reranker(Protocol):
    """A second-stage scorer (e.g. a cross-encoder) — pluggable; none ships offline, so none is required."""

    name: str

    def score(self, query: str, passages: Sequence[str]) -> Sequence[float]:
        """One relevance score per passage, higher is better."""
