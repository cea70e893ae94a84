"""Migration 0008_issue20 on a knowledge base holding cohort runs: entries kept, clustered by run and person."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings
from tests.migration_support import migrate


def test_upgrade_keeps_stored_runs_and_clusters_their_entries(tmp_path: Path) -> None:
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    try:
        migrate(store, "0007_issue13")
        rows = [(1, "p1", 7, "2020-01-02", None, "2019-01-01", "2021-01-01", 1),
                (1, "p1", 3, "2020-01-01", "2020-01-05", "2019-01-01", "2021-01-01", 0),
                (1, "p0", 9, "2020-03-01", "2020-03-02", "2019-01-01", "2021-01-01", 1)]
        with store.engine.begin() as c:
            c.execute(text("INSERT INTO cohort_runs (id, tenant_id, definition_hash, rules, created_at) "
                           "VALUES (1, 't', 'h', '{}', '2026-01-01')"))
            for r in rows:
                c.execute(text("INSERT INTO cohort_entries (run_id, patient_id, event_id, start_date, end_date, "
                               "op_start, op_end, mask) VALUES (:a, :b, :c, :d, :e, :f, :g, :h)"),
                          dict(zip("abcdefgh", r)))
        init_store(store)  # upgrades to head
        migrate(store, "0007_issue13", down=True)  # and back, and forward again: rows survive both ways
        migrate(store, "0009_issue20")  # the dates as they were written (0010 turns them into numbers)
        with store.engine.connect() as c:
            kept = c.execute(text("SELECT run_id, patient_id, event_id, start_date, end_date, op_start, op_end, "
                                  "mask FROM cohort_entries")).all()
            plan = [r[3] for r in c.execute(text(
                "EXPLAIN QUERY PLAN SELECT patient_id, start_date, mask, op_end FROM cohort_entries "
                "WHERE run_id = 1 ORDER BY patient_id, start_date"))]
        # read in key order from the table itself: no row-id lookup, no sort
        assert [tuple(r) for r in kept] == sorted(rows, key=lambda r: (r[1], r[3]))
        assert plan == ["SEARCH cohort_entries USING PRIMARY KEY (run_id=?)"], plan
    finally:
        store.close()
