"""The test fixtures themselves: MariaDB tests fail (not skip) in CI, and the TiDB/MariaDB clean-up
touches only medkb's own tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings
from tests.conftest import ROOT, drop_medkb_tables


def test_require_mariadb_turns_a_skip_into_a_failure(tmp_path: Path) -> None:
    """With no server, a MariaDB test skips on a laptop and fails under MEDKB_REQUIRE_MARIADB=1 (CI)."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_probe.py").write_text("def test_needs_server(mariadb_url):\n    assert mariadb_url\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDKB_TEST_MARIADB_URL": "mysql+pymysql://root@127.0.0.1:1/"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
           str(tmp_path / "test_probe.py")]
    skipped = subprocess.run(cmd, env={**env, "MEDKB_REQUIRE_MARIADB": ""}, capture_output=True, text=True,
                             cwd=tmp_path)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout + skipped.stderr
    failed = subprocess.run(cmd, env={**env, "MEDKB_REQUIRE_MARIADB": "1"}, capture_output=True, text=True,
                            cwd=tmp_path)
    assert failed.returncode == 1 and "MEDKB_REQUIRE_MARIADB=1" in failed.stdout, failed.stdout


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
