"""Dense generator: cosine top-n through the store's own filtered vector search (exact on SQLite, ANN on TiDB),
and the Rocchio feedback query hybrid search re-runs it with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import select

from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.types import Candidate


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


class DenseGenerator:
    name = "dense"

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store

    def search(self, qvec: np.ndarray, filters: SearchFilters, n: int) -> list[Candidate]:
        # The store applies the filters inside the search, so n is always the filtered top-n.
        return [Candidate(h.chunk_id, h.score) for h in self.store.vector_search(qvec, n, filters)]

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """Unit embeddings of ``chunk_ids`` that have one (a few rows: one small read on every backend)."""
        ids = [int(i) for i in chunk_ids]
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        with self.store.engine.connect() as c:
            rows = c.execute(select(m.Chunk.id, m.Chunk.__table__.c.embedding)
                             .where(m.Chunk.id.in_(ids), m.Chunk.__table__.c.embedding.is_not(None))).all()
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return _unit(np.vstack([np.asarray(r[1], dtype=np.float32) for r in rows]))

    def feedback_query(self, qvec: np.ndarray, chunk_ids: Sequence[int], beta: float) -> np.ndarray | None:
        """Rocchio: the unit query moved towards the mean of the given (top-ranked) chunks' vectors, or None
        when none of them has a vector. A question's best hits say what its answer passages look like,
        which the short question alone often does not (bench/tune_graph.py prf)."""
        vecs = self.vectors(chunk_ids)
        if vecs.size == 0 or beta <= 0:
            return None
        q = _unit(np.asarray(qvec, dtype=np.float32).ravel())
        return _unit(q + beta * vecs.mean(axis=0)).astype(np.float32)
