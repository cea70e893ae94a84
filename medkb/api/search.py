"""POST /v1/search: the hybrid retriever with its trace, confined to the caller's tenant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from medkb.api import audit
from medkb.api.answer import _plain, hit_json
from medkb.api.auth import PATIENT_ROLES
from medkb.api.deps import RetrieverDep, SearchLimitedDep, ServiceDep, StoreDep
from medkb.api.patients import check_patient
from medkb.api.schemas import ERRORS, SearchRequest

router = APIRouter(prefix="/v1", tags=["search"])


@router.post("/search", responses=ERRORS)
def search(body: SearchRequest, who: SearchLimitedDep, store: StoreDep, retriever: RetrieverDep,
           svc: ServiceDep, request: Request) -> dict[str, Any]:
    """Ranked chunks with per-hit trace (generators, ranks, scores, graph paths) and timings in ms.

    Example: `{"query": "metformin lactic acidosis", "k": 5}`
    """
    if body.patient_id:
        who.require(*PATIENT_ROLES)
        check_patient(store, who.tenant_id, body.patient_id)
        audit.record(store, who, "search", endpoint=request.url.path, patient_id=body.patient_id)
    filters = body.filters.to_filters(who.tenant_id, body.patient_id)
    with svc.search_slots:  # queue beyond the process's cores rather than contend on them
        result = retriever.search(body.query, filters, k=body.k, mode=body.mode)
    return {
        "hits": [hit_json(h) for h in result.hits],
        "linked_entities": _plain(list(result.linked_entities or [])),
        "timings": {str(k): float(v) for k, v in (result.timings or {}).items()},
        "patient_facts": _plain(list(getattr(result, "patient_facts", None) or [])),
    }
