"""TiDB-only surface: VECTOR columns, the HNSW DDL, the ANN query (post-filtered, widened), the exact path."""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import Engine, Select, func, literal_column, select, text
from sqlalchemy.exc import SQLAlchemyError

from medkb.errors import Conflict
from medkb.kb import models as m
from medkb.kb.filters import SearchFilters, document_clause
from medkb.kb.records import VectorHit
from medkb.kb.store import KnowledgeStore

log = logging.getLogger(__name__)

INDEX_NAME = "vec_idx_chunks_embedding"
# The documented TiDB forms (docs.pingcap.com, "Vector Search Index"): a TiFlash replica first, then
# the HNSW index on the cosine distance of the column.
HNSW_DDL = (
    "ALTER TABLE chunks SET TIFLASH REPLICA 1",
    f"ALTER TABLE chunks ADD VECTOR INDEX {INDEX_NAME} ((VEC_COSINE_DISTANCE(embedding))) USING HNSW",
)
# Filters that leave fewer rows than this (or this share of all rows) are searched exactly: post-
# filtering an ANN candidate list loses recall when the filter keeps very few rows (one patient's notes).
EXACT_MAX_ROWS = 2000
EXACT_MAX_SHARE = 0.05
FIRST_MULTIPLIER = 4
MAX_CANDIDATES = 10_000


def redundant_fk_indexes(rows: list[tuple[str, str, str, int]]) -> list[tuple[str, str]]:
    """(table, index) pairs to drop: medkb's own single-column ``ix_*`` index where TiDB also holds an
    index it created for a foreign key on the same column (MySQL drops its own in that case; TiDB keeps
    both, so every insert maintained two). ``rows``: information_schema.statistics (table_name,
    index_name, column_name, seq_in_index) of this database."""
    columns: dict[tuple[str, str], list[str]] = {}
    for table, index, column, _seq in rows:
        columns.setdefault((table, index), []).append(column)
    single: dict[tuple[str, str], list[str]] = {}
    for (table, index), cols in columns.items():
        if len(cols) == 1 and index != "PRIMARY":
            single.setdefault((table, cols[0]), []).append(index)
    return sorted(
        (table, index)
        for (table, _col), indexes in single.items() if len(indexes) > 1
        for index in indexes if index.startswith("ix_") and any(not i.startswith("ix_") for i in indexes)
    )


def drop_redundant_fk_indexes(conn) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Drop what ``redundant_fk_indexes`` finds in the connection's database (TiDB only)."""
    rows = conn.execute(text(
        "SELECT table_name, index_name, column_name, seq_in_index FROM information_schema.statistics "
        "WHERE table_schema = DATABASE()")).all()
    drop = redundant_fk_indexes([tuple(r) for r in rows])
    for table, index in drop:
        conn.execute(text(f"ALTER TABLE `{table}` DROP INDEX `{index}`"))
    return drop


def vector_literal(q: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in q.tolist()) + "]"


def ann_query(qtext: str, n: int, filters: SearchFilters, k: int) -> Select:
    """ANN in an inner query with no WHERE (the only shape TiDB's vector index serves: ORDER BY the
    distance LIMIT n), filters and the join outside it. The query vector is bound once."""
    c = m.Chunk.__table__.c
    dist = func.VEC_COSINE_DISTANCE(c.embedding, qtext).label("distance")
    has = c.embedding.is_not(None).label("has_vec")
    inner = select(c.id, c.document_id, has, dist).order_by(literal_column("distance")).limit(n).subquery("ann")
    # A zero-norm vector has a NULL distance: score 0 (distance 1), as on SQLite.
    d = func.coalesce(inner.c.distance, 1.0).label("d")
    return (
        select(inner.c.id, d)
        .join(m.Document, m.Document.id == inner.c.document_id)
        .where(document_clause(filters), inner.c.has_vec == 1)
        .order_by(literal_column("d"), inner.c.id)
        .limit(k)
    )


def exact_query(qtext: str, filters: SearchFilters, k: int) -> Select:
    """Exact KNN over the rows the filters allow (no index); a zero-norm vector (NULL distance) ranks
    last with score 0, as on SQLite."""
    c = m.Chunk.__table__.c
    dist = func.coalesce(func.VEC_COSINE_DISTANCE(c.embedding, qtext), 1.0).label("distance")
    return (
        select(c.id, dist)
        .join(m.Document, m.Document.id == c.document_id)
        .where(document_clause(filters), c.embedding.is_not(None))
        .order_by(literal_column("distance"), c.id)
        .limit(k)
    )


class TiDBStore(KnowledgeStore):
    """ANN through the HNSW index (which needs a TiFlash replica) with the filters applied outside
    it, widened until k rows survive; exact KNN for very selective filters."""

    backend = "tidb"
    write_lanes = 4

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.vector_index: bool | None = None
        self._count_cache: tuple[int, int] = (-1, 0)

    def ensure_vector_index(self) -> bool:
        """Create the HNSW cosine index on chunks.embedding; without TiFlash, log once and go on."""
        if self.vector_index is not None:
            return self.vector_index
        try:
            with self.engine.begin() as c:
                existing = c.execute(
                    text("SELECT COUNT(*) FROM information_schema.tidb_indexes "
                         "WHERE table_schema = DATABASE() AND table_name = 'chunks' AND key_name = :k"),
                    {"k": INDEX_NAME},
                ).scalar()
                if not existing:
                    for ddl in HNSW_DDL:
                        c.execute(text(ddl))
            self.vector_index = True
        except SQLAlchemyError as exc:
            log.warning("no HNSW vector index (exact KNN instead): %s",
                        str(getattr(exc, "orig", exc)).splitlines()[0])
            self.vector_index = False
        return self.vector_index

    def vector_search(self, query: np.ndarray, k: int, filters: SearchFilters) -> list[VectorHit]:
        if k <= 0:
            return []
        q = np.asarray(query, dtype=np.float32).ravel()
        _, dim = self.embedding_info()
        if dim is not None and q.shape[0] != dim:
            raise Conflict(f"query dimension {q.shape[0]} != knowledge base dimension {dim}")
        qtext = vector_literal(q)
        allowed = self.allowed_chunk_ids(filters).size
        if allowed == 0:
            return []
        total = self._chunk_count()
        if allowed <= EXACT_MAX_ROWS or allowed <= EXACT_MAX_SHARE * total:
            return self._run(exact_query(qtext, filters, k))
        n = k * FIRST_MULTIPLIER
        while True:
            hits = self._run(ann_query(qtext, n, filters, k))
            if len(hits) >= min(k, allowed) or n >= total or n >= MAX_CANDIDATES:
                return hits
            n = min(n * FIRST_MULTIPLIER, MAX_CANDIDATES)

    def _chunk_count(self) -> int:
        """COUNT(*) of chunks, once per generation (not once per search)."""
        gen = self.generation()
        if self._count_cache[0] != gen:
            self._count_cache = (gen, self.count("chunks"))
        return self._count_cache[1]

    def _run(self, stmt: Select) -> list[VectorHit]:
        with self.session() as s:
            rows = s.execute(stmt).all()
        return [VectorHit(int(i), 1.0 - float(d)) for i, d in rows]


__all__ = ["HNSW_DDL", "TiDBStore", "ann_query", "exact_query"]
