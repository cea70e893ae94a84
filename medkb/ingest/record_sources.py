"""Readers for patient-record exports (Synthea CSV folders, FHIR R4 bundles) into plain source records."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord
from medkb.ingest.deid import parse_date
from medkb.kb.codes import canonical_system

@dataclass
class Fact:
    """One clinical row as the source has it (real dates; de-identified before storage)."""

    kind: str  # encounter | condition | medication | observation | allergy | procedure | period
    system: str | None
    code: str | None
    description: str | None
    start: dt.date | None = None
    stop: dt.date | None = None
    value: str | None = None
    units: str | None = None
    extra: str | None = None  # encounter class, or a medication's reason code
    concept_id: int | None = None  # the OMOP standard concept, where the export has one
    domain: str | None = None  # OMOP domain of an observation row: measurement | observation


@dataclass
class SourcePatient:
    source_id: str
    birth: dt.date | None
    sex: str | None
    deceased: bool
    facts: list[Fact] = field(default_factory=list)
    death: dt.date | None = None


@dataclass
class RecordBatch:
    patients: dict[str, SourcePatient]
    failed: list[BadRecord]
    name: str  # the export's folder or file name, the default source name
    skipped: dict[str, int] = field(default_factory=dict)  # rows left out on purpose, by reason
    vocabulary: Any = None  # OntologyData of the export's own vocabulary (OMOP), written to the graph first


# file stem → (required columns, kind, default code system)
_SYNTHEA = {
    "encounters": (("Id", "START", "PATIENT"), "encounter", "SNOMEDCT"),
    "conditions": (("START", "PATIENT", "CODE", "DESCRIPTION"), "condition", "SNOMEDCT"),
    "medications": (("START", "PATIENT", "CODE", "DESCRIPTION"), "medication", "RXNORM"),
    "observations": (("DATE", "PATIENT", "CODE", "DESCRIPTION"), "observation", "LOINC"),
    "allergies": (("START", "PATIENT", "CODE", "DESCRIPTION"), "allergy", "SNOMEDCT"),
    "procedures": (("PATIENT", "CODE", "DESCRIPTION"), "procedure", "SNOMEDCT"),
}


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise BadRecord(str(path), f"cannot read: {exc.strerror or exc}") from None
    with fh:
        try:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
        except UnicodeDecodeError:
            raise BadRecord(str(path), "not UTF-8 text", line=1) from None
        if not header:
            raise BadRecord(str(path), "empty file")
        missing = [c for c in required if c not in header]
        if missing:
            raise BadRecord(str(path), "missing required column(s)", line=1, field=",".join(missing))
        try:
            for row in reader:
                yield reader.line_num, row
        except (UnicodeDecodeError, csv.Error) as exc:
            raise BadRecord(str(path), f"unreadable CSV: {exc}", line=reader.line_num) from None


def read_synthea(folder: Path) -> RecordBatch:
    """patients.csv is required; the other Synthea files are read when present."""
    if not folder.is_dir():
        raise BadRecord(str(folder), "a Synthea CSV export is a folder (with patients.csv)")
    failed: list[BadRecord] = []
    patients: dict[str, SourcePatient] = {}
    pfile = folder / "patients.csv"
    if not pfile.exists():
        raise BadRecord(str(pfile), "missing: a Synthea export needs patients.csv")
    for n, row in _rows(pfile, ("Id", "BIRTHDATE", "GENDER")):
        try:
            pid = row["Id"].strip()
            if not pid:
                raise BadRecord(str(pfile), "empty patient id", line=n, field="Id")
            patients[pid] = SourcePatient(
                source_id=pid, birth=_date(pfile, n, "BIRTHDATE", row), sex=_sex(row.get("GENDER")),
                deceased=bool((row.get("DEATHDATE") or "").strip()), death=_date(pfile, n, "DEATHDATE", row),
            )
        except BadRecord as exc:
            failed.append(exc)
    for name, (required, kind, default_system) in _SYNTHEA.items():
        path = folder / f"{name}.csv"
        if not path.exists():
            continue
        try:
            for n, row in _rows(path, required):
                try:
                    fact = _synthea_fact(path, n, row, kind, default_system)
                except BadRecord as exc:
                    failed.append(exc)
                    continue
                p = patients.get(row["PATIENT"].strip())
                if p is None:
                    failed.append(BadRecord(str(path), "unknown patient (not in patients.csv)", line=n,
                                            field="PATIENT"))
                    continue
                p.facts.append(fact)
        except BadRecord as exc:
            failed.append(exc)
    return RecordBatch(patients, failed, folder.resolve().name)


def _synthea_fact(path: Path, n: int, row: dict[str, str], kind: str, default_system: str) -> Fact:
    start_col = "DATE" if kind == "observation" else ("START" if "START" in row else "DATE")
    fact = Fact(
        kind=kind, system=canonical_system(row.get("SYSTEM"), default_system), code=(row.get("CODE") or "").strip()
        or None, description=(row.get("DESCRIPTION") or "").strip() or None,
        start=_date(path, n, start_col, row), stop=_date(path, n, "STOP", row),
    )
    if kind == "observation":
        fact.value, fact.units = (row.get("VALUE") or "").strip() or None, (row.get("UNITS") or "").strip() or None
    elif kind == "encounter":
        fact.extra = (row.get("ENCOUNTERCLASS") or "").strip() or None
    elif kind == "medication":
        fact.extra = (row.get("REASONCODE") or "").strip() or None
    return fact


def _date(path: Path, n: int, col: str, row: dict[str, Any]) -> dt.date | None:
    try:
        return parse_date(row.get(col))
    except ValueError as exc:
        raise BadRecord(str(path), str(exc), line=n, field=col) from None


def _sex(v: Any) -> str | None:
    s = str(v or "").strip().lower()
    return {"m": "male", "male": "male", "f": "female", "female": "female"}.get(s, s or None)


# ---- FHIR R4 ----------------------------------------------------------------------------------

def read_fhir(path: Path) -> RecordBatch:
    """A FHIR R4 Bundle (JSON), or a folder of them."""
    files = sorted(p for p in path.rglob("*.json")) if path.is_dir() else [path]
    patients: dict[str, SourcePatient] = {}
    failed: list[BadRecord] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            failed.append(BadRecord(str(f), f"cannot read: {exc}"))
            continue
        if not text.strip():
            failed.append(BadRecord(str(f), "empty file"))
            continue
        try:
            bundle = json.loads(text)
        except json.JSONDecodeError as exc:
            failed.append(BadRecord(str(f), f"invalid JSON: {exc.msg}", line=exc.lineno))
            continue
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            failed.append(BadRecord(str(f), "not a FHIR Bundle", field="resourceType"))
            continue
        _read_bundle(f, bundle, patients, failed)
    return RecordBatch(patients, failed, path.resolve().stem if path.is_file() else path.resolve().name)


def _read_bundle(f: Path, bundle: dict, patients: dict[str, SourcePatient], failed: list[BadRecord]) -> None:
    resources = [e.get("resource") for e in bundle.get("entry") or [] if isinstance(e, dict)]
    aliases: dict[str, str] = {}  # "urn:uuid:x" / "Patient/x" → x
    for i, r in enumerate(resources):
        if isinstance(r, dict) and r.get("resourceType") == "Patient":
            pid = str(r.get("id") or "")
            if not pid:
                failed.append(BadRecord(str(f), "Patient without id", field=f"entry[{i}].id"))
                continue
            try:
                birth = parse_date(r.get("birthDate"))
            except ValueError as exc:
                failed.append(BadRecord(str(f), str(exc), field=f"entry[{i}].birthDate"))
                birth = None
            try:
                death = parse_date(r.get("deceasedDateTime"))
            except ValueError as exc:
                failed.append(BadRecord(str(f), str(exc), field=f"entry[{i}].deceasedDateTime"))
                death = None
            patients[pid] = SourcePatient(
                pid, birth, _sex(r.get("gender")),
                bool(r.get("deceasedBoolean") or r.get("deceasedDateTime")), death=death,
            )
            full = (bundle.get("entry") or [])[i].get("fullUrl")
            for alias in (pid, f"Patient/{pid}", f"urn:uuid:{pid}", full):
                if alias:
                    aliases[alias] = pid
    for i, r in enumerate(resources):
        if not isinstance(r, dict) or r.get("resourceType") not in _FHIR_KINDS:
            continue
        rtype = r["resourceType"]
        ref = ((r.get("subject") or r.get("patient") or {}).get("reference")) or ""
        pid = aliases.get(ref) or aliases.get(ref.rsplit("/", 1)[-1])
        if pid is None:
            failed.append(BadRecord(str(f), f"{rtype} refers to an unknown patient", field=f"entry[{i}].subject"))
            continue
        try:
            patients[pid].facts.append(_fhir_fact(rtype, r))
        except ValueError as exc:
            failed.append(BadRecord(str(f), str(exc), field=f"entry[{i}]"))


_FHIR_KINDS = {
    "Encounter": "encounter", "Condition": "condition", "MedicationRequest": "medication",
    "MedicationStatement": "medication", "Observation": "observation", "AllergyIntolerance": "allergy",
    "Procedure": "procedure",
}


def _coding(concept: dict | None, default: str | None) -> tuple[str | None, str | None, str | None]:
    concept = concept or {}
    codings = concept.get("coding") or [{}]
    c = codings[0]
    return canonical_system(c.get("system"), default), c.get("code"), concept.get("text") or c.get("display")


def _fhir_fact(rtype: str, r: dict) -> Fact:
    kind = _FHIR_KINDS[rtype]
    period = r.get("period") or r.get("effectivePeriod") or r.get("performedPeriod") or {}
    if kind == "encounter":
        system, code, desc = _coding((r.get("type") or [{}])[0], "SNOMEDCT")
        cls = r.get("class") or {}
        return Fact(kind, system, code, desc, parse_date(period.get("start")), parse_date(period.get("end")),
                    extra=(cls.get("code") if isinstance(cls, dict) else None))
    if kind == "medication":
        system, code, desc = _coding(r.get("medicationCodeableConcept"), "RXNORM")
        start = r.get("authoredOn") or r.get("effectiveDateTime") or period.get("start")
        reason = (r.get("reasonCode") or [{}])[0]
        return Fact(kind, system, code, desc, parse_date(start), parse_date(period.get("end")),
                    extra=_coding(reason, None)[1])
    if kind == "observation":
        system, code, desc = _coding(r.get("code"), "LOINC")
        q = r.get("valueQuantity") or {}
        value = q.get("value", r.get("valueString"))
        if value is None and r.get("valueCodeableConcept"):
            value = _coding(r["valueCodeableConcept"], None)[2]
        return Fact(kind, system, code, desc, parse_date(r.get("effectiveDateTime") or period.get("start")),
                    value=None if value is None else str(value), units=q.get("unit"))
    system, code, desc = _coding(r.get("code"), "SNOMEDCT")
    if kind == "condition":
        return Fact(kind, system, code, desc, parse_date(r.get("onsetDateTime") or r.get("recordedDate")),
                    parse_date(r.get("abatementDateTime")))
    if kind == "allergy":
        return Fact(kind, system, code, desc, parse_date(r.get("onsetDateTime") or r.get("recordedDate")))
    return Fact(kind, system, code, desc, parse_date(r.get("performedDateTime") or period.get("start")),
                parse_date(period.get("end")))
