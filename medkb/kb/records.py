"""Plain data carried across the store interface (no SQLAlchemy types leak out of kb/)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

AddStatus = Literal["added", "unchanged", "replaced"]


@dataclass
class ChunkIn:
    text: str
    section: str | None = None
    token_count: int = 0
    char_start: int = 0
    char_end: int = 0
    page: int | None = None
    embedding: np.ndarray | None = None
    entity_ids: dict[int, int] = field(default_factory=dict)  # entity id -> mention count


@dataclass
class DocumentIn:
    tenant_id: str
    source: str
    external_id: str
    chunks: list[ChunkIn]
    title: str = ""
    doc_type: str = "literature"
    language: str = "en"
    version: str = "1"
    effective_date: dt.date | None = None
    evidence_level: str | None = None
    specialty: str | None = None
    patient_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None

    def compute_hash(self) -> str:
        """Hash of what the document says (title, metadata, chunk texts), not of how it was stored."""
        h = hashlib.sha256()
        h.update(self.title.encode())
        h.update(json.dumps(self.metadata, sort_keys=True, default=str).encode())
        for c in self.chunks:
            h.update(b"\x00" + (c.section or "").encode() + b"\x01" + c.text.encode())
        return h.hexdigest()


@dataclass(frozen=True)
class AddResult:
    status: AddStatus
    document_id: int
    chunk_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class VectorHit:
    chunk_id: int
    score: float  # cosine similarity


@dataclass(frozen=True)
class ChunkView:
    """A chunk with what a citation needs from its document."""

    id: int
    document_id: int
    ordinal: int
    section: str | None
    text: str
    page: int | None
    char_start: int
    char_end: int
    tenant_id: str
    title: str
    doc_type: str
    language: str
    external_id: str
    version: str
    source: str
    superseded: bool
    patient_id: str | None
    effective_date: dt.date | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class SourceInfo:
    id: int
    tenant_id: str
    name: str
    kind: str
    release: str | None
    documents: int
    chunks: int
    entities: int
    edges: int
    patients: int
