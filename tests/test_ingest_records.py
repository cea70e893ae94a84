"""Patient records on real Synthea data and a FHIR bundle: nothing identifying reaches the database."""

from __future__ import annotations

import csv
import datetime as dt
import json
from medkb.kb.sqlite_lib import dbapi as sqlite3  # the SQLite medkb runs on: one library per process
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.ingest.deid import Deidentifier
from medkb.ingest.records import ingest_records
from medkb.kb import models as m
from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings
from tests.conftest import shared_data


def visible_chunks(store: KnowledgeStore, filters: SearchFilters) -> list:  # type: ignore[type-arg]
    """Chunks the filters let a query see (ids as Python ints: SQLite cannot bind numpy integers)."""
    return store.get_chunks([int(i) for i in store.allowed_chunk_ids(filters)])

SECRET = "test-secret-not-the-default"
TENANT = "demo"


def _csv(name: str) -> list[dict[str, str]]:
    with shared_data("synthea", name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def synthea(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[tuple[KnowledgeStore, Path, object]]:  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("synthea") / "kb.db"
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    report = ingest_records(store, shared_data("synthea"), fmt="synthea-csv", tenant_id=TENANT, secret=SECRET,
                            embedder=embedder)
    yield store, db, report
    store.close()


def _all_text_values(db: Path) -> Iterator[tuple[str, str, str]]:
    """(table, column, value) for every non-blob value of every column of every table."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info('{t}')")]
            for row in con.execute(f"SELECT * FROM '{t}'"):
                for col, v in zip(cols, row):
                    if v is not None and not isinstance(v, bytes):
                        yield t, col, str(v)
    finally:
        con.close()


def test_every_patient_and_row_is_stored(synthea) -> None:  # type: ignore[no-untyped-def]
    store, _, report = synthea
    patients = _csv("patients.csv")
    assert report.failed == [] and report.added == len(patients) == 413
    assert store.count("patients") == 413
    assert store.count("conditions") == len(_csv("conditions.csv"))
    assert store.count("medications") == len(_csv("medications.csv"))
    assert store.count("procedures") == len(_csv("procedures.csv"))
    with store.session() as s:
        notes = s.scalars(select(m.Document).where(m.Document.doc_type == "record_note")).all()
        assert len(notes) == 413
        assert all(n.tenant_id == TENANT and n.patient_id and n.patient_id == n.external_id for n in notes)
        src = s.get(m.Source, notes[0].source_id)
        assert src.name == "synthea" and src.kind == "records"
        assert s.scalar(select(m.Chunk.id).where(m.Chunk.embedding.is_(None)).limit(1)) is None


def test_no_identifier_of_the_source_file_is_anywhere_in_the_database(synthea) -> None:  # type: ignore[no-untyped-def]
    _, db, _ = synthea
    patients = _csv("patients.csv")
    identifiers: set[str] = set()
    for p in patients:
        for col in ("Id", "SSN", "DRIVERS", "PASSPORT", "FIRST", "MIDDLE", "LAST", "MAIDEN", "ADDRESS"):
            if p[col].strip():
                identifiers.add(p[col].strip())
    for name in ("conditions.csv", "medications.csv", "procedures.csv"):
        for row in _csv(name):
            identifiers.update(v for k, v in row.items() if k in ("ENCOUNTER", "PAYER") and v)
    assert len(identifiers) > 2000
    birthdates = {p["BIRTHDATE"] for p in patients}
    values = list(_all_text_values(db))
    assert len(values) > 10000
    leaks = [(t, c, ident) for t, c, v in values for ident in identifiers if ident in v]
    assert leaks == []
    # Exact birth dates: none in the patients table, none in a patient's own record or note.
    deid = Deidentifier(SECRET, TENANT)
    by_pseudonym = {deid.patient_id(p["Id"]): p["BIRTHDATE"] for p in patients}
    con = sqlite3.connect(db)
    try:
        for t in ("conditions", "medications", "procedures"):
            for pid, *vals in con.execute(f"SELECT patient_id, date(start), date(stop) FROM {t}" if t != "procedures"
                                          else "SELECT patient_id, date(performed), NULL FROM procedures"):
                assert by_pseudonym[pid] not in vals
        for pid, text in con.execute("SELECT d.patient_id, c.text FROM chunks c JOIN documents d "
                                     "ON d.id = c.document_id WHERE d.patient_id IS NOT NULL"):
            assert by_pseudonym[pid] not in text
    finally:
        con.close()
    assert not [v for t, _, v in values if t == "patients" and v in birthdates]


def test_dates_are_shifted_per_patient_keeping_intervals(synthea) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = synthea
    deid = Deidentifier(SECRET, TENANT)
    starts: dict[str, set[dt.date]] = {}
    for r in _csv("conditions.csv"):
        starts.setdefault(r["PATIENT"], set()).add(dt.date.fromisoformat(r["START"][:10]))
    several = [(p, ds) for p, ds in starts.items() if len(ds) >= 2][:25]
    assert len(several) >= 10
    offsets = set()
    with store.session() as s:
        for src, dates in several:
            off = dt.timedelta(days=deid.date_offset(src))
            offsets.add(off)
            stored = set(s.scalars(select(m.Condition.start).where(
                m.Condition.patient_id == deid.patient_id(src))))
            assert stored == {d + off for d in dates}  # one offset per patient: every interval kept
            assert off.days != 0
        assert len(offsets) > 1  # offsets differ between patients
        birth = {p["Id"]: int(p["BIRTHDATE"][:4]) for p in _csv("patients.csv")}
        src = several[0][0]
        assert s.get(m.Patient, deid.patient_id(src)).birth_year == birth[src]


def test_record_note_is_readable_and_scoped_to_its_patient(synthea, embedder) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = synthea
    deid = Deidentifier(SECRET, TENANT)
    cond = _csv("conditions.csv")[0]
    pid = deid.patient_id(cond["PATIENT"])
    scoped = SearchFilters(tenant_id=TENANT, patient_id=pid)
    chunks = visible_chunks(store, scoped)
    mine = [c for c in chunks if c.patient_id == pid]
    text = "\n".join(c.text for c in mine)
    assert cond["DESCRIPTION"] in text and "Birth year" in text
    assert {c.section for c in mine} >= {"Summary", "Conditions", "Medications"}
    assert not [c for c in chunks if c.patient_id not in (None, pid)]
    # Without patient scope, and from another tenant, no note is visible.
    assert not store.allowed_chunk_ids(SearchFilters(tenant_id=TENANT)).size
    assert not store.allowed_chunk_ids(SearchFilters(tenant_id="other", patient_id=pid)).size


def test_reingest_unchanged_writes_nothing(synthea, embedder) -> None:  # type: ignore[no-untyped-def]
    store, _, _ = synthea
    gen, counts = store.generation(), store.stats()
    again = ingest_records(store, shared_data("synthea"), fmt="synthea-csv", tenant_id=TENANT, secret=SECRET,
                           embedder=embedder)
    assert (again.unchanged, again.added, again.replaced, again.failed) == (413, 0, 0, [])
    assert store.generation() == gen and store.stats() == counts


def _bundle() -> dict:
    pid = "7c3f4a2e-1111-2222-3333-444455556666"
    ref = {"reference": f"urn:uuid:{pid}"}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{pid}", "resource": {
            "resourceType": "Patient", "id": pid, "birthDate": "1961-07-23", "gender": "female",
            "name": [{"family": "Zyskowski", "given": ["Marguerite"]}],
            "telecom": [{"system": "phone", "value": "555-867-5309"},
                        {"system": "email", "value": "mzyskowski@example.org"}],
            "address": [{"line": ["42 Quillfeather Lane"], "city": "Boston", "postalCode": "02118"}],
            "identifier": [{"type": {"text": "MRN"}, "value": "MRN-88812345"},
                           {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-44-1234"}]}},
        {"resource": {"resourceType": "Condition", "subject": ref, "onsetDateTime": "2010-04-02T09:00:00Z",
                      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                                           "display": "Diabetes mellitus type 2"}]}}},
        {"resource": {"resourceType": "MedicationRequest", "subject": ref, "authoredOn": "2010-04-09",
                      "medicationCodeableConcept": {"coding": [{
                          "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975",
                          "display": "Metformin 500 MG"}]}}},
        {"resource": {"resourceType": "Observation", "subject": ref, "effectiveDateTime": "2011-01-05",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "HbA1c"}]},
                      "valueQuantity": {"value": 7.9, "unit": "%"}}},
        {"resource": {"resourceType": "AllergyIntolerance", "patient": ref, "recordedDate": "2009-12-01",
                      "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005",
                                           "display": "Allergy to penicillin"}]}}},
        {"resource": {"resourceType": "Encounter", "subject": ref, "class": {"code": "AMB"},
                      "period": {"start": "2010-04-02", "end": "2010-04-02"},
                      "type": [{"text": "Follow-up visit, call 555-867-5309 or 03/04/2010"}]}},
        {"resource": {"resourceType": "Procedure", "subject": ref, "performedDateTime": "2010-05-01",
                      "code": {"text": "Foot exam"}}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:nobody"},
                      "code": {"text": "orphan"}}},
    ]}


def test_fhir_bundle_is_deidentified_and_linked_by_code(sqlite_store: KnowledgeStore, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with sqlite_store.session() as s:  # an ontology entity that shares the condition's SNOMED code
        e = m.Entity(type="disease", name="type 2 diabetes mellitus", codes={"SNOMEDCT": ["44054006"]})
        s.add(e)
        s.flush()
        s.add(m.EntityCode(system="SNOMEDCT", code="44054006", entity_id=e.id))
        eid = e.id
    f = tmp_path / "bundle.json"
    f.write_text(json.dumps(_bundle()))
    report = ingest_records(sqlite_store, f, fmt="fhir", tenant_id="h1", secret=SECRET, embedder=embedder)
    assert report.added == 1
    assert len(report.failed) == 1 and "unknown patient" in report.failed[0].message
    with sqlite_store.session() as s:
        (cond,) = s.scalars(select(m.Condition)).all()
        assert cond.entity_id == eid and cond.start != dt.date(2010, 4, 2)
        (med,) = s.scalars(select(m.Medication)).all()
        assert med.code_system == "RXNORM" and (med.start - cond.start).days == 7
        (obs,) = s.scalars(select(m.Observation)).all()
        assert obs.value == "7.9" and obs.units == "%"
        assert sqlite_store.count("allergies") == sqlite_store.count("encounters") == 1
        (pat,) = s.scalars(select(m.Patient)).all()
        assert pat.birth_year == 1961 and pat.sex == "female"
    dumped = "\n".join(v for _, _, v in _all_text_values(Path(str(sqlite_store.engine.url.database))))
    for leak in ("Zyskowski", "Marguerite", "555-867-5309", "mzyskowski", "Quillfeather", "MRN-88812345",
                 "999-44-1234", "1961-07-23", "7c3f4a2e", "03/04/2010", "2010-04-02"):
        assert leak not in dumped, leak


def test_cli_records_and_missing_columns(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "export"
    bad.mkdir()
    (bad / "patients.csv").write_text("Id,GENDER,FIRST\nabc,F,Ann\n")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(app, ["--db", db, "ingest", "records", str(bad), "--tenant", "h2"])
    assert result.exit_code == 1, result.output
    assert f"{bad / 'patients.csv'}:1 [BIRTHDATE]" in result.output and "missing required column" in result.output
    listed = CliRunner().invoke(app, ["--db", db, "sources", "list"])
    assert listed.exit_code == 0 and "Ann" not in listed.output
