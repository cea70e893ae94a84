"""Where a cohort run's time goes: every SQL statement's wall time, by thread, for chosen definitions of tests/cohorts.

Usage: .venv/bin/python -m bench.profile_cohorts sqlite:////tmp/w/x100/kb.db [NAME ...] [--min 0.02] [--kinds]
  NAME      definitions to run (file stems of tests/cohorts/*.json; default all), each timed as `engine.counts`
  --min S   list each statement taking at least S seconds (thread, seconds, its first 200 characters)
  --kinds   instead, sum the seconds by statement kind and thread (part rows, temporary fills, indexes, tallies, copy)
Statements of a split run overlap on two threads: their seconds add up to more than the wall time. The process
ends with its CPU time (user, system). The earlier runs in the file are deleted first (as bench_cohorts does).
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import threading
import time
from pathlib import Path
from typing import Any

from medkb.kb.sqlite_threads import statistics_off_at_start

DEFS = Path(__file__).parents[1] / "tests" / "cohorts"


def kind(statement: str) -> str:
    s = " ".join(statement.split())
    for needle, name in (("INSERT INTO cohort_entries", "copy into cohort_entries"),
                         ("INTO part.entries", "part rows"), ("CREATE INDEX", "CREATE INDEX"),
                         ("INSERT INTO tmp", "temporary fill")):
        if needle in s:
            return name
    return "select" if s.startswith("SELECT") else s[:25]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("names", nargs="*")
    ap.add_argument("--min", type=float, default=0.02)
    ap.add_argument("--kinds", action="store_true")
    args = ap.parse_args()
    statistics_off_at_start()  # as `medkb` does: a run split over both cores
    from sqlalchemy import delete, event

    from medkb.cohorts import engine
    from medkb.cohorts.definition import parse_definition
    from medkb.kb import models as m
    from medkb.kb.factory import open_store
    from medkb.settings import DatabaseSettings
    from tests.omop_support import TENANT

    store = open_store(DatabaseSettings(url=args.url))
    with store.session() as s:
        s.execute(delete(m.CohortEntry))
        s.execute(delete(m.CohortRun))
    seen: list[tuple[float, str, str]] = []

    def before(conn: Any, *_: Any) -> None:
        conn.info.setdefault("t", []).append(time.perf_counter())

    def after(conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append((time.perf_counter() - conn.info["t"].pop(), threading.current_thread().name, statement))

    event.listen(store.engine, "before_cursor_execute", before)
    event.listen(store.engine, "after_cursor_execute", after)
    kinds: collections.Counter[str] = collections.Counter()
    total = 0.0
    for name in args.names or sorted(p.stem for p in DEFS.glob("*.json")):
        d = parse_definition(json.loads((DEFS / f"{name}.json").read_text()))
        seen.clear()
        t0 = time.perf_counter()
        engine.counts(store, d, TENANT)
        wall = time.perf_counter() - t0
        total += wall
        if not args.kinds:
            print(f"== {name} {wall:.3f}s")
        for dt, thread, statement in seen:
            kinds[f"{thread.split('_')[0]:12s} {kind(statement)}"] += dt
            if not args.kinds and dt >= args.min:
                print(f"  {dt:6.3f} {thread:14s} {' '.join(statement.split())[:200]}")
    if args.kinds:
        for k, v in kinds.most_common():
            print(f"{v:7.3f} {k}")
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(f"== wall {total:.2f}s  CPU user {r.ru_utime:.2f}s system {r.ru_stime:.2f}s")


if __name__ == "__main__":
    main()
