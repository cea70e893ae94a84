"""Approximate dense search for large embedded knowledge bases: a faiss HNSW graph over the chunk vectors, searched
with the filter's allowed ids as an in-search selector, caught up by id difference, persisted beside the file."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medkb.kb.checked import CorruptFile, crc_file, load_arrays, save_arrays, write_atomic

log = logging.getLogger(__name__)

FORMAT = 2  # 2: the manifest is a kb/checked.py file holding the ids and the change-log position
MANIFEST = "manifest.ck"
M = 16  # graph degree: recall@10 0.98+ on bioasq-dev at ef 96, 130 bytes a vector beside its 1,536
# Candidate list while building. 64 gave recall@10 0.82 at 1M chunks even at ef 285 (synthetic mixes of real
# vectors, bench/scale_corpus.py, neighbours 10-20 within 0.01 cosine); 200 gives 0.976 at ef 1024, for a build
# 4.7x longer (757 s at 1M on 2 cores) and inserts slower in proportion. Recorded in the manifest: a graph built
# with another value is rebuilt, not kept.
EF_CONSTRUCTION = 200
# Deleted chunks stay in the graph as tombstones (never selected) until they are this share of it: a rebuild.
REBUILD_TOMBSTONES = 0.2
# An allowed set this small a share of the graph is searched exactly, row by row: a graph walk through
# mostly-forbidden nodes finds too few allowed ones (AnnConfig.exact_rows: the same for a small absolute size).
EXACT_SHARE = 0.05
# Persist after a catch-up once this share of the index changed since the last save.
SAVE_CHANGED_SHARE = 0.02


_omp_ready = False


def _single_threaded_search() -> None:
    """One OpenMP thread for faiss (process-wide): a one-query HNSW search still opens a parallel region, and on
    a busy machine waking its threads costs ~100x the search (1M vectors at load 18 on 2 cores: 41.5 ms p50 with
    2 threads, 0.39 ms with 1). Builds and catch-ups ask for every core while they run (``_all_cores``)."""
    global _omp_ready
    if not _omp_ready:
        import faiss

        faiss.omp_set_num_threads(1)
        _omp_ready = True


@contextmanager
def _all_cores() -> Iterator[None]:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(1)


class IndexUnusable(Exception):
    """A persisted index that is corrupt, made for another knowledge base or model, or unreadable."""


@dataclass(frozen=True)
class AnnConfig:
    """When and how dense search turns approximate (``MEDKB_DATABASE_ANN_*``)."""

    threshold: int = 200_000  # chunks at which search turns approximate; 0 = never
    ef_search: int = 1024  # HNSW candidate list per query at full selectivity (~3.5 ms at 1M chunks, one thread)
    exact_rows: int = 50_000  # an allowed set this small is scanned exactly (a gather + one product: ~10 ms)

    def enabled(self, n: int) -> bool:
        return self.threshold > 0 and n >= self.threshold


class HnswIndex:
    """A faiss HNSW graph (inner product on unit vectors = cosine) keyed by chunk id (``IndexIDMap2``).

    ``ids`` holds every live chunk id the index has seen (sorted), with or without a vector, so a catch-up
    only fetches ids it has never seen. HNSW cannot remove a node: a deleted chunk becomes a tombstone that
    no search selects (it is outside every allowed set) until tombstones call for a rebuild. Not
    thread-safe: the caller serialises mutations against searches.
    """

    def __init__(self, index, ids: np.ndarray, tombstones: np.ndarray) -> None:  # type: ignore[no-untyped-def]
        self.index, self.ids, self.tombstones = index, ids, tombstones
        self.changed_since_save = 0
        self._refresh_views()

    def _refresh_views(self) -> None:
        import faiss

        n, d = int(self.index.ntotal), int(self.index.d)
        self.positions_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)  # row -> chunk id
        flat = faiss.downcast_index(faiss.downcast_index(self.index.index).storage)
        # The graph's own vector storage, viewed without a copy: the exact path reads rows from it.
        self.vectors = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d) if n else np.zeros((0, d), np.float32)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, ids: np.ndarray, vecs: np.ndarray, seen: np.ndarray | None = None) -> "HnswIndex":
        import faiss

        graph = faiss.IndexHNSWFlat(vecs.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = EF_CONSTRUCTION
        index = faiss.IndexIDMap2(graph)
        if len(ids):
            with _all_cores():
                index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids.astype(np.int64))
        all_ids = ids if seen is None else np.union1d(ids, seen)
        return cls(index, np.sort(all_ids.astype(np.int64)), np.zeros(0, dtype=np.int64))

    def needs_rebuild(self) -> bool:
        return self.tombstones.size > REBUILD_TOMBSTONES * max(self.ntotal, 1)

    def apply(self, new_ids: np.ndarray, new_vecs: np.ndarray, seen_new: np.ndarray, gone: np.ndarray) -> None:
        """Add the vectors of new chunks, tombstone deleted ones; ``seen_new`` are all new ids (vector or not)."""
        if gone.size:
            self.ids = np.setdiff1d(self.ids, gone, assume_unique=True)
            in_graph = gone[np.isin(gone, self.positions_ids)]
            self.tombstones = np.union1d(self.tombstones, in_graph)
        if new_ids.size:
            with _all_cores():
                self.index.add_with_ids(np.ascontiguousarray(new_vecs, dtype=np.float32), new_ids.astype(np.int64))
        if seen_new.size:
            self.ids = np.union1d(self.ids, seen_new)
        self.changed_since_save += int(gone.size + new_ids.size)
        self._refresh_views()

    def search(self, q: np.ndarray, k: int, ef: int, bitmap: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) by graph walk; with ``bitmap`` only the ids it marks are ever returned
        (faiss checks the selector inside the walk, so the filtered search still fills its k)."""
        import faiss

        _single_threaded_search()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(ef, k)
        if bitmap is not None:
            params.sel = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
        scores, ids = self.index.search(q.reshape(1, -1), k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def search_rows(self, q: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the given storage rows (a small allowed set)."""
        if rows.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = self.vectors[rows] @ q
        k = min(k, scores.size)
        top = np.argpartition(-scores, k - 1)[:k]
        return scores[top], self.positions_ids[rows[top]]

    # ---- persistence ------------------------------------------------------------------------

    def save(self, folder: Path, generation: int, kb_id: str, model: str | None, seq: int | None = None) -> None:
        """The faiss index, then the manifest (``kb/checked.py``: the ids and tombstones, the index file's CRC32,
        the generation and change-log position it reflects, this knowledge base's id), each replaced
        atomically, the manifest last: a crash mid-save leaves a manifest whose index checksum no longer matches."""
        import faiss

        folder.mkdir(parents=True, exist_ok=True)
        index_path = folder / "hnsw.faiss"
        write_atomic(index_path, lambda f: faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write)))
        meta = {"kind": "ann", "format": FORMAT, "generation": generation, "seq": seq, "kb_id": kb_id,
                "model": model, "dim": self.dim, "ntotal": self.ntotal, "crc_index": crc_file(index_path),
                "m": M, "ef_construction": EF_CONSTRUCTION}
        save_arrays(folder / MANIFEST, {"ids": self.ids, "tombstones": self.tombstones}, meta)
        self.changed_since_save = 0

    @classmethod
    def load(cls, folder: Path, kb_id: str, model: str | None, dim: int) -> tuple["HnswIndex", int, int | None]:
        """The persisted index, the generation and the change-log position (None if not recorded) it reflects;
        IndexUnusable if it cannot be trusted."""
        import faiss

        if not (folder / MANIFEST).exists():
            raise IndexUnusable("no persisted index")
        try:
            meta, arrays = load_arrays(folder / MANIFEST)
        except CorruptFile as exc:
            raise IndexUnusable(str(exc)) from exc
        for key, want in (("kind", "ann"), ("format", FORMAT), ("kb_id", kb_id), ("model", model), ("dim", dim),
                          ("m", M), ("ef_construction", EF_CONSTRUCTION)):
            if meta.get(key) != want:
                raise IndexUnusable(f"persisted index {key} is {meta.get(key)!r}, this knowledge base's is {want!r}")
        index_path = folder / "hnsw.faiss"
        if not index_path.exists() or crc_file(index_path) != meta.get("crc_index"):
            raise IndexUnusable(f"{index_path} does not match its manifest checksum (corrupt or half-written)")
        try:
            index = faiss.read_index(str(index_path))  # typed already; a downcast of a temporary would dangle
            ids, tombstones = arrays["ids"].astype(np.int64), arrays["tombstones"].astype(np.int64)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise IndexUnusable(f"cannot read {folder}: {exc}") from exc
        if index.ntotal != meta["ntotal"] or index.d != dim:
            raise IndexUnusable(f"{index_path} holds {index.ntotal} vectors, its manifest says {meta['ntotal']}")
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexUnusable(f"{index_path} is not an id-mapped HNSW index")
        seq = meta.get("seq")
        return cls(index, ids, tombstones), int(meta["generation"]), None if seq is None else int(seq)


def bitmap_of(allowed: np.ndarray, max_id: int) -> np.ndarray:
    """faiss IDSelectorBitmap layout: bit (id & 7) of byte (id >> 3), for ids 0..max_id."""
    bits = np.zeros(max_id + 1, dtype=bool)
    bits[allowed[allowed <= max_id]] = True
    return np.packbits(bits, bitorder="little")


def effective_ef(ef: int, share: float) -> int:
    """Candidate list for a filter that allows only ``share`` of the vectors: as many more as keep the
    expected number of allowed candidates constant (bounded)."""
    return int(min(2048, math.ceil(ef / max(share, 1e-6))))
