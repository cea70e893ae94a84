"""POST /v1/cohorts/count|feasibility|members|export: research cohorts; aggregates suppressed, rows for admins only."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from medkb.api import audit
from medkb.api.deps import PrincipalDep, ServiceDep
from medkb.api.schemas import ERRORS
from medkb.cohorts import engine, export as exporter, service
from medkb.cohorts.definition import parse_definition
from medkb.errors import PermissionDenied

router = APIRouter(prefix="/v1/cohorts", tags=["cohorts"])
AGGREGATE_ROLES = ("researcher", "admin")


class CohortRequest(BaseModel):
    definition: dict[str, Any] = Field(description="A Circe cohort expression (OHDSI ATLAS JSON export).")
    min_cell_count: int | None = Field(default=None, ge=1, description="Raise the threshold (never below the server's).")
    disabled_rules: list[int] = Field(default_factory=list, description="Inclusion rules left out (stored masks).")


class ExportRequest(CohortRequest):
    format: str = Field(default="csv", pattern="^(csv|parquet)$")


def _threshold(svc: Any, asked: int | None) -> int:
    floor = svc.settings.cohort.min_cell_count
    return max(floor, asked or floor)  # a caller may hide more, never less


@router.post("/count", responses=ERRORS)
def count(body: CohortRequest, who: PrincipalDep, svc: ServiceDep) -> dict[str, Any]:
    """Persons, entries and attrition (by person, by event) in the caller's tenant; every cell suppressed."""
    who.require(*AGGREGATE_ROLES)
    return service.count(svc.store, body.definition, who.tenant_id, threshold=_threshold(svc, body.min_cell_count),
                         disabled_rules=body.disabled_rules, reuse=bool(body.disabled_rules))


@router.post("/feasibility", responses=ERRORS)
def feasibility(body: CohortRequest, who: PrincipalDep, svc: ServiceDep) -> dict[str, Any]:
    """Per hospital and total for a regional key (its tenant names a region in MEDKB_COHORT_REGIONS); no rows."""
    who.require(*AGGREGATE_ROLES)
    tenants = svc.settings.cohort.regions.get(who.tenant_id, [who.tenant_id])
    return service.feasibility(svc.store, body.definition, tenants, threshold=_threshold(svc, body.min_cell_count))


def _admin(who: Any) -> None:
    if who.role != "admin":
        raise PermissionDenied("member lists and exports need an admin key of the one tenant they come from")


@router.post("/members", responses=ERRORS)
def members(body: CohortRequest, who: PrincipalDep, svc: ServiceDep) -> dict[str, Any]:
    """Pseudonymous members with their cohort dates and the rules their best event failed (admin; audited)."""
    _admin(who)
    d = parse_definition(body.definition)
    audit.record(svc.store, who, "cohort_members", endpoint="/v1/cohorts/members", patient_id=None,
                 detail={"definition_hash": d.hash})
    run = engine.generate(svc.store, d, who.tenant_id)
    failed = engine.failed_rules(svc.store, d, run)
    eras = engine.members(svc.store, d, run, body.disabled_rules)
    return {"definition_hash": d.hash,
            "members": [{"person_id": p, "cohort_start_date": str(s), "cohort_end_date": str(e)} for p, s, e in eras],
            "failed_rules": failed}


@router.post("/export", responses=ERRORS)
def export(body: ExportRequest, who: PrincipalDep, svc: ServiceDep) -> dict[str, Any]:
    """Write the members' de-identified OMOP-shaped dataset on the server; returns its folder and manifest (audited)."""
    _admin(who)
    d = parse_definition(body.definition)
    audit.record(svc.store, who, "cohort_export", endpoint="/v1/cohorts/export", patient_id=None,
                 detail={"definition_hash": d.hash, "format": body.format})
    out = Path(tempfile.mkdtemp(prefix="medkb-cohort-")) / d.hash[:16]
    manifest = exporter.export(svc.store, d, who.tenant_id, out, fmt=body.format,
                               threshold=_threshold(svc, body.min_cell_count))
    return {"folder": str(out), "manifest": manifest}
