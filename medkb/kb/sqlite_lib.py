"""Which SQLite library medkb runs on: the SQLite that pysqlite3-binary bundles where installed, else Python's own.

Debian's libsqlite3 (3.40, what Python's ``sqlite3`` links here) is built without lookaside memory
(``SQLITE_OMIT_LOOKASIDE``), so a statement calls malloc on nearly every row; pysqlite3-binary bundles SQLite 3.51
with lookaside and a newer query planner (the 19 cohort definitions at Eunomia x100: 21.9 s on Debian's, 17.3 s on
the bundled one with secure_delete on). It is a drop-in copy of the ``sqlite3`` module; its wheels cover Linux
x86-64 only, and elsewhere Python's own is used. One library per process: two copies of SQLite on one file release each other's POSIX locks
(sqlite.org/howtocorrupt.html, 2.2.1), so everything in medkb, its tests and benchmarks opens SQLite files
through ``dbapi`` here, never ``import sqlite3``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def _load() -> tuple[ModuleType, str]:
    """(the DB-API module, the path of the extension module whose symbols include SQLite's C API)."""
    try:
        from pysqlite3 import dbapi2

        return dbapi2, importlib.import_module("pysqlite3._sqlite3").__file__ or ""
    except ImportError:
        import sqlite3
        import _sqlite3

        return sqlite3, _sqlite3.__file__ or ""


dbapi, extension_path = _load()
BUNDLED = dbapi.__name__.startswith("pysqlite3")

__all__ = ["dbapi", "extension_path", "BUNDLED"]
