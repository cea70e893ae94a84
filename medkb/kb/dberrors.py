"""Database errors classified by server error code: transient ones retried (bounded), the rest named."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from medkb.errors import ConfigError, DatabaseBusy, DatabaseError, DatabaseUnavailable, MedkbError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

# MySQL / MariaDB / TiDB codes. Transient: the same transaction, run again, normally succeeds.
RETRYABLE = {
    1205: "lock wait timeout",
    1213: "deadlock",
    8002: "write conflict on SELECT FOR UPDATE",
    8022: "transaction must be retried",
    8028: "schema changed during the transaction",
    9007: "write conflict",
    2006: "server closed the connection",
    2013: "connection lost during the query",
}
# The server (or the network to it) is down or overloaded: nothing medkb can fix by retrying now.
UNAVAILABLE = {1040, 1053, 2002, 2003, 2005, 2055, 9001, 9002, 9005}
# Settings are wrong: user, password, database name.
CONFIG = {1044: "access denied to the database", 1045: "access denied", 1049: "unknown database"}
# The server refused the statement for a reason worth naming.
HINTS = {
    1105: "TiDB internal error",
    1142: "the database user lacks a privilege",
    8004: "transaction too large (raise txn-total-size-limit or write in smaller batches)",
    8175: "the statement exceeded the server's memory quota",
}
ATTEMPTS = 4
# The database cannot write: SQLite's SQLITE_FULL / SQLITE_READONLY, MySQL 1021 disk full, 1114 table full,
# 1290 read-only server, the OS's ENOSPC / EROFS.
_STORAGE = re.compile(r"disk is full|disk full|no space left|table .* is full|readonly database|read-only|"
                      r"read only", re.I)


def error_code(exc: BaseException) -> int | None:
    """The server's numeric error code behind a SQLAlchemy / DB-API error, if it has one."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def classify(exc: DBAPIError) -> MedkbError:
    """The medkb error a failed statement means, by code (message first line, never a traceback)."""
    code = error_code(exc)
    first = str(getattr(exc, "orig", exc)).splitlines()[0][:300] if str(exc) else type(exc).__name__
    if code in (1021, 1114, 1290) or _STORAGE.search(first):
        return StorageError(f"the database cannot write ({first}); everything committed before this point is "
                            "intact and nothing of the failed write was kept: free space or make the database "
                            "writable, then run the same command again to finish")
    if code in RETRYABLE:
        return DatabaseBusy(f"database busy ({RETRYABLE[code]}, code {code}): {first}", code)
    if code == 2003 and ("CERTIFICATE_VERIFY_FAILED" in first or "SSL" in first):
        return ConfigError(f"TLS verification of the database server failed (check MEDKB_DATABASE_SSL_CA and "
                           f"the host name in the URL): {first}")
    if code in CONFIG:
        return ConfigError(f"database refused the connection ({CONFIG[code]}, code {code}): {first}")
    if code is None or code in UNAVAILABLE:
        return DatabaseUnavailable(f"database error: {first}")
    hint = HINTS.get(code, "the server refused the statement")
    return DatabaseError(f"database error {code} ({hint}): {first}", code)


def retrying(fn: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    """Run one unit of work, running it again on a transient conflict (jittered back-off); a conflict
    that outlasts ``attempts`` surfaces as ``DatabaseBusy`` (HTTP 503)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except DatabaseBusy as exc:
            if attempt == attempts:
                raise DatabaseBusy(f"{exc.message} (still failing after {attempts} attempts)", exc.code) from exc
            log.info("transient database conflict (code %s), attempt %d of %d", exc.code, attempt, attempts)
            time.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
    raise AssertionError("unreachable")
