"""Faults on the real `medkb ingest` CLI and a real SQLite file: SIGKILL half-way then re-run equals a clean run;
two ingests of one source at once end consistent; a full disk (a small tmpfs) and a read-only filesystem give a
clear error and lose nothing already committed. The corpus is a slice of ../shared/data/bioasq-dev."""

from __future__ import annotations

import json
import os
import signal
from medkb.kb.sqlite_lib import dbapi as sqlite3  # the SQLite medkb runs on: one library per process
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]
DOCS = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = shared_data("bioasq-dev", "corpus.jsonl")
    out = tmp_path_factory.mktemp("faults") / "corpus.jsonl"
    with src.open(encoding="utf-8") as f, out.open("w", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i == DOCS:
                break
            g.write(line)
    return out


def medkb(db: Path, *args: str, **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def, type-arg]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MEDKB_DATABASE_URL": f"sqlite:///{db}"}
    return subprocess.Popen([sys.executable, "-m", "medkb.cli.main", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_ok(db: Path, *args: str) -> str:
    p = medkb(db, *args)
    out, errs = p.communicate(timeout=600)
    assert p.returncode == 0, out + errs
    return out + errs


def ingest_args(corpus: Path) -> list[str]:
    return ["ingest", "docs", str(corpus), "--format", "beir", "--source", "bioasq-slice", "--lang", "en"]


def snapshot(db: Path) -> dict[str, object]:
    """What search can see and what the counts say: documents, their chunks, mentions, every table's rows."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        docs = con.execute("SELECT external_id, version, content_hash, superseded FROM documents "
                           "ORDER BY external_id, version").fetchall()
        chunks = con.execute("SELECT d.external_id, c.ordinal, c.text, c.token_count, length(c.embedding) "
                             "FROM chunks c JOIN documents d ON d.id = c.document_id "
                             "ORDER BY d.external_id, c.ordinal").fetchall()
        mentions = con.execute("SELECT d.external_id, c.ordinal, m.entity_id FROM mentions m "
                               "JOIN chunks c ON c.id = m.chunk_id JOIN documents d ON d.id = c.document_id "
                               "ORDER BY 1, 2, 3").fetchall()
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE "
                                            "'sqlite_%' AND name NOT IN ('kb_meta', 'alembic_version', "
                                            "'audit_log')")]
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    return {"documents": docs, "chunks": chunks, "mentions": mentions, "counts": counts}


def chunks_per_doc(snap: dict[str, object]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ext, *_ in snap["chunks"]:  # type: ignore[attr-defined]
        out[ext] = out.get(ext, 0) + 1
    return out


@pytest.fixture(scope="module")
def clean(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    db = tmp_path_factory.mktemp("clean") / "kb.db"
    run_ok(db, "ingest", "ontology", "diseases-basic")
    run_ok(db, *ingest_args(corpus))
    snap = snapshot(db)
    assert len(snap["documents"]) == DOCS and snap["mentions"]  # type: ignore[arg-type]
    return snap


def documents_now(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            return int(con.execute("SELECT count(*) FROM documents").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_sigkill_mid_ingest_then_rerun_equals_a_clean_run(corpus: Path, clean: dict, tmp_path: Path) -> None:
    db = tmp_path / "kb.db"
    run_ok(db, "ingest", "ontology", "diseases-basic")
    p = medkb(db, *ingest_args(corpus))
    deadline = time.monotonic() + 300
    while documents_now(db) < DOCS // 4 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the ingest finished before it could be killed; raise DOCS"
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed = snapshot(db)
    n = len(killed["documents"])
    assert DOCS // 4 <= n < DOCS
    # Nothing half-written is visible: every document present has all of its chunks, as the clean run has them.
    want = chunks_per_doc(clean)
    assert all(want[ext] == k for ext, k in chunks_per_doc(killed).items())
    assert {d for d, *_ in killed["documents"]} == set(chunks_per_doc(killed))
    out = run_ok(db, *ingest_args(corpus))
    assert snapshot(db) == clean, out


@pytest.mark.slow
def test_two_ingests_of_one_source_at_once_end_consistent(corpus: Path, clean: dict, tmp_path: Path) -> None:
    db = tmp_path / "kb.db"
    run_ok(db, "ingest", "ontology", "diseases-basic")
    procs = [medkb(db, *ingest_args(corpus)) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert snapshot(db) == clean


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    _mount(mnt, "1200k")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_and_loses_nothing_committed(corpus: Path, clean: dict, small_disk: Path) -> None:
    db = small_disk / "kb.db"
    p = medkb(db, *ingest_args(corpus))
    out, errs = p.communicate(timeout=600)
    assert p.returncode != 0 and "Traceback" not in errs, errs[-2000:]
    assert "error: the database cannot write" in errs and "disk is full" in errs, errs[-2000:]
    assert errs.count("error:") == 1 and "failed:" not in out  # one clear error, not one per document
    snap = snapshot(db)
    want = chunks_per_doc(clean)
    assert 0 < len(snap["documents"]) < DOCS  # some documents were committed before the disk filled up
    assert all(want[ext] == k for ext, k in chunks_per_doc(snap).items())  # each of them whole


@pytest.mark.slow
def test_a_read_only_database_is_a_clear_error_and_changes_nothing(corpus: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    _mount(mnt, "64m")
    try:
        db = mnt / "kb.db"
        first = tmp_path / "first.jsonl"
        first.write_text("".join(corpus.read_text(encoding="utf-8").splitlines(keepends=True)[:20]))
        run_ok(db, *ingest_args(first))
        before = snapshot(db)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        p = medkb(db, *ingest_args(corpus))
        out, errs = p.communicate(timeout=600)
        assert p.returncode != 0 and "Traceback" not in errs, errs[-2000:]
        assert "error: the database cannot write" in errs and "readonly" in errs.replace("-", ""), errs[-2000:]
        assert snapshot(db) == before
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _server_snapshot(url: str) -> dict[str, object]:
    """The same view as ``snapshot`` on a MySQL-family database (through SQLAlchemy)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as c:
            docs = c.execute(text("SELECT external_id, version, content_hash, superseded FROM documents "
                                  "ORDER BY external_id, version")).all()
            chunks = c.execute(text("SELECT d.external_id, c.ordinal, c.text, c.token_count, length(c.embedding) "
                                    "FROM chunks c JOIN documents d ON d.id = c.document_id "
                                    "ORDER BY d.external_id, c.ordinal")).all()
            mentions = c.execute(text("SELECT d.external_id, c.ordinal, m.entity_id FROM mentions m JOIN chunks c "
                                      "ON c.id = m.chunk_id JOIN documents d ON d.id = c.document_id "
                                      "ORDER BY 1, 2, 3")).all()
            tables = [t for (t,) in c.execute(text("SHOW TABLES"))
                      if t not in ("kb_meta", "alembic_version", "audit_log")]
            counts = {t: c.execute(text(f"SELECT count(*) FROM `{t}`")).scalar() for t in tables}
    finally:
        engine.dispose()
    return {"documents": [tuple(r) for r in docs], "chunks": [tuple(r) for r in chunks],
            "mentions": [tuple(r) for r in mentions], "counts": counts}


def _server(url: str, *args: str, wait: bool = True) -> subprocess.Popen | str:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MEDKB_DATABASE_URL": url}
    p = subprocess.Popen([sys.executable, "-m", "medkb.cli.main", *args], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    out, errs = p.communicate(timeout=600)
    assert p.returncode == 0, out + errs
    return out


@pytest.mark.slow
def test_sigkill_mid_ingest_then_rerun_equals_a_clean_run_on_mariadb(corpus: Path, mariadb_url: str) -> None:
    from tests.conftest import create_mariadb_database, drop_mariadb_database

    clean_url = create_mariadb_database()
    try:
        for url in (clean_url, mariadb_url):
            _server(url, "init")
            _server(url, "ingest", "ontology", "diseases-basic")
        _server(clean_url, *ingest_args(corpus))
        clean = _server_snapshot(clean_url)
        p = _server(mariadb_url, *ingest_args(corpus), wait=False)
        assert isinstance(p, subprocess.Popen)
        deadline = time.monotonic() + 300
        while p.poll() is None and time.monotonic() < deadline:
            if len(_server_snapshot(mariadb_url)["documents"]) >= DOCS // 4:  # type: ignore[arg-type]
                break
            time.sleep(0.2)
        assert p.poll() is None, "the ingest finished before it could be killed; raise DOCS"
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed = _server_snapshot(mariadb_url)
        assert DOCS // 4 <= len(killed["documents"]) < DOCS  # type: ignore[arg-type]
        want = chunks_per_doc(clean)
        assert all(want[ext] == k for ext, k in chunks_per_doc(killed).items())  # nothing half-written
        _server(mariadb_url, *ingest_args(corpus))
        assert _server_snapshot(mariadb_url) == clean
    finally:
        drop_mariadb_database(clean_url)
