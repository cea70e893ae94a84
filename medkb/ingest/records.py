"""Patient-record ingestion: de-identify, write record tables, and a readable, embedded record note."""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from medkb.errors import BadRecord, InvalidInput
from medkb.ingest.chunker import Section
from medkb.ingest.deid import Deidentifier, scrub
from medkb.ingest.documents import ParsedDoc, build_sections
from medkb.ingest.pipeline import DocumentWriter, IngestReport, Linker, ProgressFn, to_document
from medkb.ingest.record_sources import RecordBatch, SourcePatient, read_fhir, read_synthea
from medkb.kb import models as m
from medkb.kb.codes import canonical_system
from medkb.kb.embeddings import Embedder
from medkb.kb.records import AddStatus
from medkb.kb.store import KnowledgeStore

RECORD_FORMATS = ("synthea-csv", "fhir")
RECENT_OBSERVATIONS = 30
_TABLES = {"encounter": m.Encounter, "condition": m.Condition, "medication": m.Medication,
           "observation": m.Observation, "allergy": m.Allergy, "procedure": m.Procedure}


@dataclass
class DeidPatient:
    """A patient after de-identification: only what may be stored."""

    id: str
    birth_year: int | None
    sex: str | None
    deceased: bool
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def content_hash(self) -> str:
        payload = json.dumps([self.birth_year, self.sex, self.deceased, self.rows], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


def deidentify(p: SourcePatient, deid: Deidentifier, entity_for: Callable[[str | None, str | None], int | None]
               ) -> DeidPatient:
    """Pseudonym, birth year, shifted dates, scrubbed text; names/addresses/ids never leave the source."""
    out = DeidPatient(deid.patient_id(p.source_id), Deidentifier.birth_year(p.birth), p.sex, p.deceased)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def sh(d: Any) -> Any:
        return deid.shift(p.source_id, d)

    for f in p.facts:
        base: dict[str, Any] = {"code_system": f.system, "code": (f.code or None) and f.code[:64],
                                "description": scrub(f.description)}
        if f.kind == "encounter":
            base.update(encounter_class=scrub(f.extra), start=sh(f.start), stop=sh(f.stop))
        elif f.kind in ("condition", "medication"):
            base.update(start=sh(f.start), stop=sh(f.stop), entity_id=entity_for(f.system, f.code))
            if f.kind == "medication":
                base["reason_code"] = (f.extra or None) and f.extra[:64]
        elif f.kind == "observation":
            base.update(value=(scrub(f.value) or "")[:255] or None, units=(f.units or None) and f.units[:64],
                        effective=sh(f.start))
        elif f.kind == "allergy":
            base.update(start=sh(f.start), stop=sh(f.stop))
        else:
            base.update(performed=sh(f.start))
        rows[f.kind].append(base)
    for kind in rows:  # a stable order, so an unchanged export hashes the same
        rows[kind].sort(key=lambda r: json.dumps(r, sort_keys=True, default=str))
    out.rows = dict(rows)
    return out


def _d(v: Any) -> str:
    return v.isoformat() if v is not None else "unknown date"


def _label(r: dict[str, Any]) -> str:
    desc = r.get("description") or "unnamed"
    return f"{desc} ({r['code_system']} {r['code']})" if r.get("code") else desc


def _grouped(rows: list[dict[str, Any]], start: str, stop: str | None, noun: str) -> list[str]:
    """One line per distinct code: how often, first and last date, and whether it is ongoing."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[_label(r)].append(r)
    lines = []
    for label, rs in sorted(groups.items(), key=lambda kv: min(str(r.get(start)) for r in kv[1])):
        starts = sorted(r[start] for r in rs if r.get(start) is not None)
        when = f"since {_d(starts[0])}" if starts else "date unknown"
        if len(rs) > 1:
            when = f"{len(rs)} {noun}, first {_d(starts[0] if starts else None)}, last {_d(starts[-1] if starts else None)}"
        if stop is not None:
            ongoing = any(r.get(stop) is None for r in rs)
            stops = sorted(r[stop] for r in rs if r.get(stop) is not None)
            when += ", ongoing" if ongoing else (f", ended {_d(stops[-1])}" if stops else "")
        lines.append(f"{label}: {when}.")
    return lines


def record_note(p: DeidPatient) -> ParsedDoc:
    """A readable summary of one de-identified record, sectioned so each part is retrievable and citable."""
    rows = p.rows
    summary = [f"De-identified patient record {p.id}.", f"Sex: {p.sex or 'unknown'}.",
               f"Birth year: {p.birth_year or 'unknown'}."]
    if p.deceased:
        summary.append("Deceased.")
    summary.append("All dates are shifted by a per-patient offset; intervals between them are exact.")
    parts: list[tuple[str | None, str, int | None]] = [("Summary", " ".join(summary), None)]
    parts.append(("Conditions", "\n".join(_grouped(rows.get("condition", []), "start", "stop", "episodes"))
                  or "No conditions recorded.", None))
    parts.append(("Medications", "\n".join(_grouped(rows.get("medication", []), "start", "stop", "courses"))
                  or "No medications recorded.", None))
    parts.append(("Allergies", "\n".join(_grouped(rows.get("allergy", []), "start", "stop", "records"))
                  or "No allergies recorded.", None))
    procs = _grouped(rows.get("procedure", []), "performed", None, "times")
    if procs:
        parts.append(("Procedures", "\n".join(procs), None))
    obs = sorted(rows.get("observation", []), key=lambda r: str(r.get("effective")), reverse=True)
    latest: dict[str, dict[str, Any]] = {}
    for r in obs:
        latest.setdefault(_label(r), r)
    if latest:
        lines = [f"{label}: {r.get('value') or '-'}{(' ' + r['units']) if r.get('units') else ''} "
                 f"on {_d(r.get('effective'))}." for label, r in list(latest.items())[:RECENT_OBSERVATIONS]]
        parts.append(("Recent observations", "\n".join(lines), None))
    enc = sorted((r for r in rows.get("encounter", []) if r.get("start")), key=lambda r: r["start"])
    if enc:
        last = enc[-1]
        parts.append(("Encounters", f"{len(enc)} encounters from {_d(enc[0]['start'])} to {_d(last['start'])}. "
                      f"Most recent: {last.get('encounter_class') or 'visit'}, {_label(last)}, on "
                      f"{_d(last['start'])}.", None))
    sections: list[Section] = build_sections(parts)
    return ParsedDoc(p.id, f"Patient record {p.id}", sections, where=p.id)


class _CodeIndex:
    """(system, code) → entity id from entity_codes, loaded once for the codes an export uses."""

    def __init__(self, store: KnowledgeStore, batch: RecordBatch) -> None:
        codes = {f.code for p in batch.patients.values() for f in p.facts
                 if f.code and f.kind in ("condition", "medication")}
        self._map: dict[tuple[str, str], int] = {}
        code_list = sorted(codes)
        with store.session() as s:
            for i in range(0, len(code_list), 500):
                for system, code, eid in s.execute(
                    select(m.EntityCode.system, m.EntityCode.code, m.EntityCode.entity_id)
                    .where(m.EntityCode.code.in_(code_list[i:i + 500]))
                ):
                    self._map[(canonical_system(system) or system, code)] = eid

    def __call__(self, system: str | None, code: str | None) -> int | None:
        if not system or not code:
            return None
        return self._map.get((canonical_system(system) or system, code))


def _write_rows(store: KnowledgeStore, p: DeidPatient, chash: str, tenant_id: str, source_id: int) -> None:
    """The patient and all their record rows, replaced in one transaction."""
    with store.session() as s:
        row = s.get(m.Patient, p.id)
        if row is None:
            row = m.Patient(id=p.id, tenant_id=tenant_id)
            s.add(row)
        row.source_id, row.birth_year, row.sex, row.deceased = source_id, p.birth_year, p.sex, p.deceased
        row.content_hash = None  # set last: a crash mid-write leaves the patient "changed"
        s.flush()
        for table in _TABLES.values():
            s.execute(delete(table).where(table.patient_id == p.id))
        for kind, rs in p.rows.items():
            table = _TABLES[kind]
            s.add_all(table(tenant_id=tenant_id, patient_id=p.id, **r) for r in rs)
        row.content_hash = chash


def ingest_records(
    store: KnowledgeStore, path: str | Path, *, fmt: str, tenant_id: str, secret: str, embedder: Embedder,
    linker: Linker | None = None, progress: ProgressFn | None = None, source: str | None = None,
) -> IngestReport:
    """De-identify an export and store it under ``tenant_id``; unchanged patients cost one hash each."""
    if fmt not in RECORD_FORMATS:
        raise InvalidInput(f"unknown records format {fmt!r}; choose one of {', '.join(RECORD_FORMATS)}")
    if tenant_id == m.PUBLIC_TENANT:
        raise InvalidInput("patient records cannot go into the public tenant; pass --tenant")
    t0 = time.perf_counter()
    report = IngestReport()
    path = Path(path)
    try:
        batch = read_synthea(path) if fmt == "synthea-csv" else read_fhir(path)
    except BadRecord as exc:
        report.failed.append(exc)
        report.seconds = time.perf_counter() - t0
        return report
    report.failed.extend(batch.failed)
    source = source or batch.name
    deid = Deidentifier(secret, tenant_id)
    store.set_embedding_model(embedder.name, embedder.dim)
    source_id = store.ensure_source(tenant_id, source, kind="records")
    entity_for = _CodeIndex(store, batch)
    with store.session() as s:
        known = dict(s.execute(select(m.Patient.id, m.Patient.content_hash)
                               .where(m.Patient.tenant_id == tenant_id)).all())
    writer = DocumentWriter(store, embedder, report, tenant_id=tenant_id, source=source, linker=linker,
                            progress=progress, account=False)

    def on_written(p: DeidPatient, chash: str, existed: bool) -> Callable[[AddStatus], None]:
        def done(_: AddStatus) -> None:
            _write_rows(store, p, chash, tenant_id, source_id)
            report.count("replaced" if existed else "added")
        return done

    try:
        for sp in batch.patients.values():
            p = deidentify(sp, deid, entity_for)
            chash = p.content_hash()
            if known.get(p.id) == chash:
                report.unchanged += 1
                if progress:
                    progress(1, 0)
                continue
            note = to_document(record_note(p), tenant_id=tenant_id, source=source, doc_type="record_note",
                               lang="en", version="1", effective_date=None, patient_id=p.id)
            writer.submit(note, f"{path} [patient {p.id}]", on_written(p, chash, p.id in known))
    finally:
        writer.close()
    report.seconds = time.perf_counter() - t0
    return report
