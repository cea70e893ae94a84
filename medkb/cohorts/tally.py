"""What a run's stored rows count (Circe's meanings): final persons and eras, and rule-mask counts by person and event.

Every query reads a table of ``cohort_entries``' shape under a condition: the stored run (``cohort_entries`` and its
run id) or one part of a split run (its scratch table, all rows). Everything counted is per person, so the tallies of
parts over disjoint persons add up to the run's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, case, func, literal, or_, select, type_coerce
from sqlalchemy.sql import ColumnElement, Select

from medkb.cohorts.definition import Definition
from medkb.kb.dates import day_number, least, plus_days
from medkb.kb.types import Day


@dataclass
class Tally:
    """Raw figures of a run (or part) for one set of enabled rules: mask → persons whose best entry has it, mask →
    entries with it, and the final cohort's persons and eras."""

    persons: int = 0
    eras: int = 0
    by_person: Counter[int] = field(default_factory=Counter)
    by_event: Counter[int] = field(default_factory=Counter)

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.persons + other.persons, self.eras + other.eras, self.by_person + other.by_person,
                     self.by_event + other.by_event)


def bits(x: ColumnElement[Any], enabled: list[int]) -> ColumnElement[Any]:
    """How many of the enabled rules the mask ``x`` meets."""
    terms = [case((x.op("&")(1 << i) != 0, 1), else_=0) for i in enabled]
    return sum(terms[1:], terms[0]) if terms else literal(0)


def min_rule(x: ColumnElement[Any], enabled: list[int]) -> ColumnElement[Any]:
    """The first enabled rule the mask ``x`` meets (0 if none): Circe's second key for a person's best entry."""
    if not enabled:
        return literal(0)
    return case(*[(x.op("&")(1 << i) != 0, seq) for seq, i in enumerate(enabled)], else_=0)


def mask_counts(t: Table, where: list[ColumnElement[bool]], enabled: list[int], by_person: bool) -> Select[Any]:
    """(mask over the enabled rules, persons or entries with it)."""
    full = sum(1 << i for i in enabled)
    em = t.c.mask.op("&")(full)
    if not by_person:
        return select(em.label("m"), func.sum(t.c.events)).where(*where).group_by(em)
    if len(enabled) <= 1:  # the best event is one meeting the rule if any: a per-person maximum, in index order
        best = select(func.max(em).label("m")).where(*where).group_by(t.c.patient_id).subquery()
        return select(best.c.m, func.count()).group_by(best.c.m)
    # Circe's best event per person: most rules met, then the earliest rule, then the earliest date
    ranked = select(em.label("m"), func.row_number().over(
        partition_by=t.c.patient_id,
        order_by=(bits(em, enabled).desc(), min_rule(em, enabled), t.c.start_date, t.c.event_id)
    ).label("rank")).where(*where).subquery()
    return select(ranked.c.m, func.count()).where(ranked.c.rank == 1).group_by(ranked.c.m)


def _eras(d: Definition, t: Table, where: list[ColumnElement[bool]], enabled: list[int]) -> Select[Any]:
    """(entry rows, their start dates and padded end dates) of the final cohort before era collapse."""
    full = sum(1 << i for i in enabled)
    cols: list[Any] = [t.c.patient_id.label("person_id"), t.c.start_date, t.c.end_date, t.c.op_end]
    if d.expression_limit != "All":
        order = t.c.start_date.desc() if d.expression_limit == "Last" else t.c.start_date.asc()
        cols.append(func.row_number().over(partition_by=t.c.patient_id, order_by=order).label("ordinal"))
    return select(*cols).where(*where, t.c.mask.op("&")(full) == full)


def final_cohort(d: Definition, t: Table, where: list[ColumnElement[bool]], enabled: list[int]) -> Select[Any]:
    """(person_id, start_date, end_date) of the cohort eras: rules met, expression limit, end strategy, era collapse."""
    inc = _eras(d, t, where, enabled).subquery("inc")
    end = _end(d, inc)
    rows = select(inc.c.person_id, inc.c.start_date, type_coerce(plus_days(end, d.era_pad), Day()).label("end_date")) \
        .where(end >= inc.c.start_date)
    if d.expression_limit != "All":
        rows = rows.where(inc.c.ordinal == 1)
    cr = rows.subquery("cr")
    st = select(cr, case((func.max(cr.c.end_date).over(partition_by=cr.c.person_id, order_by=cr.c.start_date,
                                                       rows=(None, -1)) >= cr.c.start_date, 0), else_=1)
                .label("is_start")).subquery("st")
    gr = select(st, func.sum(st.c.is_start).over(partition_by=st.c.person_id,
                                                 order_by=(st.c.start_date, st.c.is_start.desc()),
                                                 rows=(None, 0)).label("grp")).subquery("gr")
    return select(gr.c.person_id, func.min(gr.c.start_date).label("start_date"),
                  type_coerce(plus_days(func.max(gr.c.end_date), -d.era_pad), Day()).label("end_date")) \
        .group_by(gr.c.person_id, gr.c.grp)


def _end(d: Definition, inc: Any, days: bool = False) -> ColumnElement[Any]:
    """The end strategy: a date offset capped at the observation period's end, else that end; with ``days`` as a
    day number (``day_number``: the offset is then an addition, not a DATE_ADD per row; SQLite stores day numbers)."""
    at: Any = day_number if days else (lambda c: c)
    period_end = at(inc.c.op_end)
    if d.end_offset is None:
        return period_end
    field, offset = d.end_offset
    # least(): the offset date computed once per row (a CASE computes it twice)
    return least(at(inc.c[field]) + offset if days else plus_days(inc.c[field], offset), period_end)


def final_counts(d: Definition, t: Table, where: list[ColumnElement[bool]], enabled: list[int]) -> Select[Any]:
    """(persons, eras) of the final cohort in one pass: an era starts where no earlier entry of the person
    reaches its start date (padded ends), so eras are counted without being built (``final_cohort`` builds them)."""
    if d.expression_limit != "All":  # one entry per person: one era each
        inc = _eras(d, t, where, enabled).subquery("inc")
        one = select(inc.c.person_id).where(inc.c.ordinal == 1, _end(d, inc) >= inc.c.start_date).subquery()
        return select(func.count(), func.count()).select_from(one)
    end = _end(d, t, days=True)  # the padded end an addition, not a date computation per row
    full = sum(1 << i for i in enabled)
    rows = select(t.c.patient_id, t.c.start_date, day_number(t.c.start_date).label("start"), end.label("end")) \
        .where(*where, t.c.mask.op("&")(full) == full).subquery("rows")
    prev = select(func.max(rows.c.end + d.era_pad).over(partition_by=rows.c.patient_id,
                                                         order_by=rows.c.start_date, rows=(None, -1)).label("prev"),
                  rows.c.start).where(rows.c.end >= rows.c.start).subquery("prev")
    first = case((prev.c.prev.is_(None), 1), else_=0)
    starts = case((or_(prev.c.prev.is_(None), prev.c.prev < prev.c.start), 1), else_=0)
    return select(func.coalesce(func.sum(first), 0), func.coalesce(func.sum(starts), 0))


def tally(conn: Connection, d: Definition, t: Table, where: list[ColumnElement[bool]], enabled: list[int]) -> Tally:
    """The run's (or part's) figures for the enabled rules, read from its stored rows."""
    persons, eras = conn.execute(final_counts(d, t, where, enabled)).one()
    out = Tally(int(persons), int(eras))
    if enabled:
        for by_person, into in ((True, out.by_person), (False, out.by_event)):
            into.update({int(k): int(n) for k, n in conn.execute(mask_counts(t, where, enabled, by_person))})
        return out
    # every mask counts as 0: one pass gives both attrition bases, grouped in the rows' (person, …) order (a
    # count(DISTINCT) sorted them again: era_pad x100, 0.13 s a part)
    per = select(func.sum(t.c.events).label("events")).where(*where).group_by(t.c.patient_id).subquery("per")
    events, people = conn.execute(select(func.coalesce(func.sum(per.c.events), 0), func.count())).one()
    out.by_person.update({0: int(people)} if people else {})
    out.by_event.update({0: int(events)} if events else {})
    return out


__all__ = ["Tally", "bits", "min_rule", "mask_counts", "final_cohort", "final_counts", "tally"]
