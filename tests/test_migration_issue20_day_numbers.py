"""Migration 0010_issue20 and ``medkb.kb.types.Day``: SQLite keeps dates as Julian day numbers, read back as dates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, text

from medkb.kb import models as m
from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings
from tests.migration_support import migrate

DAYS = ["2020-01-02", "1969-12-31", "2000-02-29"]


def test_upgrade_turns_iso_dates_into_day_numbers_and_downgrade_gives_the_same_text(tmp_path: Path) -> None:
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    try:
        migrate(store, "0009_issue20")
        with store.engine.begin() as c:
            c.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t', 't', '2026-01-01')"))
            c.execute(text("INSERT INTO patients (id, tenant_id, deceased, death_date) VALUES ('p', 't', 1, :d)"),
                      {"d": DAYS[0]})
            for i, day in enumerate(DAYS):
                stop = None if i == 1 else DAYS[(i + 1) % 3]  # a NULL beside a date in the same row
                c.execute(text("INSERT INTO conditions (tenant_id, patient_id, code, start, stop) "
                               "VALUES ('t', 'p', :code, :start, :stop)"), {"code": str(i), "start": day, "stop": stop})
            c.execute(text("INSERT INTO observation_periods (tenant_id, patient_id, start, stop, derived) "
                           "VALUES ('t', 'p', '1960-01-01', '2030-12-31', 0)"))
        before = _dump(store)
        init_store(store)  # to head
        with store.engine.connect() as c:
            raw = c.execute(text("SELECT start, typeof(start), date(start), julianday(date(start)) FROM conditions "
                                 "ORDER BY code")).all()
            assert [r[1] for r in raw] == ["integer"] * 3
            assert [r[2] for r in raw] == DAYS  # SQLite's date functions read the number as the same day
            assert [r[0] for r in raw] == [int(r[3] + 0.5) for r in raw]
            assert c.execute(text("SELECT start FROM observation_periods")).scalar() == 2436935  # JDN of 1960-01-01
        with store.session() as s:  # the ORM reads dates
            starts = s.scalars(select(m.Condition.start).order_by(m.Condition.code)).all()
            assert starts == [dt.date.fromisoformat(d) for d in DAYS]
            assert s.scalar(select(m.Patient.death_date)) == dt.date(2020, 1, 2)
            # a comparison with a Python date binds a day number, so ranges still work
            assert s.scalars(select(m.Condition.code).where(m.Condition.start >= dt.date(2000, 2, 29))
                             .order_by(m.Condition.code)).all() == ["0", "2"]
        migrate(store, "0009_issue20", down=True)
        assert _dump(store) == before
    finally:
        store.close()


def test_a_day_column_refuses_what_is_not_a_date(tmp_path: Path) -> None:
    """An ISO string stored as text would compare wrongly against day numbers (text sorts after every integer)."""
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    try:
        init_store(store)
        with pytest.raises(Exception, match="takes a datetime.date, got str"):
            with store.session() as s:
                s.add(m.Tenant(id="t", name="t"))
                s.add(m.Patient(id="p", tenant_id="t", death_date="2020-01-01"))
                s.flush()
    finally:
        store.close()


def _dump(store) -> list[tuple]:  # type: ignore[no-untyped-def]
    with store.engine.connect() as c:
        return [tuple(r) for t in ("patients", "conditions", "observation_periods")
                for r in c.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
