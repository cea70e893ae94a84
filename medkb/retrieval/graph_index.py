"""In-memory entity → chunk postings (the mentions table), rebuilt per store generation; entity IDF and boosts."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from medkb.kb import models as m
from medkb.kb.store import KnowledgeStore


@dataclass(frozen=True)
class _Postings:
    generation: int
    entities: np.ndarray  # entity ids, ascending
    indptr: np.ndarray  # postings of entities[i] are chunks[indptr[i]:indptr[i + 1]]
    chunks: np.ndarray  # chunk ids, ascending within each entity
    counts: np.ndarray  # mention count per (entity, chunk)


class MentionPostings:
    """One read of ``mentions`` per generation, then every lookup is in memory (no SQL per query).

    Tenant and document filters are applied by the caller with ``store.allowed_chunk_ids(filters)``,
    the same cached id set the lexical generator masks with, so a posting never leaks a hidden chunk.
    """

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store
        self._p: _Postings | None = None
        self._lock = threading.Lock()

    def _current(self, generation: int | None = None) -> _Postings:
        """The postings at ``generation`` (default: the store's) or newer: a follower reads them ahead of the
        generation it pins, and queries still at the previous one use them as they are."""
        gen = self.store.generation() if generation is None else generation
        p = self._p
        if p is not None and p.generation >= gen:
            return p
        with self._lock:
            p = self._p
            if p is not None and p.generation >= gen:
                return p
            q = select(m.Mention.entity_id, m.Mention.chunk_id, m.Mention.count).order_by(
                m.Mention.entity_id, m.Mention.chunk_id)
            with self.store.engine.connect() as c:
                rows = c.execute(q).all()
            ent = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            chunks = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
            counts = np.fromiter((r[2] or 1 for r in rows), dtype=np.int32, count=len(rows))
            entities, starts = np.unique(ent, return_index=True)
            indptr = np.append(starts, len(rows)).astype(np.int64)
            self._p = _Postings(gen, entities, indptr, chunks, counts)
            return self._p

    def prepare(self, generation: int) -> None:
        self._current(generation)

    def postings(self, entity_id: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, mention counts) of the chunks naming ``entity_id``, only ``allowed`` ones if given."""
        p = self._current()
        i = int(np.searchsorted(p.entities, entity_id))
        if i >= p.entities.size or p.entities[i] != entity_id:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        ch, cn = p.chunks[p.indptr[i] : p.indptr[i + 1]], p.counts[p.indptr[i] : p.indptr[i + 1]]
        if allowed is not None:
            keep = np.isin(ch, allowed, assume_unique=True)
            ch, cn = ch[keep], cn[keep]
        return ch, cn

    def idf(self, entity_ids: Iterable[int], allowed: np.ndarray) -> dict[int, float]:
        """Lucene-style IDF of each entity over the chunks a query may see: rare entities weigh more."""
        n = max(int(allowed.size), 1)
        out = {}
        for e in entity_ids:
            df = int(self.postings(e, allowed)[0].size)
            out[e] = math.log1p((n - df + 0.5) / (df + 0.5))
        return out


def entity_coverage(postings: MentionPostings, entity_ids: Sequence[int], candidates: Sequence[int],
                    allowed: np.ndarray) -> dict[int, tuple[float, int]]:
    """{candidate chunk id: (share of the entities' summed IDF the chunk names, its rarest such entity)}
    for the candidates naming at least one of ``entity_ids``; a chunk naming all of them scores 1."""
    ids = list(dict.fromkeys(entity_ids))
    if not ids or not candidates:
        return {}
    idf = postings.idf(ids, allowed)
    total = sum(idf.values()) or 1.0
    cand = np.asarray(sorted(set(candidates)), dtype=np.int64)
    out: dict[int, tuple[float, int]] = {}
    for e in sorted(ids, key=lambda x: -idf[x]):
        ch, _ = postings.postings(e, allowed)
        for c in cand[np.isin(cand, ch, assume_unique=True)].tolist():
            share, rarest = out.get(c, (0.0, e))
            out[c] = (share + idf[e] / total, rarest)
    return out
