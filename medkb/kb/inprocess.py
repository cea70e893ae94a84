"""Exact cosine top-k in this process over a cached, normalised float32 matrix (SQLite and MySQL/MariaDB)."""

from __future__ import annotations

import threading

import numpy as np
from sqlalchemy import select

from medkb.errors import Conflict
from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from medkb.kb.records import VectorHit
from medkb.kb.store import KnowledgeStore


class InProcessVectors(KnowledgeStore):
    """Vectors are searched exactly: one matrix-vector product over every embedding, masked by the
    ids the filters allow (computed in SQL), then an O(n) partial sort for the top-k.

    The matrix is reloaded when the knowledge base's generation counter moves (any process's write).
    A zero vector scores 0 against every query, and a zero query scores 0 against every row.
    """

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._matrix_lock = threading.Lock()
        self._matrix_gen = -1
        self._ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._masks: dict[tuple[int, SearchFilters], np.ndarray | None] = {}

    def _load_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        gen = self.generation()
        with self._matrix_lock:
            if gen == self._matrix_gen:
                return self._ids, self._matrix
            with self.engine.connect() as c:
                rows = c.execute(
                    select(m.Chunk.id, m.Chunk.__table__.c.embedding)
                    .where(m.Chunk.__table__.c.embedding.is_not(None))
                    .order_by(m.Chunk.id)
                ).all()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            if rows:
                matrix = np.vstack([np.asarray(r[1], dtype=np.float32) for r in rows])
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                matrix /= np.where(norms == 0, 1, norms)
            else:
                matrix = np.zeros((0, 0), dtype=np.float32)
            self._ids, self._matrix, self._matrix_gen = ids, np.ascontiguousarray(matrix), gen
            return ids, self._matrix

    def prepare_vectors(self) -> None:
        self._load_matrix()

    def _mask(self, filters: SearchFilters, ids: np.ndarray) -> np.ndarray | None:
        """Boolean row mask of the cached matrix for ``filters``; None when every row is allowed."""
        key = (self._matrix_gen, filters)
        with self._matrix_lock:
            if key in self._masks:
                return self._masks[key]
        allowed = self.allowed_chunk_ids(filters)
        mask: np.ndarray | None = np.isin(ids, allowed, assume_unique=True)
        if mask is not None and mask.all():
            mask = None
        with self._matrix_lock:
            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = mask
        return mask

    def vector_search(self, query: np.ndarray, k: int, filters: SearchFilters) -> list[VectorHit]:
        ids, matrix = self._load_matrix()
        if k <= 0 or ids.size == 0:
            return []
        q = np.asarray(query, dtype=np.float32).ravel()
        if q.shape[0] != matrix.shape[1]:
            raise Conflict(f"query dimension {q.shape[0]} != knowledge base dimension {matrix.shape[1]}")
        q = q / (np.linalg.norm(q) or 1.0)
        mask = self._mask(filters, ids)
        if mask is not None and not mask.any():
            return []
        scores = matrix @ q
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
            k = min(k, int(mask.sum()))
        k = min(k, scores.shape[0])
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((ids[top], -scores[top]))]
        return [VectorHit(int(ids[i]), float(scores[i])) for i in top]
