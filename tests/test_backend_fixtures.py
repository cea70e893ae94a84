"""The test fixtures themselves: MariaDB tests fail (not skip) in CI, and the TiDB/MariaDB clean-up
touches only medkb's own tables."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect, text

from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings
from tests import conftest
from tests.conftest import drop_medkb_tables


def test_require_mariadb_turns_a_skip_into_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no server, a MariaDB test skips on a laptop and fails under MEDKB_REQUIRE_MARIADB=1 (CI)."""
    monkeypatch.setattr(conftest, "MARIADB_SERVER", "mysql+pymysql://root@127.0.0.1:1/")
    for require, outcome in ((False, pytest.skip.Exception), (True, pytest.fail.Exception)):
        monkeypatch.setattr(conftest, "_mariadb_down", [])
        monkeypatch.setattr(conftest, "REQUIRE_MARIADB", require)
        with pytest.raises(outcome, match="no MariaDB at mysql"):
            conftest.create_mariadb_database()


def test_drop_medkb_tables_leaves_other_tables_alone(mariadb_url: str) -> None:
    """README: the TiDB suite drops medkb's tables only; a hospital's own table in that database stays."""
    engine = create_engine(mariadb_url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE hospital_own (id INT PRIMARY KEY)"))
    store = open_store(DatabaseSettings(url=mariadb_url))
    init_store(store)
    store.close()
    assert {"chunks", "audit_log", "alembic_version"} <= set(inspect(engine).get_table_names())
    drop_medkb_tables(engine)
    assert inspect(engine).get_table_names() == ["hospital_own"]
    engine.dispose()
