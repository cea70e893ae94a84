"""The TiDB-only surface, checked without a TiDB server (none can be had here: the Go module proxy
refuses pingcap/tidb and no registry ships a binary). Each statement is compiled with SQLAlchemy's
mysql dialect and compared with the form TiDB documents (docs.pingcap.com: "Vector Search Index",
"Vector Search Overview"); the widening loop runs on SQLite with VEC_COSINE_DISTANCE registered as a
Python function — a stand-in for the server, said so here. On a real TiDB, MEDKB_TEST_TIDB_URL runs
the whole contract suite instead."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.mysql import pymysql as mysql_pymysql
from sqlalchemy.schema import CreateTable

from medkb.kb import models as m
from medkb.kb import tidb
from medkb.kb.filters import SearchFilters
from medkb.kb.mysql_server import floor_problems, parse_version
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.kb.types import Embedding


def tidb_dialect() -> mysql.dialect:
    d = mysql_pymysql.dialect()  # pymysql's pyformat parameters, as medkb sends them
    d.medkb_native_vectors = True  # what kb/factory.py sets after probing a TiDB server
    return d


def compiled(stmt) -> tuple[str, dict]:  # type: ignore[no-untyped-def]
    c = stmt.compile(dialect=tidb_dialect())
    return " ".join(str(c).split()), c.params


Q = "[0.5,0.25,1]"


def test_ann_query_has_the_documented_shape() -> None:
    sql, params = compiled(tidb.ann_query(Q, 40, SearchFilters(tenant_id="h1", doc_types=("guideline",)), 10))
    inner = re.search(r"FROM \((SELECT .*?)\) AS ann", sql)
    assert inner, sql
    # Inner: no WHERE, ORDER BY the distance LIMIT n — the only query TiDB's HNSW index serves.
    assert re.fullmatch(
        r"SELECT chunks\.id AS id, chunks\.document_id AS document_id, chunks\.embedding IS NOT NULL AS has_vec, "
        r"VEC_COSINE_DISTANCE\(chunks\.embedding, %s\) AS distance FROM chunks ORDER BY distance LIMIT %s",
        inner.group(1)), inner.group(1)
    outer = sql[inner.end():]
    assert "JOIN documents ON documents.id = ann.document_id" in outer
    assert "documents.tenant_id IN" in outer and "documents.doc_type IN" in outer
    assert "ann.has_vec = " in outer and "ORDER BY d, ann.id" in outer
    # The query vector is sent once.
    assert [v for v in params.values() if v == Q] == [Q]


def test_exact_query_filters_inside_and_scores_zero_vectors_zero() -> None:
    sql, params = compiled(tidb.exact_query(Q, SearchFilters(tenant_id="h1", patient_id="p1"), 5))
    assert "coalesce(VEC_COSINE_DISTANCE(chunks.embedding, %s), %s) AS distance" in sql
    assert "WHERE" in sql and "chunks.embedding IS NOT NULL" in sql and "documents.patient_id" in sql
    assert sql.endswith("ORDER BY distance, chunks.id LIMIT %s")
    assert [v for v in params.values() if v == Q] == [Q]


def test_hnsw_ddl_is_the_documented_form() -> None:
    assert tidb.HNSW_DDL == (
        "ALTER TABLE chunks SET TIFLASH REPLICA 1",
        "ALTER TABLE chunks ADD VECTOR INDEX vec_idx_chunks_embedding ((VEC_COSINE_DISTANCE(embedding))) USING HNSW",
    )


def test_vector_ddl_and_any_dimension_binds() -> None:
    """VECTOR(d) with the dimension init was given; the models' column binds any dimension (it was
    hard-wired to 384, so a 768-dimension model failed in tidb_vector's bind processor)."""
    from sqlalchemy import Column, Integer, MetaData, Table

    t = Table("c", MetaData(), Column("id", Integer, primary_key=True), Column("embedding", Embedding(768)))
    assert "embedding VECTOR(768)" in str(CreateTable(t).compile(dialect=tidb_dialect()))
    assert "embedding BLOB" in str(CreateTable(t).compile(dialect=mysql.dialect()))  # MySQL / MariaDB
    col_type = m.Chunk.__table__.c.embedding.type
    bind = col_type.dialect_impl(tidb_dialect()).bind_processor(tidb_dialect())
    out = bind(col_type.process_bind_param(np.ones(768, dtype=np.float32), tidb_dialect()))
    assert out.startswith("[1.0,1.0,") and out.count(",") == 767


@pytest.mark.parametrize(("raw", "flavor", "version", "ok"), [
    ("8.0.11-TiDB-v8.5.1", "tidb", (8, 5, 1), True),
    ("8.0.11-TiDB-v8.4.0", "tidb", (8, 4, 0), True),
    ("8.0.11-TiDB-v8.1.2", "tidb", (8, 1, 2), False),
    ("5.5.5-10.11.6-MariaDB-0+deb12u1", "mariadb", (10, 11, 6), True),
    ("10.6.18-MariaDB", "mariadb", (10, 6, 18), False),
    ("8.0.36", "mysql", (8, 0, 36), True),
    ("5.7.44-log", "mysql", (5, 7, 44), False),
])
def test_version_floor(raw: str, flavor: str, version: tuple[int, ...], ok: bool) -> None:
    info = parse_version(raw)
    assert (info.flavor, info.version) == (flavor, version)
    problems = floor_problems(info)
    assert (not problems) == ok
    if flavor == "tidb" and not ok:
        assert "VECTOR" in problems[0] and "8.4" in problems[0]


# ---- the widening loop, run on SQLite standing in for TiDB ---------------------------------------


def _cos_distance(blob: bytes | None, qtext: str) -> float | None:
    """TiDB's VEC_COSINE_DISTANCE: NULL for a NULL or zero-norm vector."""
    if blob is None:
        return None
    v, q = np.frombuffer(blob, dtype=np.float32), np.asarray(eval(qtext), dtype=np.float32)  # noqa: S307
    nv, nq = float(np.linalg.norm(v)), float(np.linalg.norm(q))
    return None if nv == 0 or nq == 0 else 1.0 - float(v @ q) / (nv * nq)


@pytest.fixture
def tidb_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from medkb.kb.factory import init_store, open_store
    from medkb.settings import DatabaseSettings

    base = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    init_store(base, 8)
    event.listen(base.engine, "connect",
                 lambda conn, _r: conn.create_function("vec_cosine_distance", 2, _cos_distance))
    base.engine.dispose()
    store = tidb.TiDBStore(base.engine)
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda *a: statements.append(a[2]) if "vec_cosine_distance" in a[2].lower() else None)
    monkeypatch.setattr(tidb, "EXACT_MAX_ROWS", 0)
    monkeypatch.setattr(tidb, "EXACT_MAX_SHARE", 0.0)
    yield store, statements
    store.close()


def test_ann_widens_until_k_rows_survive_the_filters(tidb_on_sqlite) -> None:  # type: ignore[no-untyped-def]
    store, statements = tidb_on_sqlite
    rng = np.random.default_rng(0)
    q = rng.standard_normal(8).astype(np.float32)
    vecs: dict[int, np.ndarray] = {}
    for i in range(60):
        # The other tenant holds the 40 vectors nearest the query: the first ANN round finds only those.
        tenant = "other" if i < 40 else "h1"
        v = q + 0.01 * rng.standard_normal(8).astype(np.float32) if i < 40 else rng.standard_normal(8).astype(np.float32)
        r = store.add_document(DocumentIn(tenant_id=tenant, source="s", external_id=f"d{i}",
                                          chunks=[ChunkIn(text=f"t{i}", embedding=v)]))
        if tenant == "h1":
            vecs[r.chunk_ids[0]] = v
    hits = store.vector_search(q, 5, SearchFilters(tenant_id="h1"))
    ref = sorted(vecs, key=lambda cid: (_cos_distance(vecs[cid].tobytes(), str(q.tolist())), cid))[:5]
    assert [h.chunk_id for h in hits] == ref
    assert len(statements) >= 2  # 20 candidates held only other-tenant rows; the loop widened
    assert all("LIMIT" in s for s in statements)


def test_selective_filter_takes_the_exact_path_and_zero_vectors_score_zero(tidb_on_sqlite, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, statements = tidb_on_sqlite
    monkeypatch.setattr(tidb, "EXACT_MAX_ROWS", 10)
    store.add_document(DocumentIn(tenant_id="h1", source="s", external_id="z",
                                  chunks=[ChunkIn(text="zero", embedding=np.zeros(8, dtype=np.float32)),
                                          ChunkIn(text="one", embedding=np.ones(8, dtype=np.float32))]))
    hits = store.vector_search(np.ones(8, dtype=np.float32), 5, SearchFilters(tenant_id="h1"))
    assert [round(h.score, 5) for h in hits] == [1.0, 0.0]
    assert len(statements) == 1 and "coalesce" in statements[0].lower()


def test_redundant_fk_indexes_are_ours_beside_tidbs() -> None:
    """TiDB keeps the index it made for a foreign key beside medkb's ix_* on the same column."""
    rows = [
        ("chunks", "PRIMARY", "id", 1),
        ("chunks", "fk_1", "document_id", 1), ("chunks", "ix_chunks_document_id", "document_id", 1),
        ("chunks", "ix_chunks_tenant_id", "tenant_id", 1),
        ("chunks", "uq_chunks_doc_ordinal", "document_id", 1), ("chunks", "uq_chunks_doc_ordinal", "ordinal", 2),
        ("edges", "ix_edges_src", "source_entity_id", 1), ("edges", "ix_edges_src", "relation", 2),
        ("edges", "fk_2", "source_entity_id", 1),
    ]
    assert tidb.redundant_fk_indexes(rows) == [("chunks", "ix_chunks_document_id")]
