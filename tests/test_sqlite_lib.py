"""The SQLite library medkb runs on (``medkb.kb.sqlite_lib``): the bundled build where pysqlite3-binary has a wheel, and
the settings it needs that Debian's build had by default."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, text

from medkb.kb import models as m
from medkb.kb import sqlite_lib
from medkb.kb.store import KnowledgeStore

BUNDLED_PLATFORM = sys.platform == "linux" and platform.machine() == "x86_64"


@pytest.mark.skipif(not BUNDLED_PLATFORM, reason="pysqlite3-binary ships wheels for Linux x86-64 only; elsewhere "
                                                 "medkb runs on Python's own sqlite3")
def test_a_store_runs_on_the_bundled_sqlite_with_lookaside_memory(sqlite_store: KnowledgeStore) -> None:
    """Debian's libsqlite3 3.40 (what Python's sqlite3 links here) omits lookaside memory: a malloc per row."""
    assert sqlite_lib.BUNDLED
    with sqlite_store.connection() as c:
        assert type(c.connection.dbapi_connection).__module__.startswith("pysqlite3")
        version = tuple(int(x) for x in c.exec_driver_sql("SELECT sqlite_version()").scalar().split("."))
        options = {r[0] for r in c.exec_driver_sql("PRAGMA compile_options")}
    assert version >= (3, 51)
    assert "OMIT_LOOKASIDE" not in options


def test_the_threads_check_reads_the_library_the_store_runs_on() -> None:
    """``medkb.kb.sqlite_threads`` turns statistics off in the SQLite that the connections use, not another copy."""
    from medkb.kb.sqlite_threads import _library

    lib = _library()
    assert lib is not None
    assert Path(lib._name).resolve() == Path(sqlite_lib.extension_path).resolve()
    assert sqlite_lib.dbapi.sqlite_version == sqlite_lib.dbapi.connect(":memory:").execute(
        "SELECT sqlite_version()").fetchone()[0]


def test_a_deleted_row_leaves_no_trace_in_the_database_file(sqlite_store: KnowledgeStore, tmp_path: Path) -> None:
    """Secure delete: the bundled SQLite defaults to leaving deleted content in free pages (Debian's build zeroes it);
    a deleted patient's data must not be readable from the file afterwards."""
    secret = "Zelda Quimby-Oyelaran 1958-03-07"
    with sqlite_store.session() as s:
        s.execute(insert(m.Tenant), [{"id": "t-del", "name": secret}])
    with sqlite_store.session() as s:
        s.execute(delete(m.Tenant).where(m.Tenant.id == "t-del"))
    with sqlite_store.connection() as c:
        c.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    db = Path(sqlite_store.engine.url.database or "")
    for f in (db, db.with_name(db.name + "-wal")):
        if f.exists():
            found = secret.encode() in f.read_bytes()
            assert not found, f"{f.name} still holds the deleted row"
