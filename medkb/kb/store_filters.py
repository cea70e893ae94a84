"""The sets of chunk ids a search filter lets a query see, cached per generation and caught up from the change log."""

from __future__ import annotations

import threading

import numpy as np
from sqlalchemy import Engine, select

from medkb.kb import models as m
from medkb.kb.filters import SearchFilters, document_clause
from medkb.kb.store_changes import ChangeLogGap

ALLOWED_FETCH = 100_000  # chunk ids per fetch while computing a filter's allowed set


class FiltersMixin:
    """Part of ``KnowledgeStore``: uses its lock, generation and change log."""

    engine: Engine
    _lock: threading.RLock
    _filter_cache: dict[tuple[int, SearchFilters], np.ndarray]
    _filter_base: dict[SearchFilters, tuple[int, int, np.ndarray]]

    def allowed_chunk_ids(self, filters: SearchFilters, generation: int | None = None) -> np.ndarray:
        """Sorted ids of the chunks ``filters`` lets a query see (cached until the next write; a follower
        prepares the entry of a ``generation`` before it pins it)."""
        gen = self.generation() if generation is None else generation
        key = (gen, filters)
        with self._lock:
            hit = self._filter_cache.get(key)
        if hit is not None:
            return hit
        arr = None
        base = self._filter_base.get(filters) if self.incremental_filter_sets else None
        if base is not None and base[0] < gen:
            try:
                seq, arr = self._allowed_since(filters, base[1], base[2])
            except ChangeLogGap:
                arr = None
        if arr is None:
            seq = self.last_change_seq()  # read first: the set reflects at least this position
            arr = self._allowed_query(document_clause(filters))
        with self._lock:
            if base is None or gen > base[0]:
                self._filter_base[filters] = (gen, seq, arr)
        with self._lock:
            if len(self._filter_cache) > 64:  # older generations' entries go first, never the pinned one's
                keep = (gen, self._pinned_generation)
                self._filter_cache = {k: v for k, v in self._filter_cache.items() if k[0] in keep}
                if len(self._filter_cache) > 64:
                    self._filter_cache.clear()
            self._filter_cache[key] = arr
        return arr

    def _allowed_query(self, clause) -> np.ndarray:  # type: ignore[no-untyped-def]
        """Sorted ids of the chunks whose document matches ``clause``. Core rows, unsorted (the
        chunks.document_id index covers the join), sorted in numpy: the ORM session and SQL's ORDER BY
        were most of the 16.6 s this took at 1M chunks on a restart."""
        stmt = select(m.Chunk.id).join(m.Document, m.Document.id == m.Chunk.document_id).where(clause)
        parts = []
        with self.engine.connect() as c:
            res = c.execute(stmt)
            while rows := res.fetchmany(ALLOWED_FETCH):
                parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def recent_filters(self) -> list[SearchFilters]:
        """The filters queries used lately (the filter cache's keys): what a follower prepares ahead."""
        with self._lock:
            return list(dict.fromkeys(f for _, f in self._filter_cache))

    def _invalidate(self) -> None:
        with self._lock:
            self._filter_cache.clear()
