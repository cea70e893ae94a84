"""FastAPI dependencies (Annotated): the service, store, retriever and the authenticated caller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from medkb.api.auth import PATIENT_ROLES, Principal
from medkb.api.service import Service
from medkb.kb.models import PUBLIC_TENANT
from medkb.kb.store import KnowledgeStore

_bearer = HTTPBearer(auto_error=False, description="An API key from `medkb keys create`.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same API key, as a header.")


def get_service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[Service, Depends(get_service)]


def get_store(svc: ServiceDep) -> KnowledgeStore:
    return svc.store


def get_retriever(svc: ServiceDep) -> Any:
    return svc.retriever


StoreDep = Annotated[KnowledgeStore, Depends(get_store)]
RetrieverDep = Annotated[Any, Depends(get_retriever)]


def get_principal(
    svc: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    presented = header or (bearer.credentials if bearer else None)
    if not presented and not svc.settings.api.require_auth:
        return Principal(key_id="anonymous", tenant_id=PUBLIC_TENANT, role="curator")
    return svc.verifier.verify(presented)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_clinician(who: PrincipalDep) -> Principal:
    """Patient data: clinician or admin only."""
    who.require(*PATIENT_ROLES)
    return who


ClinicianDep = Annotated[Principal, Depends(get_clinician)]


def _limited(kind: str) -> Any:
    """The caller, once their API key's ``kind`` rate limit allowed this request (else 429, Retry-After)."""

    def dependency(who: PrincipalDep, svc: ServiceDep) -> Principal:
        svc.limits.hit(kind, who.key_id)
        return who

    return Depends(dependency)


AnswersLimitedDep = Annotated[Principal, _limited("answers")]
SearchLimitedDep = Annotated[Principal, _limited("search")]
