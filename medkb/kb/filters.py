"""The one filter object every generator honours, and its translation into a SQL WHERE clause."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, or_, true

from medkb.kb.models import PUBLIC_TENANT, Document, Source


@dataclass(frozen=True)
class SearchFilters:
    """What a query may see. Frozen (hashable) so a filter can key a cache.

    ``tenant_id`` sees its own rows and the public tenant's. Record notes are visible only when
    ``patient_id`` names their patient (patient scope); other patients' notes never are.
    """

    tenant_id: str = PUBLIC_TENANT
    doc_types: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    languages: tuple[str, ...] | None = None
    include_superseded: bool = False
    effective_from: dt.date | None = None
    effective_to: dt.date | None = None
    patient_id: str | None = None
    specialties: tuple[str, ...] | None = None

    def visible_tenants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.tenant_id, PUBLIC_TENANT)))


def document_clause(f: SearchFilters) -> ColumnElement[bool]:
    """WHERE clause over ``documents`` (join ``sources`` when ``f.sources`` is set)."""
    conds: list[ColumnElement[bool]] = [Document.tenant_id.in_(f.visible_tenants())]
    if not f.include_superseded:
        conds.append(Document.superseded.is_(False))
    if f.doc_types is not None:
        conds.append(Document.doc_type.in_(f.doc_types) if f.doc_types else false())
    if f.languages:
        conds.append(Document.language.in_(f.languages))
    if f.specialties:
        conds.append(Document.specialty.in_(f.specialties))
    if f.effective_from is not None:
        conds.append(or_(Document.effective_date.is_(None), Document.effective_date >= f.effective_from))
    if f.effective_to is not None:
        conds.append(or_(Document.effective_date.is_(None), Document.effective_date <= f.effective_to))
    if f.sources:
        conds.append(
            Document.source_id.in_(
                Source.__table__.select()
                .with_only_columns(Source.id)
                .where(Source.name.in_(f.sources), Source.tenant_id.in_(f.visible_tenants()))
                .scalar_subquery()
            )
        )
    # Patient scope: non-record documents always; a record note only for the patient in scope,
    # and only inside the caller's own tenant.
    patient_scope = (
        and_(Document.patient_id == f.patient_id, Document.tenant_id == f.tenant_id)
        if f.patient_id
        else false()
    )
    conds.append(or_(Document.patient_id.is_(None), patient_scope))
    return and_(true(), *conds)
