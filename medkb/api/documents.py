"""GET /v1/documents/{id} and /v1/chunks/{id}: what a citation resolves to, within the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from medkb.api import audit
from medkb.api.auth import PATIENT_ROLES, Principal
from medkb.api.deps import PrincipalDep, StoreDep
from medkb.api.schemas import ERRORS, MAX_ID
from medkb.errors import NotFound
from medkb.kb.models import PUBLIC_TENANT
from medkb.kb.store import KnowledgeStore

router = APIRouter(prefix="/v1", tags=["documents"])
Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def _visible(store: KnowledgeStore, who: Principal, tenant_id: str, patient_id: str | None, kind: str,
             ident: int, endpoint: str) -> None:
    """Another tenant's rows do not exist for the caller; a patient's note needs the clinician role and is audited."""
    if tenant_id not in (who.tenant_id, PUBLIC_TENANT):
        raise NotFound(f"no {kind} {ident}")
    if patient_id is not None:
        if tenant_id != who.tenant_id:
            raise NotFound(f"no {kind} {ident}")
        who.require(*PATIENT_ROLES)
        audit.record(store, who, f"read_{kind}", endpoint=endpoint, patient_id=patient_id, detail={kind: ident})


@router.get("/documents/{document_id}", responses=ERRORS)
def get_document(document_id: Id, who: PrincipalDep, store: StoreDep, request: Request) -> dict[str, Any]:
    """A document's metadata (title, type, version, source, supersession, chunk count)."""
    doc = store.get_document(document_id, tenant_id=who.tenant_id)
    _visible(store, who, doc["tenant_id"], doc["patient_id"], "document", document_id, request.url.path)
    return doc


@router.get("/chunks/{chunk_id}", responses=ERRORS)
def get_chunk(chunk_id: Id, who: PrincipalDep, store: StoreDep, request: Request) -> dict[str, Any]:
    """A chunk's text with its document, section and page (what a citation [n] points to)."""
    found = store.get_chunks([chunk_id])
    if not found:
        raise NotFound(f"no chunk {chunk_id}")
    c = found[0]
    _visible(store, who, c.tenant_id, c.patient_id, "chunk", chunk_id, request.url.path)
    return {
        "id": c.id, "document_id": c.document_id, "ordinal": c.ordinal, "section": c.section, "page": c.page,
        "text": c.text, "char_start": c.char_start, "char_end": c.char_end, "title": c.title,
        "doc_type": c.doc_type, "language": c.language, "external_id": c.external_id, "version": c.version,
        "source": c.source, "superseded": c.superseded,
        "effective_date": c.effective_date.isoformat() if c.effective_date else None,
        "metadata": c.metadata,
    }
