"""Lexical generator: a bm25s index over chunk texts (medkb.text terms), filtered in scoring."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.types import Candidate
from medkb.text import add_chinese_words, is_cjk, terms

log = logging.getLogger(__name__)


@dataclass
class QueryTerms:
    """A query's index terms: IDF and document frequency per term, presence per (chunk, term)."""

    terms: tuple[str, ...]
    idf: np.ndarray
    df: np.ndarray
    present: np.ndarray  # bool [chunks, terms]
    k1: float

    @property
    def total_idf(self) -> float:
        return float(self.idf.sum())


@dataclass
class _Index:
    generation: int
    ids: np.ndarray  # chunk id per index row, ascending
    model: object | None  # bm25s.BM25, None when there is nothing to index


class BM25Generator:
    """One in-memory bm25s index per knowledge base, rebuilt lazily when ``store.generation()`` moves.

    Filters are applied inside scoring: every row the filters hide gets score 0 before the top-k
    is taken (what bm25s' ``weight_mask`` does), so a filtered query still gets its full ``n``.
    """

    name = "bm25"

    def __init__(self, store: KnowledgeStore, *, k1: float = 1.2, b: float = 0.75,
                 with_title: bool = True) -> None:
        self.store = store
        self.k1, self.b, self.with_title = k1, b, with_title
        self.tokenize = terms  # the one tokenizer; Chinese words added via medkb.text.add_chinese_words
        self._index: _Index | None = None
        self._lock = threading.Lock()
        self._masks: dict[tuple[int, SearchFilters], np.ndarray] = {}

    def _rows(self) -> tuple[np.ndarray, list[str]]:
        q = (
            select(m.Chunk.id, m.Chunk.text, m.Chunk.section, m.Document.title)
            .join(m.Document, m.Document.id == m.Chunk.document_id)
            .order_by(m.Chunk.id)
        )
        with self.store.engine.connect() as c:
            rows = c.execute(q).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        texts = [
            " ".join(p for p in ((r[3] if self.with_title else ""), r[2] or "", r[1]) if p) for r in rows
        ]
        return ids, texts

    def index(self) -> _Index:
        """The index for the store's current generation (built on first use after any write)."""
        gen = self.store.generation()
        cur = self._index
        if cur is not None and cur.generation == gen:
            return cur
        with self._lock:
            cur = self._index
            if cur is not None and cur.generation == gen:
                return cur
            ids, texts = self._rows()
            if any(is_cjk(t) for t in texts):
                add_chinese_words(self._chinese_names())  # before tokenising: 二甲双胍 stays one word
            corpus = [self.tokenize(t) for t in texts]
            model = None
            if any(corpus):
                import bm25s

                logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every build at DEBUG
                model = bm25s.BM25(k1=self.k1, b=self.b)
                model.index(corpus, show_progress=False)
            self._index = _Index(gen, ids, model)
            self._masks.clear()
            log.debug("bm25 index built: %d chunks, generation %d", ids.size, gen)
            return self._index

    def _chinese_names(self) -> list[str]:
        """The knowledge base's Chinese entity names (CMeKG and any other loaded source), for the segmenter."""
        q = select(m.EntityName.norm).where(m.EntityName.language == "zh").distinct()
        with self.store.engine.connect() as c:
            return [n for (n,) in c.execute(q) if 2 <= len(n) <= 20 and is_cjk(n) and " " not in n]

    def _mask(self, idx: _Index, filters: SearchFilters) -> np.ndarray:
        key = (idx.generation, filters)
        mask = self._masks.get(key)
        if mask is None:
            allowed = self.store.allowed_chunk_ids(filters)
            mask = np.isin(idx.ids, allowed, assume_unique=True)
            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = mask
        return mask

    def scores(self, query: str, filters: SearchFilters) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, scores) over the whole index, 0 where the filters hide a chunk."""
        idx = self.index()
        if idx.model is None or idx.ids.size == 0:
            return idx.ids, np.zeros(idx.ids.size, dtype=np.float32)
        tokens = self.tokenize(query)
        if not tokens:  # a query with no indexable word (bm25s raises IndexError on [])
            return idx.ids, np.zeros(idx.ids.size, dtype=np.float32)
        scores = np.asarray(idx.model.get_scores(tokens), dtype=np.float32)  # type: ignore[attr-defined]
        return idx.ids, np.where(self._mask(idx, filters), scores, 0.0).astype(np.float32)

    def search(self, query: str, filters: SearchFilters, n: int) -> list[Candidate]:
        ids, scores = self.scores(query, filters)
        return top_candidates(ids, scores, n)

    def query_terms(self, query: str, chunk_ids: Sequence[int]) -> QueryTerms:
        """The query's terms with their IDF in this index, and which of ``chunk_ids`` contain each.

        Read from the index itself (document frequencies are the lengths of its CSC columns), so no
        passage is tokenized again. A term the index has never seen gets the largest possible IDF:
        a query whose rare words appear nowhere is a question the knowledge base cannot answer.
        """
        idx = self.index()
        terms = list(dict.fromkeys(self.tokenize(query)))
        n_docs = max(int(idx.ids.size), 1)
        present = np.zeros((len(chunk_ids), len(terms)), dtype=bool)
        df = np.zeros(len(terms), dtype=np.float64)
        if idx.model is not None and terms and len(chunk_ids):
            model = idx.model
            vocab, indptr, indices = model.vocab_dict, model.scores["indptr"], model.scores["indices"]  # type: ignore[attr-defined]
            rows = np.searchsorted(idx.ids, np.asarray(chunk_ids, dtype=np.int64))
            rows = np.where((rows < idx.ids.size) & (idx.ids[np.minimum(rows, idx.ids.size - 1)]
                                                     == np.asarray(chunk_ids)), rows, -1)
            for j, t in enumerate(terms):
                tid = vocab.get(t)
                if tid is None:
                    continue
                col = indices[indptr[tid] : indptr[tid + 1]]
                df[j] = col.size
                present[:, j] = np.isin(rows, col)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))  # Lucene's IDF, what bm25s scores with
        return QueryTerms(tuple(terms), idf, df, present, self.k1)


def top_candidates(ids: np.ndarray, scores: np.ndarray, n: int) -> list[Candidate]:
    """The ``n`` best positive scores, best first, ties broken by chunk id (stable across runs)."""
    pos = np.flatnonzero(scores > 0)
    if pos.size == 0 or n <= 0:
        return []
    if pos.size > n:
        pos = pos[np.argpartition(-scores[pos], n - 1)[:n]]
    pos = pos[np.lexsort((ids[pos], -scores[pos]))]
    return [Candidate(int(ids[i]), float(scores[i])) for i in pos]
