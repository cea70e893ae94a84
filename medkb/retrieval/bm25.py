"""Lexical generator: BM25 over an incremental, persisted index (``lexical.py``) that follows the chunk change log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore, sorted_member
from medkb.kb.store_changes import ChangeLogGap
from medkb.retrieval import lexical as lx
from medkb.retrieval.types import Candidate
from medkb.text import ACRONYM_STOPWORDS_EN, SEARCH_STOPWORDS_EN, TermCoder, add_chinese_words, is_cjk, terms

log = logging.getLogger(__name__)

FETCH = 1000  # chunk rows read per query while catching up
BUILD_BATCH = 20_000  # chunk rows tokenised and reduced to postings at a time by a full build
SAVE_EVERY_S = 30.0  # a following index persists itself at most this often, when it has changed


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


def default_index_path(store: KnowledgeStore) -> Path | None:
    """Next to a SQLite file (``kb.db`` → ``kb.db.lexical.npz``); server backends keep none unless configured."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).with_name(Path(url.database).name + ".lexical.npz")
    return None


class BM25Generator:
    """The lexical index of one knowledge base in this process.

    Opened once (loaded from its file when that is sound, else built), then kept current from the chunk
    change log: changed chunks are re-read and re-tokenised into a small new segment, their old rows
    marked dead; segments are merged when they pile up. Filters are applied inside scoring (hidden rows
    score 0 before the top-k), so a filtered query still gets its full ``n``.

    Unless a Follower (``follow.py``) keeps it current, a query first catches up itself (incremental,
    never a rebuild); with one, queries score whatever view is published, never waiting for a writer.
    """

    name = "bm25"

    def __init__(self, store: KnowledgeStore, *, k1: float = 1.2, b: float = 0.75, with_title: bool = True,
                 index_path: Path | None | str = "auto") -> None:
        self.store = store
        self.k1, self.b, self.with_title = k1, b, with_title
        self.tokenize = terms  # the one tokenizer; Chinese words added via medkb.text.add_chinese_words
        self.stop = SEARCH_STOPWORDS_EN  # what ``tokenize`` drops: the batch coder of indexed chunks drops the same
        self.acronyms = ACRONYM_STOPWORDS_EN  # and what it keeps when written in capitals ("ALL")
        self._coder: TermCoder | None = None
        self.path = default_index_path(store) if index_path == "auto" else (Path(index_path) if index_path else None)
        self._view: lx.View | None = None
        self._write = threading.Lock()  # one writer at a time: open, catch up, compact, save
        self._masks: dict[tuple[int, int, SearchFilters], np.ndarray] = {}
        self._holes: dict[int, float] = {}  # log positions not yet seen -> when first missed
        self._zh_loaded = False
        self.followed = False  # a Follower keeps this index current: queries never catch up themselves
        self._saved_seq = -1
        self._saved_at = 0.0
        self.builds = 0  # full builds from the chunks table (tests and benches read it)
        self.loaded_from_file = False

    # ---- identity of the persisted file ----------------------------------------------------------

    def _identity(self) -> dict:
        return {"kb": self.store.kb_id(), "with_title": self.with_title}

    # ---- reading chunks --------------------------------------------------------------------------

    def _select(self):  # type: ignore[no-untyped-def]
        return (select(m.Chunk.id, m.Chunk.text, m.Chunk.section, m.Document.title)
                .join(m.Document, m.Document.id == m.Chunk.document_id))

    def _docs(self, rows: Sequence) -> lx.Docs:  # type: ignore[type-arg]
        """Chunk rows tokenised (new terms join the append-only vocabulary), the same terms as ``tokenize``."""
        texts = [" ".join(p for p in ((r[3] if self.with_title else ""), r[2] or "", r[1]) if p) for r in rows]
        if not self._zh_loaded and any(not t.isascii() and is_cjk(t) for t in texts):
            add_chinese_words(self._chinese_names())  # before tokenising: 二甲双胍 stays one word
            self._zh_loaded = True
            self._coder = None  # Chinese runs it has seen were segmented without those words
        if self._coder is None or self._coder.vocab is not self._vocab:
            self._coder = TermCoder(self._vocab, self.stop, self.acronyms)
        lengths, term_ids = self._coder.encode(texts)
        return lx.Docs(np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows)), lengths, term_ids)

    def _chinese_names(self) -> list[str]:
        """The knowledge base's Chinese entity names (CMeKG and any other loaded source), for the segmenter."""
        q = select(m.EntityName.norm).where(m.EntityName.language == "zh").distinct()
        with self.store.engine.connect() as c:
            return [n for (n,) in c.execute(q) if 2 <= len(n) <= 20 and is_cjk(n) and " " not in n]

    # ---- opening: load or build ------------------------------------------------------------------

    def _build(self) -> lx.View:
        """Every chunk, streamed in batches. The log position is read first: changes after it are replayed."""
        seq, gen = self.store.last_change_seq(), self.store.read_generation()
        self._vocab: dict[str, int] = {}
        self._zh_loaded = False
        builder = lx.SegmentBuilder()
        with self.store.engine.connect() as c:
            result = c.execution_options(yield_per=BUILD_BATCH).execute(self._select().order_by(m.Chunk.id))
            for part in result.partitions(BUILD_BATCH):
                builder.add(self._docs(part))
        seg = builder.finish(len(self._vocab))
        self.builds += 1
        log.info("lexical index built: %d chunks", seg.size)
        return lx.View((seg,), (np.ones(seg.size, dtype=bool),), seq, gen, 0, self._vocab)

    def _load(self) -> lx.View | None:
        """The persisted view brought up to date, or None (and a log line) when it must not be served."""
        if self.path is None or not self.path.exists():
            return None
        try:
            view = lx.load(self.path, self._identity(), -1)
            if view.seq > self.store.last_change_seq():
                raise lx.IndexCorrupt(f"{self.path}: ahead of the knowledge base's change log (another database?)")
            first = self.store.first_change_seq()
            if first > view.seq + 1:
                raise lx.IndexCorrupt(f"{self.path}: older than the oldest change the log still holds")
            self._vocab = view.vocab
            self._zh_loaded = False
            for _ in range(3):  # writers may land between the catch-up and the count
                view = self._catch_up(view)
                if view.n_docs == self.store.count("chunks"):
                    self.loaded_from_file = True
                    return view
            raise lx.IndexCorrupt(f"{self.path}: its rows do not match the chunks table")
        except (lx.IndexCorrupt, ChangeLogGap) as exc:
            log.warning("lexical index not used, rebuilding: %s", exc)
            return None

    def _open(self) -> lx.View:
        view = self._load()
        if view is None:
            view = self._catch_up(self._build())
            self._save(view)
        return view

    # ---- following the change log ------------------------------------------------------------------

    def _catch_up(self, view: lx.View) -> lx.View:
        """Apply every logged change after ``view.seq`` (and any hole that has since committed)."""
        gen = self.store.read_generation()
        changed, last = self.store.changed_chunks(view.seq, self._holes)
        if not changed:
            return view if view.generation == gen else _with(view, generation=gen)
        rows = []
        with self.store.engine.connect() as c:
            for i in range(0, len(changed), FETCH):
                rows += c.execute(self._select().where(m.Chunk.id.in_(changed[i : i + FETCH]))).all()
        view = lx.apply_changes(view, changed, self._docs(rows), last, gen)
        log.debug("lexical index: %d changed chunks applied, log position %d", len(changed), last)
        return view

    def _publish(self, view: lx.View) -> None:
        self._view = view
        self._masks = {k: v for k, v in self._masks.items() if k[0] == view.version}  # prepared ones stay

    def refresh(self) -> lx.View:
        """Catch up with the knowledge base now (no-op when the generation has not moved), then compact."""
        view = self.prepare()
        if view is not self._view:
            self._publish(view)
        return view

    def prepare(self, generation: int | None = None, filters: Sequence[SearchFilters] = ()) -> lx.View:
        """The next view (caught up, compacted) and its masks for ``filters`` at ``generation``, without
        publishing it: a follower publishes it with ``publish`` once everything else is ready too."""
        view = self._view
        if view is None:
            return self.index()
        with self._write:
            view = self._view  # type: ignore[assignment]
            if self.store.read_generation() != view.generation:  # a hole that commits moves the generation too
                try:
                    view = self._catch_up(view)
                except ChangeLogGap as exc:  # pruned past this index (it fell far behind): rebuild, off the query path
                    log.warning("lexical index rebuilt: %s", exc)
                    view = self._catch_up(self._build())
                full = lx.needs_compaction(view)
                if full is not None:
                    view = lx.compact(view, full=full)
                    if full:
                        self._save(view)
        if generation is not None:
            for f in filters:
                self._mask(view, f, generation)
        return view

    def publish(self, view: lx.View) -> None:
        """Serve ``view`` from now on (prepared by ``prepare``)."""
        if view is not self._view:
            with self._write:
                self._publish(view)

    def save_if_due(self) -> None:
        """Persist the view when it moved since the last save and SAVE_EVERY_S has passed (a follower calls it)."""
        view = self._view
        if view is not None and view.seq != self._saved_seq and time.monotonic() - self._saved_at > SAVE_EVERY_S:
            with self._write:
                self._save(view)

    @property
    def saved_seq(self) -> int | None:
        """Change-log position of the persisted file (None when this index keeps no file)."""
        return self._saved_seq if self.path is not None and self._saved_seq >= 0 else None

    def close(self) -> None:
        """Persist the current view if it moved since the last save."""
        if self._view is not None and self._view.seq != self._saved_seq:
            with self._write:
                self._save(self._view)

    def _save(self, view: lx.View) -> None:
        if self.path is None:
            return
        try:
            lx.save(view, self.path, self._identity())
            self._saved_seq, self._saved_at = view.seq, time.monotonic()
        except OSError as exc:  # a read-only directory: the index still serves, it is rebuilt next start
            log.warning("lexical index not saved to %s: %s", self.path, exc)

    @property
    def ready(self) -> bool:
        """Opened (loaded or built): queries will not wait for a build."""
        return self._view is not None

    def index(self) -> lx.View:
        """The current view (opened on first use; caught up first unless a background thread follows)."""
        view = self._view
        if view is None:
            with self._write:
                if self._view is None:
                    self._publish(self._open())
            return self._view  # type: ignore[return-value]
        return view if self.followed else self.refresh()

    # ---- queries ----------------------------------------------------------------------------------

    def _mask(self, view: lx.View, filters: SearchFilters, generation: int | None = None) -> np.ndarray:
        gen = self.store.generation() if generation is None else generation  # the pinned one when followed
        key = (view.version, gen, filters)
        masks = self._masks
        mask = masks.get(key)
        if mask is None:
            allowed = self.store.allowed_chunk_ids(filters, generation=gen)
            mask = sorted_member(view.ids, allowed) & view.live_mask
            if len(masks) > 64:
                masks.clear()
            masks[key] = mask
        return mask

    def scores(self, query: str, filters: SearchFilters) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, scores) over the whole index, 0 where the filters hide a chunk."""
        view = self.index()
        tokens = self.tokenize(query)
        if not tokens or view.n_docs == 0:
            return view.ids, np.zeros(view.ids.size, dtype=np.float32)
        scores = view.scores(tokens, self.k1, self.b)
        return view.ids, np.where(self._mask(view, filters), scores, 0.0).astype(np.float32)

    def search(self, query: str, filters: SearchFilters, n: int) -> list[Candidate]:
        ids, scores = self.scores(query, filters)
        return top_candidates(ids, scores, n)

    def query_terms(self, query: str, chunk_ids: Sequence[int]) -> QueryTerms:
        """The query's terms with their IDF in this index, and which of ``chunk_ids`` contain each.

        Read from the index itself (document frequencies are the live lengths of its posting lists), so
        no passage is tokenized again. A term the index has never seen gets the largest possible IDF:
        a query whose rare words appear nowhere is a question the knowledge base cannot answer.
        """
        view = self.index()
        words = list(dict.fromkeys(self.tokenize(query)))
        ids = np.asarray(chunk_ids, dtype=np.int64)
        present = np.zeros((ids.size, len(words)), dtype=bool)
        df = np.zeros(len(words), dtype=np.float64)
        for j, t in enumerate(words):
            tid = view.vocab.get(t)
            df[j] = view.df(tid)
            if ids.size:
                present[:, j] = view.contains(tid, ids)
        n_docs = max(view.n_docs, 1)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))  # Lucene's IDF, what bm25s scores with
        return QueryTerms(tuple(words), idf, df, present, self.k1)


def _with(view: lx.View, *, generation: int) -> lx.View:
    return lx.View(view.segments, view.alive, view.seq, generation, view.version, view.vocab)


def top_candidates(ids: np.ndarray, scores: np.ndarray, n: int) -> list[Candidate]:
    """The ``n`` best positive scores, best first, ties broken by chunk id (stable across runs)."""
    pos = np.flatnonzero(scores > 0)
    if pos.size == 0 or n <= 0:
        return []
    if pos.size > n:
        pos = pos[np.argpartition(-scores[pos], n - 1)[:n]]
    pos = pos[np.lexsort((ids[pos], -scores[pos]))]
    return [Candidate(int(ids[i]), float(scores[i])) for i in pos]
