"""Generates a cohort run in the database and derives counts, attrition (Circe's meanings) and members from its masks."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table, delete, func, insert, literal, null, select
from sqlalchemy.sql import ColumnElement, Select

from medkb.cohorts import parallel
from medkb.cohorts.concepts import Codes, resolve_concept_sets
from medkb.cohorts.definition import Definition
from medkb.cohorts.evaluate import Evaluation
from medkb.cohorts.sql import Persons
from medkb.cohorts.tally import Tally, bits, final_cohort, min_rule, tally
from medkb.errors import InvalidInput, NotFound
from medkb.kb import models as m
from medkb.kb.store import KnowledgeStore
from medkb.kb.temp_tables import TempTables, in_written_order

_E = m.CohortEntry.__table__


@dataclass
class RuleStats:
    sequence: int
    name: str
    person_count: int
    gain_count: int
    person_total: int


@dataclass
class Attrition:
    base_count: int
    final_count: int
    rules: list[RuleStats] = field(default_factory=list)


@dataclass
class CohortCounts:
    """Raw (unsuppressed) figures: never released as they are; see ``medkb.cohorts.disclosure``."""

    persons: int
    entries: int
    by_person: Attrition
    by_event: Attrition
    run_id: int
    disabled_rules: tuple[int, ...] = ()


def generate(store: KnowledgeStore, d: Definition, tenant: str, codesets: dict[int, Codes] | None = None) -> int:
    """Evaluate the definition in the database and store its qualified events with their rule masks (one row per
    event, or per person, period and mask: ``compacts``); the run id. A large SQLite tenant's run is split by
    person over both cores (``medkb.cohorts.parallel``)."""
    return _generate(store, d, tenant, codesets)[0]


def _generate(store: KnowledgeStore, d: Definition, tenant: str, codesets: dict[int, Codes] | None = None
              ) -> tuple[int, Tally | None]:
    """``generate``, and for a split run its tally with every rule enabled (the sum of its parts')."""
    codesets = resolve_concept_sets(store, d.concept_sets) if codesets is None else codesets
    with store.connection() as c:
        parts = parallel.person_ranges(c, tenant)
    if len(parts) > 1:
        return _generate_parts(store, d, tenant, codesets, parts)
    with store.session() as s:
        conn = s.connection()
        run_id = _new_run(conn, d, tenant)
        tmp = TempTables(conn)
        try:
            for q in Evaluation(tmp, d, tenant, codesets).masked_events():
                conn.execute(insert(_E).from_select(_STORED, in_written_order(_stored(d, _masked(conn, q),
                                                                                       literal(run_id)))))
        finally:
            tmp.drop_all()
        return run_id, None


def _generate_parts(store: KnowledgeStore, d: Definition, tenant: str, codesets: dict[int, Codes],
                    parts: list[Persons]) -> tuple[int, Tally]:
    """The run as parts by person range, each evaluated on its own connection into its scratch file, then copied
    into ``cohort_entries`` in the one transaction that records the run (no half-written run) while each part tallies
    its rows (every rule enabled). The tenant's earlier run of the definition is deleted in that transaction while
    the parts evaluate. The run id and the parts' tallies summed."""
    tallies = [Tally() for _ in parts]
    with parallel.scratch_files(len(parts)) as files, store.connection() as conn, ExitStack() as attached:
        # Attached and given their table before the run's transaction (ATTACH's pragmas cannot run inside one) and
        # before the parts start (the run's connection then knows the table it copies from).
        names = [attached.enter_context(parallel.attached(conn, f, f"part{k}")) for k, f in enumerate(files)]
        for name in names:
            _part_table(name).create(conn)
        conn.commit()

        def work(persons: Persons, k: int, written: threading.Event) -> None:
            with store.connection() as pc, parallel.attached(pc, files[k], "part") as name:
                part = _part_table(name)
                tmp = TempTables(pc)
                try:
                    for q in Evaluation(tmp, d, tenant, codesets, persons).masked_events():
                        pc.execute(part.insert().from_select(_STORED[1:], _stored(d, _masked(pc, q))))
                    pc.commit()
                    written.set()
                    tallies[k] = tally(pc, d, part, [], list(range(len(d.rules))))
                finally:
                    pc.rollback()  # a failed part's transaction first: dropped inside it, its tables would come back
                    tmp.drop_all()

        def copy(run_id: int) -> int:
            for name in names:
                part = _part_table(name)
                conn.execute(insert(_E).from_select(_STORED, select(literal(run_id),
                                                                    *(part.c[c] for c in _STORED[1:]))))
            return run_id

        # the earlier run's rows (1.38M for era_pad at x100) are deleted while the parts evaluate
        with parallel.rows_unchecked(conn):
            run_id = parallel.run_parts(parts, work, lambda: _new_run(conn, d, tenant), copy)
            conn.commit()
        return run_id, sum(tallies[1:], tallies[0])


def _part_table(schema: str) -> Table:
    """A part's rows, clustered like ``cohort_entries`` without the run id: its tally reads them in (person, date)
    order, and the copy appends them to the run's b-tree in key order."""
    return Table("entries", MetaData(schema=schema),
                 *(Column(c.name, c.type, primary_key=c.primary_key) for c in _E.columns if c.name != "run_id"),
                 sqlite_with_rowid=False)


def _new_run(conn: Connection, d: Definition, tenant: str) -> int:
    """A new run of the definition, replacing the tenant's earlier runs of it."""
    runs = m.CohortRun.__table__
    old = list(conn.scalars(select(runs.c.id).where(runs.c.tenant_id == tenant, runs.c.definition_hash == d.hash)))
    if old:
        conn.execute(delete(_E).where(_E.c.run_id.in_(old)))
        conn.execute(delete(runs).where(runs.c.id.in_(old)))
    row = conn.execute(insert(runs).values(tenant_id=tenant, definition_hash=d.hash,
                                           rules={"names": [r.name for r in d.rules]}))
    return int(row.inserted_primary_key[0])


_STORED = ["run_id", "patient_id", "start_date", "event_id", "end_date", "op_start", "op_end", "mask", "events"]


def compacts(d: Definition) -> bool:
    """Whether a run stores one row per (person, observation period, mask) instead of one per event: when every
    entry ends at its period's end (no date offset), a period's entries of one mask are one interval [first start,
    period end] for the era collapse, and attrition needs only their number and the first (start, event). An
    expression limit ``Last`` needs each entry's own start, so it keeps one row per event."""
    return d.end_offset is None and d.expression_limit != "Last"


def _masked(conn: Connection, q: Select[Any]) -> Any:
    """The masked events as a subquery the stored rows are read from, each event's mask computed once: SQLite
    would otherwise merge it into the GROUP BY and run every rule's probes twice per event (once for the group
    key, once for the stored column). A LIMIT keeps it a separate pass (SQLite only: LIMIT -1 is "no limit")."""
    return (q.limit(-1) if conn.dialect.name == "sqlite" else q).subquery("me")


def _stored(d: Definition, me: Any, *lead: ColumnElement[Any]) -> Select[Any]:
    """The rows a run stores from its masked events ``me`` (after the ``lead`` columns: the run id)."""
    if not compacts(d):  # in key order: appended to the clustered b-tree, not inserted page by page at random
        return select(*lead, me.c.person_id, me.c.start_date, me.c.event_id, me.c.end_date,
                      me.c.op_start, me.c.op_end, me.c.mask, literal(1)) \
            .order_by(me.c.person_id, me.c.start_date, me.c.event_id)
    if d.primary_limit != "All":
        # One entry per person (a First/Last primary limit): each is its own compacted row, and the GROUP BY would
        # only sort them again (they leave the limit's ranking in person order, i.e. in key order).
        return select(*lead, me.c.person_id, me.c.start_date, me.c.event_id, null(), me.c.op_start, me.c.op_end,
                      me.c.mask, literal(1))
    # min(event_id) stands for the row's first event in the by-person ranking: Circe breaks ties between events
    # with equal rule counts, first rule and start date arbitrarily; medkb by the smaller event id.
    return select(*lead, me.c.person_id, func.min(me.c.start_date), func.min(me.c.event_id),
                  null(), me.c.op_start, me.c.op_end, me.c.mask, func.count()) \
        .group_by(me.c.person_id, me.c.op_start, me.c.op_end, me.c.mask)


def latest_run(store: KnowledgeStore, d: Definition, tenant: str) -> int | None:
    with store.session() as s:
        return s.scalar(select(func.max(m.CohortRun.id)).where(m.CohortRun.tenant_id == tenant,
                                                               m.CohortRun.definition_hash == d.hash))


def _enabled(d: Definition, disabled: Iterable[int]) -> list[int]:
    off = set(disabled)
    bad = sorted(i for i in off if not 0 <= i < len(d.rules))
    if bad:
        raise InvalidInput(f"no inclusion rule {bad[0]}: the definition has rules 0..{len(d.rules) - 1}")
    return [i for i in range(len(d.rules)) if i not in off]


def _attrition(counts: dict[int, int], enabled: list[int], names: list[str]) -> Attrition:
    full = sum(1 << i for i in enabled)
    total = sum(counts.values())
    rules = [RuleStats(seq, names[i], sum(n for k, n in counts.items() if k & (1 << i)),
                       counts.get(full & ~(1 << i), 0), total) for seq, i in enumerate(enabled)]
    return Attrition(total, counts.get(full, 0) if enabled else total, rules)


def counts(store: KnowledgeStore, d: Definition, tenant: str, *, disabled_rules: Iterable[int] = (),
           run_id: int | None = None) -> CohortCounts:
    """Counts and attrition; with ``run_id`` from its stored masks, else from a fresh run (a split run's parts count
    their own rows with every rule enabled while they have them: ``medkb.cohorts.tally``)."""
    enabled = _enabled(d, disabled_rules)
    fresh = None
    if run_id is None:
        run_id, fresh = _generate(store, d, tenant)
    with store.session() as s:
        run = s.get(m.CohortRun, run_id)
        if run is None or run.tenant_id != tenant or run.definition_hash != d.hash:
            raise NotFound(f"no cohort run {run_id} of this definition in tenant {tenant!r}")
        names = list((run.rules or {}).get("names", []))
        t = fresh if fresh is not None and len(enabled) == len(d.rules) else \
            tally(s.connection(), d, _E, [_E.c.run_id == run_id], enabled)
    return CohortCounts(t.persons, t.eras, _attrition(t.by_person, enabled, names),
                        _attrition(t.by_event, enabled, names), run_id, tuple(sorted(set(disabled_rules))))


def members(store: KnowledgeStore, d: Definition, run_id: int, disabled_rules: Iterable[int] = ()
            ) -> list[tuple[str, Any, Any]]:
    """(pseudonymous person id, cohort start, cohort end) of every era; for authorised callers only."""
    enabled = _enabled(d, disabled_rules)
    fc = final_cohort(d, _E, [_E.c.run_id == run_id], enabled).subquery("fc")
    with store.session() as s:
        return [tuple(r) for r in s.execute(select(fc).order_by(fc.c.person_id, fc.c.start_date))]  # type: ignore[misc]


def failed_rules(store: KnowledgeStore, d: Definition, run_id: int) -> dict[str, list[int]]:
    """Per person (best event, as in attrition by person): the inclusion rules that event does not meet."""
    enabled = list(range(len(d.rules)))
    full = (1 << len(d.rules)) - 1
    ranked = select(_E.c.patient_id, _E.c.mask, func.row_number().over(
        partition_by=_E.c.patient_id,
        order_by=(bits(_E.c.mask, enabled).desc(), min_rule(_E.c.mask, enabled), _E.c.start_date, _E.c.event_id)
    ).label("rank")).where(_E.c.run_id == run_id).subquery()
    with store.session() as s:
        rows = s.execute(select(ranked.c.patient_id, ranked.c.mask).where(ranked.c.rank == 1,
                                                                          ranked.c.mask != full)).all()
    return {p: [i for i in enabled if not int(mask) & (1 << i)] for p, mask in rows}


__all__ = ["CohortCounts", "Attrition", "RuleStats", "counts", "generate", "members", "failed_rules", "latest_run",
           "final_cohort"]
