"""The incremental lexical index: immutable term-frequency segments plus liveness masks, scored as BM25 at query time.

Scores are bm25s' Lucene BM25 computed from the live rows only (document frequencies, row count and mean
length exclude deleted rows), so an index that took writes one by one ranks exactly as one built from scratch.
Writers publish a new ``View`` (copy-on-write liveness, append-only segment list); readers never wait.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = 1
# Bump when medkb.text's tokenisation changes: a persisted index tokenised otherwise is rebuilt, not served.
TOKENS_VERSION = 1
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


def build_segment(ids: Sequence[int], docs: Sequence[Sequence[int]], n_terms: int) -> Segment:
    """A segment from (chunk id, term ids with repeats) pairs; ``ids`` need not be sorted."""
    order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
    cols, rows, tfs = [], [], []
    dl = np.zeros(len(ids), dtype=np.float32)
    for new, old in enumerate(order):
        c = Counter(docs[old])
        dl[new] = len(docs[old])
        cols.extend(c.keys())
        tfs.extend(c.values())
        rows.extend([new] * len(c))
    return _csc(np.asarray(ids, dtype=np.int64)[order], dl, np.asarray(cols, dtype=np.int64),
                np.asarray(rows, dtype=np.int32), np.asarray(tfs, dtype=np.float32), n_terms)


def _csc(ids: np.ndarray, dl: np.ndarray, cols: np.ndarray, rows: np.ndarray, tf: np.ndarray,
         n_terms: int) -> Segment:
    order = np.lexsort((rows, cols))
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

    def __post_init__(self) -> None:
        ids = np.concatenate([s.ids for s in self.segments]) if self.segments else np.zeros(0, np.int64)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "n_docs", int(sum(int(a.sum()) for a in self.alive)))
        object.__setattr__(self, "sum_dl", float(sum(float(s.dl[a].sum()) for s, a in zip(self.segments, self.alive))))

    @property
    def live_mask(self) -> np.ndarray:
        return np.concatenate(self.alive) if self.alive else np.zeros(0, dtype=bool)

    def postings(self, tid: int) -> list[tuple[int, Segment, np.ndarray, np.ndarray]]:
        """(row offset, segment, live rows, tf) per segment holding term ``tid``."""
        out, offset = [], 0
        for s, a in zip(self.segments, self.alive):
            rows, tf = s.postings(tid)
            if rows.size:
                keep = a[rows]
                out.append((offset, s, rows[keep], tf[keep]))
            offset += s.size
        return out

    def df(self, tid: int | None) -> int:
        return 0 if tid is None else sum(r.size for _, _, r, _ in self.postings(tid))

    def scores(self, tokens: Iterable[str], k1: float, b: float) -> np.ndarray:
        """BM25 (Lucene idf, bm25s' formula) of every row; a repeated query term counts each time."""
        out = np.zeros(self.ids.size, dtype=np.float32)
        if self.n_docs == 0:
            return out
        avgdl = self.sum_dl / self.n_docs
        counts = Counter(self.vocab[t] for t in tokens if t in self.vocab)
        for tid, mult in counts.items():
            posts = self.postings(tid)
            df = sum(r.size for _, _, r, _ in posts)
            if df == 0:
                continue
            idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5))
            for offset, seg, rows, tf in posts:
                norm = k1 * ((1 - b) + b * seg.dl[rows] / avgdl)
                out[offset + rows] += (mult * idf * tf / (norm + tf)).astype(np.float32)
        return out

    def contains(self, tid: int | None, chunk_ids: np.ndarray) -> np.ndarray:
        """Which of ``chunk_ids`` contain term ``tid`` (live rows only)."""
        if tid is None:
            return np.zeros(chunk_ids.size, dtype=bool)
        hit = [self.ids[offset + rows] for offset, _, rows, _ in self.postings(tid)]
        return np.isin(chunk_ids, np.concatenate(hit)) if hit else np.zeros(chunk_ids.size, dtype=bool)


def apply_changes(view: View, changed: Iterable[int], docs: Sequence[tuple[int, list[int]]], seq: int,
                  generation: int) -> View:
    """A new view: every row of a ``changed`` chunk dropped, then ``docs`` (its current rows) added as a segment.

    Idempotent: applying the same change twice leaves one live row per chunk.
    """
    gone = np.asarray(sorted(set(int(c) for c in changed)), dtype=np.int64)
    alive = []
    for seg, a in zip(view.segments, view.alive):
        hit = np.isin(seg.ids, gone, assume_unique=True) & a
        alive.append(a & ~hit if hit.any() else a)  # copy-on-write: published views are never changed
    segs = list(view.segments)
    if docs:
        segs.append(build_segment([d[0] for d in docs], [d[1] for d in docs], len(view.vocab)))
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


MAGIC = b"MEDKBLX1"  # then the SHA-256 of the rest, then an .npz payload


def save(view: View, path: Path, identity: dict) -> None:
    """Write ``view`` (compacted to one segment by the caller or not) atomically: a temp file, then rename."""
    terms = sorted(view.vocab, key=view.vocab.__getitem__)
    arrays: dict[str, np.ndarray] = {"vocab": np.frombuffer("\n".join(terms).encode(), dtype=np.uint8)}
    for i, (s, a) in enumerate(zip(view.segments, view.alive)):
        for name in ("ids", "dl", "indptr", "rows", "tf"):
            arrays[f"s{i}_{name}"] = getattr(s, name)
        arrays[f"s{i}_alive"] = a
    header = {"format": FORMAT, "tokens": TOKENS_VERSION, "segments": len(view.segments), "seq": view.seq,
              "terms": len(terms), "identity": identity}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path, identity: dict, generation: int) -> View:
    """The persisted view; IndexCorrupt when the file is unreadable, altered, or made for another index."""
    raw = path.read_bytes()
    head, digest, payload = raw[: len(MAGIC)], raw[len(MAGIC) : len(MAGIC) + 32], raw[len(MAGIC) + 32 :]
    if head != MAGIC or hashlib.sha256(payload).digest() != digest:
        raise IndexCorrupt(f"{path}: not a lexical index, or its checksum does not match")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
    except Exception as exc:  # zip, npy, JSON and I/O errors alike: whatever fails to read is rebuilt
        raise IndexCorrupt(f"{path}: unreadable ({type(exc).__name__})") from exc
    if header.get("format") != FORMAT or header.get("tokens") != TOKENS_VERSION:
        raise IndexCorrupt(f"{path}: made by another index format or tokeniser")
    if header.get("identity") != identity:
        raise IndexCorrupt(f"{path}: made for another knowledge base or settings")
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
    return View(tuple(segs), tuple(alive), int(header["seq"]), generation, 0, {t: i for i, t in enumerate(terms)})
