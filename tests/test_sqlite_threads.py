"""SQLite's memory statistics off at process start (``medkb.kb.sqlite_threads``): the condition under which a cohort run
is split over threads. Each case runs in a fresh interpreter: the set-up is only valid before any connection opens."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

QUERY = """
from medkb.kb.sqlite_lib import dbapi as sqlite3
c = sqlite3.connect(":memory:")
c.execute("CREATE TABLE t(x)")
c.executemany("INSERT INTO t VALUES (?)", [(str(i) * 20,) for i in range(2000)])
c.execute("SELECT x, count(*) FROM t GROUP BY x ORDER BY 1").fetchall()
"""


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_process_keeps_sqlite_memory_statistics_unless_turned_off_at_start() -> None:
    before = _run(f"""
        from medkb.kb.sqlite_threads import threads_run_in_parallel
        {QUERY.strip().replace(chr(10), chr(10) + '        ')}
        print(threads_run_in_parallel())
    """)
    after = _run(f"""
        from medkb.kb.sqlite_threads import statistics_off_at_start, threads_run_in_parallel
        print(statistics_off_at_start())
        {QUERY.strip().replace(chr(10), chr(10) + '        ')}
        print(threads_run_in_parallel())
    """)
    assert before == "False"
    assert after.split() == ["True", "True"]


def test_without_statistics_a_large_tenant_is_split_and_with_them_it_is_not(tmp_path) -> None:
    """The split decision itself: person_ranges on a SQLite file with more patients than MIN_PERSONS gives two
    ranges only in a process whose threads run in parallel (two cores here)."""
    code = f"""
        import sys
        from medkb.kb.sqlite_threads import statistics_off_at_start
        if sys.argv[1] == "off":
            statistics_off_at_start()
        from sqlalchemy import insert
        from medkb.cohorts import parallel
        from medkb.kb import models as m
        from medkb.kb.factory import init_store, open_store
        from medkb.settings import DatabaseSettings
        store = open_store(DatabaseSettings(url="sqlite:///{tmp_path}/kb_" + sys.argv[1] + ".db"))
        init_store(store)
        parallel.MIN_PERSONS = 10
        with store.session() as s:
            s.execute(insert(m.Tenant), [{{"id": "t1", "name": "t1"}}])
            s.execute(insert(m.Patient), [{{"id": f"p{{i:03d}}", "tenant_id": "t1"}} for i in range(40)])
        with store.connection() as c:
            print(len(parallel.person_ranges(c, "t1")))
    """
    split = [subprocess.run([sys.executable, "-c", textwrap.dedent(code), mode], capture_output=True, text=True,
                            timeout=300) for mode in ("on", "off")]
    assert all(r.returncode == 0 for r in split), [r.stderr[-2000:] for r in split]
    assert split[0].stdout.split()[-1] == "1"
    assert split[1].stdout.split()[-1] == str(min(2, os.cpu_count() or 1))
