"""FHIR R4 bundles → source records: clinical facts, DocumentReference notes, every identifier of each patient."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord
from medkb.ingest.deid import parse_date
from medkb.ingest.phi import KnownIdentifiers, collect
from medkb.ingest.record_sources import Fact, Note, RecordBatch, SourcePatient, sex
from medkb.kb.codes import canonical_system


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
                pid, birth, sex(r.get("gender")),
                bool(r.get("deceasedBoolean") or r.get("deceasedDateTime")), death=death,
                known=_fhir_known(r, birth),
            )
            full = (bundle.get("entry") or [])[i].get("fullUrl")
            for alias in (pid, f"Patient/{pid}", f"urn:uuid:{pid}", full):
                if alias:
                    aliases[alias] = pid
    for i, r in enumerate(resources):
        if not isinstance(r, dict) or r.get("resourceType") not in (*_FHIR_KINDS, "DocumentReference"):
            continue
        rtype = r["resourceType"]
        ref = ((r.get("subject") or r.get("patient") or {}).get("reference")) or ""
        pid = aliases.get(ref) or aliases.get(ref.rsplit("/", 1)[-1])
        if pid is None:
            failed.append(BadRecord(str(f), f"{rtype} refers to an unknown patient", field=f"entry[{i}].subject"))
            continue
        try:
            if rtype == "DocumentReference":
                patients[pid].notes.extend(_fhir_notes(f, i, r))
            else:
                patients[pid].facts.append(_fhir_fact(rtype, r))
        except ValueError as exc:
            failed.append(BadRecord(str(f), str(exc), field=f"entry[{i}]"))
        except BadRecord as exc:
            failed.append(exc)


def _human_names(names: Any) -> tuple[list[str], list[str]]:
    """(full names, name parts) of a FHIR HumanName list: text, given + family, prefixes, suffixes."""
    full: list[str] = []
    parts: list[str] = []
    for n in names if isinstance(names, list) else []:
        if not isinstance(n, dict):
            continue
        given = [str(x) for x in n.get("given") or []]
        family = str(n.get("family") or "")
        full += collect([n.get("text"), " ".join(collect([*given, family])),
                         " ".join(collect([*map(str, n.get("prefix") or []), *given, family]))])
        parts += collect([*given, family, *map(str, n.get("suffix") or [])])
    return full, parts


def _addresses(addrs: Any) -> list[str]:
    out: list[str] = []
    for a in addrs if isinstance(addrs, list) else []:
        if isinstance(a, dict):
            out += collect([a.get("text"), *map(str, a.get("line") or []), a.get("city"), a.get("district"),
                            a.get("postalCode")])
    return out


def _telecom(items: Any, system: str) -> list[str]:
    return collect([t.get("value") for t in items if isinstance(t, dict) and t.get("system") == system]
                   if isinstance(items, list) else [])


def _fhir_known(r: dict, birth: dt.date | None) -> KnownIdentifiers:
    """Every identifier value of a FHIR Patient: names, addresses, phones, emails, ids, birth date; the
    names of its contacts (relatives) and general practitioners too."""
    names, parts = _human_names(r.get("name"))
    telecom = r.get("telecom") or []
    others: list[str] = []
    addresses = _addresses(r.get("address"))
    phones, emails = _telecom(telecom, "phone") + _telecom(telecom, "sms"), _telecom(telecom, "email")
    for c in r.get("contact") or []:
        if isinstance(c, dict):
            others += _human_names([c.get("name")])[0]
            addresses += _addresses([c.get("address")])
            phones += _telecom(c.get("telecom") or [], "phone")
            emails += _telecom(c.get("telecom") or [], "email")
    others += collect([g.get("display") for g in r.get("generalPractitioner") or [] if isinstance(g, dict)])
    ids = collect([r.get("id"), *[x.get("value") for x in r.get("identifier") or [] if isinstance(x, dict)]])
    return KnownIdentifiers(names=names, name_parts=parts, other_names=others, addresses=addresses,
                            phones=phones, emails=emails, ids=ids, birth_dates=[birth] if birth else [])


def _fhir_notes(f: Path, i: int, r: dict) -> list[Note]:
    """The text/plain attachments of a DocumentReference (inline base64 data), and its description."""
    date = parse_date(r.get("date") or (r.get("context") or {}).get("period", {}).get("start"))
    title = ((r.get("type") or {}).get("text") or _coding(r.get("type"), None)[2]) if r.get("type") else None
    texts: list[str] = []
    for j, c in enumerate(r.get("content") or []):
        att = (c or {}).get("attachment") or {}
        if "data" not in att:
            continue
        ctype = str(att.get("contentType") or "text/plain").split(";")[0].strip()
        if not ctype.startswith("text/"):
            continue  # a PDF or image note: no text to index
        try:
            texts.append(base64.b64decode(att["data"], validate=True).decode("utf-8"))
        except (binascii.Error, ValueError) as exc:
            reason = "not base64 UTF-8 text" if isinstance(exc, binascii.Error | UnicodeDecodeError) else str(exc)
            raise BadRecord(str(f), reason, field=f"entry[{i}].content[{j}].attachment.data") from None
    if r.get("description"):
        texts.insert(0, str(r["description"]))
    return [Note(date, title, t.strip()) for t in texts if t.strip()]


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
