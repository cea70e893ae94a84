"""Migration 0009_issue20 (cohort entries that stand for several events): per-event runs kept both ways."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings
from tests.migration_support import migrate

_COLS = "run_id, patient_id, event_id, start_date, end_date, op_start, op_end, mask"


def _runs(c) -> list[int]:  # type: ignore[no-untyped-def]
    return [r[0] for r in c.execute(text("SELECT id FROM cohort_runs ORDER BY id"))]


def test_upgrade_counts_old_entries_as_one_event_and_downgrade_drops_only_compact_runs(tmp_path: Path) -> None:
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    try:
        migrate(store, "0008_issue20")
        per_event = [(1, "p0", 9, "2020-03-01", "2020-03-02", "2019-01-01", "2021-01-01", 1),
                     (1, "p1", 3, "2020-01-01", "2020-01-05", "2019-01-01", "2021-01-01", 0),
                     (1, "p1", 7, "2020-01-02", None, "2019-01-01", "2021-01-01", 1)]
        with store.engine.begin() as c:
            for run in (1, 3):  # run 3: a run with no entry at all (no event qualified)
                c.execute(text("INSERT INTO cohort_runs (id, tenant_id, definition_hash, rules, created_at) "
                               f"VALUES ({run}, 't', 'h{run}', '{{}}', '2026-01-01')"))
            for r in per_event:
                c.execute(text(f"INSERT INTO cohort_entries ({_COLS}) VALUES (:a, :b, :c, :d, :e, :f, :g, :h)"),
                          dict(zip("abcdefgh", r)))
        init_store(store)  # to head: every stored row is one event
        with store.engine.begin() as c:
            assert c.execute(text("SELECT events FROM cohort_entries")).scalars().all() == [1, 1, 1]
            # a run stored compactly after the upgrade: one row standing for 4 events
            c.execute(text("INSERT INTO cohort_runs (id, tenant_id, definition_hash, rules, created_at) "
                           "VALUES (2, 't', 'h2', '{}', '2026-01-02')"))
            c.execute(text(f"INSERT INTO cohort_entries ({_COLS}, events) VALUES "
                           "(2, 'p1', 3, '2020-01-01', NULL, '2019-01-01', '2021-01-01', 1, 4)"))
        migrate(store, "0008_issue20", down=True)  # the older code would read run 2 as one event, so it goes
        with store.engine.connect() as c:
            assert _runs(c) == [1, 3]
            assert [tuple(r) for r in c.execute(text(f"SELECT {_COLS} FROM cohort_entries"))] == per_event
        migrate(store, "0009_issue20")  # the dates as they were written (0010 turns them into numbers)
        with store.engine.connect() as c:
            assert _runs(c) == [1, 3]
            kept = c.execute(text(f"SELECT {_COLS}, events FROM cohort_entries")).all()
            assert [tuple(r) for r in kept] == [(*r, 1) for r in per_event]
    finally:
        store.close()
