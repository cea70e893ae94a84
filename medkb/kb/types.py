"""Column types stored per backend: embeddings (float32 blobs; VECTOR(d) on TiDB), days (integers on SQLite)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from sqlalchemy import Date, Integer, LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


def native_vectors(dialect: Dialect) -> bool:
    """True on a TiDB engine (``kb/factory.py`` marks its dialect after probing the server)."""
    return dialect.name == "mysql" and bool(getattr(dialect, "medkb_native_vectors", False))


def to_blob(vec: Any) -> bytes:
    return np.asarray(vec, dtype=np.float32).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


class Embedding(TypeDecorator):
    """A dense float32 vector. Python side: ``numpy.ndarray`` (or a list) in, ``ndarray`` out."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dim: int | None = None) -> None:
        # ``dim`` only shapes DDL (VECTOR(d) on TiDB); the models leave it None so a knowledge base of
        # any dimension binds, and the store checks vectors against kb_meta's dimension instead.
        super().__init__()
        self.dim = dim

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine:
        if native_vectors(dialect):
            from tidb_vector.sqlalchemy import VectorType

            return dialect.type_descriptor(VectorType(dim=self.dim))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if native_vectors(dialect):
            return np.asarray(value, dtype=np.float32)
        return to_blob(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return from_blob(bytes(value))
        return np.asarray(value, dtype=np.float32)


# The Julian day number of 0001-01-01 (proleptic Gregorian) less its ``date.toordinal()``: JDN = ordinal + this.
JDN_OFFSET = 1721425


class _DayNumber(Integer):
    """SQLite's storage of a ``Day``: an integer in a column declared DATE (numeric affinity keeps it an integer, and
    the schema reads as dates to people and to Alembic's comparison with the migrations)."""

    __visit_name__ = "DATE"


class Day(TypeDecorator):
    """A calendar date. Python side: ``datetime.date``. MySQL/MariaDB/TiDB store a DATE; SQLite stores the date's
    Julian day number, an integer: comparing two is an integer comparison, ``date + n`` is an addition
    (``medkb.kb.dates``), and SQLite's own date functions read it as that day (``date(start)`` gives the ISO text).
    As ISO text every date offset cost a date() call per row and every index entry carried 10 bytes per date."""

    impl = Date
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(_DayNumber() if dialect.name == "sqlite" else Date())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        if not isinstance(value, dt.date):
            raise TypeError(f"a date column takes a datetime.date, got {type(value).__name__} {value!r}")
        return value.toordinal() + JDN_OFFSET

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return dt.date.fromordinal(int(value) - JDN_OFFSET)

    def coerce_compared_value(self, op: Any, value: Any) -> TypeEngine[Any]:
        # a number beside a day is a number of days (``day + 30``), not a date to convert
        return Integer() if isinstance(value, int) and not isinstance(value, bool) else self
