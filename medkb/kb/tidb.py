"""TiDB backend: VECTOR(d) columns, VEC_COSINE_DISTANCE top-k in SQL, HNSW index when TiFlash exists."""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from medkb.errors import Conflict
from medkb.kb import models as m
from medkb.kb.filters import SearchFilters, document_clause
from medkb.kb.records import VectorHit
from medkb.kb.store import KnowledgeStore

log = logging.getLogger(__name__)

# TiDB keeps a transaction under txn-total-size-limit (100 MB by default); embeddings of 384 floats
# are ~3 KB as text, so a document is committed in insert batches well below that.
INSERT_BATCH = 500


class TiDBStore(KnowledgeStore):
    """Exact KNN in SQL with the filters in the same WHERE clause; an HNSW index (which needs a
    TiFlash replica) is added by ``ensure_vector_index`` when the cluster can hold one."""

    backend = "tidb"

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.vector_index: bool | None = None

    def ensure_vector_index(self) -> bool:
        """Create the HNSW cosine index on chunks.embedding; without TiFlash, log once and go on."""
        if self.vector_index is not None:
            return self.vector_index
        try:
            with self.engine.begin() as c:
                existing = c.execute(
                    text("SELECT COUNT(*) FROM information_schema.tidb_indexes "
                         "WHERE table_schema = DATABASE() AND table_name = 'chunks' "
                         "AND key_name = 'vec_idx_chunks_embedding'")
                ).scalar()
                if not existing:
                    c.execute(text("ALTER TABLE chunks SET TIFLASH REPLICA 1"))
                    c.execute(
                        text("ALTER TABLE chunks ADD VECTOR INDEX vec_idx_chunks_embedding "
                             "((VEC_COSINE_DISTANCE(embedding))) USING HNSW")
                    )
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
        qtext = "[" + ",".join(f"{x:.7g}" for x in q.tolist()) + "]"
        dist = func.vec_cosine_distance(m.Chunk.__table__.c.embedding, qtext)
        with self.session() as s:
            rows = s.execute(
                select(m.Chunk.id, dist.label("d"))
                .join(m.Document, m.Document.id == m.Chunk.document_id)
                .where(document_clause(filters), m.Chunk.__table__.c.embedding.is_not(None))
                .order_by(dist, m.Chunk.id)
                .limit(k)
            ).all()
        return [VectorHit(int(i), 1.0 - float(d)) for i, d in rows]
