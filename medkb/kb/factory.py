"""Opens the right KnowledgeStore for a database URL: sqlite:/// → SQLiteStore, mysql+pymysql:// → TiDBStore."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from medkb.errors import ConfigError
from medkb.kb import migrate
from medkb.kb.models import DEFAULT_EMBEDDING_DIM
from medkb.kb.sqlite import SQLiteStore, configure_sqlite
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
            f"unsupported database {parsed.get_backend_name()!r} in {redact(url)!r}: "
            "medkb runs on SQLite (sqlite:///...) or TiDB (mysql+pymysql://...)"
        )
    if parsed.get_backend_name() == "mysql" and parsed.get_driver_name() != "pymysql":
        raise ConfigError(f"use the pymysql driver for TiDB: mysql+pymysql://… (got {redact(url)!r})")
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
            engine = create_engine(url, echo=db.echo, connect_args={"timeout": 30, "check_same_thread": False})
            configure_sqlite(engine)
            return SQLiteStore(engine)
        connect_args: dict = {"charset": "utf8mb4", "connect_timeout": 10}
        if db.ssl_ca is not None:
            connect_args["ssl"] = {"ca": str(db.ssl_ca)}
            connect_args["ssl_verify_cert"] = db.ssl_verify_cert
            connect_args["ssl_verify_identity"] = db.ssl_verify_identity
        engine = create_engine(
            url, echo=db.echo, pool_size=db.pool_size, pool_pre_ping=True, pool_recycle=300,
            connect_args=connect_args,
        )
        return TiDBStore(engine)
    except NoSuchModuleError as exc:
        raise ConfigError(f"no driver for {redact(url)!r}: {exc}") from exc


def init_store(store: KnowledgeStore, embedding_dim: int = DEFAULT_EMBEDDING_DIM) -> bool:
    """Create or upgrade the schema; True if anything changed. Safe to run any number of times."""
    store.ping()
    changed = migrate.upgrade(store.engine, embedding_dim)
    if isinstance(store, TiDBStore):
        store.ensure_vector_index()
    return changed

