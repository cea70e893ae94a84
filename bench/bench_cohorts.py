"""Cohort counting at Eunomia ×N: medkb (SQLite, MariaDB) side by side with duckcdm (OHDSI Circe) on DuckDB.

Usage: .venv/bin/python -m bench.bench_cohorts --scale 1 --scale 10 [--mariadb mysql+pymysql://root@127.0.0.1:3306/]
       [--workdir DIR]  reuse DIR/xN/eunomia_xN.duckdb and DIR/xN/kb.db (and --mariadb-db URL) when they exist

For each scale: a DuckDB copy of Eunomia with N copies of every person (new person ids), ingested into a fresh
SQLite file (and MariaDB database) with `ingest records --format omop --no-notes`; then every definition of
tests/cohorts/ is counted in the same run by duckcdm on the DuckDB copy (Circe SQL with attrition statistics) and by
medkb (rule masks generated, attrition by person and by event, final cohort). Times are wall seconds on a shared
machine: compare the columns of one run, not runs with each other.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import duckdb
from sqlalchemy import delete

from medkb.cohorts import engine
from medkb.cohorts.definition import parse_definition
from medkb.ingest.omop import eunomia_file
from medkb.kb import models as m
from medkb.kb.factory import init_store, open_store
from medkb.kb.sqlite_threads import statistics_off_at_start
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings
from tests.cohort_oracle import CirceOracle
from tests.omop_support import TENANT, ingest_eunomia_from

DEFS = {p.stem: json.loads(p.read_text()) for p in sorted((Path(__file__).parents[1] / "tests" / "cohorts").glob("*.json"))}
STEP = 10_000_000  # person id offset between copies


def scaled_cdm(n: int, out: Path) -> Path:
    """Eunomia with every person-bearing table repeated n times under new person ids."""
    path = out / f"eunomia_x{n}.duckdb"
    con = duckdb.connect(str(path))
    try:
        con.execute(f"ATTACH '{eunomia_file()}' AS eu (READ_ONLY)")
        for (t,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog='eu'").fetchall():
            cols = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE "
                                              f"table_catalog='eu' AND table_name='{t}' ORDER BY ordinal_position").fetchall()]
            if "PERSON_ID" not in [c.upper() for c in cols] or n == 1:
                con.execute(f'CREATE TABLE "{t}" AS SELECT * FROM eu."{t}"')
                continue
            sel = ", ".join(f"{c} + k * {STEP} AS {c}" if c.upper() in ("PERSON_ID", f"{t.upper()}_ID")
                            or c.upper().endswith("OCCURRENCE_ID") else c for c in cols)
            con.execute(f'CREATE TABLE "{t}" AS SELECT {sel} FROM eu."{t}", range({n}) r(k)')
    finally:
        con.close()
    return path


def _reused(url: str) -> KnowledgeStore:
    """A prepared knowledge base, migrated to head, without the runs of an earlier benchmark (every definition is
    then generated as on first use: no old run to delete)."""
    store = open_store(DatabaseSettings(url=url))
    init_store(store)
    with store.session() as s:
        s.execute(delete(m.CohortEntry))
        s.execute(delete(m.CohortRun))
    return store


def time_medkb(store, d) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    engine.counts(store, d, TENANT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, action="append", default=None)
    ap.add_argument("--mariadb", default=None, help="a MariaDB server URL (a medkb_test_* database is created)")
    ap.add_argument("--mariadb-db", default=None, help="an already ingested MariaDB database (URL) to reuse")
    ap.add_argument("--workdir", type=Path, default=None, help="reuse the copies and SQLite files prepared here")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    statistics_off_at_start()  # as `medkb` does at start: a SQLite run split over both cores
    results = []
    for n in args.scale or [1, 10]:
        work = args.workdir / f"x{n}" if args.workdir else Path(tempfile.mkdtemp(prefix=f"cohort-x{n}-"))
        work.mkdir(parents=True, exist_ok=True)
        cdm = work / f"eunomia_x{n}.duckdb"
        if not cdm.exists():
            scaled_cdm(n, work)
        t0 = time.perf_counter()
        if (work / "kb.db").exists() and args.workdir:
            sqlite = _reused(f"sqlite:///{work / 'kb.db'}")
        else:
            sqlite, _ = ingest_eunomia_from(cdm, f"sqlite:///{work / 'kb.db'}")
        row = {"scale": n, "persons": sqlite.count("patients"), "conditions": sqlite.count("conditions"),
               "drugs": sqlite.count("medications"), "ingest_sqlite_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        stores = {"sqlite": sqlite}
        maria_url = None
        if args.mariadb_db:
            stores["mariadb"] = _reused(args.mariadb_db)
        elif args.mariadb:
            from tests import conftest

            conftest.MARIADB_SERVER = args.mariadb
            t0 = time.perf_counter()
            maria_url = conftest.create_mariadb_database()
            stores["mariadb"], _ = ingest_eunomia_from(cdm, maria_url)
            row["ingest_mariadb_s"] = round(time.perf_counter() - t0, 1)
        oracle = CirceOracle(work, cdm=cdm)
        per: dict[str, dict[str, float]] = {}
        for name, raw in DEFS.items():
            d = parse_definition(raw)
            t0 = time.perf_counter()
            oracle.run(raw)
            per[name] = {"duckcdm": round(time.perf_counter() - t0, 3)}
            for label, st in stores.items():
                per[name][label] = round(time_medkb(st, d), 3)
            print(f"  x{n} {name:45s} " + "  ".join(f"{c}={t:.3f}s" for c, t in per[name].items()), flush=True)
        oracle.close()
        for st in stores.values():
            st.close()
        if maria_url:
            conftest.drop_mariadb_database(maria_url)
        row["load_average"] = os.getloadavg()
        row["definitions"] = per
        for col in ["duckcdm", *stores]:
            row[f"total_{col}_s"] = round(sum(v[col] for v in per.values()), 2)
            row[f"slowest_{col}_s"] = max((v[col], k) for k, v in per.items())
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "definitions"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
