"""GET /v1/patients/{id}/summary: one pseudonymous patient's coded record and safety notes (clinician, audited)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy import func, select

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
