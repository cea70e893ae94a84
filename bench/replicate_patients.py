"""Grows an ingested SQLite knowledge base to N copies of its patients, for the cohort benchmark at Eunomia ×N.

Usage: .venv/bin/python -m bench.replicate_patients KB.db N [--tenant research]

`medkb ingest records <eunomia> --format omop --no-notes` of ×1 takes seconds to minutes; ingesting a ×100 CDM row by
row takes hours. This copies every patient k = 1..N-1 times in SQL under the id `<id>~k` with all its rows (records,
observation periods), each copy keeping its original's (already shifted) dates, so copies of a patient have the same
timeline like the DuckDB copies of ``bench.bench_cohorts.scaled_cdm``. Record-table indexes are dropped first and
rebuilt after (one sort each instead of a b-tree insert per row). Rows get new row ids.
"""

from __future__ import annotations

import argparse
from medkb.kb.sqlite_lib import dbapi as sqlite3  # the SQLite medkb runs on: one library per process
import time

TABLES = ["patients", "encounters", "conditions", "medications", "observations", "allergies", "procedures",
          "observation_periods"]


def replicate(path: str, n: int, tenant: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    # A build of scratch data: no rollback journal, no fsync (a crash means rebuilding the copy).
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1048576")
    con.execute("PRAGMA temp_store=MEMORY")
    already = con.execute("SELECT count(*) FROM patients WHERE tenant_id=? AND id LIKE '%~%'", (tenant,)).fetchone()[0]
    if already:
        raise SystemExit(f"{path} already holds {already} copied patients")
    indexes = con.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL AND tbl_name IN "
                          f"({','.join('?' * len(TABLES))})", TABLES).fetchall()
    con.execute("BEGIN")
    for name, _ in indexes:
        con.execute(f'DROP INDEX "{name}"')
    con.execute("CREATE TEMP TABLE ks(k INTEGER PRIMARY KEY)")
    con.executemany("INSERT INTO ks VALUES (?)", [(k,) for k in range(1, n)])
    for t in TABLES:
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
        key = "id" if t == "patients" else "patient_id"
        keep = [c for c in cols if c != "id" or t == "patients"]
        sel = ", ".join(f"{c} || '~' || ks.k" if c == key else f't."{c}"' for c in keep)
        t0 = time.perf_counter()
        # k-major: each copy's rows follow its original's order (row ids grow per copy)
        con.execute(f'INSERT INTO "{t}" ({", ".join(keep)}) SELECT {sel} FROM ks JOIN "{t}" t '
                    f"ON t.tenant_id = ? ORDER BY ks.k, t.rowid", (tenant,))
        print(f"{t}: {con.execute(f'SELECT count(*) FROM {t}').fetchone()[0]} rows "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for name, sql in indexes:
        t0 = time.perf_counter()
        con.execute(sql)
        print(f"index {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    con.execute("COMMIT")
    con.execute("PRAGMA journal_mode=WAL")  # as the store opens it (no ANALYZE: an ingest does not run one)
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("n", type=int)
    ap.add_argument("--tenant", default="research")
    args = ap.parse_args()
    replicate(args.db, args.n, args.tenant)


if __name__ == "__main__":
    main()
