"""Patient-record ingestion: de-identify, write record tables, and a readable, embedded record note."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from medkb.errors import BadRecord, InvalidInput
from medkb.ingest.chunker import Budget, Section
from medkb.ingest.deid import Deidentifier
from medkb.ingest.documents import ParsedDoc, build_sections
from medkb.ingest.fhir import read_fhir
from medkb.ingest.pipeline import DocumentWriter, IngestReport, Linker, ProgressFn, to_document
from medkb.ingest.omop import VOCABULARY_SOURCE, read_omop
from medkb.ingest.ontologies.writer import OntologyWriter
from medkb.ingest.phi import scrub, scrubber
from medkb.ingest.record_sources import RecordBatch, SourcePatient, read_synthea
from medkb.kb import models as m
from medkb.kb.codes import canonical_system
from medkb.kb.embeddings import Embedder
from medkb.kb.records import AddStatus
from medkb.kb.store import KnowledgeStore

RECORD_FORMATS = ("synthea-csv", "fhir", "omop")
_READERS = {"synthea-csv": read_synthea, "fhir": read_fhir, "omop": read_omop}
RECENT_OBSERVATIONS = 30
_TABLES = {"encounter": m.Encounter, "condition": m.Condition, "medication": m.Medication,
           "observation": m.Observation, "allergy": m.Allergy, "procedure": m.Procedure,
           "period": m.ObservationPeriod}
# OMOP visit concepts for encounter classes of Synthea CSV and FHIR (the mapping OHDSI's ETL-Synthea uses).
VISIT_CONCEPTS = {"inpatient": 9201, "imp": 9201, "acute": 9201, "ambulatory": 9202, "wellness": 9202,
                  "outpatient": 9202, "amb": 9202, "emergency": 9203, "urgentcare": 9203, "emer": 9203}


@dataclass
class DeidPatient:
    """A patient after de-identification: only what may be stored."""

    id: str
    birth_year: int | None
    sex: str | None
    deceased: bool
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    death_date: dt.date | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)  # de-identified: shifted date, scrubbed text

    def content_hash(self) -> str:
        payload = json.dumps([self.birth_year, self.sex, self.deceased, self.death_date, self.rows, self.notes],
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


@functools.lru_cache(maxsize=65536)
def _scrub_cached(text: str | None) -> str | None:
    """Descriptions repeat across rows (one per code); after the patient's own values are out (which leaves
    them unchanged but for a rare exception), scrub each distinct one once."""
    return scrub(text)


def deidentify(p: SourcePatient, deid: Deidentifier, entity_for: Callable[[str | None, str | None], int | None]
               ) -> DeidPatient:
    """Pseudonym, birth year, shifted dates, free text without PHI (medkb.ingest.phi: this patient's known
    identifiers, then patterns, then other people's names); names/addresses/ids never leave the source."""
    out = DeidPatient(deid.patient_id(p.source_id), Deidentifier.birth_year(p.birth), p.sex, p.deceased)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    clean = scrubber()

    def scrub_text(text: str | None) -> str | None:
        return clean(text, p.known)

    def scrub_description(text: str | None) -> str | None:
        return _scrub_cached(None if text is None else clean.known(text, p.known))

    offset = dt.timedelta(days=deid.date_offset(p.source_id))  # one keyed hash per patient, not per date

    def sh(d: dt.date | None) -> dt.date | None:
        return None if d is None else d + offset

    out.death_date = sh(p.death)
    for f in p.facts:
        if f.kind == "period":
            rows["period"].append({"start": sh(f.start), "stop": sh(f.stop or f.start), "derived": False})
            continue
        base: dict[str, Any] = {"code_system": f.system, "code": (f.code or None) and f.code[:64],
                                "description": scrub_description(f.description), "concept_id": f.concept_id}
        if f.kind == "encounter":
            base.update(encounter_class=scrub_text(f.extra), start=sh(f.start), stop=sh(f.stop))
            if base["concept_id"] is None:
                base["concept_id"] = VISIT_CONCEPTS.get((f.extra or "").strip().lower())
        elif f.kind in ("condition", "medication"):
            base.update(start=sh(f.start), stop=sh(f.stop), entity_id=entity_for(f.system, f.code))
            if f.kind == "medication":
                base["reason_code"] = (f.extra or None) and f.extra[:64]
        elif f.kind == "observation":
            base.update(value=(scrub_text(f.value) or "")[:255] or None, units=(f.units or None) and f.units[:64],
                        effective=sh(f.start), domain=f.domain or "measurement")
        elif f.kind == "allergy":
            base.update(start=sh(f.start), stop=sh(f.stop))
        else:
            base.update(performed=sh(f.start))
        rows[f.kind].append(base)
    if "period" not in rows:
        derived = derived_period(p)
        if derived:
            rows["period"].append({"start": sh(derived[0]), "stop": sh(derived[1]), "derived": True})
    for kind in rows:  # a stable order, so an unchanged export hashes the same
        # every row of a kind has the same keys in the same order, so its values' text orders it
        rows[kind].sort(key=lambda r: tuple("" if v is None else str(v) for v in r.values()))
    out.rows = dict(rows)
    out.notes = sorted(({"date": sh(n.date), "title": scrub_text(n.title), "text": scrub_text(n.text)}
                        for n in p.notes), key=lambda n: json.dumps(n, sort_keys=True, default=str))
    return out


def derived_period(p: SourcePatient) -> tuple[dt.date, dt.date] | None:
    """For exports without observation periods (Synthea, FHIR): one period from the patient's first recorded
    date to the last start or stop date of any of their facts (ETL-Synthea spans encounters the same way)."""
    dates = [d for f in p.facts for d in (f.start, f.stop) if d is not None]
    return (min(dates), max(dates)) if dates else None


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
    for n in sorted(p.notes, key=lambda n: str(n["date"])):
        parts.append((f"Clinical note, {_d(n['date'])}" + (f": {n['title']}" if n.get("title") else ""),
                      n["text"], None))
    sections: list[Section] = build_sections(parts)
    return ParsedDoc(p.id, f"Patient record {p.id}", sections, where=p.id)


class _CodeIndex:
    """(system, code) → entity id from entity_codes, loaded for the codes of each group of patients as it comes."""

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store
        self._map: dict[tuple[str, str], int] = {}
        self._seen: set[str] = set()

    def load(self, patients: list[SourcePatient]) -> None:
        codes = {f.code for p in patients for f in p.facts
                 if f.code and f.kind in ("condition", "medication")} - self._seen
        self._seen |= codes
        code_list = sorted(codes)
        with self.store.session() as s:
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


def _known_hashes(store: KnowledgeStore, tenant_id: str, ids: list[str]) -> dict[str, str]:
    """Content hashes of the patients of ``ids`` already stored in the tenant (one group at a time)."""
    out: dict[str, str] = {}
    with store.session() as s:
        for i in range(0, len(ids), 500):
            out.update(s.execute(select(m.Patient.id, m.Patient.content_hash).where(
                m.Patient.tenant_id == tenant_id, m.Patient.id.in_(ids[i:i + 500]))).all())
    return out


# Patients per transaction on a rows-only (no notes) load: each commit costs a sync of the database file.
ROWS_BATCH = 200


def _write_rows(store: KnowledgeStore, batch: list[tuple[DeidPatient, str, bool]], tenant_id: str,
                source_id: int) -> None:
    """Patients and all their record rows, replaced in one transaction: a patient is stored whole or not at all
    (its content hash is written with its rows, so an interrupted load resumes where it stopped)."""
    with store.session() as s:
        old = [p.id for p, _, existed in batch if existed]
        for table in _TABLES.values():
            if old:
                s.execute(delete(table).where(table.patient_id.in_(old)))
        if old:
            s.execute(delete(m.Patient).where(m.Patient.id.in_(old)))
        s.execute(insert(m.Patient.__table__), [
            {"id": p.id, "tenant_id": tenant_id, "source_id": source_id, "birth_year": p.birth_year, "sex": p.sex,
             "deceased": p.deceased, "death_date": p.death_date, "content_hash": chash} for p, chash, _ in batch])
        by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for p, _, _ in batch:
            for kind, rs in p.rows.items():
                by_kind[kind].extend({"tenant_id": tenant_id, "patient_id": p.id, **r} for r in rs)
        for kind, rs in by_kind.items():
            if rs:  # Core executemany: the ORM's unit of work costs several times more per row
                s.execute(insert(_TABLES[kind].__table__), rs)


def ingest_records(
    store: KnowledgeStore, path: str | Path, *, fmt: str, tenant_id: str, secret: str, embedder: Embedder,
    linker: Linker | None = None, progress: ProgressFn | None = None, source: str | None = None,
    notes: bool = True,
) -> IngestReport:
    """De-identify an export and store it under ``tenant_id``; unchanged patients cost one hash each.

    ``notes=False`` stores the record rows only, without the embedded record note (a research-only load)."""
    if fmt not in RECORD_FORMATS:
        raise InvalidInput(f"unknown records format {fmt!r}; choose one of {', '.join(RECORD_FORMATS)}")
    if tenant_id == m.PUBLIC_TENANT:
        raise InvalidInput("patient records cannot go into the public tenant; pass --tenant")
    t0 = time.perf_counter()
    report = IngestReport()
    path = Path(path)
    try:
        batch = _READERS[fmt](path)
    except BadRecord as exc:
        report.failed.append(exc)
        report.seconds = time.perf_counter() - t0
        return report
    if batch.vocabulary is not None:  # first, so the rows link to its concepts by code
        OntologyWriter(store, VOCABULARY_SOURCE).write(batch.vocabulary)
    source = source or batch.name
    deid = Deidentifier(secret, tenant_id)
    store.set_embedding_model(embedder.name, embedder.dim)
    source_id = store.ensure_source(tenant_id, source, kind="records")
    entity_for = _CodeIndex(store)
    writer = DocumentWriter(store, embedder, report, tenant_id=tenant_id, source=source, linker=linker,
                            progress=progress, account=False)
    budget = Budget.for_embedder(embedder) if notes else None  # rows-only loads chunk nothing

    def on_written(p: DeidPatient, chash: str, existed: bool) -> Callable[[AddStatus], None]:
        def done(_: AddStatus) -> None:
            _write_rows(store, [(p, chash, existed)], tenant_id, source_id)
            report.count("replaced" if existed else "added")
        return done

    pending: list[tuple[DeidPatient, str, bool]] = []

    def flush() -> None:
        _write_rows(store, pending, tenant_id, source_id)
        for _, _, existed in pending:
            report.count("replaced" if existed else "added")
        if progress:
            progress(len(pending), 0)
        pending.clear()

    try:
        for group in batch.patient_groups():  # the export is never whole in memory: OMOP streams its groups
            entity_for.load(group)
            known = _known_hashes(store, tenant_id, [deid.patient_id(sp.source_id) for sp in group])
            for sp in group:
                p = deidentify(sp, deid, entity_for)
                chash = p.content_hash()
                if known.get(p.id) == chash:
                    report.unchanged += 1
                    if progress:
                        progress(1, 0)
                    continue
                if not notes:
                    pending.append((p, chash, p.id in known))
                    if len(pending) >= ROWS_BATCH:
                        flush()
                    continue
                assert budget is not None
                note = to_document(record_note(p), tenant_id=tenant_id, source=source, doc_type="record_note",
                                   lang="en", version="1", effective_date=None, patient_id=p.id, budget=budget)
                writer.submit(note, f"{path} [patient {p.id}]", on_written(p, chash, p.id in known))
        if pending:
            flush()
    finally:
        writer.close()
    report.failed.extend(batch.failed)  # complete once every group has been read
    report.skipped.update(batch.skipped)
    from medkb.kb.graph.relink import relink_records

    relink_records(store, tenant_id)  # by code, then by description: what the code index alone cannot
    report.seconds = time.perf_counter() - t0
    return report
