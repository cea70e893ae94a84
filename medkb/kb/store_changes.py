"""The chunk change log (chunk_changes): written with every chunk insert and delete, read by indexes catching up."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from medkb.kb import models as m

# Rows per multi-row INSERT into the log (ids only: small).
LOG_BATCH = 1000


class ChangesMixin:
    """Change-log writes and reads for KnowledgeStore, which supplies ``session()``."""

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
