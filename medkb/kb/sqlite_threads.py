"""Whether SQLite connections on several threads of this process run in parallel, and the process set-up that lets them.

SQLite keeps process-wide memory statistics by default (``SQLITE_DEFAULT_MEMSTATUS=1``) behind one mutex taken on
every allocation. Debian's libsqlite3 is also built without lookaside memory (``SQLITE_OMIT_LOOKASIDE``), so a
statement allocates on nearly every row: two connections stepping on two threads then queue on that mutex and
together ran slower than one alone (a cohort run at Eunomia ×100 split in two: 5.6 s on one thread, 8.1 s on two;
with the statistics off, 2.6 s). The SQLite medkb bundles (``medkb.kb.sqlite_lib``) has lookaside, but still
takes the mutex on every allocation it makes. Nothing in medkb reads them (``sqlite3_memory_used``, a soft heap limit).
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache

from medkb.kb.sqlite_lib import extension_path

log = logging.getLogger(__name__)

_CONFIG_MEMSTATUS = 9  # SQLITE_CONFIG_MEMSTATUS
_STATUS_MEMORY_USED = 0  # SQLITE_STATUS_MEMORY_USED
_OK = 0


@cache
def _library() -> ctypes.CDLL | None:
    """The SQLite library medkb runs on (``medkb.kb.sqlite_lib``: its extension module, whose symbol lookup reaches
    the SQLite it bundles or links), or None where its C API cannot be reached."""
    try:
        lib = ctypes.CDLL(extension_path)
        for name in ("sqlite3_shutdown", "sqlite3_config", "sqlite3_initialize", "sqlite3_status64"):
            getattr(lib, name)
        return lib
    except (OSError, AttributeError):
        return None


def statistics_off_at_start() -> bool:
    """Turn SQLite's memory statistics off for this process. Call it once at process start, before any SQLite
    connection is opened: ``sqlite3_config`` needs SQLite uninitialised, and ``sqlite3_shutdown`` (Python's
    ``sqlite3`` initialises SQLite on import) is only safe with no connection open. Whether they are off."""
    lib = _library()
    if lib is None:
        return False
    if lib.sqlite3_shutdown() != _OK or lib.sqlite3_config(_CONFIG_MEMSTATUS, ctypes.c_int(0)) != _OK:
        lib.sqlite3_initialize()
        log.info("SQLite memory statistics stay on: a cohort run is not split over threads")
        return False
    return lib.sqlite3_initialize() == _OK


def threads_run_in_parallel() -> bool:
    """Whether the process keeps no memory statistics (its SQLite counts no memory in use while connections are
    open and have allocated), i.e. threads' connections do not queue on one allocation mutex."""
    lib = _library()
    if lib is None:
        return False
    used, highest = ctypes.c_int64(0), ctypes.c_int64(0)
    if lib.sqlite3_status64(_STATUS_MEMORY_USED, ctypes.byref(used), ctypes.byref(highest), 0) != _OK:
        return False
    return used.value == 0
