"""SQLite backend: WAL mode, float32 blob embeddings searched in-process — exactly (``kb/inprocess.py``) below
the ANN threshold, through a persisted faiss HNSW index (``kb/ann.py``) kept in step with writes above it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, event

from medkb.errors import Conflict
from medkb.kb.ann import (EXACT_SHARE, SAVE_CHANGED_SHARE, AnnConfig, HnswIndex, IndexUnusable,
                          bitmap_of, effective_ef)
from medkb.kb.filters import SearchFilters
from medkb.kb.inprocess import InProcessVectors
from medkb.kb.records import VectorHit
from medkb.kb.store import sorted_member, unit_rows

log = logging.getLogger(__name__)
FETCH_ROWS = 20_000  # rows per fetch while reading vectors (bounded memory at any size)


# Read settings for large scans (cohort counts over millions of record rows): the file memory-mapped (pages read in
# place, not copied through read() into SQLite's cache; up to 64 GiB of address space with the bundled SQLite,
# medkb.kb.sqlite_lib, where Debian's capped it at 2 GB: the x100 file is 6.8 GB), a larger page cache for what
# mmap does not cover, and temporary tables (a cohort run's intermediate sets) in memory instead of a temp file.
READ_PRAGMAS = {"mmap_size": 1 << 36, "cache_size": -131_072, "temp_store": 2}


def configure_sqlite(engine: Engine) -> None:
    """WAL for concurrent readers while a curator ingests; foreign keys on; a busy timeout; deleted content
    overwritten; READ_PRAGMAS."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        # A deleted patient's rows must not stay readable in free pages. Debian's libsqlite3 is built with this on;
        # the bundled SQLite (medkb.kb.sqlite_lib) defaults to off. Temporary tables live in memory, freed with the
        # connection's scratch: zeroing their dropped pages protects nothing (era_pad x100: +0.3 s).
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute("PRAGMA temp.secure_delete=OFF")
        for name, value in READ_PRAGMAS.items():
            cur.execute(f"PRAGMA {name}={value}")
        cur.close()


class SQLiteStore(InProcessVectors):
    """The embedded default: one file; exact cosine search over a cached matrix for a knowledge base under
    ``ann.threshold`` chunks, approximate (HNSW, filters as an in-search id selector) at or above it; a filter
    that allows only a small set is searched exactly over that set's rows.

    The HNSW index follows writes by generation: a moved generation costs one scan of the chunk ids (an
    index-only scan), the vectors of never-seen ids and the removal of vanished ones — never a rebuild. It
    is saved in ``<db>.ann/`` with checksums and this knowledge base's id; a corrupt, foreign or unreadable
    save is rebuilt, never served, and a stale one is caught up like a live index.
    """

    backend = "sqlite"
    incremental_filter_sets = True  # one writer at a time: log positions commit in order, no holes

    def __init__(self, engine: Engine, ann: AnnConfig | None = None) -> None:
        super().__init__(engine)
        self.ann = ann or AnnConfig()
        self._ann_lock = threading.Lock()  # faiss mutates the graph in place: searches and mutations take turns
        self._ann_sync = threading.Lock()  # one load or catch-up at a time (SQL reads happen outside _ann_lock)
        self._graph: HnswIndex | None = None
        self._graph_gen = -1
        self._graph_seq: int | None = None  # change-log position the graph reflects (None: unknown, diff ids)
        self._ann_holes: dict[int, float] = {}
        self._saved_seq: int | None = None
        self._ann_mode: tuple[int, bool] = (-1, False)
        self._selections: dict[tuple[int, SearchFilters], tuple[np.ndarray | None, np.ndarray | None, float]] = {}
        self.last_ann_load: dict[str, float | str] = {}

    @property
    def ann_folder(self) -> Path | None:
        db = self.engine.url.database
        return None if not db or db == ":memory:" else Path(db + ".ann")

    # ---- mode ---------------------------------------------------------------------------------

    def uses_ann(self, gen: int | None = None) -> bool:
        """Approximate search at this generation? (Chunks counted once per generation, from an index: counting
        only those with a vector would read every row's blob.)"""
        gen = self.generation() if gen is None else gen
        if self._ann_mode[0] < gen:  # a follower may have decided for a newer generation already: it stands
            if self.ann.threshold <= 0:
                self._ann_mode = (gen, False)
            else:
                with self.engine.connect() as c:
                    n = c.exec_driver_sql("SELECT count(*) FROM chunks").scalar()
                self._ann_mode = (gen, self.ann.enabled(int(n or 0)))
        return self._ann_mode[1]

    def prepare_vectors(self, generation: int | None = None) -> None:
        gen = self.generation() if generation is None else generation
        if not self.uses_ann(gen):
            super().prepare_vectors(gen)
            return
        graph = self._sync_graph(gen)
        if graph is not None:
            for f in self.recent_filters():
                self._selection(f, graph)

    def vector_search(self, query: np.ndarray, k: int, filters: SearchFilters) -> list[VectorHit]:
        gen = self.generation()
        if not self.uses_ann(gen):
            return super().vector_search(query, k, filters)
        graph = self._sync_graph(gen)
        if k <= 0 or graph is None or graph.ntotal == 0:
            return []
        q = np.asarray(query, dtype=np.float32).ravel()
        if q.shape[0] != graph.dim:
            raise Conflict(f"query dimension {q.shape[0]} != knowledge base dimension {graph.dim}")
        q = q / (np.linalg.norm(q) or 1.0)
        with self._ann_lock:  # faiss mutates the index in place on catch-up: searches wait for it
            bitmap, rows, share = self._selection(filters, graph)
            if share == 0.0:
                return []
            if rows is not None:
                scores, ids = graph.search_rows(q, k, rows)
            else:
                scores, ids = graph.search(q, k, effective_ef(self.ann.ef_search, share), bitmap)
        order = np.lexsort((ids, -scores))
        return [VectorHit(int(ids[i]), float(scores[i])) for i in order]

    def _selection(self, filters: SearchFilters, graph: HnswIndex) -> tuple[np.ndarray | None, np.ndarray | None, float]:
        """How ``filters`` restricts this index: (selector bitmap or None when every graph node is allowed,
        storage rows when the allowed set is small enough to scan exactly, allowed share of the graph)."""
        gen = self._graph_gen
        key = (gen, filters)
        hit = self._selections.get(key)
        if hit is not None:
            return hit
        allowed = self.allowed_chunk_ids(filters, generation=gen)
        in_graph = sorted_member(graph.positions_ids, allowed)
        n_allowed = int(in_graph.sum())
        share = n_allowed / max(graph.ntotal, 1)
        rows = bitmap = None
        if n_allowed <= self.ann.exact_rows or share <= EXACT_SHARE:
            rows = np.flatnonzero(in_graph)
        elif n_allowed < graph.ntotal:
            bitmap = bitmap_of(allowed, int(graph.positions_ids.max()))
        out = (bitmap, rows, share)
        if len(self._selections) > 32:  # older generations go first
            self._selections = {k: v for k, v in self._selections.items() if k[0] == gen}
        self._selections[key] = out
        return out

    # ---- keeping the index in step ----------------------------------------------------------

    def _sync_graph(self, gen: int | None = None) -> HnswIndex | None:
        """The graph at ``gen`` or newer (a follower moves it ahead of the pinned generation)."""
        gen = self.generation() if gen is None else gen
        if self._graph is not None and self._graph_gen >= gen:
            return self._graph
        with self._ann_sync:
            if self._graph is not None and self._graph_gen >= gen:
                return self._graph
            t0 = time.perf_counter()
            if self._graph is None:  # not visible to searches until assigned
                self._graph, self._graph_gen, self._graph_seq = self._load_or_build(gen)
            else:
                self._catch_up(self._graph, gen)
            self.last_ann_load["sync_s"] = round(time.perf_counter() - t0, 3)
            return self._graph

    def _load_or_build(self, gen: int) -> tuple[HnswIndex, int, int | None]:
        folder, kb_id = self.ann_folder, self.kb_id()
        model, dim = self.embedding_info()
        if folder is not None and dim is not None:
            t0 = time.perf_counter()
            try:
                graph, saved_gen, saved_seq = HnswIndex.load(folder, kb_id, model, dim)
                self.last_ann_load.update(how="loaded", load_s=round(time.perf_counter() - t0, 3))
                self._graph_seq = saved_seq
                if saved_gen != gen:
                    self._catch_up(graph, gen, save_if_changed=True)
                return graph, gen, self._graph_seq
            except IndexUnusable as exc:
                log.warning("rebuilding the dense ANN index: %s", exc)
                self.last_ann_load["rejected"] = str(exc)
        t0 = time.perf_counter()
        seq = self.last_change_seq()  # read first: changes after it are replayed by catch-ups
        seen = self._chunk_ids()
        ids, vecs = self._vectors(seen)
        graph = HnswIndex.build(ids, vecs, seen)
        self.last_ann_load.update(how="built", build_s=round(time.perf_counter() - t0, 3))
        self._save(graph, gen, seq)
        return graph, gen, seq

    def _changes(self, graph: HnswIndex) -> tuple[np.ndarray, np.ndarray, int | None, str]:
        """(ids new to the graph, ids gone from the knowledge base, new log position, how) since the graph's
        log position: O(changes). Without a usable position (an index saved before positions were kept, or a
        log pruned past it) the whole id list is diffed instead: exact too, ids are never reused."""
        seq = self._graph_seq
        if seq is not None and self.first_change_seq() <= seq + 1:
            changed, last = self.changed_chunks(seq, self._ann_holes)
            want = np.asarray(changed, dtype=np.int64)
            exists = self._existing(want)
            known = np.isin(want, graph.ids, assume_unique=True)
            here = np.isin(want, exists, assume_unique=True)
            return want[here & ~known], want[known & ~here], last, "log"
        last = self.last_change_seq()
        now = self._chunk_ids()
        return (np.setdiff1d(now, graph.ids, assume_unique=True), np.setdiff1d(graph.ids, now, assume_unique=True),
                last, "id diff")

    def _catch_up(self, graph: HnswIndex, gen: int, save_if_changed: bool = False) -> None:
        """Apply what changed since the graph's position: vectors of new ids in, vanished ids out. The SQL
        reads run before the graph is locked, so searches wait only for faiss's own insert."""
        new, gone, seq, how = self._changes(graph)
        ids, vecs = self._vectors(new)
        with self._ann_lock:
            graph.apply(ids, vecs, new, gone)
        self._graph_gen, self._graph_seq = gen, seq
        self.last_ann_load.update(added=int(ids.size), removed=int(gone.size), catch_up=how)
        # Nothing changed (say, chunks added then deleted while no server ran): no 1.7 GB rewrite at 1M chunks.
        save = save_if_changed and bool(ids.size or gone.size)
        if graph.needs_rebuild():
            now = self._chunk_ids()
            rebuilt = HnswIndex.build(*self._vectors(now), now)
            with self._ann_lock:
                graph.index, graph.ids, graph.tombstones = rebuilt.index, rebuilt.ids, rebuilt.tombstones
                graph._refresh_views()
                self._selections = {}  # storage rows moved
            save = True
        if save or graph.changed_since_save > SAVE_CHANGED_SHARE * max(graph.ntotal, 1):
            self._save(graph, gen, seq)

    def saved_positions(self) -> dict[str, int | None]:
        """Change-log position of each index this store persists beside the file (for log pruning)."""
        return {"ann": self._saved_seq} if self._graph is not None else {}

    def _save(self, graph: HnswIndex, gen: int, seq: int | None) -> None:
        folder = self.ann_folder
        if folder is None:
            return
        try:
            graph.save(folder, gen, self.kb_id(), self.embedding_info()[0], seq)
            self._saved_seq = seq
        except OSError as exc:  # a read-only or full disk: serve from memory, rebuild after a restart
            log.warning("could not save the dense ANN index to %s: %s", folder, exc)

    def _chunk_ids(self) -> np.ndarray:
        """Every chunk id, sorted (SQLite answers from its smallest index, not the vector-laden rows)."""
        with self.engine.connect() as c:
            rows = c.exec_driver_sql("SELECT id FROM chunks").scalars().all()
        return np.sort(np.fromiter(rows, dtype=np.int64, count=len(rows)))

    def _existing(self, ids: np.ndarray) -> np.ndarray:
        """Those of ``ids`` that are chunks now, sorted."""
        out: list[int] = []
        with self.engine.connect() as c:
            cur = c.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            for i in range(0, ids.size, 900):  # under SQLite's bound-parameter limit
                part = [int(x) for x in ids[i : i + 900]]
                cur.execute(f"SELECT id FROM chunks WHERE id IN ({','.join('?' * len(part))})", part)
                out += [r[0] for r in cur.fetchall()]
            cur.close()
        return np.sort(np.asarray(out, dtype=np.int64))

    def _vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, unit vectors) of the chunks in ``ids`` that have an embedding, read in bounded batches."""
        dim = self.embedding_info()[1] or 0
        if ids.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        out_ids, out_vecs = [], []
        lo, hi = int(ids[0]), int(ids[-1])
        with self.engine.connect() as c:
            cur = c.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cur.execute("SELECT id, embedding FROM chunks WHERE id BETWEEN ? AND ? AND embedding IS NOT NULL "
                        "ORDER BY id", (lo, hi))
            while rows := cur.fetchmany(FETCH_ROWS):
                got = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
                keep = np.isin(got, ids, assume_unique=True)
                out_ids.append(got[keep])
                out_vecs.append(mat[keep])
            cur.close()
        if not out_ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        vecs = unit_rows(np.vstack(out_vecs))  # a fresh writable copy: normalised in place (1M x 384 is 1.5 GB)
        return np.concatenate(out_ids), vecs
