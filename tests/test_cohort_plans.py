"""How a cohort run executes: every statement reads through an index, scratch tables never outlive the run, and the
one-pass era count equals the eras built. (Speed itself is measured in bench/bench_cohorts.py, never timed here.)"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, literal, literal_column, select, text, union_all

from medkb.cohorts import engine, parallel, sql
from medkb.cohorts.concepts import resolve_concept_sets
from medkb.cohorts.definition import parse_definition
from medkb.cohorts.evaluate import Evaluation
from medkb.errors import MedkbError
from medkb.kb import models as m
from tests.omop_support import TENANT

DEFS = {p.stem: json.loads(p.read_text()) for p in sorted((Path(__file__).parent / "cohorts").glob("*.json"))}
RECORD_TABLES = ("conditions", "medications", "observations", "procedures", "encounters", "observation_periods",
                 "patients")


def _plans(store: Any, raw: dict[str, Any], *, rows: bool = False, run: Any = engine.generate
           ) -> list[tuple[str, list[Any]]]:
    """(statement, its SQLite query plan lines, or with ``rows`` its (id, parent, detail) rows) of every row-reading
    statement one generation (or ``run``: e.g. ``engine.counts``) runs."""
    seen: list[tuple[str, list[Any]]] = []

    def before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        if "SELECT" in statement and not statement.lstrip().startswith(("PRAGMA", "CREATE", "DROP")):
            query = statement[statement.index("SELECT"):] if statement.startswith("INSERT") else statement
            cur = conn.connection.dbapi_connection.cursor()  # same connection: the run's temp tables are visible
            plan = list(cur.execute("EXPLAIN QUERY PLAN " + query, params))
            seen.append((statement, [(r[0], r[1], r[3]) for r in plan] if rows else [r[3] for r in plan]))
            cur.close()

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        run(store, parse_definition(raw), TENANT)
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
    return seen


def test_every_statement_of_a_run_reads_through_an_index(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    """No join against an unindexed derived table (SQLite's AUTOMATIC index, a full SCAN of a LEFT JOIN side),
    no scan of a record table, and concept-set events read from the covering indexes alone. SQLite plans without
    statistics here, so the plan at Eunomia ×1 is the plan at ×100."""
    store = eunomia_kb[0]
    scan_record = re.compile(rf"^SCAN ({'|'.join(RECORD_TABLES)})\b")
    event_tables = re.compile(r"^SEARCH (conditions|medications|observations|procedures|encounters|observation_periods)\b")
    for name, raw in DEFS.items():
        for statement, plan in _plans(store, raw):
            where = f"{name}: {' '.join(statement.split())[:160]} -> {plan}"
            assert not any("AUTOMATIC" in line for line in plan), where
            assert not any(line.endswith("LEFT-JOIN") and line.startswith("SCAN") for line in plan), where
            assert not any(scan_record.match(line) for line in plan), where
            assert all("COVERING INDEX" in line for line in plan if event_tables.match(line)), where
            # patients: by primary key (demographics) or the deceased through their index, never the whole tenant
            assert not any(line.startswith("SEARCH patients USING INDEX ix_patients_tenant_id") for line in plan), \
                where


def test_counting_a_run_sorts_nothing_its_key_order_gives(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    """A run's rows are stored in (person, start, event) order: the persons and entries of a definition without
    rules are counted in that order (a count(DISTINCT) sorted them again: era_pad x100, 0.13 s a part)."""
    store = eunomia_kb[0]
    for name in ("era_pad_end_offset_enddate", "eunomia_gi_bleed"):
        for statement, plan in _plans(store, DEFS[name], run=engine.counts):
            assert not any("TEMP B-TREE" in line for line in plan if "cohort_entries" in statement
                           and statement.lstrip().startswith("SELECT")), f"{name}: {statement[:160]} -> {plan}"


def test_one_entry_per_person_is_stored_without_grouping(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    """Under a First/Last primary limit each person has one entry, its own compacted row: storing them runs no GROUP
    BY (a second sort of the entries), and the stored rows count each as one event."""
    store = eunomia_kb[0]
    for name in ("inpatient_visit_prior_year", "eunomia_nsaids", "procedure_last_with_exclusion"):
        stored = [(st, plan) for st, plan in _plans(store, DEFS[name])
                  if st.lstrip().startswith("INSERT INTO cohort_entries")]
        assert stored, name
        for st, plan in stored:
            assert not any("GROUP BY" in line for line in plan), f"{name}: {plan}"
        with store.session() as s:
            run = s.scalar(select(func.max(m.CohortRun.id)))
            per = s.execute(select(func.count(), func.count(func.distinct(m.CohortEntry.patient_id)),
                                   func.max(m.CohortEntry.events)).where(m.CohortEntry.run_id == run)).one()
        assert per[0] == per[1] > 0 and per[2] == 1, (name, per)


def test_a_first_criterion_is_each_persons_first_event_by_date_then_row_id(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    """SQLite takes a ``First`` criterion by a GROUP BY over one (day number, row id) key (``sql.first_by_key``), not a
    window over every event written to a table: the same rows as the window, same-day ties included."""
    from medkb.kb.temp_tables import TempTables

    store = eunomia_kb[0]
    d = parse_definition(DEFS["eunomia_nsaids"])
    codesets = resolve_concept_sets(store, d.concept_sets)
    c = d.primary[0]
    with store.connection() as conn:
        tmp = TempTables(conn)
        try:
            ev = Evaluation(tmp, d, TENANT, codesets)
            got = conn.execute(select(ev.criterion(c, index=False))).all()
            fill = [s for s in ev.tmp.tables]
            raw = ev._written(sql.event_columns(), sql.criterion_selects(c, TENANT, codesets))
            want = conn.execute(sql.first_events(raw.select().subquery())).all()
            # Eunomia has no two such events of a person on one day: ties, the row id deciding, on made-up rows
            rows = [("p1", 2459946, 2459950, 7), ("p1", 2459946, 2459947, 3), ("p1", 2459900 + 99, 0, 1),
                    ("p2", 2459000, 2459001, 5), ("p2", 2459001, 2459002, 2), ("p3", 2459500, 2459501, 4)]
            made = union_all(*(select(*(literal(v).label(k) for v, k in zip(r, ("person_id", "start_date",
                                                                                "end_date", "sort_id"))))
                               for r in rows)).subquery("made")
            firsts = sorted(conn.execute(sql.first_by_key(made)).all())
        finally:
            tmp.drop_all()
            conn.commit()  # the drops with it: sqlite3 ran the CREATEs outside the transaction a rollback would undo
    assert len(fill) == 1  # the first events' table alone: no table of every event
    assert len(got) > 1000 and sorted(got) == sorted(want)
    assert firsts == [("p1", 2459946, 2459947, 3), ("p2", 2459000, 2459001, 5), ("p3", 2459500, 2459501, 4)]


@pytest.mark.parametrize("workers", [1, 2])
def test_no_join_scans_a_table_in_an_inner_loop(eunomia_kb, monkeypatch, workers: int) -> None:  # type: ignore[no-untyped-def]
    """Without statistics SQLite takes ``tenant_id = ?`` for a selective filter and may start a join from a whole
    tenant's index and scan another table inside it: every outer row then reads that table (quadratic). A tried
    limit-date plan did so (the observation periods of the tenant outside, the persons scanned inside), and a x100
    run did not end in 10 min. A SCAN may only be a join's outermost loop; also split by person (two parts)."""
    store = eunomia_kb[0]
    monkeypatch.setattr(parallel, "MIN_PERSONS", 0)
    monkeypatch.setattr(parallel, "WORKERS", workers)
    for name, raw in DEFS.items():
        for statement, plan in _plans(store, raw, rows=True):
            loops: dict[int, list[str]] = {}
            for _, parent, detail in plan:
                if detail.startswith(("SCAN", "SEARCH")):
                    loops.setdefault(parent, []).append(detail)
            inner = [line for lines in loops.values() for line in lines[1:] if line.startswith("SCAN")]
            assert not inner, f"{name}: {' '.join(statement.split())[:160]} -> {plan}"


def test_the_one_pass_era_count_equals_the_eras_built(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    store = eunomia_kb[0]
    for name, raw in DEFS.items():
        d = parse_definition(raw)
        c = engine.counts(store, d, TENANT)
        eras = engine.members(store, d, c.run_id)
        assert (c.persons, c.entries) == (len({p for p, _, _ in eras}), len(eras)), name


def _everything(store: Any, d: Any, run: int) -> list[Any]:
    """Counts and both attritions with every subset of rules switched off, the members and the failed rules."""
    out: list[Any] = []
    for off in itertools.chain.from_iterable(itertools.combinations(range(len(d.rules)), k)
                                             for k in range(len(d.rules) + 1)):
        c = engine.counts(store, d, TENANT, disabled_rules=off, run_id=run)
        out.append((off, c.persons, c.entries, c.by_person, c.by_event))
    return [*out, engine.members(store, d, run), engine.failed_rules(store, d, run)]


def test_a_compact_run_counts_what_a_run_of_one_row_per_event_counts(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Entries ending at their period's end are stored one row per (person, period, rule mask): far fewer rows
    (the 200k-event definitions wrote every event, then read them three times), and every figure with any rules
    switched off, the members and the failed rules are those of the same run stored one row per event."""
    store = eunomia_kb[0]
    for name in ("sinusitis_throat_culture_30d", "any_of_nested_groups", "gi_bleed_after_nsaid_no_prior_bleed",
                 "additional_criteria_qualified_first", "observation_period_female_bronchitis"):
        d = parse_definition(DEFS[name])
        assert engine.compacts(d), name
        run = engine.generate(store, d, TENANT)
        compact = _everything(store, d, run)
        with store.session() as s:
            rows = s.scalar(select(func.count()).select_from(m.CohortEntry).where(m.CohortEntry.run_id == run))
        with monkeypatch.context() as patched:
            patched.setattr(engine, "compacts", lambda d: False)
            per_event = engine.generate(store, d, TENANT)
            assert _everything(store, d, per_event) == compact, name
        if name == "sinusitis_throat_culture_30d":  # 20,033 events of 2,689 persons: 2,758 rows
            assert rows < compact[0][4].base_count / 5, (rows, compact[0][4].base_count)
    for name in ("era_pad_end_offset_enddate", "celecoxib_new_users_attrition"):  # date offsets: one row per event
        assert not engine.compacts(parse_definition(DEFS[name]))


def test_rules_are_evaluated_in_the_pass_that_reads_the_entry_events(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    """A run's only temporary tables are its criteria's events (indexed for the probes) and, under a First/Last
    limit, each person's limit date (SQLite; elsewhere the candidates it ranks): no table of entry events, of the
    keys meeting each part of a group, or of a group's result is written, indexed and joined back."""
    store = eunomia_kb[0]
    created: list[str] = []

    def before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        if statement.lstrip().startswith("CREATE TEMPORARY TABLE"):
            created.append(statement)

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        tables = {}
        for name in ("sinusitis_throat_culture_30d", "any_of_nested_groups", "procedure_last_with_exclusion",
                     "celecoxib_new_users_attrition", "eunomia_gi_bleed"):
            created.clear()
            engine.generate(store, parse_definition(DEFS[name]), TENANT)
            tables[name] = len(created)
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
    # one per distinct criterion the rules read; procedure_last: + its people's last event dates and Last limit
    # dates (SQLite);
    # celecoxib new users: the 2 conditions its rules read (its age rule is a probe of the patient's row)
    assert tables == {"sinusitis_throat_culture_30d": 1, "any_of_nested_groups": 3,
                      "procedure_last_with_exclusion": 3, "celecoxib_new_users_attrition": 2,
                      "eunomia_gi_bleed": 0}, tables


def test_a_primary_limit_ranks_only_each_persons_events_on_their_limit_date(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On SQLite a First/Last primary limit takes each person's limit date first (a GROUP BY in the record index's
    (person, date) order) and ranks only the events on it: the candidates are not written to a table and no window
    sorts them all (procedure_last x100: 7.7-8.2 -> 3.6-4.2 s CPU). The stored rows, tie-break included, equal
    those of the window over all candidates (the path other backends take)."""

    store = eunomia_kb[0]
    e = m.CohortEntry.__table__
    statements: list[str] = []

    def before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        statements.append(" ".join(statement.split()))

    window_over_dates = re.compile(r"row_number\(\) OVER \(PARTITION BY \S+ ORDER BY \S+start_date")
    for name in ("procedure_last_with_exclusion", "inpatient_visit_prior_year"):
        d = parse_definition(DEFS[name])
        statements.clear()
        event.listen(store.engine, "before_cursor_execute", before)
        try:
            by_date = engine.counts(store, d, TENANT)
        finally:
            event.remove(store.engine, "before_cursor_execute", before)
        created = [s for s in statements if s.startswith("CREATE TEMPORARY TABLE")]
        assert not any("event_id" in s for s in created), (name, created)
        assert not any(window_over_dates.search(s) for s in statements), name
        with store.session() as s:
            rows = s.execute(select(e).where(e.c.run_id == by_date.run_id).order_by(*e.primary_key)).all()
        with monkeypatch.context() as patched:
            patched.setattr(Evaluation, "_limit_by_date", lambda self: False)
            windowed = engine.counts(store, d, TENANT)
        with store.session() as s:
            ref = s.execute(select(e).where(e.c.run_id == windowed.run_id).order_by(*e.primary_key)).all()
        assert len(rows) > 100 and [tuple(r)[1:] for r in rows] == [tuple(r)[1:] for r in ref], name
        assert (by_date.persons, by_date.entries, by_date.by_person, by_date.by_event) == \
            (windowed.persons, windowed.entries, windowed.by_person, windowed.by_event), name
        # Split by person (the default for a large SQLite tenant), each limit-date event is still found by probing
        # the record index with (person, date), never by reading the part's person range per person (quadratic).
        with monkeypatch.context() as patched:
            patched.setattr(parallel, "MIN_PERSONS", 0)
            patched.setattr(parallel, "WORKERS", 2)
            plans = [plan for statement, plan in _plans(store, DEFS[name]) if statement.startswith("INSERT INTO part")]
        assert len(plans) == 2, name
        reads = [line for plan in plans for line in plan if re.match(r"SEARCH (encounters|procedures)\b", line)]
        assert reads and all("patient_id=? AND" in line for line in reads), (name, reads)


def test_a_limit_date_outside_the_observation_window_falls_back_to_the_persons_candidates(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The limit date is each person's extreme event date where an observation period makes that event a candidate,
    else the extreme of the person's candidates. With 10 years of required observation after (Last) or before
    (First) many persons' extreme procedure is no candidate but another one is: those entries are found, and every
    figure and stored row equals the window over all candidates."""
    store = eunomia_kb[0]
    e, p = m.CohortEntry.__table__, m.Procedure.__table__
    for prior, post, limit in ((0, 7300, "Last"), (0, 0, "Last"), (7300, 0, "First")):
        raw = json.loads(json.dumps(DEFS["procedure_last_with_exclusion"]))
        raw["PrimaryCriteria"]["ObservationWindow"] = {"PriorDays": prior, "PostDays": post}
        raw["PrimaryCriteria"]["PrimaryCriteriaLimit"]["Type"] = limit
        d = parse_definition(raw)
        concepts = sorted(resolve_concept_sets(store, d.concept_sets)[d.primary[0].codeset_id].concept_ids)
        by_date = engine.counts(store, d, TENANT)
        extreme = select((func.max if limit == "Last" else func.min)(p.c.performed)) \
            .where(p.c.patient_id == e.c.patient_id, p.c.concept_id.in_(concepts)).scalar_subquery()
        with store.session() as s:
            rows = s.execute(select(e).where(e.c.run_id == by_date.run_id).order_by(*e.primary_key)).all()
            # entries that are not their person's extreme procedure: found through the fallback
            fell_back = s.scalar(select(func.count()).select_from(e).where(e.c.run_id == by_date.run_id,
                                                                            e.c.start_date != extreme))
        with monkeypatch.context() as patched:
            patched.setattr(Evaluation, "_limit_by_date", lambda self: False)
            windowed = engine.counts(store, d, TENANT)
        with store.session() as s:
            ref = s.execute(select(e).where(e.c.run_id == windowed.run_id).order_by(*e.primary_key)).all()
        assert len(rows) > 100 and [tuple(r)[1:] for r in rows] == [tuple(r)[1:] for r in ref], (prior, post, limit)
        assert (by_date.persons, by_date.by_person, by_date.by_event) == \
            (windowed.persons, windowed.by_person, windowed.by_event), (prior, post, limit)
        assert (fell_back > 10) if prior + post else (fell_back == 0), (prior, post, limit, fell_back)


def test_a_run_split_by_person_over_threads_stores_and_counts_the_same(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On SQLite a large tenant's run is split by person-id range over two connections in threads (both cores);
    forced here at Eunomia x1 (3 parts): every definition's stored rows and counts (a split run's counted by its
    parts, ``medkb.cohorts.tally``) equal the one-connection run's (counted from its stored rows), and no scratch database stays attached to a pooled connection, after a run or a failed one."""
    store = eunomia_kb[0]

    def stored(run: int) -> list[Any]:
        e = m.CohortEntry.__table__
        with store.session() as s:
            return [tuple(r)[1:] for r in s.execute(select(e).where(e.c.run_id == run).order_by(*e.primary_key))]

    for name, raw in DEFS.items():
        d = parse_definition(raw)
        whole = engine.counts(store, d, TENANT)
        rows = stored(whole.run_id)
        with monkeypatch.context() as patched:
            patched.setattr(parallel, "MIN_PERSONS", 0)
            patched.setattr(parallel, "WORKERS", 3)
            with store.engine.connect() as c:
                assert len(parallel.person_ranges(c, TENANT)) == 3
            split = engine.counts(store, d, TENANT)
        assert stored(split.run_id) == rows, name  # (the old run is replaced: SQLite may reuse its id)
        assert (split.persons, split.entries, split.by_person, split.by_event) == \
            (whole.persons, whole.entries, whole.by_person, whole.by_event), name
    with monkeypatch.context() as patched:
        patched.setattr(parallel, "MIN_PERSONS", 0)
        patched.setattr(parallel, "WORKERS", 2)
        patched.setattr(sql, "demographic_test", lambda *a: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            engine.generate(store, parse_definition(DEFS["celecoxib_new_users_attrition"]), TENANT)
    # A database error inside a part surfaces as medkb's classified error, as it does from a run in one part.
    raised = []
    for minimum in (0, 10**9):
        with monkeypatch.context() as patched:
            patched.setattr(parallel, "MIN_PERSONS", minimum)
            patched.setattr(parallel, "WORKERS", 2)
            patched.setattr(sql, "demographic_test", lambda *a: literal_column("no_such_function(1)") == 1)
            with pytest.raises(MedkbError, match="no such function") as err:
                engine.generate(store, parse_definition(DEFS["celecoxib_new_users_attrition"]), TENANT)
            raised.append(type(err.value))
    assert raised[0] is raised[1]
    for _ in range(3):
        with store.engine.connect() as c:
            assert {r[1] for r in c.exec_driver_sql("PRAGMA database_list")} <= {"main", "temp"}
    assert _temp_tables(store) == 0


def _temp_tables(store: Any) -> int:
    with store.engine.connect() as c:
        return int(c.execute(text("SELECT count(*) FROM sqlite_temp_master WHERE type = 'table'")).scalar())


def test_scratch_tables_are_dropped_after_a_run_and_after_a_failed_one(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store = eunomia_kb[0]
    d = parse_definition(DEFS["celecoxib_new_users_attrition"])  # correlated, demographic and nested parts
    engine.counts(store, d, TENANT)
    assert _temp_tables(store) == 0

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    with store.session() as s:
        runs_before = s.scalar(select(func.count()).select_from(m.CohortRun))
    monkeypatch.setattr(sql, "demographic_test", broken)  # fails after criteria tables were made
    with pytest.raises(RuntimeError):
        engine.generate(store, d, TENANT)
    assert _temp_tables(store) == 0
    with store.session() as s:  # nothing half-written either
        assert s.scalar(select(func.count()).select_from(m.CohortRun)) == runs_before


def test_mariadb_sessions_keep_a_runs_temporary_rows_in_memory(eunomia_mariadb) -> None:  # type: ignore[no-untyped-def]
    """A window or GROUP BY of a cohort run above MariaDB's 16 MB default went to an Aria file in /tmp (a run at
    Eunomia x10 died when that file vanished); every pooled session now allows 256 MB in memory."""
    store = eunomia_mariadb[0]
    for _ in range(2):  # a fresh and a reused pooled connection
        with store.engine.connect() as c:
            sizes = c.execute(text("SELECT @@session.tmp_table_size, @@session.max_heap_table_size, "
                                   "@@session.sort_buffer_size")).one()
        assert tuple(sizes) == (256 << 20, 256 << 20, 16 << 20)


def _failing_in_parts(real: Any) -> Any:
    """``engine.tally`` that fails when a part of a split run counts its rows (after they were copied)."""

    def failing(conn: Any, d: Any, t: Any, where: Any, enabled: Any) -> Any:
        if t.schema == "part":
            raise RuntimeError("a part failed while counting")
        return real(conn, d, t, where, enabled)

    return failing


def test_a_split_run_whose_part_fails_after_its_rows_are_copied_is_not_recorded(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A split run's parts tally their rows while the run's connection copies them (``parallel.run_parts``): a part
    failing then must still leave the tenant's earlier run of the definition as it was, and nothing attached."""
    store = eunomia_kb[0]
    d = parse_definition(DEFS["sinusitis_throat_culture_30d"])
    earlier = engine.counts(store, d, TENANT).run_id
    runs = m.CohortRun.__table__
    with store.session() as s:  # (a new run may reuse the old run's id: its creation time tells them apart)
        created = s.scalar(select(runs.c.created_at).where(runs.c.id == earlier))
    with monkeypatch.context() as patched:
        patched.setattr(parallel, "MIN_PERSONS", 0)
        patched.setattr(parallel, "WORKERS", 2)
        patched.setattr(engine, "tally", _failing_in_parts(engine.tally))
        with pytest.raises(RuntimeError, match="while counting"):
            engine.counts(store, d, TENANT)
    with store.session() as s:
        assert list(s.execute(select(runs.c.id, runs.c.created_at).where(runs.c.definition_hash == d.hash))) == \
            [(earlier, created)]
        assert s.scalar(select(func.count()).select_from(m.CohortEntry).where(m.CohortEntry.run_id == earlier))
    with store.engine.connect() as c:
        assert {r[1] for r in c.exec_driver_sql("PRAGMA database_list")} <= {"main", "temp"}
    assert _temp_tables(store) == 0


def test_a_split_run_leaves_foreign_key_checks_on_in_every_pooled_connection(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The run's copy into ``cohort_entries`` runs without foreign-key checks (``parallel.rows_unchecked``); after a
    run, and after a run whose part failed, every connection the pool hands out refuses an orphan entry again."""
    store = eunomia_kb[0]
    d = parse_definition(DEFS["era_pad_end_offset_enddate"])
    with monkeypatch.context() as patched:
        patched.setattr(parallel, "MIN_PERSONS", 0)
        patched.setattr(parallel, "WORKERS", 2)
        assert engine.counts(store, d, TENANT).persons
        patched.setattr(engine, "tally", _failing_in_parts(engine.tally))
        with pytest.raises(RuntimeError, match="while counting"):
            engine.counts(store, d, TENANT)
    conns = [store.engine.connect() for _ in range(4)]  # more than the run used: the run's and its parts'
    day = datetime.date(2020, 1, 1)
    try:
        for c in conns:
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with pytest.raises(Exception, match="FOREIGN KEY"):
            conns[0].execute(m.CohortEntry.__table__.insert().values(
                run_id=10**9, patient_id="p", start_date=day, event_id=1, op_start=day, op_end=day))
    finally:
        for c in conns:
            c.rollback()
            c.close()


def test_mariadb_reads_entry_events_in_written_join_order_also_when_wrapped(eunomia_mariadb) -> None:  # type: ignore[no-untyped-def]
    """MySQL-family planners start from observation periods unless told (STRAIGHT_JOIN). A SELECT wrapping the hinted
    entry events (written to a table first, or stored) merged the derived table and lost the hint: MariaDB then read
    every row of each patient through the patient index (Eunomia x10: era_pad 3.3 s, now 0.7 s). Every statement
    that joins a record table to the periods now carries the hint on its outermost SELECT."""
    store = eunomia_mariadb[0]
    seen: list[str] = []

    def before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        if "JOIN observation_periods" in statement and statement.startswith("INSERT"):
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        for name in ("era_pad_end_offset_enddate", "sinusitis_throat_culture_30d"):
            engine.generate(store, parse_definition(DEFS[name]), TENANT)
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
    assert len(seen) >= 2
    for statement in seen:
        outer = statement[statement.index("SELECT"):]
        assert outer.startswith("SELECT STRAIGHT_JOIN"), statement[:300]


def test_a_split_run_deletes_the_earlier_run_while_its_parts_evaluate(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Counting a definition again replaces its earlier run: on a split run the earlier run's rows (1.38M for era_pad
    at x100, 1.5 s) are deleted by the run's connection while the parts evaluate, in the transaction that records
    the new run, so a part failing leaves the earlier run as it was."""
    store = eunomia_kb[0]
    d = parse_definition(DEFS["era_pad_end_offset_enddate"])
    runs = m.CohortRun.__table__
    replaced, seen, fail = threading.Event(), [], []
    real_new_run, real_masked = engine._new_run, Evaluation.masked_events

    def new_run(conn: Any, d: Any, tenant: str) -> int:
        run = real_new_run(conn, d, tenant)
        replaced.set()
        return run

    def masked(self: Evaluation) -> Any:
        seen.append(replaced.wait(10))  # the earlier run is being replaced while this part evaluates
        if fail:
            raise RuntimeError("a part failed")
        return real_masked(self)

    engine.counts(store, d, TENANT)  # the earlier run
    with monkeypatch.context() as patched:
        patched.setattr(parallel, "MIN_PERSONS", 0)
        patched.setattr(parallel, "WORKERS", 2)
        patched.setattr(engine, "_new_run", new_run)
        patched.setattr(Evaluation, "masked_events", masked)
        again = engine.counts(store, d, TENANT)
        assert seen == [True, True]
        with store.session() as s:
            assert list(s.execute(select(runs.c.id, runs.c.created_at).where(runs.c.definition_hash == d.hash)))[0][0] \
                == again.run_id
            created = s.scalar(select(runs.c.created_at).where(runs.c.id == again.run_id))
            assert s.scalar(select(func.count()).select_from(runs).where(runs.c.definition_hash == d.hash)) == 1
        replaced.clear()
        fail.append(True)
        with pytest.raises(RuntimeError, match="a part failed"):
            engine.counts(store, d, TENANT)
    with store.session() as s:
        assert list(s.execute(select(runs.c.id, runs.c.created_at).where(runs.c.definition_hash == d.hash))) == \
            [(again.run_id, created)]
    assert _temp_tables(store) == 0
