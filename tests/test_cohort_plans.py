"""How a cohort run executes: every statement reads through an index, scratch tables never outlive the run, and the
one-pass era count equals the eras built. (Speed itself is measured in bench/bench_cohorts.py, never timed here.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from medkb.cohorts import engine, sql
from medkb.cohorts.definition import parse_definition
from medkb.kb import models as m
from tests.omop_support import TENANT

DEFS = {p.stem: json.loads(p.read_text()) for p in sorted((Path(__file__).parent / "cohorts").glob("*.json"))}
RECORD_TABLES = ("conditions", "medications", "observations", "procedures", "encounters", "observation_periods",
                 "patients")


def _plans(store: Any, raw: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(statement, its SQLite query plan lines) of every row-reading statement one generation runs."""
    seen: list[tuple[str, list[str]]] = []

    def before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        if "SELECT" in statement and not statement.lstrip().startswith(("PRAGMA", "CREATE", "DROP")):
            query = statement[statement.index("SELECT"):] if statement.startswith("INSERT") else statement
            cur = conn.connection.dbapi_connection.cursor()  # same connection: the run's temp tables are visible
            seen.append((statement, [r[3] for r in cur.execute("EXPLAIN QUERY PLAN " + query, params)]))
            cur.close()

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        engine.generate(store, parse_definition(raw), TENANT)
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


def test_the_one_pass_era_count_equals_the_eras_built(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    store = eunomia_kb[0]
    for name, raw in DEFS.items():
        d = parse_definition(raw)
        c = engine.counts(store, d, TENANT)
        eras = engine.members(store, d, c.run_id)
        assert (c.persons, c.entries) == (len({p for p, _, _ in eras}), len(eras)), name


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
    monkeypatch.setattr(sql, "demographic_part", broken)  # fails after criteria tables were made
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
