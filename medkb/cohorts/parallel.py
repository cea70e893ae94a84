"""A SQLite cohort run split by person-id range over several connections in threads, so it uses every core.

SQLite runs a statement on one thread; Python's sqlite3 releases the GIL while a statement steps, so parts on their
own connections run at once where the process keeps no SQLite memory statistics (``medkb.kb.sqlite_threads``: with
them the threads queue on one mutex, and a run is not split). Every step of a run works per person (criteria,
limits, probes, stored rows), so a part is the run restricted to its persons and the parts' rows together are the
run's rows. A part writes its rows into its own scratch database file (one writer per file: parts never wait on each
other or on the run's write transaction); the run's connection copies them into ``cohort_entries`` in the
transaction that records the run, while each part counts its own rows (``medkb.cohorts.tally``).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, func, select

from medkb.cohorts.sql import ALL_PERSONS, Persons
from medkb.kb import models as m
from medkb.kb.sqlite_threads import threads_run_in_parallel

WORKERS: int | None = None  # parts per run; None: one per core up to 2 where threads run in parallel, else 1
M = TypeVar("M")
T = TypeVar("T")
MIN_PERSONS = 20_000  # below this a run takes well under a second: threads and scratch files cost more than they save


def person_ranges(conn: Connection, tenant: str, workers: int | None = None) -> list[Persons]:
    """Person-id ranges of about equal numbers of the tenant's patients, one per part; one range (the whole
    tenant) off SQLite, on one core, where threads would queue on SQLite's statistics mutex, or for a small tenant."""
    if conn.dialect.name != "sqlite":
        return [ALL_PERSONS]
    workers = workers or WORKERS or (min(2, os.cpu_count() or 1) if threads_run_in_parallel() else 1)
    if workers < 2:
        return [ALL_PERSONS]
    p = m.Patient.__table__
    n = int(conn.scalar(select(func.count()).select_from(p).where(p.c.tenant_id == tenant)) or 0)
    if n < max(MIN_PERSONS, workers):
        return [ALL_PERSONS]
    # Any bounds give the same rows (the ranges cover every id); these balance the parts. Read in the primary key's
    # order over all tenants (an index walk, ~10 ms at 269k patients); by tenant it was a sort of its patients.
    total = int(conn.scalar(select(func.count()).select_from(p)) or 0)
    bounds: list[str | None] = [conn.scalar(select(p.c.id).order_by(p.c.id).offset(total * k // workers).limit(1))
                                for k in range(1, workers)]
    return list(zip([None, *bounds], [*bounds, None]))


@contextmanager
def scratch_files(n: int) -> Iterator[list[Path]]:
    """``n`` scratch database paths, deleted with their directory afterwards."""
    with tempfile.TemporaryDirectory(prefix="medkb-cohort-") as d:
        yield [Path(d) / f"part{k}.db" for k in range(n)]


@contextmanager
def attached(conn: Connection, path: Path, name: str) -> Iterator[str]:
    """``path`` attached to ``conn`` as ``name`` (no journal, no fsync, no zeroing: scratch rows), detached
    afterwards."""
    conn.exec_driver_sql(f"ATTACH DATABASE ? AS {name}", (str(path),))
    try:
        conn.exec_driver_sql(f"PRAGMA {name}.journal_mode = OFF")
        conn.exec_driver_sql(f"PRAGMA {name}.synchronous = OFF")
        # the file is deleted whole afterwards: zeroing the pages its rows leave protects nothing
        conn.exec_driver_sql(f"PRAGMA {name}.secure_delete = OFF")
        yield name
    finally:
        conn.rollback()  # DETACH is refused inside a transaction
        conn.exec_driver_sql(f"DETACH DATABASE {name}")


@contextmanager
def rows_unchecked(conn: Connection) -> Iterator[None]:
    """``conn`` without foreign-key checks (set between transactions), for the run's copy into ``cohort_entries``:
    every row it writes names the run that the same transaction inserts, so the per-row parent lookup proves
    nothing (era_pad x100, 1.42M rows: 1.5-1.7 s with it, 1.3 s without). Checks are back on afterwards, also
    after a failure, before the connection returns to the pool."""
    conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
    try:
        yield
    finally:
        conn.rollback()  # the pragma is a no-op inside a transaction
        conn.exec_driver_sql("PRAGMA foreign_keys = ON")


def run_parts(parts: list[Persons], work: Callable[[Persons, int, threading.Event], None], meanwhile: Callable[[], M],
              then: Callable[[M], T]) -> T:
    """``work(persons, k, written)`` for every part at once, one thread each; ``meanwhile()`` in the calling thread
    while they run; ``then(`` its result ``)`` there as soon as every part has set ``written`` (its rows are
    committed: a part may go on, e.g. counting them, while ``then`` copies them); ``then``'s result once every part
    has finished. The first failure is raised."""
    written = [threading.Event() for _ in parts]
    with ThreadPoolExecutor(len(parts), thread_name_prefix="cohort-part") as pool:
        futures = [pool.submit(work, persons, k, written[k]) for k, persons in enumerate(parts)]
        early = meanwhile()
        for f, w in zip(futures, written):
            while not w.wait(0.01):
                if f.done():
                    f.result()  # a part that failed before its rows were written
                    break
        out = then(early)
        for f in futures:
            f.result()
        return out
