"""The embedding column type: float32 blobs on SQLite and MySQL/MariaDB, VECTOR(d) on TiDB."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import LargeBinary
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
