"""One cohort run evaluated set-at-a-time: criteria in indexed temporary tables, entry events read once with every
rule's outcome computed in the same pass as correlated index probes (the events' rule masks)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, Table, case, cast, literal, select, true, union_all
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import FromClause

from medkb.cohorts import sql
from medkb.cohorts.concepts import Codes
from medkb.cohorts.definition import Criterion, Definition, Group
from medkb.kb.temp_tables import TempTables, ordered_join


class Evaluation:
    """The temporary tables of one run; ``masked_events()`` are the SELECTs of every qualified event with its rule
    mask. A group is a boolean expression over the event's columns (EXISTS / counting probes of criterion tables
    indexed by person and date), so no table of matching keys is written, indexed and joined back per part."""

    def __init__(self, tmp: TempTables, d: Definition, tenant: str, codesets: dict[int, Codes],
                 persons: sql.Persons = sql.ALL_PERSONS) -> None:
        self.tmp, self.d, self.tenant, self.codesets, self.persons = tmp, d, tenant, codesets, persons
        self._criteria: dict[tuple[str, int | None, bool], FromClause] = {}
        # MySQL (and TiDB) cannot name one TEMPORARY table twice in a statement: there every reference gets its own.
        self._share = tmp.conn.dialect.name != "mysql"
        self._sqlite = tmp.conn.dialect.name == "sqlite"
        self._entry_persons: FromClause | None = None  # under a limit by date: the persons with a limit date

    def criterion(self, c: Criterion, index: bool = True) -> FromClause:
        """The criterion's events, indexed by (person, start date); one table per distinct criterion."""
        key = (c.domain, c.codeset_id, c.first)
        if key not in self._criteria or not self._share:
            selects = self._criterion_selects(c)
            if c.first and self._sqlite:  # each person's first event straight from the sources: no table of all
                src = (selects[0] if len(selects) == 1 else union_all(*selects)).subquery("events")
                self._criteria[key] = self.tmp.new(sql.event_columns(), sql.first_by_key(src))
            else:
                raw = self._written(sql.event_columns(), selects)
                self._criteria[key] = self.tmp.new(sql.event_columns(), sql.first_events(raw)) if c.first else raw
        t = self._criteria[key]
        if index and not t.indexes:  # type: ignore[attr-defined]
            self.tmp.index(t, "person_id", "start_date")  # type: ignore[arg-type]
        return t

    def _criterion_selects(self, c: Criterion) -> list[Select[Any]]:
        """The criterion's events of this part's persons, or, once the entry events are known to be those of the
        persons with a limit date (one each), only those persons' events, read by probing the record index per
        person (procedure_last x100: its rule's conditions of every person were written and indexed, 1.4 s CPU)."""
        if self._entry_persons is None:
            return sql.criterion_selects(c, self.tenant, self.codesets, self.persons)
        p = self._entry_persons
        # no person range on the probed side: SQLite would read the index by the range (see qualified())
        subs = [q.subquery() for q in sql.criterion_selects(c, self.tenant, self.codesets, sql.ALL_PERSONS)]
        return [select(s).select_from(ordered_join(p, s, s.c.person_id == p.c.person_id)) for s in subs]

    def _written(self, columns: list[Column[Any]], selects: list[Select[Any]]) -> Table:
        """A new temporary table of the rows of every one of ``selects`` (disjoint sources, one INSERT each)."""
        t = self.tmp.new(columns)
        for q in selects:
            self.tmp.fill(t, q)
        return t

    def _sources(self, c: Criterion, persons: sql.Persons | None = None) -> list[FromClause]:
        """Where a primary criterion's events are read: straight from the record tables' covering indexes, or
        (``First``) its temporary table. Only this part's persons unless ``persons`` says otherwise."""
        if c.first:
            return [self.criterion(c, index=False)]
        return [q.subquery() for q in sql.criterion_selects(c, self.tenant, self.codesets,
                                                            self.persons if persons is None else persons)]

    def test(self, g: Group, ev: FromClause) -> ColumnElement[bool]:
        """Whether an event of ``ev`` meets the group (an empty group: every event)."""
        if g.is_empty():
            return true()
        parts = [sql.correlated_test(cc, ev, self.criterion(cc.criterion)) for cc in g.criteria]
        parts += [sql.demographic_test(dc, ev, self.tenant) for dc in g.demographics]
        parts += [self.test(sub, ev) for sub in g.groups]
        return sql.group_test(g, parts)

    def _limit_by_date(self) -> bool:
        """Whether the primary limit is taken from each person's limit date (``sql.limited_by_date``): SQLite, whose
        record indexes it probes by (person, date), and no ``First`` source (an unindexed temporary table)."""
        return self._sqlite and not any(c.first for c in self.d.primary)

    def qualified(self) -> list[FromClause]:
        """The qualified events, as one or more disjoint sources (person_id, event_id, dates, period)."""
        d = self.d
        sources = [(pos, src) for pos, c in enumerate(d.primary) for src in self._sources(c)]
        entries: list[FromClause] = [sql.entry_candidates(d, self.tenant, src, pos).subquery() for pos, src in sources]
        if d.primary_limit != "All" and self._limit_by_date():  # one event per person over all criteria
            # each person's limit date first (a small table), then only the candidates on it: no window
            # over all candidates (written to a table and sorted: procedure_last x100 5.6 s of 8.8 s CPU)
            extremes = self.tmp.new(sql.limit_date_columns(), sql.limit_dates(d, [src for _, src in sources]))
            # The dates hold only this part's persons; the probes carry no person range, with which SQLite read
            # the index by the range instead of by (person, date) (quadratic: x10 split, procedure_last 0.3 -> 21 s)
            probed = [sql.entry_candidates(d, self.tenant, src, pos).subquery()
                      for pos, c in enumerate(d.primary) for src in self._sources(c, sql.ALL_PERSONS)]
            dates = self.tmp.new(sql.limit_date_columns(), sql.limit_dates_from(d, self.tenant, extremes, probed))
            entries = [sql.limited_by_date(probed, dates).subquery("pe")]
            self._entry_persons = dates
        elif d.primary_limit != "All":  # elsewhere a window over all candidates, written once
            cand = self._written(sql.qualified_columns(), [select(e) for e in entries])
            entries = [sql.limited_entries(d, cand).subquery("pe")]
        if not self._share and (d.rules or not (d.additional is None or d.additional.is_empty())):
            # MariaDB probes from a derived table of entry events 1.5-3x slower than from a table (its semi-join
            # planning of the merged derived table, Eunomia x1): the events are written once first there.
            entries = [self._written(sql.qualified_columns(), [select(e) for e in entries])]
        if d.additional is None or d.additional.is_empty():
            return entries
        passed = [select(e).where(self.test(d.additional, e)) for e in entries]
        if d.qualified_limit == "All":  # Circe applies the qualified limit only with additional criteria
            return [q.subquery("qe") for q in passed]
        return [sql.qualified_limit(d, self._written(sql.qualified_columns(), passed)).subquery("qe")]

    def masked_events(self) -> list[Select[Any]]:
        """Every qualified event with the bit mask of the inclusion rules it satisfies, as SELECTs to store."""
        out = []
        for qe in self.qualified():
            bits: list[ColumnElement[Any]] = []
            for i, rule in enumerate(self.d.rules):
                bits.append(literal(1 << i) if rule.group.is_empty()
                            else case((self.test(rule.group, qe), literal(1 << i)), else_=literal(0)))
            mask: ColumnElement[Any] = sum(bits[1:], bits[0]) if bits else literal(0)
            out.append(select(qe.c.person_id, qe.c.event_id, qe.c.start_date, qe.c.end_date, qe.c.op_start,
                              qe.c.op_end, cast(mask, Integer).label("mask")))
        return out
