"""Liveness, readiness (database reachable, models loaded) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from medkb.api.deps import ServiceDep
from medkb.errors import MedkbError

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready yet (database or models)"}})
def readyz(svc: ServiceDep) -> Any:
    """Ready when the database answers and the embedding model and retriever are loaded."""
    checks: dict[str, Any] = {}
    try:
        svc.store.ping()
        checks["database"] = "ok"
    except MedkbError as exc:
        checks["database"] = exc.message
    checks["models"] = "ok" if svc.models_loaded else "loading"
    checks["llm"] = svc.generator.model if svc.generator else "none (evidence mode)"
    ready = checks["database"] == "ok" and checks["models"] == "ok"
    svc.metrics.ready.set(1 if ready else 0)
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
def metrics(svc: ServiceDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
