"""The document pipeline: parse → chunk → skip unchanged → embed in cross-document batches → write."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from medkb.errors import BadRecord, InvalidInput, MedkbError, StorageError
from medkb.ingest.chunker import Budget, chunk_sections
from medkb.ingest.corpora import FORMATS, iter_items
from medkb.ingest.documents import ParsedDoc
from medkb.kb import models as m
from medkb.kb.dberrors import classify
from medkb.kb.embeddings import Embedder
from medkb.kb.records import AddStatus, ChunkIn, DocumentIn
from medkb.kb.store import KnowledgeStore
from medkb.text import detect_language

# Chunks embedded per encode call: large enough that the model runs full batches across many small
# documents, small enough that a killed run loses little work.
BATCH_CHUNKS = 512

ProgressFn = Callable[[int, int], None]  # called with (documents done, chunks written) increments


class Linker(Protocol):
    def link(self, text: str) -> list[Any]: ...


@dataclass
class IngestReport:
    """What one ingest run did; ``failed`` names every bad file, line or record."""

    added: int = 0
    unchanged: int = 0
    replaced: int = 0
    failed: list[BadRecord] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)  # input rows left out on purpose, by reason

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def documents(self) -> int:
        return self.added + self.unchanged + self.replaced

    def count(self, status: AddStatus) -> None:
        setattr(self, status, getattr(self, status) + 1)


def document_hash(doc: DocumentIn) -> str:
    """Content hash including the document-level fields a curator may change without touching text."""
    h = hashlib.sha256(doc.compute_hash().encode())
    for v in (doc.doc_type, doc.language, doc.effective_date, doc.evidence_level, doc.specialty,
              doc.patient_id):
        h.update(b"\x00" + str(v).encode())
    return h.hexdigest()


def existing_hashes(store: KnowledgeStore, tenant_id: str, source: str) -> dict[tuple[str, str], str]:
    """(external id, version) → content hash of what a source already holds, in one query."""
    with store.session() as s:
        rows = s.execute(
            select(m.Document.external_id, m.Document.version, m.Document.content_hash)
            .join(m.Source, m.Source.id == m.Document.source_id)
            .where(m.Source.tenant_id == tenant_id, m.Source.name == source)
        ).all()
    return {(e, v): h for e, v, h in rows}


@dataclass
class _Entry:
    doc: DocumentIn
    where: str
    embed: bool
    on_written: Callable[[AddStatus], None] | None = None


class DocumentWriter:
    """Embeds pending documents in large cross-document batches and writes each document in its own
    transaction. Writes of one batch run on a background thread while the next batch is embedded,
    so the model (the bottleneck) rarely waits for the database."""

    def __init__(
        self, store: KnowledgeStore, embedder: Embedder, report: IngestReport, *, tenant_id: str,
        source: str, linker: Linker | None = None, progress: ProgressFn | None = None,
        batch_chunks: int = BATCH_CHUNKS, account: bool = True,
    ) -> None:
        self.store, self.embedder, self.report, self.linker = store, embedder, report, linker
        self.progress, self.batch_chunks, self.account = progress, batch_chunks, account
        self.known = existing_hashes(store, tenant_id, source)
        self._seen: dict[tuple[str, str], str] = {}
        self._pending: list[_Entry] = []
        self._pending_chunks = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medkb-writer")
        self._future: Future[None] | None = None

    def submit(self, doc: DocumentIn, where: str,
               on_written: Callable[[AddStatus], None] | None = None) -> None:
        """Queue one document; unchanged ones (same hash as stored) are never embedded nor written."""
        key = (doc.external_id, doc.version)
        if key in self._seen:
            self.fail(BadRecord(where, f"duplicate document id {doc.external_id!r} "
                                        f"(first seen at {self._seen[key]}); skipped"))
            return
        self._seen[key] = where
        doc.content_hash = document_hash(doc)
        if self.known.get(key) == doc.content_hash:
            if on_written is None:
                if self.account:
                    with self._lock:
                        self.report.unchanged += 1
                self._progress(1, 0)
                return
            self._pending.append(_Entry(doc, where, embed=False, on_written=on_written))
            return
        self._pending.append(_Entry(doc, where, embed=True, on_written=on_written))
        self._pending_chunks += len(doc.chunks)
        if self._pending_chunks >= self.batch_chunks:
            self.flush()

    def flush(self) -> None:
        batch, self._pending, self._pending_chunks = self._pending, [], 0
        if not batch:
            return
        to_embed = [e for e in batch if e.embed]
        texts = [c.text for e in to_embed for c in e.doc.chunks]
        if texts:
            vecs = self.embedder.embed_passages(texts)
            i = 0
            for e in to_embed:
                for c in e.doc.chunks:
                    c.embedding = vecs[i]
                    i += 1
        self._wait()
        self._future = self._pool.submit(self._write, batch)

    def close(self) -> None:
        try:
            self.flush()
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def _wait(self) -> None:
        if self._future is not None:
            fut, self._future = self._future, None
            fut.result()

    def _write(self, batch: list[_Entry]) -> None:
        """Write the batch on the store's write lanes; every version of one document stays in one lane,
        in order, so versions supersede each other as they would one by one."""
        lanes = max(1, self.store.write_lanes)
        if lanes == 1:
            self._write_lane(batch)
            return
        split: list[list[_Entry]] = [[] for _ in range(lanes)]
        for e in batch:
            split[zlib.crc32(e.doc.external_id.encode()) % lanes].append(e)
        with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="medkb-lane") as pool:
            for f in [pool.submit(self._write_lane, part) for part in split if part]:
                f.result()

    def _write_lane(self, batch: list[_Entry]) -> None:
        for e in batch:
            try:
                if e.embed:
                    if self.linker is not None:
                        for c in e.doc.chunks:
                            c.entity_ids = dict(Counter(x.entity_id for x in self.linker.link(c.text)))
                    status: AddStatus = self.store.add_document(e.doc).status
                    written = len(e.doc.chunks)
                else:
                    status, written = "unchanged", 0
                if e.on_written is not None:
                    e.on_written(status)
            except StorageError:
                raise  # a full disk or a read-only database: every later write would fail too
            except MedkbError as exc:
                self.fail(BadRecord(e.where, exc.message))
                continue
            except SQLAlchemyError as exc:
                if isinstance(exc, DBAPIError) and isinstance(classify(exc), StorageError):
                    raise classify(exc) from exc
                self.fail(BadRecord(e.where, f"database error: {str(getattr(exc, 'orig', exc))[:200]}"))
                continue
            with self._lock:
                if self.account:
                    self.report.count(status)
                self.report.chunks += written
            self._progress(1, written)

    def fail(self, bad: BadRecord) -> None:
        """Count a bad file/line/record; the run goes on."""
        with self._lock:
            self.report.failed.append(bad)
        self._progress(1, 0)

    def _progress(self, docs: int, chunks: int) -> None:
        if self.progress is not None:
            self.progress(docs, chunks)


def to_document(
    parsed: ParsedDoc, *, tenant_id: str, source: str, doc_type: str, lang: str, version: str,
    effective_date: dt.date | None, budget: Budget, patient_id: str | None = None,
) -> DocumentIn:
    """Chunk a parsed document into a DocumentIn (no embeddings yet), sized in the embedder's own tokens."""
    pieces = chunk_sections(parsed.sections, budget)
    if not pieces:
        raise BadRecord(parsed.where, "no text to index")
    language = lang if lang != "auto" else (parsed.language or detect_language(parsed.text))
    return DocumentIn(
        tenant_id=tenant_id, source=source, external_id=parsed.external_id[:255], title=parsed.title,
        doc_type=doc_type, language=language, version=version, effective_date=effective_date,
        patient_id=patient_id, metadata=parsed.metadata,
        chunks=[ChunkIn(text=p.text, section=p.section, token_count=p.tokens, char_start=p.start,
                        char_end=p.end, page=p.page) for p in pieces],
    )


def ingest_documents(
    store: KnowledgeStore, embedder: Embedder, paths: Sequence[str | Path], *, tenant_id: str = m.PUBLIC_TENANT,
    source: str, doc_type: str = "literature", lang: str = "auto", version: str = "1",
    effective_date: dt.date | None = None, fmt: str = "auto", linker: Linker | None = None,
    progress: ProgressFn | None = None, batch_chunks: int = BATCH_CHUNKS,
) -> IngestReport:
    """Ingest files/folders into ``source``. Unchanged documents cost a hash, not an embedding; each
    document is one transaction, so a killed run can simply be run again."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if doc_type not in ("guideline", "literature"):
        raise InvalidInput(f"--doc-type must be guideline or literature, not {doc_type!r}")
    if lang not in ("auto", "en", "zh"):
        raise InvalidInput(f"--lang must be auto, en or zh, not {lang!r}")
    if not source.strip():
        raise InvalidInput("a source name is required")
    t0 = time.perf_counter()
    report = IngestReport()
    store.set_embedding_model(embedder.name, embedder.dim)
    store.ensure_source(tenant_id, source, kind="docs")
    writer = DocumentWriter(store, embedder, report, tenant_id=tenant_id, source=source, linker=linker,
                            progress=progress, batch_chunks=batch_chunks)
    budget = Budget.for_embedder(embedder)
    try:
        for item in iter_items([Path(p) for p in paths], fmt):
            if isinstance(item, BadRecord):
                writer.fail(item)
                continue
            try:
                doc = to_document(item, tenant_id=tenant_id, source=source, doc_type=doc_type, lang=lang,
                                  version=version, effective_date=effective_date, budget=budget)
            except BadRecord as exc:
                writer.fail(exc)
                continue
            writer.submit(doc, item.where)
    finally:
        writer.close()
    report.seconds = time.perf_counter() - t0
    return report


def load_linker(store: KnowledgeStore) -> Linker | None:
    """The graph engineer's EntityLinker when it exists and the store has entities; else None."""
    try:
        from medkb.kb.graph.linker import EntityLinker
    except ImportError:
        return None
    if store.count("entities") == 0:
        return None
    return EntityLinker.load(store)
