"""The chunk change log (chunk_changes): written with every chunk insert and delete, read by indexes catching up."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, exists, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from medkb.kb import models as m
from medkb.kb.filters import SearchFilters, document_clause

# Rows per multi-row INSERT into the log (ids only: small).
LOG_BATCH = 1000
LOG_FETCH = 100_000  # log rows read per query while catching up
# A log position missing between two committed ones may belong to a transaction still open on a server
# (auto-increment values are taken at INSERT, rows seen at COMMIT): it is looked for again this long.
HOLE_TTL_S = 600.0


class ChangeLogGap(Exception):
    """The log no longer holds every change after a position (pruned past it): the index must be re-read whole."""


class ChangesMixin:
    """Change-log writes and reads for KnowledgeStore, which supplies ``session()``."""

    # True where log positions commit in order (SQLite: one writer at a time), so a filter's allowed set can
    # follow the log without tracking holes; server backends recompute the set per generation instead.
    incremental_filter_sets = False

    def _log_chunk_ids(self, s: Session, chunk_ids: Sequence[int]) -> None:
        rows = [{"chunk_id": int(i)} for i in chunk_ids]
        for i in range(0, len(rows), LOG_BATCH):
            s.execute(insert(m.ChunkChange.__table__), rows[i : i + LOG_BATCH])

    def _log_chunks_where(self, s: Session, chunk_ids: Select) -> None:
        """Log the chunks ``chunk_ids`` selects (called before they are deleted, in the same transaction)."""
        s.execute(insert(m.ChunkChange.__table__).from_select(["chunk_id"], chunk_ids))

    def last_change_seq(self) -> int:
        """The newest log position (0 for an empty log)."""
        with self.session() as s:  # type: ignore[attr-defined]
            return int(s.scalar(select(func.max(m.ChunkChange.seq))) or 0)

    def first_change_seq(self) -> int:
        """The oldest log position still held (0 for an empty log): an index older than it cannot catch up."""
        with self.session() as s:  # type: ignore[attr-defined]
            return int(s.scalar(select(func.min(m.ChunkChange.seq))) or 0)

    def chunk_changes_since(self, seq: int, limit: int = 100_000) -> list[tuple[int, int]]:
        """(seq, chunk id) of the log rows after ``seq``, oldest first, at most ``limit``."""
        with self.session() as s:  # type: ignore[attr-defined]
            return [(int(a), int(b)) for a, b in s.execute(
                select(m.ChunkChange.seq, m.ChunkChange.chunk_id)
                .where(m.ChunkChange.seq > seq).order_by(m.ChunkChange.seq).limit(limit))]

    def chunk_changes_at(self, seqs: Sequence[int]) -> list[tuple[int, int]]:
        """(seq, chunk id) of those of ``seqs`` that are committed now (positions once missing)."""
        if not seqs:
            return []
        with self.session() as s:  # type: ignore[attr-defined]
            return [(int(a), int(b)) for a, b in s.execute(
                select(m.ChunkChange.seq, m.ChunkChange.chunk_id).where(m.ChunkChange.seq.in_(list(seqs))))]

    def changed_chunks(self, after: int, holes: dict[int, float], ttl: float = HOLE_TTL_S) -> tuple[list[int], int]:
        """(sorted ids of the chunks written or deleted since log position ``after``, the new position).

        ``holes`` (position -> when first missed; updated in place) are positions below the new one not yet
        committed when read: each is looked for again on every call for ``ttl`` seconds, so a server
        transaction that took its position early and committed late is still applied. Read the generation
        before calling: a commit landing in between is then seen again next time, never lost.
        ChangeLogGap when the log was pruned past ``after``."""
        if self.first_change_seq() > after + 1:
            raise ChangeLogGap(f"the change log starts after position {after + 1}: it was pruned past this index")
        now = time.monotonic()
        changes, pos = [], after
        while True:
            batch = self.chunk_changes_since(pos, limit=LOG_FETCH)
            changes += batch
            if len(batch) < LOG_FETCH:
                break
            pos = batch[-1][0]
        if holes:
            for h in [h for h, t in holes.items() if now - t >= ttl]:
                del holes[h]
            found = self.chunk_changes_at(sorted(holes))
            changes += found
            for s, _ in found:
                holes.pop(s, None)
        if not changes:
            return [], after
        seqs = {s for s, _ in changes}
        last = max(after, max(seqs))
        for h in range(after + 1, last + 1):
            if h not in seqs:
                holes.setdefault(h, now)
        return sorted({c for _, c in changes}), last

    def prune_chunk_changes(self, keep_after: int) -> int:
        """Delete the log rows at or below ``keep_after`` (the caller passes the oldest position every
        persisted index has reached, less a margin for processes following in memory); the newest row
        always stays, so a gap stays detectable. Returns how many rows went. An index older than the log's
        start is refused on load and re-read whole, and a live catch-up across the gap raises
        ChangeLogGap: never a silent miss."""
        keep_after = min(keep_after, self.last_change_seq() - 1)
        if keep_after <= 0:
            return 0
        with self.session() as s:  # type: ignore[attr-defined]
            return int(s.execute(delete(m.ChunkChange).where(m.ChunkChange.seq <= keep_after)).rowcount or 0)

    def _allowed_among(self, clause, chunk_ids: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
        """Sorted ids of those of ``chunk_ids`` that exist and whose document matches ``clause``. The document
        test is a correlated EXISTS, so the query is driven by the chunk ids (primary-key lookups): as a join
        with 20+ ids SQLite drove it from the documents the clause allows, reading every allowed chunk (2.2 s
        for 900 ids at 100k chunks; 8.4 s for a 2,000-chunk delete at 1M)."""
        parts = []
        has_doc = exists().where(m.Document.id == m.Chunk.document_id, clause)
        with self.engine.connect() as c:  # type: ignore[attr-defined]
            for i in range(0, chunk_ids.size, 900):  # under SQLite's bound-parameter limit
                part = [int(x) for x in chunk_ids[i : i + 900]]
                parts += c.execute(select(m.Chunk.id).where(m.Chunk.id.in_(part), has_doc)).scalars().all()
        return np.sort(np.asarray(parts, dtype=np.int64))

    def _allowed_since(self, filters: SearchFilters, seq: int, allowed: np.ndarray) -> tuple[int, np.ndarray]:
        """(new position, allowed set) from the set ``allowed`` at log position ``seq`` plus the changes since:
        changed chunks leave it, and those that exist and match the filters now come back. O(changes)."""
        if self.first_change_seq() > seq + 1:
            raise ChangeLogGap(f"the change log starts after position {seq + 1}")
        changes, pos = [], seq
        while batch := self.chunk_changes_since(pos, limit=LOG_FETCH):
            changes += batch
            pos = batch[-1][0]
            if len(batch) < LOG_FETCH:
                break
        if not changes:
            return seq, allowed
        changed = np.sort(np.fromiter((c for _, c in changes), dtype=np.int64, count=len(changes)))
        changed = changed[np.r_[True, changed[1:] != changed[:-1]]]
        back = self._allowed_among(document_clause(filters), changed)
        # Binary searches and one insert, not np.unique/union1d over the whole set (numpy 2's hash-based
        # unique took 1.4 s on 90k ids here, under load).
        at = np.minimum(np.searchsorted(changed, allowed), changed.size - 1)
        kept = allowed[changed[at] != allowed]
        return pos, np.insert(kept, np.searchsorted(kept, back), back)  # back: sorted, none of them in kept
