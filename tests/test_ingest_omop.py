"""OMOP CDM ingest on OHDSI's real Eunomia file: every person stored, de-identified like Synthea, vocabulary in the graph."""

from __future__ import annotations

import datetime as dt
from medkb.kb.sqlite_lib import dbapi as sqlite3  # the SQLite medkb runs on: one library per process
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.ingest.deid import Deidentifier
from medkb.ingest.omop import VOCABULARY_SOURCE, eunomia_file
from medkb.ingest.records import ingest_records
from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from tests.omop_support import SECRET, TENANT, NoEmbedder
from tests.test_ingest_records import _all_text_values


@pytest.fixture(scope="module")
def source() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(eunomia_file()), read_only=True)
    yield con
    con.close()


def test_every_person_and_row_is_stored_and_orphans_counted(eunomia_kb, source) -> None:  # type: ignore[no-untyped-def]
    store, _, report = eunomia_kb
    assert report.failed == [] and report.added == 2694
    assert report.skipped == {"observation_period: person does not exist": 2649}
    q = lambda sql: source.execute(sql).fetchone()[0]  # noqa: E731
    assert store.count("patients") == q("SELECT count(*) FROM person") == 2694
    assert store.count("conditions") == q("SELECT count(*) FROM condition_occurrence")
    assert store.count("medications") == q("SELECT count(*) FROM drug_exposure")
    assert store.count("procedures") == q("SELECT count(*) FROM procedure_occurrence")
    assert store.count("encounters") == q("SELECT count(*) FROM visit_occurrence")
    assert store.count("observations") == q("SELECT count(*) FROM measurement") + q("SELECT count(*) FROM observation")
    assert store.count("observation_periods") == 2694  # one per person; the 2,649 orphans left out
    with store.session() as s:
        stored = Counter(s.scalars(select(m.Condition.concept_id)))
        assert not s.scalar(select(m.ObservationPeriod.id).where(m.ObservationPeriod.derived.is_(True)).limit(1))
        domains = Counter(s.scalars(select(m.Observation.domain)))
        sexes = Counter(s.scalars(select(m.Patient.sex)))
    assert stored == Counter(r[0] for r in source.execute(
        "SELECT condition_concept_id FROM condition_occurrence").fetchall())
    assert domains == {"measurement": 44053, "observation": 1477}
    assert sexes == {s: n for s, n in zip(("male", "female"), source.execute(
        "SELECT count(*) FILTER (WHERE gender_concept_id = 8507), count(*) FILTER (WHERE gender_concept_id = 8532) "
        "FROM person").fetchone())}


def test_no_source_identifier_is_left_and_dates_keep_their_intervals(eunomia_kb, source) -> None:  # type: ignore[no-untyped-def]
    store, db, _ = eunomia_kb
    identifiers = {r[0] for r in source.execute("SELECT person_source_value FROM person").fetchall()}
    identifiers |= {r[0] for r in source.execute("SELECT visit_source_value FROM visit_occurrence").fetchall()}
    assert len(identifiers) > 3500
    values = list(_all_text_values(db))
    assert len(values) > 100_000
    assert [(t, c, v) for t, c, v in values if v in identifiers or v[:36] in identifiers] == []
    deid = Deidentifier(SECRET, TENANT)
    births = dict(source.execute("SELECT person_id, birth_datetime FROM person").fetchall())
    con = sqlite3.connect(db)
    try:
        # no column anywhere holds the numeric person id next to its pseudonym
        ids = {r[0] for r in con.execute("SELECT id FROM patients")}
        assert ids == {deid.patient_id(str(p)) for p in births} and all(i.startswith("p") for i in ids)
        offsets = set()
        for pid, dates in source.execute(
                "SELECT person_id, list(condition_start_date ORDER BY condition_start_date) FROM condition_occurrence "
                "GROUP BY person_id HAVING count(*) >= 3 ORDER BY person_id LIMIT 40").fetchall():
            off = dt.timedelta(days=deid.date_offset(str(pid)))
            offsets.add(off)
            got = [dt.date.fromisoformat(r[0]) for r in con.execute(
                "SELECT date(start) FROM conditions WHERE patient_id = ? ORDER BY start", (deid.patient_id(str(pid)),))]
            assert got == [d + off for d in dates] and off.days != 0  # so no true date, birth included, survives
        assert len(offsets) > 10
        birth_dates = {b.isoformat() for b in births.values()}
        assert not [r for r in con.execute("SELECT *, date(death_date) FROM patients") for v in r if str(v) in birth_dates]
    finally:
        con.close()


def test_vocabulary_becomes_graph_entities_and_edges_with_provenance(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = eunomia_kb
    with store.session() as s:
        def entity(code: str) -> int:
            return s.scalar(select(m.EntityCode.entity_id).where(m.EntityCode.system == "OMOP",
                                                                 m.EntityCode.code == code))
        gi_bleed, warfarin, warfarin_5mg = entity("192671"), entity("1310149"), entity("40163554")
        sinusitis, viral_sinusitis = entity("4283893"), entity("40481087")
        assert gi_bleed and warfarin and warfarin_5mg and sinusitis and viral_sinusitis
        assert s.get(m.Entity, gi_bleed).codes["SNOMEDCT"] == ["74474003"]
        edge = s.scalar(select(m.Edge).where(m.Edge.source_entity_id == warfarin_5mg,
                                             m.Edge.target_entity_id == warfarin))
        assert edge.relation == "has_ingredient" and edge.provenance == "omop-vocabulary v5.0 18-JAN-19"
        assert s.scalar(select(m.Edge.relation).where(m.Edge.source_entity_id == viral_sinusitis,
                                                      m.Edge.target_entity_id == sinusitis)) == "is_a"
        src = s.get(m.Source, edge.source_id)
        assert src.name == VOCABULARY_SOURCE and src.kind == "ontology" and "SNOMED CT" in src.description
        relations = Counter(s.scalars(select(m.Edge.relation).where(m.Edge.source_id == src.id)))
        assert relations["is_a"] > 0 and relations["maps_to"] == 3
        # record rows link to the vocabulary's entities by code
        cond = s.scalar(select(m.Condition).where(m.Condition.concept_id == 192671).limit(1))
        assert cond.entity_id == gi_bleed and cond.code_system == "SNOMEDCT" and cond.code == "74474003"


def _mini_cdm(path: Path, persons: int = 4) -> None:
    """A small real CDM: the first persons of Eunomia with all their rows, plus an orphan and a header-only table."""
    con = duckdb.connect(str(path))
    try:
        con.execute(f"ATTACH '{eunomia_file()}' AS eu (READ_ONLY)")
        keep = f"(SELECT person_id FROM eu.person ORDER BY person_id LIMIT {persons})"
        for (t,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'eu'").fetchall():
            cols = {r[0].upper() for r in con.execute(
                f"SELECT column_name FROM information_schema.columns WHERE table_catalog='eu' AND table_name='{t}'"
            ).fetchall()}
            where = f" WHERE person_id IN {keep} OR person_id > 100000" if "PERSON_ID" in cols else ""
            con.execute(f'CREATE TABLE "{t}" AS SELECT * FROM eu."{t}"{where}')
    finally:
        con.close()


def test_small_cdm_with_notes_is_idempotent_and_leaks_nothing(tmp_path: Path, sqlite_store, embedder) -> None:  # type: ignore[no-untyped-def]
    cdm = tmp_path / "mini.duckdb"
    _mini_cdm(cdm)
    src = duckdb.connect(str(cdm), read_only=True)
    uuids = {r[0] for r in src.execute("SELECT person_source_value FROM person").fetchall()}
    uuids |= {r[0] for r in src.execute("SELECT visit_source_value FROM visit_occurrence").fetchall()}
    src.close()
    first = ingest_records(sqlite_store, cdm, fmt="omop", tenant_id="h1", secret=SECRET, embedder=embedder)
    assert first.failed == [] and first.added == 4 and first.chunks > 4
    again = ingest_records(sqlite_store, cdm, fmt="omop", tenant_id="h1", secret=SECRET, embedder=embedder)
    assert (again.added, again.replaced, again.unchanged) == (0, 0, 4)
    notes = sqlite_store.get_chunks([int(i) for i in sqlite_store.allowed_chunk_ids(
        SearchFilters(tenant_id="h1", patient_id=Deidentifier(SECRET, "h1").patient_id("1")))])
    assert any("Conditions" == c.section for c in notes)
    dumped = [v for _, _, v in _all_text_values(Path(str(sqlite_store.engine.url.database)))]
    assert not [v for v in dumped for u in uuids if u in v]


def test_bad_rows_are_named_and_header_only_tables_are_empty(tmp_path: Path, sqlite_store) -> None:  # type: ignore[no-untyped-def]
    cdm = tmp_path / "bad.duckdb"
    con = duckdb.connect(str(cdm))
    con.execute("CREATE TABLE person (PERSON_ID BIGINT, GENDER_CONCEPT_ID BIGINT, YEAR_OF_BIRTH BIGINT)")
    con.execute("INSERT INTO person VALUES (1, 8532, 1970), (2, 8507, 1980)")
    con.execute("CREATE TABLE concept (CONCEPT_ID BIGINT, CONCEPT_NAME VARCHAR, DOMAIN_ID VARCHAR, "
                "VOCABULARY_ID VARCHAR, CONCEPT_CODE VARCHAR)")
    con.execute("CREATE TABLE condition_occurrence (person_id BIGINT, condition_concept_id BIGINT, "
                "condition_start_date VARCHAR, condition_end_date VARCHAR)")  # lower case is read too
    con.execute("INSERT INTO condition_occurrence VALUES (1, 0, '2001-02-03', NULL), (2, 0, '03/02/2001', NULL), "
                "(9, 0, '2001-02-03', NULL)")
    # an empty table as Eunomia has them: its CSV header stored as one data row under placeholder names
    con.execute("CREATE TABLE death (column0 VARCHAR, column1 VARCHAR)")
    con.execute("INSERT INTO death VALUES ('PERSON_ID', 'DEATH_DATE'), ('2', '2010-01-01')")
    con.close()
    report = ingest_records(sqlite_store, cdm, fmt="omop", tenant_id="h2", secret=SECRET,
                            embedder=NoEmbedder(), notes=False)  # type: ignore[arg-type]
    assert report.added == 2 and report.skipped == {"condition_occurrence: person does not exist": 1}
    (bad,) = report.failed
    assert bad.path.endswith("bad.duckdb:condition_occurrence") and bad.line == 2
    assert bad.field == "CONDITION_START_DATE"
    with sqlite_store.session() as s:
        dead = s.get(m.Patient, Deidentifier(SECRET, "h2").patient_id("2"))
        assert dead.deceased and dead.death_date != dt.date(2010, 1, 1) and dead.death_date is not None


def test_cli_omop_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--db", f"sqlite:///{tmp_path / 'x.db'}", "ingest", "records",
                                      str(tmp_path / "none.duckdb"), "--format", "omop", "--tenant", "h3",
                                      "--no-notes"])
    assert result.exit_code == 1 and "none.duckdb: no such file or folder" in result.output


def test_migrations_build_exactly_the_models(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    """The 0002 revision (OMOP columns, observation periods, cohort indexes) and the models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store, _, _ = eunomia_kb
    with store.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), m.Base.metadata) == []


def _stored_rows(store) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    """Every patient and record row, without the row ids a load order assigns."""
    out = {}
    with store.session() as s:
        for cls in (m.Patient, m.Encounter, m.Condition, m.Medication, m.Observation, m.Procedure,
                    m.ObservationPeriod):
            cols = [c for c in cls.__table__.columns if not (c.name == "id" and cls is not m.Patient)
                    and c.name != "source_id"]
            out[cls.__tablename__] = sorted((tuple(r) for r in s.execute(select(*cols))), key=repr)
    return out


def test_omop_is_read_in_person_groups_and_stores_the_same(tmp_path: Path, sqlite_store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The reader never holds the whole CDM: persons come in groups by id, each with its own rows of every table
    (orphan rows beyond the last person included); ingesting in groups of 7 stores exactly what one group of all
    persons stores and reports the same orphans and failures."""
    from medkb.ingest import omop
    from tests.conftest import _sqlite_store

    cdm = tmp_path / "mini.duckdb"
    _mini_cdm(cdm, persons=40)
    con = duckdb.connect(str(cdm))
    con.execute("INSERT INTO condition_occurrence (condition_occurrence_id, person_id, condition_concept_id, "
                "condition_start_date) SELECT 1, min(person_id), 192671, NULL FROM person")  # a bad row, named
    # orphans before the first person, between persons (in several groups) and after the last
    con.execute("INSERT INTO observation_period SELECT 1, k, DATE '2000-01-01', DATE '2001-01-01', 0 FROM ("
                "SELECT -5 AS k UNION ALL SELECT 10000000 UNION ALL (SELECT person_id + 1 FROM person WHERE "
                "person_id + 1 NOT IN (SELECT person_id FROM person) ORDER BY 1 LIMIT 3))")
    con.close()
    monkeypatch.setattr(omop, "FETCH_ROWS", 5)  # groups are read between fetches of the person stream
    batch = omop.read_omop(cdm, persons_per_group=7)
    assert batch.patients == {}  # nothing read yet
    groups = list(batch.patient_groups())
    assert [len(g) for g in groups] == [7, 7, 7, 7, 7, 5]
    ids = [int(p.source_id) for g in groups for p in g]
    assert ids == sorted(set(ids))
    (whole,) = list((one := omop.read_omop(cdm, persons_per_group=10**9)).patient_groups())
    assert {p.source_id: sorted(map(repr, p.facts)) for p in whole} == \
        {p.source_id: sorted(map(repr, p.facts)) for g in groups for p in g}
    assert batch.skipped == one.skipped == {"observation_period: person does not exist": 5}
    assert [(b.path, b.line, b.field) for b in batch.failed] == [(b.path, b.line, b.field) for b in one.failed]
    assert len(batch.failed) == 1 and batch.failed[0].field == "CONDITION_START_DATE"

    def ingest(store, per_group: int):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(omop, "PERSONS_PER_GROUP", per_group)
        return ingest_records(store, cdm, fmt="omop", tenant_id="h3", secret=SECRET,
                              embedder=NoEmbedder(), notes=False)  # type: ignore[arg-type]

    (tmp_path / "b").mkdir()
    other = _sqlite_store(tmp_path / "b")
    try:
        small, big = ingest(sqlite_store, 7), ingest(other, 10**9)
        assert (small.added, small.skipped, len(small.failed)) == (big.added, big.skipped, len(big.failed)) \
            and small.added == 40
        assert _stored_rows(sqlite_store) == _stored_rows(other)
        again = ingest(sqlite_store, 7)
        assert (again.added, again.unchanged) == (0, 40)
    finally:
        other.close()
