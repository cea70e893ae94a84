"""Exact cosine top-k in this process over a cached, normalised float32 matrix kept in step with the change log (SQLite and MySQL/MariaDB)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from medkb.errors import Conflict
from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from medkb.kb.records import VectorHit
from medkb.kb.store import KnowledgeStore, sorted_member, unit_rows
from medkb.kb.store_changes import ChangeLogGap

FETCH = 1000  # changed chunk rows read per query while catching up
# Deleted rows stay in the matrix, masked, until they are this share of it: then one compaction (a copy, no SQL).
COMPACT_DEAD = 0.2
GROWTH = 1.25  # spare rows allocated when the matrix grows, so appends rarely copy it


@dataclass(frozen=True)
class Matrix:
    """One published state of the vector cache; never changed once published (queries read it without a lock).

    Rows are appended in log order (so ``ids`` need not be sorted on a server backend); a deleted chunk's row
    stays, ``alive`` False, until a compaction."""

    generation: int
    seq: int  # change-log position it reflects
    ids: np.ndarray  # int64 [n]
    rows: np.ndarray  # float32 [n, d], unit length (a zero vector stays zero)
    alive: np.ndarray  # bool [n]
    order: np.ndarray  # argsort of ids: row lookup by chunk id

    @property
    def dead(self) -> int:
        return int(self.alive.size - np.count_nonzero(self.alive))

    def rows_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Row of each of ``chunk_ids`` (-1 where absent)."""
        if self.ids.size == 0 or chunk_ids.size == 0:
            return np.full(chunk_ids.size, -1, dtype=np.int64)
        sorted_ids = self.ids[self.order]
        at = np.minimum(np.searchsorted(sorted_ids, chunk_ids), sorted_ids.size - 1)
        return np.where(sorted_ids[at] == chunk_ids, self.order[at], -1)


class InProcessVectors(KnowledgeStore):
    """Vectors are searched exactly: one matrix-vector product over every embedding, masked by the
    ids the filters allow (computed in SQL), then an O(n) partial sort for the top-k.

    The matrix is read whole once, then follows the chunk change log when the generation moves: rows of new
    chunks are appended (into spare capacity, so older states are untouched), deleted ones masked, and the
    matrix compacted once masked rows pass ``COMPACT_DEAD``. A follower prepares the next state (and the
    masks of recent filters) before it pins the generation, so no query waits for it.
    A zero vector scores 0 against every query, and a zero query scores 0 against every row.
    """

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._matrix_lock = threading.Lock()
        self._mat: Matrix | None = None
        self._buf = np.zeros((0, 0), dtype=np.float32)  # rows [0, n) are the newest Matrix's; the rest spare
        self._vec_holes: dict[int, float] = {}
        self._masks: dict[tuple[int, SearchFilters], np.ndarray | None] = {}
        self.matrix_stats = {"full_reads": 0, "catch_ups": 0, "appended": 0, "masked": 0, "compactions": 0}

    # ---- keeping the matrix in step --------------------------------------------------------------

    def _matrix(self, gen: int | None = None) -> Matrix:
        """The matrix at ``gen`` (the pinned/current generation by default), caught up first if behind."""
        gen = self.generation() if gen is None else gen
        mat = self._mat
        if mat is not None and mat.generation >= gen:  # a follower's newer state serves older pins too
            return mat
        with self._matrix_lock:
            mat = self._mat
            if mat is not None and mat.generation >= gen:
                return mat
            try:
                mat = self._read_all(gen) if mat is None else self._catch_up_matrix(mat, gen)
            except ChangeLogGap:  # the log was pruned past this matrix: read it whole again
                mat = self._read_all(gen)
            self._mat = mat
            return mat

    def _read_all(self, gen: int) -> Matrix:
        """Every vector, read once (the log position first: changes after it are replayed by catch-ups)."""
        seq = self.last_change_seq()
        with self.engine.connect() as c:
            rows = c.execute(
                select(m.Chunk.id, m.Chunk.__table__.c.embedding)
                .where(m.Chunk.__table__.c.embedding.is_not(None))
                .order_by(m.Chunk.id)
            ).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        dim = np.asarray(rows[0][1]).shape[0] if rows else (self.embedding_info()[1] or 0)
        buf = np.zeros((int(len(rows) * GROWTH) + 16, dim), dtype=np.float32)
        for i, r in enumerate(rows):
            buf[i] = np.asarray(r[1], dtype=np.float32)
        unit_rows(buf[: len(rows)])
        self._buf = buf
        self.matrix_stats["full_reads"] += 1
        return Matrix(gen, seq, ids, buf[: len(rows)], np.ones(len(rows), dtype=bool), np.argsort(ids, kind="stable"))

    def _catch_up_matrix(self, mat: Matrix, gen: int) -> Matrix:
        """Apply the logged changes after ``mat.seq``: vectors of chunks that exist now and are not live rows
        are appended; live rows of chunks that no longer exist are masked. Vectors never change in place
        (a replaced chunk is a new id), so a live row is never re-read."""
        changed, last = self.changed_chunks(mat.seq, self._vec_holes)
        if not changed:
            return Matrix(gen, mat.seq, mat.ids, mat.rows, mat.alive, mat.order)
        want = np.asarray(changed, dtype=np.int64)
        got, got_vecs = self.chunk_vectors(want, FETCH)
        rows_now = mat.rows_of(want)
        live = (rows_now >= 0) & mat.alive[np.maximum(rows_now, 0)] if mat.ids.size else np.zeros(want.size, bool)
        alive = mat.alive
        gone = rows_now[live & ~np.isin(want, got)]
        if gone.size:
            alive = alive.copy()  # copy-on-write: the published state keeps its own
            alive[gone] = False
        new = ~np.isin(got, want[live])
        add = [(int(cid), v) for cid, v, n in zip(got, got_vecs, new) if n]
        ids, rows = mat.ids, mat.rows
        if add:
            n, k = mat.ids.size, len(add)
            dim = mat.rows.shape[1] if mat.rows.size else len(add[0][1])
            if self._buf.shape[0] < n + k or self._buf.shape[1] != dim or mat.rows.base is not self._buf:
                buf = np.zeros((int((n + k) * GROWTH) + 16, dim), dtype=np.float32)
                buf[:n] = mat.rows
                self._buf = buf
            self._buf[n : n + k] = unit_rows(np.vstack([v for _, v in add]))
            ids = np.concatenate([mat.ids, np.asarray([cid for cid, _ in add], dtype=np.int64)])
            rows = self._buf[: n + k]
            alive = np.concatenate([alive, np.ones(k, dtype=bool)])
        order = mat.order if ids is mat.ids else np.argsort(ids, kind="stable")
        out = Matrix(gen, last, ids, rows, alive, order)
        self.matrix_stats["catch_ups"] += 1
        self.matrix_stats["appended"] += len(add)
        self.matrix_stats["masked"] += int(gone.size)
        if out.dead > COMPACT_DEAD * max(out.ids.size, 1):
            out = self._compact(out)
        return out

    def _compact(self, mat: Matrix) -> Matrix:
        keep = np.flatnonzero(mat.alive)
        buf = np.zeros((int(keep.size * GROWTH) + 16, mat.rows.shape[1]), dtype=np.float32)
        buf[: keep.size] = mat.rows[keep]
        self._buf = buf
        ids = mat.ids[keep]
        self.matrix_stats["compactions"] += 1
        return Matrix(mat.generation, mat.seq, ids, buf[: keep.size], np.ones(keep.size, dtype=bool),
                      np.argsort(ids, kind="stable"))

    def prepare_vectors(self, generation: int | None = None) -> None:
        """Bring the matrix to ``generation`` (default: the current one) and compute the row masks of the
        filters queries used lately, so the first query at that generation finds everything ready."""
        gen = self.generation() if generation is None else generation
        mat = self._matrix(gen)
        for f in self.recent_filters():
            self._mask(f, mat)

    # ---- search ------------------------------------------------------------------------------------

    def _mask(self, filters: SearchFilters, mat: Matrix) -> np.ndarray | None:
        """Boolean row mask of ``mat`` for ``filters`` (live rows the filters allow); None when every row is."""
        key = (mat.generation, filters)
        masks = self._masks
        if key in masks:
            return masks[key]
        allowed = self.allowed_chunk_ids(filters, generation=mat.generation)
        mask: np.ndarray | None = sorted_member(mat.ids, allowed) & mat.alive
        if mask is not None and mask.all():
            mask = None
        with self._matrix_lock:
            if len(self._masks) > 64:  # older generations go first, never the published one's
                self._masks = {k: v for k, v in self._masks.items() if k[0] == mat.generation}
            self._masks[key] = mask
        return mask

    def vector_search(self, query: np.ndarray, k: int, filters: SearchFilters) -> list[VectorHit]:
        mat = self._matrix()
        ids, matrix = mat.ids, mat.rows
        if k <= 0 or ids.size == 0:
            return []
        q = np.asarray(query, dtype=np.float32).ravel()
        if q.shape[0] != matrix.shape[1]:
            raise Conflict(f"query dimension {q.shape[0]} != knowledge base dimension {matrix.shape[1]}")
        q = q / (np.linalg.norm(q) or 1.0)
        mask = self._mask(filters, mat)
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
