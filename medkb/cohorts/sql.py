"""Circe's cohort logic as SQLAlchemy Core: entry events, correlated criteria, groups and rule masks, tenant-scoped."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    type_coerce,
    Date, Integer, and_, case, cast, false, func, literal, or_, select, tuple_, union_all,
)
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import CTE, Subquery

from medkb.cohorts.concepts import Codes
from medkb.cohorts.definition import Correlated, Criterion, Definition, Demographic, Endpoint, Group, NumericRange
from medkb.kb import models as m
from medkb.kb.dates import date_add, year_of

# domain → (table, start column, stop column or None, day added for the end date when there is no stop)
_DOMAINS: dict[str, tuple[Any, str, str | None]] = {
    "condition": (m.Condition.__table__, "start", "stop"),
    "drug": (m.Medication.__table__, "start", "stop"),
    "procedure": (m.Procedure.__table__, "performed", None),
    "measurement": (m.Observation.__table__, "effective", None),
    "observation": (m.Observation.__table__, "effective", None),
    "visit": (m.Encounter.__table__, "start", "stop"),
}
PAIRS_CHUNK = 400  # (system, code) pairs per IN list, within every backend's parameter limits


def _match(t: Any, codes: Codes) -> ColumnElement[bool]:
    """Rows carrying one of the OMOP concept ids, or (without a concept id) one of the codes."""
    parts: list[ColumnElement[bool]] = []
    if codes.concept_ids:
        parts.append(t.c.concept_id.in_(sorted(codes.concept_ids)))
    if codes.pairs:
        pairs = sorted(codes.pairs)
        by_code = or_(*(tuple_(t.c.code_system, t.c.code).in_(pairs[i:i + PAIRS_CHUNK])
                        for i in range(0, len(pairs), PAIRS_CHUNK)))
        parts.append(and_(t.c.concept_id.is_(None), by_code) if codes.concept_ids else by_code)
    return or_(*parts) if parts else false()


def criterion_events(c: Criterion, tenant: str, codesets: dict[int, Codes]) -> Subquery:
    """(person_id, start_date, end_date, sort_id) of one criterion's events, with Circe's end dates."""
    if c.domain == "death":
        p = m.Patient.__table__
        q = select(p.c.id.label("person_id"), p.c.death_date.label("start_date"),
                   date_add(p.c.death_date, 1).label("end_date"), literal(0).label("sort_id")) \
            .where(p.c.tenant_id == tenant, p.c.death_date.is_not(None))
    elif c.domain == "observation_period":
        op = m.ObservationPeriod.__table__
        q = select(op.c.patient_id.label("person_id"), op.c.start.label("start_date"), op.c.stop.label("end_date"),
                   op.c.id.label("sort_id")).where(op.c.tenant_id == tenant)
    else:
        t, start_col, stop_col = _DOMAINS[c.domain]
        start = t.c[start_col]
        end: ColumnElement[Any] = date_add(start, 1)
        if stop_col is not None:
            end = func.coalesce(t.c[stop_col], end)
        q = select(t.c.patient_id.label("person_id"), start.label("start_date"), type_coerce(end, Date).label("end_date"),
                   t.c.id.label("sort_id")).where(t.c.tenant_id == tenant, start.is_not(None))
        if c.domain in ("measurement", "observation"):
            q = q.where(t.c.domain == c.domain)
        if c.codeset_id is not None:
            q = q.where(_match(t, codesets.get(c.codeset_id, Codes())))
    if c.first:  # the person's first such event in all their history, before any other filter
        base = q.subquery()
        inner = select(base, func.row_number().over(partition_by=base.c.person_id,
                                                    order_by=(base.c.start_date, base.c.sort_id)).label("ordinal")
                       ).subquery()
        q = select(inner.c.person_id, inner.c.start_date, inner.c.end_date, inner.c.sort_id).where(inner.c.ordinal == 1)
    return q.subquery()


def primary_events(d: Definition, tenant: str, codesets: dict[int, Codes]) -> CTE:
    """Entry events inside an observation period with the required prior/post days; event_id is the per-person rank."""
    parts = [select(*criterion_events(c, tenant, codesets).c) for c in d.primary]
    e = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("e")
    op = m.ObservationPeriod.__table__
    order = e.c.start_date.desc() if d.primary_limit == "Last" else e.c.start_date.asc()
    p = select(e.c.person_id, e.c.start_date, e.c.end_date, op.c.start.label("op_start"), op.c.stop.label("op_end"),
               func.row_number().over(partition_by=e.c.person_id, order_by=(order, e.c.sort_id)).label("ordinal")) \
        .join(op, and_(op.c.patient_id == e.c.person_id, op.c.tenant_id == tenant, e.c.start_date >= op.c.start,
                       e.c.start_date <= op.c.stop)) \
        .where(date_add(op.c.start, d.prior_days) <= e.c.start_date,
               date_add(e.c.start_date, d.post_days) <= op.c.stop).subquery("p")
    q = select(p.c.ordinal.label("event_id"), p.c.person_id, p.c.start_date, p.c.end_date, p.c.op_start, p.c.op_end)
    if d.primary_limit != "All":
        q = q.where(p.c.ordinal == 1)
    return q.cte("primary_events")


def qualified_events(d: Definition, tenant: str, codesets: dict[int, Codes]) -> CTE:
    pe = primary_events(d, tenant, codesets)
    q: Select[Any] = select(pe)
    if d.additional is not None and not d.additional.is_empty():
        ac = group_query(d.additional, pe, tenant, codesets).subquery("ac")
        q = q.join(ac, and_(ac.c.person_id == pe.c.person_id, ac.c.event_id == pe.c.event_id))
        if d.qualified_limit != "All":  # Circe applies the qualified limit only with additional criteria
            order = pe.c.start_date.desc() if d.qualified_limit == "Last" else pe.c.start_date.asc()
            inner = q.add_columns(func.row_number().over(partition_by=pe.c.person_id, order_by=order)
                                  .label("qordinal")).subquery("qe")
            q = select(inner.c.event_id, inner.c.person_id, inner.c.start_date, inner.c.end_date, inner.c.op_start,
                       inner.c.op_end).where(inner.c.qordinal == 1)
    return q.cte("qualified_events")


def _point(ep: Endpoint, index: ColumnElement[Any], ev: Any, check_op: bool) -> ColumnElement[Any] | None:
    if ep.days is not None:
        return date_add(index, ep.coeff * ep.days)
    if check_op:
        return ev.c.op_start if ep.coeff == -1 else ev.c.op_end
    return None


def _correlated(cc: Correlated, ev: Any, tenant: str, codesets: dict[int, Codes]) -> Select[Any]:
    a = criterion_events(cc.criterion, tenant, codesets)
    check_op = not cc.ignore_observation_period
    conds: list[ColumnElement[bool]] = [a.c.person_id == ev.c.person_id]
    if check_op:
        conds += [a.c.start_date >= ev.c.op_start, a.c.start_date <= ev.c.op_end]
    w = cc.window
    index = ev.c.end_date if w.use_index_end else ev.c.start_date
    event_date = a.c.end_date if w.use_event_end else a.c.start_date
    lo, hi = _point(w.start, index, ev, check_op), _point(w.end, index, ev, check_op)
    if lo is not None:
        conds.append(event_date >= lo)
    if hi is not None:
        conds.append(event_date <= hi)
    windowed = select(ev.c.person_id, ev.c.event_id, a.c.sort_id).join(a, and_(*conds)).subquery("w")
    op = {"=": "__eq__", "<=": "__le__", ">=": "__ge__"}[cc.occurrence]
    if cc.occurrence == "<=" or cc.count == 0:  # persons with no matching event count too
        q = select(ev.c.person_id, ev.c.event_id).outerjoin(
            windowed, and_(windowed.c.person_id == ev.c.person_id, windowed.c.event_id == ev.c.event_id))
        return q.group_by(ev.c.person_id, ev.c.event_id).having(getattr(func.count(windowed.c.event_id), op)(cc.count))
    return select(windowed.c.person_id, windowed.c.event_id).group_by(windowed.c.person_id, windowed.c.event_id) \
        .having(getattr(func.count(windowed.c.event_id), op)(cc.count))


def _range(expr: ColumnElement[Any], r: NumericRange) -> ColumnElement[bool]:
    v, x = r.value, r.extent
    return {"gt": lambda: expr > v, "gte": lambda: expr >= v, "lt": lambda: expr < v, "lte": lambda: expr <= v,
            "eq": lambda: expr == v, "bt": lambda: and_(expr >= v, expr <= x),
            "!bt": lambda: ~and_(expr >= v, expr <= x)}[r.op]()


def _demographic(dc: Demographic, ev: Any, tenant: str) -> Select[Any]:
    p = m.Patient.__table__
    conds: list[ColumnElement[bool]] = [p.c.id == ev.c.person_id, p.c.tenant_id == tenant]
    if dc.age is not None:
        conds.append(_range(year_of(ev.c.start_date) - p.c.birth_year, dc.age))
    if dc.genders:
        conds.append(p.c.sex.in_(dc.genders))
    return select(ev.c.person_id, ev.c.event_id).join(p, and_(*conds)).group_by(ev.c.person_id, ev.c.event_id)


def group_query(g: Group, ev: Any, tenant: str, codesets: dict[int, Codes]) -> Select[Any]:
    """(person_id, event_id) of the events in ``ev`` that satisfy the group (Circe's HAVING COUNT(index_id))."""
    if g.is_empty():
        return select(ev.c.person_id, ev.c.event_id)
    parts = [_correlated(c, ev, tenant, codesets) for c in g.criteria]
    parts += [_demographic(dc, ev, tenant) for dc in g.demographics]
    parts += [group_query(sub, ev, tenant, codesets) for sub in g.groups]
    tagged = []
    for i, q in enumerate(parts):
        sq = q.subquery()
        tagged.append(select(literal(i, Integer).label("index_id"), sq.c.person_id, sq.c.event_id))
    cq = (tagged[0] if len(tagged) == 1 else union_all(*tagged)).subquery("cq")
    n = len(parts)
    left = g.type == "AT_MOST" or (g.type.startswith("AT_") and g.count == 0)
    on = and_(cq.c.person_id == ev.c.person_id, cq.c.event_id == ev.c.event_id)
    q = select(ev.c.person_id, ev.c.event_id)
    q = q.outerjoin(cq, on) if left else q.join(cq, on)
    cnt = func.count(cq.c.index_id)
    having = {"ALL": cnt == n, "ANY": cnt > 0, "AT_LEAST": cnt >= (g.count or 0), "AT_MOST": cnt <= (g.count or 0)}
    return q.group_by(ev.c.person_id, ev.c.event_id).having(having[g.type])


def masked_events(d: Definition, tenant: str, codesets: dict[int, Codes]) -> Select[Any]:
    """Every qualified event with the bit mask of the inclusion rules it satisfies."""
    qe = qualified_events(d, tenant, codesets)
    q = select(qe.c.person_id, qe.c.event_id, qe.c.start_date, qe.c.end_date, qe.c.op_start, qe.c.op_end)
    bits: list[ColumnElement[Any]] = []
    for i, rule in enumerate(d.rules):
        r = group_query(rule.group, qe, tenant, codesets).subquery(f"r{i}")
        q = q.outerjoin(r, and_(r.c.person_id == qe.c.person_id, r.c.event_id == qe.c.event_id))
        bits.append(case((r.c.person_id.is_not(None), literal(1 << i)), else_=literal(0)))
    mask: ColumnElement[Any] = sum(bits[1:], bits[0]) if bits else literal(0)
    return q.add_columns(cast(mask, Integer).label("mask")) if bits else q.add_columns(literal(0).label("mask"))

