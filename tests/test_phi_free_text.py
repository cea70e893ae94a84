"""PHI in free text: FHIR bundles written for this test (English and Chinese) whose notes and Observation.valueString
name the patient, a relative and a clinician. After a real ingest into a real SQLite file, a scan of the whole
database (every table, every column, as SQL text) and of the log finds none of their identifiers, while the
clinical content is kept and retrievable."""

from __future__ import annotations

import base64
import json
import logging
from medkb.kb.sqlite_lib import dbapi as sqlite3  # the SQLite medkb runs on: one library per process
from pathlib import Path

import pytest

from medkb.ingest.phi import KnownIdentifiers, PHIScrubber
from medkb.ingest.records import ingest_records
from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings

SECRET = "phi-test-secret"

EN_NOTE = (
    "Progress note. Mr. Fenwick (DOB 03/04/1941, MRN-558812) was seen by Dr. Amelia Hart on 2 May 2023. "
    "Wally reports good adherence to metformin 500 mg twice daily. His daughter Clara Fenwick (413-555-0142) "
    "manages his pillbox. Neighbour Mrs. Olsen checks on him most days. Contact w.fenwick@example.org or call "
    "(413) 555-0199; portal https://portal.example.org/p/558812. He lives at 42 Elm Street, Springfield 01103. "
    "HbA1c 7.2%. Plan: continue metformin, review in 3 months with nurse Tom Baker."
)
EN_VALUE = "Walter Fenwick says his daughter Clara drives him to the clinic"
EN_IDENTIFIERS = (
    "Walter", "Fenwick", "Wally", "Clara", "Amelia", "Hart", "Olsen", "Tom Baker", "Elm Street", "Springfield",
    "01103", "555-0199", "5550199", "555-0142", "w.fenwick", "example.org", "558812", "999-12-3456",
    "1941-03-04", "03/04/1941", "2 May 2023", "fenwick-001",
)
ZH_NOTE = (
    "患者张伟，男，1956年7月15日出生，身份证号110105195607150031，住北京市朝阳区建国路88号，电话138-1234-5678。"
    "女儿张丽陪同就诊。主诉口渴多饮三个月。王建国医生接诊，李护士测血压150/95mmHg。"
    "诊断：2型糖尿病，高血压。予二甲双胍500mg每日两次。邻居刘秀英协助购药。"
)
ZH_VALUE = "张伟自述其女儿张丽每周送药"
ZH_IDENTIFIERS = ("张伟", "张丽", "王建国", "李护士", "刘秀英", "建国路", "朝阳区", "13812345678", "138-1234-5678",
                  "110105195607150031", "1956年7月15日", "1956-07-15", "zh-0077")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def en_bundle() -> dict:
    pid = "fenwick-001"
    ref = {"reference": f"urn:uuid:{pid}"}
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": f"urn:uuid:{pid}", "resource": {
            "resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1941-03-04",
            "identifier": [{"system": "http://hospital.example.org/mrn", "value": "MRN-558812"},
                           {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"}],
            "name": [{"use": "official", "family": "Fenwick", "given": ["Walter", "James"], "prefix": ["Mr."]},
                     {"use": "nickname", "given": ["Wally"], "family": "Fenwick"}],
            "telecom": [{"system": "phone", "value": "(413) 555-0199"},
                        {"system": "email", "value": "w.fenwick@example.org"}],
            "address": [{"line": ["42 Elm Street"], "city": "Springfield", "state": "MA", "postalCode": "01103"}],
            "contact": [{"relationship": [{"text": "daughter"}], "name": {"given": ["Clara"], "family": "Fenwick"},
                         "telecom": [{"system": "phone", "value": "413-555-0142"}]}],
            "generalPractitioner": [{"display": "Dr. Amelia Hart"}]}},
        {"resource": {"resourceType": "Condition", "subject": ref, "onsetDateTime": "2015-06-01",
                      "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9",
                                           "display": "Type 2 diabetes mellitus without complications"}]}}},
        {"resource": {"resourceType": "MedicationRequest", "subject": ref, "authoredOn": "2015-06-01",
                      "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                                "code": "860975", "display": "metformin 500 MG"}]}}},
        {"resource": {"resourceType": "Observation", "subject": ref, "effectiveDateTime": "2023-05-02",
                      "code": {"text": "Social history"}, "valueString": EN_VALUE}},
        {"resource": {"resourceType": "DocumentReference", "subject": ref, "date": "2023-05-02T10:00:00Z",
                      "type": {"text": "Progress note"},
                      "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": _b64(EN_NOTE)}},
                                  {"attachment": {"contentType": "application/pdf", "url": "Binary/scan-1"}}]}},
    ]}


def zh_bundle() -> dict:
    pid = "zh-0077"
    ref = {"reference": f"Patient/{pid}"}
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {
            "resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1956-07-15",
            "identifier": [{"system": "urn:oid:1.2.156.112604.1.2.1", "value": "110105195607150031"}],
            "name": [{"text": "张伟", "family": "张", "given": ["伟"]}],
            "telecom": [{"system": "phone", "value": "13812345678"}],
            "address": [{"text": "北京市朝阳区建国路88号", "city": "北京市", "district": "朝阳区"}],
            "contact": [{"relationship": [{"text": "女儿"}], "name": {"text": "张丽"}}]}},
        {"resource": {"resourceType": "Observation", "subject": ref, "effectiveDateTime": "2023-06-01",
                      "code": {"text": "社会史"}, "valueString": ZH_VALUE}},
        {"resource": {"resourceType": "DocumentReference", "subject": ref, "date": "2023-06-01",
                      "type": {"text": "门诊病历"},
                      "content": [{"attachment": {"contentType": "text/plain", "data": _b64(ZH_NOTE)}}]}},
    ]}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, embedder) -> tuple[Path, str, list]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("phi")
    bundles = root / "bundles"
    bundles.mkdir()
    (bundles / "en.json").write_text(json.dumps(en_bundle(), ensure_ascii=False), encoding="utf-8")
    (bundles / "zh.json").write_text(json.dumps(zh_bundle(), ensure_ascii=False), encoding="utf-8")
    db = root / "kb.db"
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    old = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        report = ingest_records(store, bundles, fmt="fhir", tenant_id="clinic", secret=SECRET, embedder=embedder)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(old)
    assert report.failed == [] and report.added == 2
    with sqlite3.connect(db) as con:  # record notes are patient-scoped: read every chunk directly
        chunks = con.execute("SELECT section, text FROM chunks").fetchall()
    store.close()
    log_text = "\n".join(r.getMessage() for r in records)
    return db, log_text, chunks


def _dump(db: Path) -> str:
    """Every table's rows and the schema, and every DATE column as ISO text (stored as day numbers, a true
    date would not show as its text in the dump)."""
    con = sqlite3.connect(db)
    try:
        dates = [f'SELECT date("{c}") FROM "{t}"' for (t,) in con.execute("SELECT name FROM sqlite_master WHERE "
                                                                          "type = 'table'")
                 for _, c, kind, *_ in con.execute(f'PRAGMA table_info("{t}")') if kind.upper() == "DATE"]
        assert dates, "no DATE column found: the dump would not show dates"
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        # every row of every table (the bundled SQLite's module has no iterdump), then the dates as text
        rows = [repr(r) for t in tables for r in con.execute(f'SELECT * FROM "{t}"')]
        schema = [sql for (sql,) in con.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")]
        return "\n".join([*schema, *rows, *(str(v) for q in dates for (v,) in con.execute(q))])
    finally:
        con.close()


@pytest.mark.parametrize("identifier", EN_IDENTIFIERS + ZH_IDENTIFIERS)
def test_no_identifier_reaches_the_database_or_the_log(ingested: tuple[Path, str, list], identifier: str) -> None:
    db, log_text, _ = ingested
    dump = _dump(db).casefold()
    assert identifier.casefold() not in dump
    assert identifier.casefold() not in log_text.casefold()


def test_notes_and_value_strings_are_stored_without_phi_but_with_their_clinical_content(
        ingested: tuple[Path, str, list]) -> None:
    _, _, chunks = ingested
    text = "\n".join(t for _, t in chunks)
    sections = {s for s, _ in chunks}
    # DocumentReference notes are ingested now, as sections of each patient's record, dated (shifted).
    assert any(s and s.startswith("Clinical note") and "Progress note" in s for s in sections)
    assert any(s and s.startswith("Clinical note") and "门诊病历" in s for s in sections)
    for kept in ("adherence to metformin 500 mg twice daily", "manages his pillbox", "drives him to the clinic",
                 "HbA1c 7.2%", "2型糖尿病", "二甲双胍500mg每日两次", "口渴多饮三个月", "150/95mmHg"):
        assert kept in text, kept
    for tag in ("[PATIENT]", "[NAME]", "[ADDRESS]", "[PHONE]", "[EMAIL]", "[ID]", "[DATE]", "[URL]"):
        assert tag in text, tag
    assert "his daughter [NAME] drives him" in text and "女儿[NAME]陪同就诊" in text
    assert "[NAME]医生接诊" in text


def test_the_three_steps_each_catch_what_the_others_miss() -> None:
    s = PHIScrubber()
    known = KnownIdentifiers(names=["Walter Fenwick"], addresses=["42 Elm Street"])
    text = "Walter at 42 Elm Street, on 2023-05-02, with son Peter and Dr. Hart; Parkinson's disease."
    # Known values only: the patient's own forms go, nothing else does.
    assert s.known(text, known) == ("[PATIENT] at [ADDRESS], on 2023-05-02, with son Peter and Dr. Hart; "
                                    "Parkinson's disease.")
    # Patterns only: the date.
    assert "[DATE]" in s.patterns(text) and "Walter" in s.patterns(text)
    # Names of other people by cue; an eponym followed by "disease" is kept.
    assert s.other_names("with son Peter and Dr. Hart; Parkinson's disease.") == (
        "with son [NAME] and [NAME]; Parkinson's disease.")
    # The name lists catch a name with no cue at all (Faker's English and Chinese lists).
    assert s.other_names("Reviewed: Susan Miller agrees.") == "Reviewed: [NAME] agrees."
    assert s.other_names("复诊由刘秀英陪同") == "复诊由[NAME]陪同"


def test_a_notes_column_of_a_synthea_export_is_ingested_without_phi(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    export = tmp_path / "synthea"
    export.mkdir()
    (export / "patients.csv").write_text(
        "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,LAST,SUFFIX,MAIDEN,GENDER,ADDRESS,CITY,ZIP\n"
        "b1f2,1950-02-11,,999-41-7720,S99912345,,Mrs.,Maribel,Okafor,,Adeyemi,F,7 Harbour Road,Quincy,02169\n",
        encoding="utf-8")
    (export / "notes.csv").write_text(
        "PATIENT,DATE,TITLE,NOTE\n"
        'b1f2,2021-09-30,Telephone note,"Maribel Okafor (née Adeyemi, 7 Harbour Road) called; her son Daniel '
        'will collect the inhaler. Asthma controlled on budesonide."\n', encoding="utf-8")
    db = tmp_path / "kb.db"
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    report = ingest_records(store, export, fmt="synthea-csv", tenant_id="clinic", secret=SECRET, embedder=embedder)
    store.close()
    assert report.failed == [] and report.added == 1
    dump = _dump(db)
    for identifier in ("Maribel", "Okafor", "Adeyemi", "Harbour", "Quincy", "02169", "999-41-7720", "S99912345",
                       "Daniel", "1950-02-11", "2021-09-30", "b1f2"):
        assert identifier not in dump, identifier
    assert "Asthma controlled on budesonide." in dump and "her son [NAME] will collect the inhaler" in dump
