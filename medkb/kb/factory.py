"""Opens the right KnowledgeStore for a database URL: SQLite, or — by probing the server behind a
mysql+pymysql:// URL — TiDB (TiDBStore) or MySQL / MariaDB (MySQLStore); ``init_store`` migrates."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from medkb.errors import ConfigError, DatabaseUnavailable
from medkb.kb import migrate
from medkb.kb.ann import AnnConfig
from medkb.kb.dberrors import classify
from medkb.kb.models import DEFAULT_EMBEDDING_DIM
from medkb.kb.mysql import MySQLStore
from medkb.kb.mysql_server import app_user_sql, check_server, connect_args, pin_collation, probe
from medkb.kb.sqlite import SQLiteStore, configure_sqlite
from medkb.kb.sqlite_lib import dbapi
from medkb.kb.store import KnowledgeStore
from medkb.kb.tidb import TiDBStore
from medkb.settings import DatabaseSettings


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"cannot parse database URL {redact(url)!r}: expected sqlite:///PATH or "
            "mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from exc
    if parsed.get_backend_name() not in ("sqlite", "mysql"):
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r} in {redact(url)!r}: medkb runs on "
            "SQLite (sqlite:///...) or TiDB / MySQL / MariaDB (mysql+pymysql://...)"
        )
    if parsed.get_backend_name() == "mysql" and parsed.get_driver_name() != "pymysql":
        raise ConfigError(f"use the pymysql driver: mysql+pymysql://… (got {redact(url)!r})")
    return parsed


def redact(url: str | URL) -> str:
    """The URL with its password hidden, safe for logs and ``medkb stats``."""
    try:
        return (url if isinstance(url, URL) else make_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def open_store(db: DatabaseSettings) -> KnowledgeStore:
    url = parse_url(db.url)
    try:
        if url.get_backend_name() == "sqlite":
            engine = create_engine(url, echo=db.echo, module=dbapi,
                                   connect_args={"timeout": 30, "check_same_thread": False})
            configure_sqlite(engine)
            return SQLiteStore(engine, AnnConfig(threshold=db.ann_threshold, ef_search=db.ann_ef_search))
        engine = create_engine(
            # No ROLLBACK after every COMMIT (one more round trip per transaction: every medkb unit of
            # work ends its own transaction). The ping per checkout stays: a server restart must not
            # fail the next search; a connection lost mid-write (2006/2013) is retried like a deadlock.
            url, echo=db.echo, pool_size=db.pool_size, pool_pre_ping=True, pool_recycle=300,
            pool_reset_on_return=None,
            connect_args=connect_args(db),
        )
    except NoSuchModuleError as exc:
        raise ConfigError(f"no driver for {redact(url)!r}: {exc}") from exc
    try:
        with engine.connect() as c:
            info = probe(c)
    except DBAPIError as exc:
        engine.dispose()
        err = classify(exc)
        if type(err) is DatabaseUnavailable:
            raise DatabaseUnavailable(f"cannot reach the database: {err.message.removeprefix('database error: ')}") \
                from exc
        raise err from exc
    if info.flavor == "tidb":
        # Read by kb/types.py: VECTOR(d) columns on TiDB, float32 blobs on MySQL / MariaDB.
        engine.dialect.medkb_native_vectors = True  # type: ignore[attr-defined]
        return TiDBStore(engine)
    return MySQLStore(engine, info.flavor)


def init_store(store: KnowledgeStore, embedding_dim: int = DEFAULT_EMBEDDING_DIM) -> bool:
    """Create or upgrade the schema; True if anything changed. Safe to run any number of times.

    On a server, its kind and version are checked first (nothing is created on one that cannot hold
    the schema); the embedding dimension is recorded in kb_meta, which every write is checked against.
    """
    store.ping()
    if store.engine.dialect.name == "mysql":
        with store.engine.begin() as c:
            check_server(c)
            fresh = migrate.current_revision(store.engine) is None and pin_collation(c)
        if fresh:
            store.engine.dispose()  # pooled sessions keep the old default collation for CREATE TABLE
    changed = migrate.upgrade(store.engine, embedding_dim)
    store.record_dimension(embedding_dim)
    if isinstance(store, TiDBStore):
        store.ensure_vector_index()
    return changed


def create_app_user(store: KnowledgeStore, user: str, host: str = "%", *, execute: bool = True,
                    password: str | None = None) -> tuple[list[str], str]:
    """Create (or, with ``execute=False``, only write out) the restricted application user of a
    server database; returns the statements and the password (generated unless given)."""
    import secrets

    from medkb.kb import models as m

    if store.engine.dialect.name != "mysql":
        raise ConfigError("--app-user is for server databases (TiDB, MySQL, MariaDB); SQLite has no users "
                          "and its audit_log is append-only through triggers")
    with store.engine.connect() as c:
        database = str(c.exec_driver_sql("SELECT DATABASE()").scalar())
    password = password or secrets.token_urlsafe(18)
    stmts = app_user_sql(database, user, host, [*m.TABLES, "alembic_version"], password)
    if execute:
        with store.engine.begin() as c:
            for stmt in stmts:
                c.exec_driver_sql(stmt.replace("%", "%%"))  # pymysql formats the statement
    return stmts, password
