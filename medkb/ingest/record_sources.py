"""Patient-record source types (facts, notes, known identifiers) and the Synthea CSV reader (FHIR: fhir.py)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord
from medkb.ingest.deid import parse_date
from medkb.ingest.phi import KnownIdentifiers, collect
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
class Note:
    """A free-text clinical note as the source has it (FHIR DocumentReference, a notes column)."""

    date: dt.date | None
    title: str | None
    text: str


@dataclass
class SourcePatient:
    source_id: str
    birth: dt.date | None
    sex: str | None
    deceased: bool
    facts: list[Fact] = field(default_factory=list)
    death: dt.date | None = None
    notes: list[Note] = field(default_factory=list)
    known: KnownIdentifiers = field(default_factory=KnownIdentifiers)  # removed from this patient's free text


@dataclass
class RecordBatch:
    patients: dict[str, SourcePatient]
    failed: list[BadRecord]
    name: str  # the export's folder or file name, the default source name
    skipped: dict[str, int] = field(default_factory=dict)  # rows left out on purpose, by reason
    vocabulary: Any = None  # OntologyData of the export's own vocabulary (OMOP), written to the graph first
    # A streaming reader (OMOP) leaves ``patients`` empty and reads groups of patients from the source as they are
    # asked for; ``failed`` and ``skipped`` are then complete only once every group has been read.
    stream: Callable[[], Iterator[list[SourcePatient]]] | None = None

    def patient_groups(self) -> Iterator[list[SourcePatient]]:
        if self.stream is None:
            yield list(self.patients.values())
            return
        yield from self.stream()


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
            birth = _date(pfile, n, "BIRTHDATE", row)
            patients[pid] = SourcePatient(
                source_id=pid, birth=birth, sex=sex(row.get("GENDER")),
                deceased=bool((row.get("DEATHDATE") or "").strip()), death=_date(pfile, n, "DEATHDATE", row),
                known=_synthea_known(pid, birth, row),
            )
        except BadRecord as exc:
            failed.append(exc)
    _synthea_notes(folder / "notes.csv", patients, failed)
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


def _synthea_known(pid: str, birth: dt.date | None, row: dict[str, str]) -> KnownIdentifiers:
    g = row.get
    given = collect([g("FIRST"), g("MIDDLE")])
    return KnownIdentifiers(
        names=collect([" ".join(collect([g("PREFIX"), *given, g("LAST"), g("SUFFIX")]))]),
        name_parts=collect([*given, g("LAST"), g("MAIDEN")]),
        addresses=collect([g("ADDRESS"), g("CITY"), g("COUNTY"), g("ZIP"), g("BIRTHPLACE")]),
        ids=collect([pid, g("SSN"), g("DRIVERS"), g("PASSPORT")]),
        birth_dates=[birth] if birth else [],
    )


def _synthea_notes(path: Path, patients: dict[str, SourcePatient], failed: list[BadRecord]) -> None:
    """notes.csv (PATIENT, DATE, NOTE; TITLE optional): free-text notes, one per row."""
    if not path.exists():
        return
    try:
        for n, row in _rows(path, ("PATIENT", "DATE", "NOTE")):
            p = patients.get(row["PATIENT"].strip())
            if p is None:
                failed.append(BadRecord(str(path), "unknown patient (not in patients.csv)", line=n, field="PATIENT"))
                continue
            try:
                text = (row.get("NOTE") or "").strip()
                if text:
                    p.notes.append(Note(_date(path, n, "DATE", row), (row.get("TITLE") or "").strip() or None, text))
            except BadRecord as exc:
                failed.append(exc)
    except BadRecord as exc:
        failed.append(exc)


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


def sex(v: Any) -> str | None:
    s = str(v or "").strip().lower()
    return {"m": "male", "male": "male", "f": "female", "female": "female"}.get(s, s or None)
