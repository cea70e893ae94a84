"""Patients of the caller's tenant: search, one patient's summary and timeline (clinician/admin, audited)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import func, or_, select

from medkb.api import audit
from medkb.api.answer import AnswerEngine, _plain
from medkb.api.deps import ClinicianDep, StoreDep
from medkb.api.schemas import ERRORS
from medkb.errors import NotFound
from medkb.kb import models as m
from medkb.kb.filters import SearchFilters

router = APIRouter(prefix="/v1", tags=["patients"])
PatientPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

_TABLES: dict[str, tuple[Any, str]] = {
    "conditions": (m.Condition, "start"), "medications": (m.Medication, "start"),
    "allergies": (m.Allergy, "start"), "procedures": (m.Procedure, "performed"),
    "observations": (m.Observation, "effective"),
}


def check_patient(store: Any, tenant_id: str, patient_id: str) -> None:
    """A patient of another tenant does not exist for the caller."""
    P = m.Patient.__table__
    with store.engine.connect() as c:
        if c.execute(select(P.c.id).where(P.c.id == patient_id, P.c.tenant_id == tenant_id)).first() is None:
            raise NotFound(f"no patient {patient_id}")


def _rows(conn: Any, model: Any, date_col: str, patient_id: str, tenant_id: str, limit: int) -> list[dict]:
    t = model.__table__
    cols = [c for c in t.c if c.name not in ("patient_id", "tenant_id")]
    q = (select(*cols).where(t.c.patient_id == patient_id, t.c.tenant_id == tenant_id)
         .order_by(t.c[date_col].desc(), t.c.id).limit(limit))
    return [_plain(dict(r._mapping)) for r in conn.execute(q)]


@router.get("/patients/{patient_id}/summary", responses=ERRORS)
def summary(patient_id: PatientPath, who: ClinicianDep, store: StoreDep, request: Request) -> dict[str, Any]:
    """Birth year, sex, conditions, medications, allergies, procedures, recent observations, and the graph's
    safety notes for them. Needs the clinician or admin role; every call writes an audit row."""
    P = m.Patient.__table__
    with store.engine.connect() as c:
        p = c.execute(select(P.c.id, P.c.birth_year, P.c.sex, P.c.deceased)
                      .where(P.c.id == patient_id, P.c.tenant_id == who.tenant_id)).first()
        if p is None:
            raise NotFound(f"no patient {patient_id}")
        # Audit before any record leaves the building.
        audit.record(store, who, "patient_summary", endpoint=request.url.path, patient_id=patient_id)
        out: dict[str, Any] = {"patient": dict(p._mapping)}
        for name, (model, date_col) in _TABLES.items():
            out[name] = _rows(c, model, date_col, patient_id, who.tenant_id, 200 if name != "observations" else 50)
        enc = m.Encounter.__table__
        out["encounters"] = c.execute(select(func.count()).where(enc.c.patient_id == patient_id,
                                                                 enc.c.tenant_id == who.tenant_id)).scalar()
    engine = AnswerEngine(store, retriever=None)
    out["safety_notes"] = engine.safety_notes(SearchFilters(tenant_id=who.tenant_id, patient_id=patient_id), set())
    return out


def _literal(text: str) -> str:
    """``text`` for a LIKE pattern, matched literally (escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@router.get("/patients", responses=ERRORS)
def search_patients(
    who: ClinicianDep, store: StoreDep, request: Request,
    q: Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                   description="Start of a pseudonymous patient id.")] = None,
    sex: Annotated[Literal["female", "male", "other", "unknown"] | None, Query(description="As stored.")] = None,
    birth_year_from: Annotated[int | None, Query(ge=1800, le=2200)] = None,
    birth_year_to: Annotated[int | None, Query(ge=1800, le=2200)] = None,
    condition: Annotated[str | None, Query(min_length=2, max_length=100,
                                           description="A condition code, or words of its description.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
) -> dict[str, Any]:
    """Patients of the caller's tenant by pseudonymous id prefix, sex, birth-year range or condition.

    Needs the clinician or admin role; every search writes an audit row with its criteria. Another tenant's
    patients are never matched (the tenant is a condition of the query itself).
    """
    P, C = m.Patient.__table__, m.Condition.__table__
    criteria = {k: v for k, v in (("q", q), ("sex", sex), ("birth_year_from", birth_year_from),
                                  ("birth_year_to", birth_year_to), ("condition", condition)) if v is not None}
    query = select(P.c.id, P.c.birth_year, P.c.sex, P.c.deceased).where(P.c.tenant_id == who.tenant_id)
    if q:
        query = query.where(P.c.id.like(_literal(q) + "%", escape="\\"))
    if sex:
        query = query.where(P.c.sex == sex)
    if birth_year_from is not None:
        query = query.where(P.c.birth_year >= birth_year_from)
    if birth_year_to is not None:
        query = query.where(P.c.birth_year <= birth_year_to)
    if condition:
        text = condition.strip()
        query = query.where(P.c.id.in_(
            select(C.c.patient_id).where(C.c.tenant_id == who.tenant_id, or_(
                C.c.code == text, func.lower(C.c.description).like(f"%{_literal(text.lower())}%", escape="\\")))))
    audit.record(store, who, "patient_search", endpoint=request.url.path, patient_id=None,
                 detail={"criteria": criteria})
    with store.engine.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(query.order_by(P.c.id).limit(limit + 1))]
        ids = [r["id"] for r in rows[:limit]]
        counts: dict[str, dict[str, int]] = {i: {} for i in ids}
        for name, model in (("conditions", m.Condition), ("medications", m.Medication)):
            t = model.__table__
            for pid, n in c.execute(select(t.c.patient_id, func.count()).where(
                    t.c.tenant_id == who.tenant_id, t.c.patient_id.in_(ids)).group_by(t.c.patient_id)):
                counts[pid][name] = n
    for r in rows[:limit]:
        r["counts"] = {"conditions": counts[r["id"]].get("conditions", 0),
                       "medications": counts[r["id"]].get("medications", 0)}
    return {"patients": rows[:limit], "more": len(rows) > limit, "criteria": criteria}


_TIMELINE: dict[str, tuple[Any, str]] = {"encounters": (m.Encounter, "start"), **_TABLES}


@router.get("/patients/{patient_id}/timeline", responses=ERRORS)
def timeline(patient_id: PatientPath, who: ClinicianDep, store: StoreDep, request: Request,
             limit: Annotated[int, Query(ge=1, le=2000)] = 500) -> dict[str, Any]:
    """The patient's encounters, conditions, medications, allergies, procedures and observations as one list,
    newest first (each event: kind, date, end, code, description, value). Clinician/admin; audited."""
    check_patient(store, who.tenant_id, patient_id)
    audit.record(store, who, "patient_timeline", endpoint=request.url.path, patient_id=patient_id)
    events: list[dict[str, Any]] = []
    with store.engine.connect() as c:
        for name, (model, date_col) in _TIMELINE.items():
            for row in _rows(c, model, date_col, patient_id, who.tenant_id, limit):
                events.append({"kind": name[:-1] if name != "allergies" else "allergy",
                               "date": row.pop(date_col, None), "end": row.pop("stop", None), **row})
    events.sort(key=lambda e: (e["date"] or "", e["kind"]), reverse=True)
    return {"patient_id": patient_id, "events": events[:limit], "truncated": len(events) > limit}
