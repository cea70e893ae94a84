"""The server-backend fixes, each shown on the real MariaDB server (and SQLite where it applies):
generation counter, error classification and retry, version floor, dimension from init, no explicit
ids, time-then-id order, restricted audit user, batched deletes, multi-row inserts, collation and
microseconds, the deferred embedding column, and TLS settings turned into one SSLContext."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
import time
from pathlib import Path

import numpy as np
import pymysql
import pytest
from sqlalchemy import create_engine, event, inspect, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError

from medkb.errors import ConfigError, Conflict, DatabaseBusy, DatabaseError, DatabaseUnavailable
from medkb.kb import dberrors
from medkb.kb import models as m
from medkb.kb import mysql_server, store_sources
from medkb.kb.factory import create_app_user, init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.kb.store import KnowledgeStore
from medkb.kb.store_meta import GENERATION_KEY
from medkb.settings import DatabaseSettings

pytestmark = pytest.mark.mariadb


def doc(ext: str, n: int = 1, dim: int = 384, tenant: str = "t", source: str = "s", seed: int = 0) -> DocumentIn:
    rng = np.random.default_rng(seed)
    return DocumentIn(tenant_id=tenant, source=source, external_id=ext,
                      chunks=[ChunkIn(text=f"{ext} chunk {i}", embedding=rng.standard_normal(dim).astype(np.float32))
                              for i in range(n)])


def dbapi_error(code: int, msg: str) -> DBAPIError:
    return OperationalError("stmt", {}, pymysql.err.OperationalError(code, msg))


# ---- 1. TLS: what the settings say is what happens ---------------------------------------------------


def test_tls_settings_become_one_ssl_context(tmp_path: Path) -> None:
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    full = mysql_server.connect_args(DatabaseSettings(url="mysql+pymysql://x@h/db", ssl_ca=ca))
    ctx = full["ssl"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.get_ca_certs(), "the configured CA file is loaded"
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    off = mysql_server.tls_context(DatabaseSettings(ssl_ca=ca, ssl_verify_cert=False, ssl_verify_identity=False))
    assert off is not None and off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    chain_only = mysql_server.tls_context(DatabaseSettings(ssl_ca=ca, ssl_verify_identity=False))
    assert chain_only is not None and chain_only.verify_mode == ssl.CERT_REQUIRED and not chain_only.check_hostname
    with pytest.raises(ConfigError, match="no such file"):
        mysql_server.tls_context(DatabaseSettings(ssl_ca=tmp_path / "missing.pem"))


# ---- 3. the generation counter -----------------------------------------------------------------------


def test_concurrent_bumps_are_not_lost(mariadb_store: KnowledgeStore) -> None:
    """Transaction A bumps and holds; B bumps meanwhile. A read-then-write of N+1 from Python gave 1."""
    other = open_store(DatabaseSettings(url=mariadb_store.engine.url.render_as_string(hide_password=False)))
    start = mariadb_store.generation()
    a_bumped, errors = threading.Event(), []

    def a() -> None:
        with mariadb_store.session() as s:
            mariadb_store._bump_generation(s)
            a_bumped.set()
            time.sleep(0.5)

    def b() -> None:
        a_bumped.wait()
        try:
            with other.session() as s:
                s.get(m.Meta, GENERATION_KEY)  # B's snapshot sees A's value uncommitted: N
                other._bump_generation(s)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors and mariadb_store.generation() == start + 2


# ---- 7. errors by code, bounded retry --------------------------------------------------------------


@pytest.mark.parametrize(("code", "kind", "words"), [
    (1213, DatabaseBusy, "deadlock"), (9007, DatabaseBusy, "write conflict"), (1205, DatabaseBusy, "lock wait"),
    (8004, DatabaseError, "transaction too large"), (8175, DatabaseError, "memory quota"),
    (1105, DatabaseError, "TiDB internal error"), (2003, DatabaseUnavailable, "Can't connect"),
    (1045, ConfigError, "access denied"),
])
def test_errors_are_classified_by_code(code: int, kind: type, words: str) -> None:
    err = dberrors.classify(dbapi_error(code, "Can't connect" if code == 2003 else "x"))
    assert type(err) is kind and words in err.message


def test_retry_is_bounded() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise DatabaseBusy("deadlock", 1213)
        return "done"

    assert dberrors.retrying(flaky) == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(DatabaseBusy, match="after 4 attempts"):
        dberrors.retrying(lambda: (calls.append(1), (_ for _ in ()).throw(DatabaseBusy("x", 9007)))[0])
    assert len(calls) == 4


def test_a_real_deadlock_is_busy_not_unavailable(mariadb_store: KnowledgeStore) -> None:
    with mariadb_store.session() as s:
        s.add_all([m.Meta(key="lock-a", value="0"), m.Meta(key="lock-b", value="0")])
    other = open_store(DatabaseSettings(url=mariadb_store.engine.url.render_as_string(hide_password=False)))
    barrier, caught = threading.Barrier(2), []

    def worker(st: KnowledgeStore, first: str, second: str) -> None:
        try:
            with st.session() as s:
                s.execute(update(m.Meta).where(m.Meta.key == first).values(value="1"))
                barrier.wait()
                time.sleep(0.2)
                s.execute(update(m.Meta).where(m.Meta.key == second).values(value="1"))
        except Exception as exc:  # noqa: BLE001
            caught.append(exc)

    ts = [threading.Thread(target=worker, args=(mariadb_store, "lock-a", "lock-b")),
          threading.Thread(target=worker, args=(other, "lock-b", "lock-a"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    other.close()
    assert len(caught) == 1 and isinstance(caught[0], DatabaseBusy) and caught[0].code == 1213


# ---- 5. version floor before any DDL ---------------------------------------------------------------


def test_old_server_is_refused_before_any_table_exists(mariadb_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe is made to answer as TiDB 8.1 would (no TiDB here); nothing may be created."""
    store = open_store(DatabaseSettings(url=mariadb_url))
    monkeypatch.setattr(mysql_server, "probe", lambda c: mysql_server.parse_version("8.0.11-TiDB-v8.1.2"))
    with pytest.raises(ConfigError, match=r"tidb 8\.1\.2 is older than tidb 8\.4\.0.*VECTOR"):
        init_store(store)
    assert inspect(store.engine).get_table_names() == []
    store.close()


# ---- 6. the dimension comes from init / kb_meta ------------------------------------------------------


def test_dimension_from_init(mariadb_url: str) -> None:
    store = open_store(DatabaseSettings(url=mariadb_url))
    init_store(store, 768)
    assert store.embedding_info() == (None, 768)
    r = store.add_document(doc("d", n=3, dim=768))
    hits = store.vector_search(np.ones(768, dtype=np.float32), 2, SearchFilters(tenant_id="t"))
    assert len(hits) == 2 and {h.chunk_id for h in hits} <= set(r.chunk_ids)
    with pytest.raises(Conflict, match="dimension 768"):
        init_store(store, 384)
    with pytest.raises(Conflict):
        store.add_document(doc("e", dim=384))
    store.close()


# ---- 9. no explicit ids into AUTO_INCREMENT; order by time, then id ----------------------------------


def test_ontology_writer_lets_the_database_assign_entity_ids(mariadb_store: KnowledgeStore) -> None:
    from medkb.ingest.ontologies.writer import OntologyData, OntologyWriter, Rel, Term

    inserts: list[str] = []
    event.listen(mariadb_store.engine, "before_cursor_execute",
                 lambda *a: inserts.append(a[2]) if a[2].startswith("INSERT INTO entities ") else None)
    data = OntologyData(release="r1", terms=[
        Term("a", "disease", "Alpha fever", codes=[("X", "A1")]),
        Term("b", "drug", "Betamab", codes=[("X", "B1")], names=[("betamab-x", "en")]),
    ], edges=[Rel("b", "a", "treats")])
    report = OntologyWriter(mariadb_store, "tiny").write(data)
    assert report.entities_added == 2 and report.edges_added == 1
    assert inserts and all("(id," not in s and ", id," not in s for s in inserts), inserts
    with mariadb_store.session() as s:
        ids = dict(s.execute(select(m.EntityCode.code, m.EntityCode.entity_id)).all())
        edge = s.execute(select(m.Edge.source_entity_id, m.Edge.target_entity_id)).one()
        names = set(s.scalars(select(m.EntityName.norm).where(m.EntityName.entity_id == ids["B1"])))
    assert tuple(edge) == (ids["B1"], ids["A1"]) and "betamab x" in names or "betamab-x" in names


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_audit_rows_are_listed_by_time_then_id(backend: str, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    """TiDB's nodes hand out AUTO_INCREMENT ranges of their own: a later row may carry a smaller id."""
    from medkb.api import audit
    from tests.conftest import backend_url

    store = open_store(DatabaseSettings(url=backend_url(backend, tmp_path, request)))
    init_store(store)
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0, 1)
    with store.engine.begin() as c:
        for i, at in ((500, t0), (7, t0 + dt.timedelta(microseconds=1))):
            c.execute(m.AuditLog.__table__.insert().values(id=i, tenant_id="t", at=at, actor="k", action="read",
                                                           detail={}))
    assert [r["id"] for r in audit.rows(store, "t")] == [500, 7]
    store.close()


# ---- 10. the audit log stays append-only ---------------------------------------------------------------


def test_restricted_app_user_cannot_rewrite_the_audit_log(mariadb_url: str) -> None:
    owner = open_store(DatabaseSettings(url=mariadb_url))
    init_store(owner)
    user = f"medkb_app_{int(time.time() * 1000) % 10**8}"
    stmts, password = create_app_user(owner, user)
    assert any("GRANT SELECT, INSERT ON" in s and "`audit_log`" in s for s in stmts)
    try:
        app_url = mariadb_url.replace("root@", f"{user}:{password}@")
        app = open_store(DatabaseSettings(url=app_url))
        with app.engine.begin() as c:
            c.execute(m.AuditLog.__table__.insert().values(tenant_id="t", actor="k", action="read", detail={}))
        app.add_document(doc("d"))  # everything else works as the application user
        for verb in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(DatabaseError, match="1142"), app.session() as s:
                s.execute(text(verb))
        app.close()
        # As the owner the append-only trigger still refuses (MariaDB / MySQL; TiDB has no triggers).
        with pytest.raises(DatabaseError, match="append-only"), owner.session() as s:
            s.execute(text("DELETE FROM audit_log"))
    finally:
        with owner.engine.begin() as c:
            c.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        owner.close()


# ---- 4. bounded transactions ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_delete_source_commits_in_batches(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import backend_url

    store = open_store(DatabaseSettings(url=backend_url(backend, tmp_path, request)))
    init_store(store)
    for i in range(7):
        store.add_document(doc(f"d{i}", n=2, source="big"))
    keep = store.add_document(doc("k", source="keep"))
    monkeypatch.setattr(store_sources, "DELETE_BATCH", 3)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    gen = store.generation()
    info = store.delete_source("t", "big")
    assert info.documents == 7 and store.count("documents") == 1 and store.get_chunks(list(keep.chunk_ids))
    assert len(commits) >= 4  # 7 documents in batches of 3, then the source row: never one transaction
    assert store.generation() >= gen + 4  # every committed batch told other processes' caches
    store.close()


# ---- 11. performance items and exact strings -------------------------------------------------------------


def test_chunk_inserts_are_multi_row(mariadb_store: KnowledgeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """One INSERT round trip for a 60-chunk document even where the server has no RETURNING (MySQL 8,
    TiDB: emulated by switching the dialect's RETURNING off); the ORM path sent one per chunk there."""
    monkeypatch.setattr(mariadb_store.engine.dialect, "insert_returning", False)
    monkeypatch.setattr(mariadb_store.engine.dialect, "insert_executemany_returning", False)
    monkeypatch.setattr(mariadb_store.engine.dialect, "insert_executemany_returning_sort_by_parameter_order", False)
    sent: list[str] = []
    event.listen(mariadb_store.engine, "before_cursor_execute",
                 lambda *a: sent.append(a[2]) if a[2].startswith("INSERT INTO chunks") else None)
    r = mariadb_store.add_document(doc("big", n=60))
    assert len(sent) == 1 and len(r.chunk_ids) == 60
    assert [v.ordinal for v in mariadb_store.get_chunks(list(r.chunk_ids))] == list(range(60))


def test_get_chunks_does_not_load_embeddings(mariadb_store: KnowledgeStore) -> None:
    r = mariadb_store.add_document(doc("d", n=2))
    sent: list[str] = []
    event.listen(mariadb_store.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    assert len(mariadb_store.get_chunks(list(r.chunk_ids))) == 2
    assert sent and not any("chunks.embedding" in s for s in sent)


def test_binary_collation_and_microseconds(mariadb_store: KnowledgeStore) -> None:
    """'Aspirin' and 'aspirin' are two sources (as on SQLite); utf8mb4_general_ci called them one."""
    mariadb_store.ensure_source("t", "Aspirin")
    mariadb_store.ensure_source("t", "aspirin")
    assert {s.name for s in mariadb_store.list_sources("t", include_public=False)} == {"Aspirin", "aspirin"}
    with mariadb_store.engine.connect() as c:
        colls = set(c.execute(text("SELECT DISTINCT table_collation FROM information_schema.tables "
                                   "WHERE table_schema = DATABASE()")).scalars())
        at = dt.datetime(2026, 5, 4, 3, 2, 1, 123456)
        c.execute(m.AuditLog.__table__.insert().values(tenant_id="t", at=at, actor="k", action="a", detail={}))
        c.commit()
        assert c.execute(select(m.AuditLog.at)).scalar() == at
    assert colls == {"utf8mb4_bin"}


def test_init_pins_utf8mb4_bin_in_a_general_ci_database(mariadb_url: str) -> None:
    """A database created with the server's default collation (utf8mb4_general_ci here) gets medkb's
    tables in utf8mb4_bin, every text column included."""
    server = create_engine(mariadb_url.rsplit("/", 1)[0] + "/")
    name = mariadb_url.rsplit("/", 1)[1]
    with server.begin() as c:
        c.execute(text(f"ALTER DATABASE `{name}` COLLATE utf8mb4_general_ci"))
    server.dispose()
    store = open_store(DatabaseSettings(url=mariadb_url))
    init_store(store)
    with store.engine.connect() as c:
        colls = set(c.execute(text("SELECT DISTINCT table_collation FROM information_schema.tables "
                                   "WHERE table_schema = DATABASE()")).scalars())
        cols = set(c.execute(text("SELECT DISTINCT collation_name FROM information_schema.columns "
                                  "WHERE table_schema = DATABASE() AND collation_name IS NOT NULL")).scalars())
    store.close()
    assert colls == {"utf8mb4_bin"} and cols == {"utf8mb4_bin"}


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_comention_rebuild_commits_in_batches(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from medkb.kb.graph import comention
    from tests.conftest import backend_url

    store = open_store(DatabaseSettings(url=backend_url(backend, tmp_path, request)))
    init_store(store)
    with store.session() as s:
        ents = [m.Entity(type="disease", name=f"e{i}") for i in range(4)]
        s.add_all(ents)
        s.flush()
        ids = [e.id for e in ents]
    d = doc("c", n=2)
    d.chunks[0].entity_ids = {i: 1 for i in ids}  # 6 pairs
    d.chunks[1].entity_ids = {ids[0]: 1, ids[1]: 1}
    store.add_document(d)
    monkeypatch.setattr(comention, "BATCH", 2)
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    rep = comention.build_comention_edges(store, "t")
    assert (rep.pairs, rep.added) == (6, 6) and len(commits) >= 4  # the read, then 3 insert batches
    assert store.count("edges") == 6
    again = comention.build_comention_edges(store, "t")
    assert (again.added, again.updated, again.removed) == (0, 0, 0)
    store.close()
