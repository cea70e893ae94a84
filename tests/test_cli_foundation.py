"""The CLI skeleton end to end, as a subprocess: init is idempotent, stats lists every table, bad URLs
give one readable line and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from medkb import __version__
from medkb.kb import models as m


def medkb(*args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if db is not None:
        env["MEDKB_DATABASE_URL"] = db
    return subprocess.run(
        [sys.executable, "-m", "medkb.cli.main", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_version() -> None:
    r = medkb("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_init_twice_then_stats_shows_every_table_empty(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'new.db'}"
    first = medkb("init", db=db)
    assert first.returncode == 0, first.stderr
    assert "initialised" in first.stdout
    second = medkb("init", db=db)
    assert second.returncode == 0 and "already up to date" in second.stdout
    stats = medkb("stats", "--json", db=db)
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert set(data["tables"]) == set(m.TABLES)
    # init fixes the embedding dimension (and starts the generation counter) in kb_meta; no data yet.
    assert all(n == 0 for t, n in data["tables"].items() if t != "kb_meta")
    assert data["embedding_model"] is None and data["embedding_dim"] == 384 and data["backend"] == "sqlite"


def test_stats_hides_the_password(tmp_path: Path) -> None:
    r = medkb("stats", db="mysql+pymysql://root:s3cret-pw@127.0.0.1:1/x")
    assert r.returncode != 0
    assert "s3cret-pw" not in r.stdout + r.stderr


def test_unreachable_database_is_one_readable_line() -> None:
    r = medkb("stats", db="mysql+pymysql://nobody@127.0.0.1:1/x")
    assert r.returncode == 3
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database")
    assert "Traceback" not in r.stderr


def test_unsupported_or_garbled_url() -> None:
    for url in ("postgresql://x@h/db", "not a url"):
        r = medkb("stats", db=url)
        assert r.returncode == 2, (url, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
