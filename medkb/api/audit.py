"""Append-only audit rows for every access to patient data; where the database enforces it: see ``record``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from medkb.api.auth import Principal
from medkb.kb import models as m
from medkb.kb.store import KnowledgeStore


def record(
    store: KnowledgeStore, who: Principal, action: str, *, endpoint: str, patient_id: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit row in its own transaction, before the data is handed out.

    The database refuses UPDATE and DELETE on ``audit_log`` through triggers on SQLite, MySQL and
    MariaDB; TiDB has no triggers, so there it holds only when medkb connects as the restricted
    application user ``medkb init --app-user`` creates (INSERT and SELECT on audit_log only).
    """
    with store.engine.begin() as c:
        c.execute(m.AuditLog.__table__.insert().values(
            tenant_id=who.tenant_id, at=dt.datetime.now(dt.UTC).replace(tzinfo=None), actor=who.key_id,
            role=who.role, action=action, endpoint=endpoint, patient_id=patient_id, detail=detail or {},
        ))


def rows(store: KnowledgeStore, tenant_id: str, patient_id: str | None = None) -> list[dict[str, Any]]:
    t = m.AuditLog.__table__
    q = select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.at, t.c.id)  # ids are not monotonic on TiDB
    if patient_id:
        q = q.where(t.c.patient_id == patient_id)
    with store.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(q)]
