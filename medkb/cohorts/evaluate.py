"""One cohort run evaluated set-at-a-time into indexed temporary tables: criteria, entry and qualified events, groups.

Every intermediate set is materialised once and indexed for the join that reads it — criterion events by (person,
date), event keys by (person, event) — so each correlated criterion is an index range lookup per event instead of a
join against an unindexed derived table, and each statement names a temporary table at most once (MySQL's rule)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, and_, case, cast, literal, select
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import FromClause

from medkb.cohorts import sql
from medkb.cohorts.concepts import Codes
from medkb.cohorts.definition import Criterion, Definition, Group
from medkb.kb.temp_tables import TempTables


class Evaluation:
    """The temporary tables of one run; ``masked_events()`` is the SELECT of every qualified event with its rule mask."""

    def __init__(self, tmp: TempTables, d: Definition, tenant: str, codesets: dict[int, Codes]) -> None:
        self.tmp, self.d, self.tenant, self.codesets = tmp, d, tenant, codesets
        self._criteria: dict[tuple[str, int | None, bool], FromClause] = {}

    def criterion(self, c: Criterion, index: bool = True) -> FromClause:
        """The criterion's events, indexed by (person, start date); one table per distinct criterion."""
        key = (c.domain, c.codeset_id, c.first)
        if key not in self._criteria:
            raw = self.tmp.new(sql.event_columns())
            for q in sql.criterion_selects(c, self.tenant, self.codesets):
                self.tmp.fill(raw, q)
            self._criteria[key] = self.tmp.new(sql.event_columns(), sql.first_events(raw)) if c.first else raw
        t = self._criteria[key]
        if index and not t.indexes:  # type: ignore[attr-defined]
            self.tmp.index(t, "person_id", "start_date")  # type: ignore[arg-type]
        return t

    def _sources(self, c: Criterion) -> list[FromClause]:
        """Where a primary criterion's events are read: straight from the record tables' covering indexes, or
        (``First``, or a criterion the rules read too) its temporary table."""
        key = (c.domain, c.codeset_id, c.first)
        if c.first or key in self._criteria:
            return [self.criterion(c, index=False)]
        return [q.subquery() for q in sql.criterion_selects(c, self.tenant, self.codesets)]

    def group(self, g: Group, ev: FromClause) -> FromClause:
        """Keys (person_id, event_id) of the events of ``ev`` meeting the group; ``ev`` itself for an empty group."""
        if g.is_empty():
            return ev
        cq = self.tmp.new(sql.tagged_columns())
        i = 0
        for cc in g.criteria:
            self.tmp.fill(cq, sql.correlated_part(cc, ev, self.criterion(cc.criterion), i))
            i += 1
        for dc in g.demographics:
            self.tmp.fill(cq, sql.demographic_part(dc, ev, self.tenant, i))
            i += 1
        for sub in g.groups:
            s = self.group(sub, ev)
            self.tmp.fill(cq, select(literal(i, Integer), s.c.person_id, s.c.event_id))
            i += 1
        if sql.single_part(g) or sql.keeps_unmatched(g):
            self.tmp.index(cq, "person_id", "event_id")
        if sql.single_part(g):  # the part's keys are the result: no second pass
            return cq
        return self.tmp.new(sql.key_columns(), sql.group_result(g, ev, cq), index=("person_id", "event_id"))

    def qualified(self) -> FromClause:
        d = self.d
        pe = self.tmp.new(sql.qualified_columns())
        cand = pe if d.primary_limit == "All" else self.tmp.new(sql.qualified_columns())
        for pos, c in enumerate(d.primary):
            for src in self._sources(c):
                self.tmp.fill(cand, sql.entry_candidates(d, self.tenant, src, pos))
        if cand is not pe:
            self.tmp.fill(pe, sql.limited_entries(d, cand))
        self.tmp.index(pe, "person_id", "event_id")
        if d.additional is None or d.additional.is_empty():
            return pe
        passed = self.group(d.additional, pe)
        return self.tmp.new(sql.qualified_columns(), sql.qualified_events(d, pe, passed),
                            index=("person_id", "event_id"))

    def masked_events(self) -> list[Select[Any]]:
        """Every qualified event with the bit mask of the inclusion rules it satisfies, as SELECTs to store."""
        d = self.d
        if not d.rules and (d.additional is None or d.additional.is_empty()) and d.primary_limit == "All":
            # Nothing reads the entry events but the store: they go there straight from the record indexes.
            return [select(e.c.person_id, e.c.event_id, e.c.start_date, e.c.end_date, e.c.op_start, e.c.op_end,
                           literal(0).label("mask"))
                    for pos, c in enumerate(d.primary) for src in self._sources(c)
                    for e in [sql.entry_candidates(d, self.tenant, src, pos).subquery()]]
        qe = self.qualified()
        q = select(qe.c.person_id, qe.c.event_id, qe.c.start_date, qe.c.end_date, qe.c.op_start, qe.c.op_end)
        bits: list[ColumnElement[Any]] = []
        for i, rule in enumerate(self.d.rules):
            r = self.group(rule.group, qe)
            if r is qe:  # an empty rule: every event meets it
                bits.append(literal(1 << i))
                continue
            r = r.alias(f"r{i}")
            q = q.outerjoin(r, and_(r.c.person_id == qe.c.person_id, r.c.event_id == qe.c.event_id))
            bits.append(case((r.c.person_id.is_not(None), literal(1 << i)), else_=literal(0)))
        mask: ColumnElement[Any] = sum(bits[1:], bits[0]) if bits else literal(0)
        # In key order (read from qe's index, no sort): the stored entries' index then grows at its end.
        return [q.add_columns(cast(mask, Integer).label("mask")).order_by(qe.c.person_id, qe.c.event_id)]
