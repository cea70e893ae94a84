"""Dense generator: cosine top-n through the store's own filtered vector search (exact on SQLite, ANN on TiDB),
and the Rocchio feedback query hybrid search re-runs it with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore, unit_rows
from medkb.retrieval.types import Candidate


class DenseGenerator:
    name = "dense"

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store

    def search(self, qvec: np.ndarray, filters: SearchFilters, n: int) -> list[Candidate]:
        # The store applies the filters inside the search, so n is always the filtered top-n.
        return [Candidate(h.chunk_id, h.score) for h in self.store.vector_search(qvec, n, filters)]

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """Unit embeddings of those of ``chunk_ids`` that have one, in the order given (a few rows: one small
        read on every backend)."""
        got, vecs = self.store.chunk_vectors(chunk_ids)
        row = {int(c): i for i, c in enumerate(got.tolist())}
        return unit_rows(vecs[[row[int(c)] for c in chunk_ids if int(c) in row]])

    def feedback_query(self, qvec: np.ndarray, chunk_ids: Sequence[int], beta: float) -> np.ndarray | None:
        """Rocchio: the unit query moved towards the given top-ranked chunks' vectors, weighted 1 / rank, or
        None when none of them has a vector. A question's best hits say what its answer passages look like,
        which the short question alone often does not (bench/tune_feedback.py). Weighting by rank rather than
        equally keeps a wrong second hit from pulling a near-title question off its first (PubMedQA*)."""
        vecs = self.vectors(chunk_ids)
        if vecs.size == 0 or beta <= 0:
            return None
        w = 1.0 / np.arange(1, len(vecs) + 1, dtype=np.float32)
        q = unit_rows(np.array(qvec, dtype=np.float32).ravel())  # a copy: the caller's query stays as it was
        return unit_rows(q + beta * (w @ vecs) / w.sum()).astype(np.float32)
