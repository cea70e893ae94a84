"""Circe's cohort logic as SQLAlchemy Core SELECTs over the record tables and a run's temporary tables, tenant-scoped."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import (
    BigInteger, Column, String, and_, case, exists, func, literal, or_, select, type_coerce, union_all,
)
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import FromClause

from medkb.cohorts.concepts import Codes
from medkb.cohorts.definition import Correlated, Criterion, Definition, Demographic, Endpoint, Group, NumericRange
from medkb.kb import models as m
from medkb.kb.types import Day
from medkb.kb.dates import date_add, day_number, greatest, least, plus_days, year_of
from medkb.kb.temp_tables import in_written_order, ordered_join, outer_key

# domain → (table, start column, stop column or None: without a stop the end date is the day after the start)
_DOMAINS: dict[str, tuple[Any, str, str | None]] = {
    "condition": (m.Condition.__table__, "start", "stop"),
    "drug": (m.Medication.__table__, "start", "stop"),
    "procedure": (m.Procedure.__table__, "performed", None),
    "measurement": (m.Observation.__table__, "effective", None),
    "observation": (m.Observation.__table__, "effective", None),
    "visit": (m.Encounter.__table__, "start", "stop"),
}
IN_CHUNK = 500  # values per IN list (one statement each), within every backend's parameter limits


# Column layouts of the run's temporary tables (fresh Column objects per table).
def event_columns() -> list[Column[Any]]:
    """A criterion's events: Circe's (person_id, start_date, end_date, sort_id)."""
    return [Column("person_id", String(64)), Column("start_date", Day()), Column("end_date", Day()),
            Column("sort_id", BigInteger)]


def qualified_columns() -> list[Column[Any]]:
    """Entry or qualified events: event_id is the entry's rank within its person."""
    return [Column("event_id", BigInteger), Column("person_id", String(64)), Column("start_date", Day()),
            Column("end_date", Day()), Column("op_start", Day()), Column("op_end", Day())]


def _chunks(values: list[Any]) -> list[list[Any]]:
    return [values[i:i + IN_CHUNK] for i in range(0, len(values), IN_CHUNK)]


Persons = tuple[str | None, str | None]  # person ids from (inclusive) .. to (exclusive); None: unbounded
ALL_PERSONS: Persons = (None, None)


def _in(col: ColumnElement[Any], persons: Persons) -> list[ColumnElement[bool]]:
    lo, hi = persons
    return ([col >= lo] if lo is not None else []) + ([col < hi] if hi is not None else [])


def criterion_selects(c: Criterion, tenant: str, codesets: dict[int, Codes],
                      persons: Persons = ALL_PERSONS) -> list[Select[Any]]:
    """A criterion's events (before ``First``) as disjoint SELECTs, each able to use the (tenant, concept, …) or
    (tenant, system, code, …) index: a row matches by its OMOP concept id, or, when it has none, by its code. Only the
    events of ``persons`` (a part of a run split by person: every later step works per person)."""
    if c.domain == "death":
        p = m.Patient.__table__
        return [select(p.c.id.label("person_id"), p.c.death_date.label("start_date"),
                       date_add(p.c.death_date, 1).label("end_date"), literal(0, BigInteger).label("sort_id"))
                .where(p.c.tenant_id == tenant, p.c.death_date.is_not(None), *_in(p.c.id, persons))]
    if c.domain == "observation_period":
        op = m.ObservationPeriod.__table__
        return [select(op.c.patient_id.label("person_id"), op.c.start.label("start_date"),
                       op.c.stop.label("end_date"), op.c.id.label("sort_id"))
                .where(op.c.tenant_id == tenant, *_in(op.c.patient_id, persons))]
    t, start_col, stop_col = _DOMAINS[c.domain]
    start = t.c[start_col]
    end: ColumnElement[Any] = date_add(start, 1)
    if stop_col is not None:
        end = func.coalesce(t.c[stop_col], end)
    base = select(t.c.patient_id.label("person_id"), start.label("start_date"),
                  type_coerce(end, Day()).label("end_date"), t.c.id.label("sort_id")) \
        .where(t.c.tenant_id == tenant, start.is_not(None), *_in(t.c.patient_id, persons))
    if c.domain in ("measurement", "observation"):
        base = base.where(t.c.domain == c.domain)
    if c.codeset_id is None:
        return [base]
    codes = codesets.get(c.codeset_id, Codes())
    ids = sorted(codes.concept_ids)
    out = [base.where(t.c.concept_id.in_(chunk)) for chunk in _chunks(ids)]
    by_system: dict[str, list[str]] = defaultdict(list)
    for system, code in sorted(codes.pairs):
        by_system[system].append(code)
    for system, code_list in by_system.items():
        q = base.where(t.c.code_system == system)
        if ids:  # a row with a concept id is matched by it alone
            q = q.where(t.c.concept_id.is_(None))
        out += [q.where(t.c.code.in_(chunk)) for chunk in _chunks(code_list)]
    return out


def first_events(src: FromClause) -> Select[Any]:
    """Each person's first event in all their history (Circe's ``First`` on a criterion)."""
    inner = select(src, func.row_number().over(partition_by=src.c.person_id,
                                               order_by=(src.c.start_date, src.c.sort_id)).label("ordinal")).subquery()
    return select(inner.c.person_id, inner.c.start_date, inner.c.end_date, inner.c.sort_id).where(inner.c.ordinal == 1)


_ID_SPAN = 1 << 40  # above any record row id: (start day number, row id) as one integer, ordered as the pair


def first_by_key(src: FromClause) -> Select[Any]:
    """``first_events`` on SQLite (dates are day numbers): each person's smallest (start date, row id) as one
    integer by a GROUP BY, the event's columns read from the min()'s row (SQLite's bare columns), instead of a
    window over every event. LIMIT -1 keeps the min() in the query: flattened away, the bare columns would be
    any row's."""
    first = select(src.c.person_id, src.c.start_date, src.c.end_date, src.c.sort_id,
                   func.min(day_number(src.c.start_date) * _ID_SPAN + src.c.sort_id)) \
        .group_by(src.c.person_id).limit(-1).subquery("first")
    return select(first.c.person_id, first.c.start_date, first.c.end_date, first.c.sort_id)


def entry_candidates(d: Definition, tenant: str, src: FromClause, pos: int) -> Select[Any]:
    """A primary criterion's events inside an observation period with the required prior/post days.

    ``event_id`` identifies the event within its person: the source row id, made unique across the primary
    criteria by ``pos``; it keeps Circe's tie-break order (start date, then row id) among same-day events."""
    op = m.ObservationPeriod.__table__
    n = len(d.primary)
    return in_written_order(select((src.c.sort_id * n + pos).label("event_id"), src.c.person_id, src.c.start_date, src.c.end_date,
                  op.c.start.label("op_start"), op.c.stop.label("op_end")) \
        .join(op, and_(op.c.tenant_id == tenant, op.c.patient_id == outer_key(src.c.person_id),
                       *_in_window(d, op, src.c.start_date))))


def _in_window(d: Definition, op: Any, start: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    """An event starting on ``start`` is an entry candidate in the period ``op``: inside it, with the observation
    window's prior and post days."""
    return [start >= op.c.start, start <= op.c.stop, plus_days(op.c.start, d.prior_days) <= start,
            plus_days(start, d.post_days) <= op.c.stop]


def _first_per_person(src: FromClause, *order: ColumnElement[Any]) -> Select[Any]:
    """Each person's first event of ``src`` (qualified columns) in ``order``: a limit to one event per person."""
    p = select(src, func.row_number().over(partition_by=src.c.person_id, order_by=order).label("ordinal")) \
        .subquery("p")
    return select(p.c.event_id, p.c.person_id, p.c.start_date, p.c.end_date, p.c.op_start, p.c.op_end) \
        .where(p.c.ordinal == 1)


def limited_entries(d: Definition, cand: FromClause) -> Select[Any]:
    """The primary limit (``First``/``Last``) over all entry candidates: one event per person."""
    order = cand.c.start_date.desc() if d.primary_limit == "Last" else cand.c.start_date.asc()
    return _first_per_person(cand, order, cand.c.event_id)


def limit_dates(d: Definition, entries: list[FromClause]) -> Select[Any]:
    """Each person's first (``First``) or last (``Last``) start date over ``entries`` (a criterion's sources, or
    entry candidates): a GROUP BY per source, which streams in its record index's (person, date) order (no sort)."""
    agg = func.max if d.primary_limit == "Last" else func.min
    per = [select(e.c.person_id, agg(e.c.start_date).label("start_date")).group_by(e.c.person_id) for e in entries]
    if len(per) == 1:
        return per[0]
    u = union_all(*per).subquery("per_source")
    return select(u.c.person_id, agg(u.c.start_date)).group_by(u.c.person_id)


def window_holds(d: Definition, tenant: str, x: FromClause) -> ColumnElement[bool]:
    """Whether the person of ``x`` has an observation period in which an event on ``x``'s date is an entry
    candidate (``entry_candidates``' conditions)."""
    op = m.ObservationPeriod.__table__
    # SELECT start, not EXISTS (SELECT *): SQLite then reads the period index alone (covering)
    return select(op.c.start).where(op.c.tenant_id == tenant, op.c.patient_id == x.c.person_id,
                                    *_in_window(d, op, x.c.start_date)).exists()


def limit_dates_from(d: Definition, tenant: str, extremes: FromClause, probed: list[FromClause]) -> Select[Any]:
    """``limit_dates`` from each person's extreme event date (``extremes``: ``limit_dates`` of the criteria's
    sources). Where that event is an entry candidate it is the extreme candidate, so one period probe per person
    settles it; only the other persons' entry candidates (``probed``: no person range) are read, through their index
    by person. procedure_last at x100: 1.75M events joined to their periods one by one (1.3 s CPU) against 29k
    person probes."""
    held = select(extremes.c.person_id, extremes.c.start_date).where(window_holds(d, tenant, extremes))
    others = select(extremes.c.person_id).where(~window_holds(d, tenant, extremes)).subquery("others")
    rest = [select(e).select_from(ordered_join(others, e, e.c.person_id == others.c.person_id)).subquery()
            for e in probed]
    return select(union_all(held, limit_dates(d, rest)).subquery("limit_dates"))


def limit_date_columns() -> list[Column[Any]]:
    return [Column("person_id", String(64)), Column("start_date", Day())]


def limited_by_date(entries: list[FromClause], dates: FromClause) -> Select[Any]:
    """``limited_entries`` without writing or sorting the candidates (SQLite): only the candidates on the person's
    limit date (``limit_dates``), found by probing each source's record index with (person, date), ranked by
    event id (Circe's tie-break after the date)."""
    ties = [select(e).select_from(ordered_join(dates, e, and_(e.c.person_id == dates.c.person_id,
                                                              e.c.start_date == dates.c.start_date)))
            for e in entries]
    t = ties[0].subquery("ties") if len(ties) == 1 else union_all(*ties).subquery("ties")
    return _first_per_person(t, t.c.event_id)


def qualified_limit(d: Definition, pe: FromClause) -> Select[Any]:
    """The qualified limit (``First``/``Last``) over the entry events that met the additional criteria."""
    return _first_per_person(pe, pe.c.start_date.desc() if d.qualified_limit == "Last" else pe.c.start_date.asc())


def _point(ep: Endpoint, index: ColumnElement[Any], ev: Any, check_op: bool) -> ColumnElement[Any] | None:
    if ep.days is not None:
        return plus_days(index, ep.coeff * ep.days)
    if check_op:
        return ev.c.op_start if ep.coeff == -1 else ev.c.op_end
    return None


def correlated_test(cc: Correlated, ev: FromClause, a: FromClause) -> ColumnElement[bool]:
    """Whether an event of ``ev`` has the required number of ``a`` events in the window: a correlated probe of
    ``a``'s (person, date) index per event, evaluated in the pass that reads the events (no table of keys)."""
    check_op = not cc.ignore_observation_period
    conds: list[ColumnElement[bool]] = [a.c.person_id == ev.c.person_id]
    w = cc.window
    index = ev.c.end_date if w.use_index_end else ev.c.start_date
    lo, hi = _point(w.start, index, ev, check_op), _point(w.end, index, ev, check_op)
    if check_op and not w.use_event_end:
        # Period and window both bound the start date: one range, the tighter bound on each side. Given as
        # separate bounds, the index range used only one of them (SQLite took the period's) and every event of
        # the person in the period was read and filtered per probe (5x more at Eunomia x10).
        lo = ev.c.op_start if w.start.days is None else greatest(lo, ev.c.op_start)
        hi = ev.c.op_end if w.end.days is None else least(hi, ev.c.op_end)
    elif check_op:
        conds += [a.c.start_date >= ev.c.op_start, a.c.start_date <= ev.c.op_end]
    event_date = a.c.end_date if w.use_event_end else a.c.start_date
    if lo is not None:
        conds.append(event_date >= lo)
    if hi is not None:
        conds.append(event_date <= hi)
    if (cc.occurrence, cc.count) in ((">=", 1), ("<=", 0), ("=", 0)):  # a semi-join stops at the first match
        found = exists().where(*conds)
        return found if cc.count else ~found
    n = select(func.count()).where(*conds).scalar_subquery()
    return {"=": n == cc.count, "<=": n <= cc.count, ">=": n >= cc.count}[cc.occurrence]


def _range(expr: ColumnElement[Any], r: NumericRange) -> ColumnElement[bool]:
    v, x = r.value, r.extent
    return {"gt": lambda: expr > v, "gte": lambda: expr >= v, "lt": lambda: expr < v, "lte": lambda: expr <= v,
            "eq": lambda: expr == v, "bt": lambda: and_(expr >= v, expr <= x),
            "!bt": lambda: ~and_(expr >= v, expr <= x)}[r.op]()


def demographic_test(dc: Demographic, ev: FromClause, tenant: str) -> ColumnElement[bool]:
    p = m.Patient.__table__
    conds: list[ColumnElement[bool]] = [p.c.id == ev.c.person_id, p.c.tenant_id == tenant]
    if dc.age is not None:
        conds.append(_range(year_of(ev.c.start_date) - p.c.birth_year, dc.age))
    if dc.genders:
        conds.append(p.c.sex.in_(dc.genders))
    return exists().where(*conds)


def group_test(g: Group, parts: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """Whether an event meets the group, from whether it meets each part (Circe's HAVING COUNT(index_id))."""
    if g.type == "ALL":
        return and_(*parts)
    if g.type == "ANY":
        return or_(*parts)
    met = sum((case((p, 1), else_=0) for p in parts[1:]), case((parts[0], 1), else_=0))
    return met >= (g.count or 0) if g.type == "AT_LEAST" else met <= (g.count or 0)
