"""The KnowledgeStore interface and the document/chunk SQL every backend shares; backends add only vector search.

Meta and the generation counter live in ``store_meta``, tenants and sources in ``store_sources``, the sets of chunks
a filter allows in ``store_filters``."""

from __future__ import annotations

import abc
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, defer, sessionmaker

from medkb.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound
from medkb.kb import models as m
from medkb.kb.dberrors import classify, retrying
from medkb.kb.filters import SearchFilters
from medkb.kb.records import AddResult, ChunkView, DocumentIn, VectorHit
from medkb.kb.store_changes import ChangesMixin
from medkb.kb.store_filters import FiltersMixin
from medkb.kb.store_meta import EMBED_DIM_KEY, MetaMixin
from medkb.kb.store_sources import SourcesMixin

log = logging.getLogger(__name__)

# Rows per multi-row INSERT statement (a few MB of text and vectors, under max_allowed_packet).
INSERT_BATCH = 200


def _version_key(v: str) -> tuple:
    """Natural order for versions: "2" < "10", "2024-01" < "2024-06", "v1.2" < "v1.10"."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[^\d\W]+", v.lower()))


class KnowledgeStore(MetaMixin, SourcesMixin, ChangesMixin, FiltersMixin, abc.ABC):
    """One database holding documents, chunks with embeddings, the graph and patient records.

    Everything here is plain SQL shared by every backend; a backend supplies only what truly
    differs: how vectors are searched (``vector_search``) and any set-up its engine needs.
    """

    backend: str = "sql"
    # Documents an ingest may write at once, each in its own transaction on its own connection: 1 on
    # SQLite (one writer at a time anyway); more on a server, which overlaps their round trips and
    # commits (group commit) — most of a server's per-document cost.
    write_lanes: int = 1

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = threading.RLock()
        self._write_lock = self._lock if self.write_lanes == 1 else nullcontext()
        self._filter_cache: dict[tuple[int, SearchFilters], np.ndarray] = {}
        # Per filter, the newest set computed and the log position it reflects: the next generation's set is
        # that one plus the logged changes (on backends whose log has no holes: ``incremental_filter_sets``).
        self._filter_base: dict[SearchFilters, tuple[int, int, np.ndarray]] = {}
        # Per-document round trips matter on a server: source ids and the (immutable) dimension are
        # remembered; a source deleted meanwhile by another process shows as a FK error, then a re-read.
        self._source_ids: dict[tuple[str, str], int] = {}
        self._kb_dim: int | None = None

    # ---- sessions ---------------------------------------------------------------------------

    @contextmanager
    def _classified(self) -> Iterator[None]:
        """Database errors raised inside, classified by server code: deadlocks and write conflicts become
        DatabaseBusy (retried by the writers below), "transaction too large" a DatabaseError, a lost server
        unavailable."""
        try:
            yield
        except (OperationalError, InternalError) as exc:
            raise classify(exc) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back everything on any error."""
        with self._classified(), self._sessions.begin() as s:
            yield s

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A bare connection (its user commits), its errors classified as ``session``'s are."""
        with self._classified(), self.engine.connect() as c:
            yield c

    def ping(self) -> None:
        try:
            with self.engine.connect() as c:
                c.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(f"cannot reach the database: {_short(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # ---- documents --------------------------------------------------------------------------

    def add_document(self, doc: DocumentIn) -> AddResult:
        """Add, replace or skip one document with its chunks and mentions, atomically.

        Same (source, external id, version) and same content hash → ``unchanged``, nothing written.
        Same key, new content → ``replaced`` (old chunks go in the same transaction).
        A new version of an existing external id → ``added``; older versions become superseded.
        """
        if doc.doc_type not in m.DOC_TYPES:
            raise InvalidInput(f"doc_type must be one of {', '.join(m.DOC_TYPES)}, not {doc.doc_type!r}")
        chash = doc.content_hash or doc.compute_hash()
        dim = self._check_dims(doc)
        key = (doc.tenant_id, doc.source)

        def attempt() -> AddResult:
            source_id = self._source_ids.get(key) or self.ensure_source(doc.tenant_id, doc.source)
            return retrying(lambda: self._add_document(doc, chash, dim, source_id))

        try:
            result = attempt()
        except IntegrityError:
            # Another process added the same (source, external id, version) at the same moment (the
            # second run finds its row: unchanged, or replaced), or deleted the source we remembered.
            self._source_ids.pop(key, None)
            result = attempt()
        self._invalidate()
        return result

    def _add_document(self, doc: DocumentIn, chash: str, dim: int | None, source_id: int) -> AddResult:
        with self._write_lock, self.session() as s:
            if dim is not None:
                self._check_kb_dim(s, dim)
            siblings = list(s.scalars(select(m.Document).where(
                m.Document.source_id == source_id, m.Document.external_id == doc.external_id)))
            existing = next((d for d in siblings if d.version == doc.version), None)
            if existing is not None and existing.content_hash == chash:
                return AddResult("unchanged", existing.id)
            if existing is not None:
                self._delete_chunks(s, [existing.id])
                row, status = existing, "replaced"
            else:
                row, status = m.Document(source_id=source_id, external_id=doc.external_id), "added"
                s.add(row)
                siblings.append(row)
            row.tenant_id, row.title, row.doc_type = doc.tenant_id, doc.title, doc.doc_type
            row.language, row.version, row.effective_date = doc.language, doc.version, doc.effective_date
            row.evidence_level, row.specialty, row.patient_id = doc.evidence_level, doc.specialty, doc.patient_id
            row.meta, row.content_hash = dict(doc.metadata), chash
            s.flush()
            self._apply_versions(s, siblings)
            chunk_ids = self._insert_chunks(s, row, doc)
            self._bump_generation(s)
        return AddResult(status, row.id, tuple(chunk_ids))

    def _check_dims(self, doc: DocumentIn) -> int | None:
        dims = {int(np.asarray(c.embedding).shape[-1]) for c in doc.chunks if c.embedding is not None}
        if len(dims) > 1:
            raise Conflict(f"document {doc.external_id!r} mixes embedding dimensions {sorted(dims)}")
        return dims.pop() if dims else None

    def _check_kb_dim(self, s: Session, dim: int) -> None:
        if self._kb_dim is None:
            recorded = self.get_meta(EMBED_DIM_KEY, s)
            self._kb_dim = int(recorded) if recorded else None
        kb_dim = self._kb_dim
        if kb_dim is not None and int(kb_dim) != dim:
            raise Conflict(
                f"embedding dimension {dim} does not match this knowledge base's dimension {kb_dim}"
            )

    def _apply_versions(self, s: Session, siblings: Sequence[m.Document]) -> None:
        """Every version of one (source, external id): only the newest is not superseded. The chunks of a
        document whose flag flips are logged: filter sets follow the change log, and this changes them."""
        if not siblings:
            return
        # Ties broken by time, then id: AUTO_INCREMENT is unique but not monotonic across TiDB nodes.
        newest = max(siblings, key=lambda d: (_version_key(d.version), d.created_at, d.id))
        flipped = []
        for d in siblings:
            flag = d.id != newest.id
            if bool(d.superseded) != flag and d.id is not None:
                flipped.append(d.id)
            d.superseded = flag
        if flipped:
            self._log_chunks_where(s, select(m.Chunk.id).where(m.Chunk.document_id.in_(flipped)))

    def _insert_chunks(self, s: Session, row: m.Document, doc: DocumentIn) -> list[int]:
        """Multi-row INSERTs (one round trip per batch, not per chunk), with RETURNING where the server
        has it; elsewhere the ids are read back by the unique (document, ordinal) key."""
        if not doc.chunks:
            return []
        rows = [
            {"tenant_id": doc.tenant_id, "document_id": row.id, "ordinal": i, "section": c.section,
             "text": c.text, "token_count": c.token_count, "char_start": c.char_start, "char_end": c.char_end,
             "page": c.page,
             "embedding": None if c.embedding is None else np.asarray(c.embedding, dtype=np.float32)}
            for i, c in enumerate(doc.chunks)
        ]
        conn, table = s.connection(), m.Chunk.__table__
        if conn.dialect.insert_executemany_returning_sort_by_parameter_order:  # SQLite, MariaDB
            ids = []
            for i in range(0, len(rows), INSERT_BATCH):
                ids += conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                    rows[i : i + INSERT_BATCH]).scalars().all()
        else:  # MySQL, TiDB: no RETURNING; read the ids back by the unique key
            for i in range(0, len(rows), INSERT_BATCH):
                conn.execute(insert(table), rows[i : i + INSERT_BATCH])
            by_ordinal = dict(conn.execute(
                select(m.Chunk.ordinal, m.Chunk.id).where(m.Chunk.document_id == row.id)
            ).all())
            ids = [by_ordinal[i] for i in range(len(rows))]
        mentions = [
            {"chunk_id": cid, "entity_id": eid, "tenant_id": doc.tenant_id, "count": n}
            for cid, c in zip(ids, doc.chunks)
            for eid, n in c.entity_ids.items()
        ]
        for i in range(0, len(mentions), INSERT_BATCH):
            conn.execute(insert(m.Mention.__table__), mentions[i : i + INSERT_BATCH])
        self._log_chunk_ids(s, ids)
        return ids

    def _delete_chunks(self, s: Session, doc_ids: Sequence[int]) -> None:
        chunk_ids = select(m.Chunk.id).where(m.Chunk.document_id.in_(doc_ids))
        self._log_chunks_where(s, chunk_ids)  # before the rows go: indexes in every process drop them
        s.execute(delete(m.Mention).where(m.Mention.chunk_id.in_(chunk_ids)))
        s.execute(delete(m.Edge).where(m.Edge.chunk_id.in_(chunk_ids)))
        s.execute(delete(m.Chunk).where(m.Chunk.document_id.in_(doc_ids)))

    def delete_document(self, document_id: int) -> None:
        retrying(lambda: self._delete_document(document_id))
        self._invalidate()

    def _delete_document(self, document_id: int) -> None:
        with self._write_lock, self.session() as s:
            doc = s.get(m.Document, document_id)
            if doc is None:
                raise NotFound(f"no document {document_id}")
            self._delete_chunks(s, [document_id])
            s.delete(doc)
            s.flush()
            self._apply_versions(s, list(s.scalars(select(m.Document).where(
                m.Document.source_id == doc.source_id, m.Document.external_id == doc.external_id))))
            self._bump_generation(s)

    def get_document(self, document_id: int, tenant_id: str | None = None) -> dict:
        with self.session() as s:
            d = s.get(m.Document, document_id)
            if d is None or (tenant_id is not None and d.tenant_id not in (tenant_id, m.PUBLIC_TENANT)):
                raise NotFound(f"no document {document_id}")
            src = s.get(m.Source, d.source_id)
            n = s.scalar(select(func.count()).where(m.Chunk.document_id == d.id))
            return {
                "id": d.id, "tenant_id": d.tenant_id, "source": src.name if src else None,
                "external_id": d.external_id, "title": d.title, "doc_type": d.doc_type,
                "language": d.language, "version": d.version,
                "effective_date": d.effective_date.isoformat() if d.effective_date else None,
                "superseded": d.superseded, "evidence_level": d.evidence_level, "specialty": d.specialty,
                "patient_id": d.patient_id, "metadata": d.meta, "content_hash": d.content_hash, "chunks": n,
            }

    def find_by_hash(self, tenant_id: str, content_hash: str) -> list[int]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(m.Document.id).where(
                        m.Document.tenant_id == tenant_id, m.Document.content_hash == content_hash
                    )
                )
            )

    def find_document(self, tenant_id: str, source: str, external_id: str) -> list[dict]:
        with self.session() as s:
            ids = s.scalars(
                select(m.Document.id)
                .join(m.Source, m.Source.id == m.Document.source_id)
                .where(m.Source.tenant_id == tenant_id, m.Source.name == source,
                       m.Document.external_id == external_id)
                .order_by(m.Document.created_at, m.Document.id)
            ).all()
        return [self.get_document(i) for i in ids]

    def get_chunks(self, chunk_ids: Sequence[int], filters: SearchFilters | None = None) -> list[ChunkView]:
        """Chunks with their documents, in the order asked; ids the filters hide are left out."""
        if len(chunk_ids) == 0:
            return []
        chunk_ids = [int(i) for i in chunk_ids]  # numpy integers bind as blobs on SQLite and match nothing
        if filters is not None:
            # The filter's allowed set is cached per generation; checking ids against it is far cheaper
            # than joining document_clause into this lookup (SQLite picks a poor plan for that join).
            allowed = self.allowed_chunk_ids(filters)
            ids = np.asarray(chunk_ids, dtype=np.int64)
            chunk_ids = ids[sorted_member(ids, allowed)].tolist()
            if not chunk_ids:
                return []
        with self.session() as s:
            q = (
                select(m.Chunk, m.Document, m.Source.name)
                .options(defer(m.Chunk.embedding))  # never shown; the vectors are most of the row
                .join(m.Document, m.Document.id == m.Chunk.document_id)
                .join(m.Source, m.Source.id == m.Document.source_id)
                .where(m.Chunk.id.in_(chunk_ids))
            )
            rows = {c.id: (c, d, src) for c, d, src in s.execute(q)}
        return [_view(*rows[i]) for i in chunk_ids if i in rows]

    def count(self, table: str) -> int:
        model = next((mp.class_ for mp in m.Base.registry.mappers if mp.class_.__tablename__ == table), None)
        if model is None:
            raise InvalidInput(f"no table {table!r}")
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)

    def stats(self) -> dict[str, int]:
        return {t: self.count(t) for t in m.TABLES}

    # ---- vectors ----------------------------------------------------------------------------

    def prepare_vectors(self, generation: int | None = None) -> None:
        """Load or catch up whatever the backend searches vectors with to ``generation`` (default: the
        current one), masks of recent filters included, now rather than on the first query."""

    def saved_positions(self) -> dict[str, int | None]:
        """Change-log position of each index this store persists (the log is pruned only below them)."""
        return {}

    def chunk_vectors(self, chunk_ids: Sequence[int], batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 vectors, not normalised) of those of ``chunk_ids`` that have an embedding, read by id
        in batches of ``batch`` (under every backend's bound-parameter limit)."""
        ids = [int(i) for i in chunk_ids]
        col = m.Chunk.__table__.c.embedding
        got, vecs = [], []
        with self.engine.connect() as c:
            for i in range(0, len(ids), batch):
                for cid, vec in c.execute(select(m.Chunk.id, col).where(m.Chunk.id.in_(ids[i : i + batch]),
                                                                        col.is_not(None))):
                    got.append(int(cid))
                    vecs.append(np.asarray(vec, dtype=np.float32))
        dim = vecs[0].shape[0] if vecs else (self.embedding_info()[1] or 0)
        return np.asarray(got, dtype=np.int64), np.vstack(vecs) if vecs else np.zeros((0, dim), dtype=np.float32)

    @abc.abstractmethod
    def vector_search(self, query: np.ndarray, k: int, filters: SearchFilters) -> list[VectorHit]:
        """Top-k chunks by cosine similarity among those ``filters`` allows, best first."""


def unit_rows(vecs: np.ndarray) -> np.ndarray:
    """``vecs`` (a vector or rows of vectors, float) scaled in place to unit length; zero vectors stay zero."""
    norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
    vecs /= np.where(norms == 0, 1, norms)
    return vecs


def sorted_member(ids: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``np.isin(ids, allowed)`` for a sorted ``allowed``: k binary searches, not a sort of the whole set
    (a page of hits against a million allowed ids: microseconds instead of ~100 ms per query)."""
    if allowed.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(allowed, ids), allowed.size - 1)
    return allowed[pos] == ids


def _view(c: m.Chunk, d: m.Document, source: str) -> ChunkView:
    return ChunkView(
        id=c.id, document_id=d.id, ordinal=c.ordinal, section=c.section, text=c.text, page=c.page,
        char_start=c.char_start, char_end=c.char_end, tenant_id=c.tenant_id, title=d.title,
        doc_type=d.doc_type, language=d.language, external_id=d.external_id, version=d.version,
        source=source, superseded=d.superseded, patient_id=d.patient_id,
        effective_date=d.effective_date, metadata=d.meta or {},
    )


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0][:300]
