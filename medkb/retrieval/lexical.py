"""The incremental lexical index: immutable term-frequency segments plus liveness masks, scored as BM25 at query time.

Scores are bm25s' Lucene BM25 computed from the live rows only (document frequencies, row count and mean
length exclude deleted rows), so an index that took writes one by one ranks exactly as one built from scratch.
Writers publish a new ``View`` (copy-on-write liveness, append-only segment list); readers never wait.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medkb.kb.checked import CorruptFile, load_arrays, save_arrays

FORMAT = 2  # 2: one kb/checked.py file (sections mapped, CRC32 each); 1 was SHA-256 + npz
# Bump when medkb.text's tokenisation changes: a persisted index tokenised otherwise is rebuilt, not served.
TOKENS_VERSION = 2  # 2: function words dropped (text.SEARCH_STOPWORDS_EN), capitalised acronyms kept
MAX_SEGMENTS = 8  # small segments beyond this are merged into one (a query visits every segment)


class IndexCorrupt(Exception):
    """A persisted index that fails its checksum, format or consistency checks."""


@dataclass(frozen=True)
class Segment:
    """Rows sorted by chunk id; postings of term t are ``rows/tf[indptr[t]:indptr[t+1]]`` (a CSC matrix)."""

    ids: np.ndarray  # int64 chunk id per row, ascending
    dl: np.ndarray  # float32 document length (terms, with repeats) per row
    indptr: np.ndarray  # int64, one more than the vocabulary size it was built with
    rows: np.ndarray  # int32
    tf: np.ndarray  # float32

    def postings(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        if tid + 1 >= self.indptr.size:
            return self.rows[:0], self.tf[:0]
        a, b = self.indptr[tid], self.indptr[tid + 1]
        return self.rows[a:b], self.tf[a:b]

    @property
    def size(self) -> int:
        return int(self.ids.size)


@dataclass(frozen=True)
class Docs:
    """Tokenised chunks: chunk id and term count per chunk, and every chunk's term ids one after the other."""

    ids: np.ndarray  # int64
    lengths: np.ndarray  # int64, terms (with repeats) per chunk
    terms: np.ndarray  # int64, sum(lengths) of them

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, Sequence[int]]]) -> Docs:
        """From (chunk id, term ids) pairs."""
        return cls(np.asarray([p[0] for p in pairs], dtype=np.int64),
                   np.asarray([len(p[1]) for p in pairs], dtype=np.int64),
                   np.asarray([t for p in pairs for t in p[1]], dtype=np.int64))

    def __len__(self) -> int:
        return int(self.ids.size)


class SegmentBuilder:
    """A segment built from batches of ``Docs`` in ascending chunk-id order (a bulk build streams the table).

    Each batch is reduced at once to its (term, row, tf) postings, sorted by term (one ``np.unique`` of
    ~millions of keys); ``finish`` places every batch's postings at their final CSC positions by counting,
    so no sort ever spans the whole index and no Python loop runs per term or per posting.
    """

    def __init__(self) -> None:
        self._ids: list[np.ndarray] = []
        self._dl: list[np.ndarray] = []
        self._posts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (term, row, tf) per batch
        self._rows = 0
        self._last_id = -1

    def add(self, docs: Docs) -> None:
        if not len(docs):
            return
        order = np.argsort(docs.ids, kind="stable")
        ids = docs.ids[order]
        if ids[0] <= self._last_id or (ids.size > 1 and (np.diff(ids) <= 0).any()):
            raise ValueError("batches must hold distinct chunk ids, ascending from one batch to the next")
        n = ids.size
        row_of = np.empty(n, dtype=np.int64)
        row_of[order] = np.arange(n)  # the batch's i-th chunk -> its row in id order
        rows = np.repeat(row_of, docs.lengths)
        keys, tf = np.unique(docs.terms * n + rows, return_counts=True)  # sorted by term, then row
        self._posts.append((keys // n, (keys % n + self._rows).astype(np.int32), tf.astype(np.float32)))
        self._ids.append(ids)
        self._dl.append(docs.lengths[order].astype(np.float32))
        self._rows += n
        self._last_id = int(ids[-1])

    def finish(self, n_terms: int) -> Segment:
        counts = [np.bincount(t, minlength=n_terms) for t, _, _ in self._posts]
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(sum(counts) if counts else np.zeros(n_terms, dtype=np.int64), out=indptr[1:])
        rows = np.empty(int(indptr[-1]), dtype=np.int32)
        tf = np.empty(int(indptr[-1]), dtype=np.float32)
        start = indptr[:-1].copy()  # where the next batch's postings of each term go
        for (t, r, f), c in zip(self._posts, counts):
            first = np.zeros(n_terms + 1, dtype=np.int64)
            np.cumsum(c, out=first[1:])
            pos = start[t] + (np.arange(t.size) - first[t])  # batches come in row order: appended per term
            rows[pos], tf[pos] = r, f
            start += c
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dtype=dt))
        return Segment(cat(self._ids, np.int64), cat(self._dl, np.float32), indptr, rows, tf)


def build_segment(docs: Docs, n_terms: int) -> Segment:
    """A segment from tokenised chunks; ``docs.ids`` need not be sorted."""
    b = SegmentBuilder()
    b.add(docs)
    return b.finish(n_terms)


def _csc(ids: np.ndarray, dl: np.ndarray, cols: np.ndarray, rows: np.ndarray, tf: np.ndarray,
         n_terms: int) -> Segment:
    # (col, row) pairs are distinct: one argsort of a combined key, not a lexsort (3x faster at 1M rows)
    order = np.argsort(cols.astype(np.int64) * max(int(ids.size), 1) + rows)
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n_terms), out=indptr[1:])
    return Segment(ids, dl, indptr, rows[order].astype(np.int32), tf[order].astype(np.float32))


def merge_segments(segs: Sequence[Segment], alive: Sequence[np.ndarray], n_terms: int) -> Segment:
    """One segment holding the live rows of ``segs`` (dead rows and their postings dropped)."""
    ids = np.concatenate([s.ids[a] for s, a in zip(segs, alive)])
    dl = np.concatenate([s.dl[a] for s, a in zip(segs, alive)])
    order = np.argsort(ids, kind="stable")
    cols, rows, tfs, offset = [], [], [], 0
    for s, a in zip(segs, alive):
        new_row = np.full(s.size, -1, dtype=np.int64)
        new_row[a] = offset + np.arange(int(a.sum()))
        offset += int(a.sum())
        col = np.repeat(np.arange(s.indptr.size - 1), np.diff(s.indptr))
        keep = a[s.rows]
        cols.append(col[keep])
        rows.append(new_row[s.rows[keep]])
        tfs.append(s.tf[keep])
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)  # concatenated row -> row in id order
    return _csc(ids[order], dl[order], np.concatenate(cols), rank[np.concatenate(rows)].astype(np.int32),
                np.concatenate(tfs), n_terms)


@dataclass(frozen=True)
class View:
    """One immutable state of the index: what a query scores against."""

    segments: tuple[Segment, ...]
    alive: tuple[np.ndarray, ...]  # bool per row of each segment
    seq: int  # the change-log position every change up to which is applied
    generation: int  # the store generation observed when this view was published
    version: int  # bumps with every publication (keys per-view caches)
    vocab: dict[str, int] = field(repr=False, compare=False)
    ids: np.ndarray = field(init=False, repr=False, compare=False)
    n_docs: int = field(init=False)
    sum_dl: float = field(init=False)
    full: tuple[bool, ...] = field(init=False, repr=False, compare=False)  # per segment: every row live
    _norms: dict = field(init=False, repr=False, compare=False)  # (k1, b) -> per segment BM25 length norms

    def __post_init__(self) -> None:
        ids = np.concatenate([s.ids for s in self.segments]) if self.segments else np.zeros(0, np.int64)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "n_docs", int(sum(int(a.sum()) for a in self.alive)))
        object.__setattr__(self, "sum_dl", float(sum(float(s.dl[a].sum()) for s, a in zip(self.segments, self.alive))))
        object.__setattr__(self, "full", tuple(bool(a.all()) for a in self.alive))
        object.__setattr__(self, "_norms", {})

    @property
    def live_mask(self) -> np.ndarray:
        return np.concatenate(self.alive) if self.alive else np.zeros(0, dtype=bool)

    def postings(self, tid: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """(row offset, segment number, live rows, tf) per segment holding term ``tid``."""
        out, offset = [], 0
        for i, (s, a, full) in enumerate(zip(self.segments, self.alive, self.full)):
            rows, tf = s.postings(tid)
            if rows.size:
                if full:  # the common case (a compacted base): no mask, no copies of long posting lists
                    out.append((offset, i, rows, tf))
                else:
                    keep = a[rows]
                    out.append((offset, i, rows[keep], tf[keep]))
            offset += s.size
        return out

    def norms(self, k1: float, b: float) -> tuple[np.ndarray, ...]:
        """Per segment, ``k1 * (1 - b + b * dl / avgdl)`` of every row: computed once per view, not per posting."""
        got = self._norms.get((k1, b))
        if got is None:
            avgdl = self.sum_dl / self.n_docs
            got = self._norms[(k1, b)] = tuple(k1 * ((1 - b) + b * s.dl / avgdl) for s in self.segments)
        return got

    def df(self, tid: int | None) -> int:
        return 0 if tid is None else sum(r.size for _, _, r, _ in self.postings(tid))

    def scores(self, tokens: Iterable[str], k1: float, b: float) -> np.ndarray:
        """BM25 (Lucene idf, bm25s' formula) of every row; a repeated query term counts each time."""
        out = np.zeros(self.ids.size, dtype=np.float32)
        if self.n_docs == 0:
            return out
        norms = self.norms(k1, b)
        counts = Counter(self.vocab[t] for t in tokens if t in self.vocab)
        for tid, mult in counts.items():
            posts = self.postings(tid)
            df = sum(r.size for _, _, r, _ in posts)
            if df == 0:
                continue
            idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))
            for offset, i, rows, tf in posts:
                out[offset + rows if offset else rows] += np.float32(mult * idf) * tf / (norms[i][rows] + tf)
        return out

    def contains(self, tid: int | None, chunk_ids: np.ndarray) -> np.ndarray:
        """Which of ``chunk_ids`` contain term ``tid`` (live rows only)."""
        if tid is None:
            return np.zeros(chunk_ids.size, dtype=bool)
        hit = [self.ids[offset + rows] for offset, _, rows, _ in self.postings(tid)]
        return np.isin(chunk_ids, np.concatenate(hit)) if hit else np.zeros(chunk_ids.size, dtype=bool)


def apply_changes(view: View, changed: Iterable[int], docs: Docs, seq: int, generation: int) -> View:
    """A new view: every row of a ``changed`` chunk dropped, then ``docs`` (its current rows) added as a segment.

    Idempotent: applying the same change twice leaves one live row per chunk.
    """
    gone = np.asarray(sorted(set(int(c) for c in changed)), dtype=np.int64)
    alive = []
    for seg, a in zip(view.segments, view.alive):
        hit = np.isin(seg.ids, gone, assume_unique=True) & a
        alive.append(a & ~hit if hit.any() else a)  # copy-on-write: published views are never changed
    segs = list(view.segments)
    if len(docs):
        segs.append(build_segment(docs, len(view.vocab)))
        alive.append(np.ones(len(docs), dtype=bool))
    keep = [i for i, a in enumerate(alive) if a.any() or i == 0]  # a segment with no live row is dropped
    return View(tuple(segs[i] for i in keep), tuple(alive[i] for i in keep), seq, generation, view.version + 1,
                view.vocab)


def compact(view: View, *, full: bool) -> View:
    """Merge the small segments into one (``full``: everything into one base segment, dead rows dropped)."""
    first = 0 if full else 1
    if len(view.segments) - first <= (0 if full else 1):
        return view
    merged = merge_segments(view.segments[first:], view.alive[first:], len(view.vocab))
    segs = (*view.segments[:first], merged)
    alive = (*view.alive[:first], np.ones(merged.size, dtype=bool))
    return View(segs, alive, view.seq, view.generation, view.version + 1, view.vocab)


def needs_compaction(view: View) -> bool | None:
    """None: leave it; False: merge the small segments; True: merge everything (the base has been outgrown)."""
    if not view.segments:
        return None
    base = view.segments[0].size
    rest = sum(s.size for s in view.segments[1:])
    dead = sum(int(a.size - a.sum()) for a in view.alive)
    if rest > max(2000, base // 4) or dead > max(2000, base // 5):
        return True
    return False if len(view.segments) > MAX_SEGMENTS else None


# ---- persistence ---------------------------------------------------------------------------------------


def save(view: View, path: Path, identity: dict) -> None:
    """Write ``view`` (compacted to one segment by the caller or not) as one checksummed file, atomically."""
    terms = sorted(view.vocab, key=view.vocab.__getitem__)
    arrays: dict[str, np.ndarray] = {"vocab": np.frombuffer("\n".join(terms).encode(), dtype=np.uint8)}
    for i, (s, a) in enumerate(zip(view.segments, view.alive)):
        for name in ("ids", "dl", "indptr", "rows", "tf"):
            arrays[f"s{i}_{name}"] = getattr(s, name)
        arrays[f"s{i}_alive"] = a
    header = {"kind": "lexical", "format": FORMAT, "tokens": TOKENS_VERSION, "segments": len(view.segments),
              "seq": view.seq, "terms": len(terms), "identity": identity}
    save_arrays(path, arrays, header)


def load(path: Path, identity: dict, generation: int) -> View:
    """The persisted view; IndexCorrupt when the file is unreadable, altered, or made for another index.

    The arrays are mapped read-only from the file (segments are immutable; liveness is copied on write), and
    every section's checksum is verified first (``kb/checked.py``)."""
    try:
        header, arrays = load_arrays(path)
    except CorruptFile as exc:
        raise IndexCorrupt(str(exc)) from exc
    if header.get("kind") != "lexical" or header.get("format") != FORMAT or header.get("tokens") != TOKENS_VERSION:
        raise IndexCorrupt(f"{path}: made by another index format or tokeniser")
    if header.get("identity") != identity:
        raise IndexCorrupt(f"{path}: made for another knowledge base or settings")
    try:
        raw = arrays["vocab"].tobytes().decode()
        terms = raw.split("\n") if raw else []
        if len(terms) != header["terms"]:
            raise IndexCorrupt(f"{path}: vocabulary size mismatch")
        segs, alive = [], []
        for i in range(int(header["segments"])):
            s = Segment(*(arrays[f"s{i}_{n}"] for n in ("ids", "dl", "indptr", "rows", "tf")))
            a = arrays[f"s{i}_alive"]
            if not (s.dl.size == s.ids.size == a.size and s.indptr[-1] == s.rows.size == s.tf.size
                    and s.indptr.size <= len(terms) + 1 and (s.rows.size == 0 or int(s.rows.max()) < s.size)):
                raise IndexCorrupt(f"{path}: segment {i} is inconsistent")
            segs.append(s)
            alive.append(a.astype(bool))
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise IndexCorrupt(f"{path}: unreadable ({type(exc).__name__})") from exc
    return View(tuple(segs), tuple(alive), int(header["seq"]), generation, 0, {t: i for i, t in enumerate(terms)})
