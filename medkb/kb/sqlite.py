"""SQLite backend: WAL mode, float32 blob embeddings searched in-process (``kb/inprocess.py``)."""

from __future__ import annotations

from sqlalchemy import Engine, event

from medkb.kb.inprocess import InProcessVectors


def configure_sqlite(engine: Engine) -> None:
    """WAL for concurrent readers while a curator ingests; foreign keys on; a busy timeout."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


class SQLiteStore(InProcessVectors):
    """The embedded default: one file, exact cosine search over a cached matrix."""

    backend = "sqlite"
