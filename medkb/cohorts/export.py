"""An approved study's dataset: the members' de-identified rows as OMOP CDM-shaped CSV or Parquet, with a manifest."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import null, select

from medkb.cohorts import engine
from medkb.cohorts.definition import GENDERS, Definition
from medkb.cohorts.disclosure import count_report
from medkb.errors import ConfigError, InvalidInput
from medkb.kb import models as m
from medkb.kb.store import KnowledgeStore

_GENDER_IDS = {v: k for k, v in GENDERS.items()}
FORMATS = ("csv", "parquet")


def _tables() -> dict[str, tuple[list[str], Any]]:
    """OMOP table → (columns, SELECT over medkb's rows; its first column is the pseudonymous person id).
    Row ids stand in for the *_occurrence_id columns Circe orders events by; they identify nothing outside."""
    p, op, c, d = m.Patient.__table__, m.ObservationPeriod.__table__, m.Condition.__table__, m.Medication.__table__
    pr, o, v = m.Procedure.__table__, m.Observation.__table__, m.Encounter.__table__
    nul = null()
    return {
        "person": (["person_id", "gender_concept_id", "year_of_birth"], select(p.c.id, p.c.sex, p.c.birth_year)),
        "observation_period": (["person_id", "observation_period_id", "observation_period_start_date",
                                "observation_period_end_date"], select(op.c.patient_id, op.c.id, op.c.start, op.c.stop)),
        "condition_occurrence": (["person_id", "condition_occurrence_id", "condition_concept_id", "condition_start_date",
                                  "condition_end_date", "visit_occurrence_id", "condition_source_value"],
                                 select(c.c.patient_id, c.c.id, c.c.concept_id, c.c.start, c.c.stop, nul, c.c.code)),
        "drug_exposure": (["person_id", "drug_exposure_id", "drug_concept_id", "drug_exposure_start_date",
                           "drug_exposure_end_date", "days_supply", "quantity", "refills", "visit_occurrence_id",
                           "drug_source_value"],
                          select(d.c.patient_id, d.c.id, d.c.concept_id, d.c.start, d.c.stop, nul, nul, nul, nul,
                                 d.c.code)),
        "procedure_occurrence": (["person_id", "procedure_occurrence_id", "procedure_concept_id", "procedure_date",
                                  "visit_occurrence_id", "quantity", "procedure_source_value"],
                                 select(pr.c.patient_id, pr.c.id, pr.c.concept_id, pr.c.performed, nul, nul, pr.c.code)),
        "measurement": (["person_id", "measurement_id", "measurement_concept_id", "measurement_date",
                         "visit_occurrence_id", "value_as_number", "range_high", "range_low", "value_source_value",
                         "measurement_source_value"],
                        select(o.c.patient_id, o.c.id, o.c.concept_id, o.c.effective, nul, nul, nul, nul, o.c.value,
                               o.c.code)
                        .where(o.c.domain == "measurement")),
        "observation": (["person_id", "observation_id", "observation_concept_id", "observation_date",
                         "visit_occurrence_id", "value_as_number", "value_as_string", "observation_source_value"],
                        select(o.c.patient_id, o.c.id, o.c.concept_id, o.c.effective, nul, nul, o.c.value, o.c.code)
                        .where(o.c.domain == "observation")),
        "visit_occurrence": (["person_id", "visit_occurrence_id", "visit_concept_id", "visit_start_date",
                              "visit_end_date"], select(v.c.patient_id, v.c.id, v.c.concept_id, v.c.start, v.c.stop)),
        "death": (["person_id", "death_date", "cause_concept_id"],
                  select(p.c.id, p.c.death_date, nul).where(p.c.death_date.is_not(None))),
    }


def _vocabulary(store: KnowledgeStore) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """concept, concept_ancestor and concept_relationship rebuilt from the graph's OMOP concepts, so the dataset
    is counted by OMOP tools (Circe) with the same concept sets."""
    from medkb.cohorts.concepts import DESCENDANT_RELATIONS, MAPPED_RELATIONS, OMOP

    ec, e, ed = m.EntityCode.__table__, m.Entity.__table__, m.Edge.__table__
    with store.session() as s:
        ids: dict[int, int] = {}
        concepts = []
        for eid, code, name, typ in s.execute(select(ec.c.entity_id, ec.c.code, e.c.name, e.c.type)
                                              .join(e, e.c.id == ec.c.entity_id).where(ec.c.system == OMOP)):
            ids.setdefault(eid, int(code))
            concepts.append((int(code), name, typ, None))
        narrower: dict[int, set[int]] = {}
        maps = []
        for src, dst, rel in s.execute(select(ed.c.source_entity_id, ed.c.target_entity_id, ed.c.relation)
                                       .where(ed.c.relation.in_(DESCENDANT_RELATIONS + MAPPED_RELATIONS))):
            if src in ids and dst in ids:
                if rel in MAPPED_RELATIONS:
                    maps.append((ids[src], ids[dst], "Maps to", None))
                else:
                    narrower.setdefault(dst, set()).add(src)
    ancestors = []
    for eid, cid in ids.items():
        seen, stack = {eid}, [eid]
        while stack:
            for child in narrower.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        ancestors += [(cid, ids[x]) for x in seen]
    return {"concept": (["concept_id", "concept_name", "domain_id", "invalid_reason"], concepts),
            "concept_ancestor": (["ancestor_concept_id", "descendant_concept_id"], ancestors),
            "concept_relationship": (["concept_id_1", "concept_id_2", "relationship_id", "invalid_reason"], maps)}


def _write_csv(path: Path, cols: list[str], rows: Iterable[Any]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if x is None else x for x in r])
            n += 1
    return n


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(store: KnowledgeStore, d: Definition, tenant: str, out: Path, *, fmt: str = "csv",
           threshold: int = 11) -> dict[str, Any]:
    """Write the dataset into the empty folder ``out``; returns the manifest (also written as manifest.json)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out}: the export folder must be new or empty (nothing is overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    c = engine.counts(store, d, tenant)
    eras = engine.members(store, d, c.run_id)
    ids = sorted({e[0] for e in eras})
    files: dict[str, dict[str, Any]] = {}
    # OMOP person ids are integers: numbered per export in pseudonym order (which follows no source order);
    # person_source_value keeps medkb's pseudonym so an admin can trace a row back inside medkb.
    number = {pid: i for i, pid in enumerate(ids, 1)}
    tables: dict[str, tuple[list[str], list[Any]]] = {
        "cohort": (["subject_id", "cohort_start_date", "cohort_end_date"], [(number[p], a, b) for p, a, b in eras])}
    with store.session() as s:
        for name, (cols, q) in _tables().items():
            rows = [(number[r[0]], *(_GENDER_IDS.get(x, x) if name == "person" and i == 0 else x
                                     for i, x in enumerate(r[1:])))
                    for k in range(0, len(ids), 500)
                    for r in s.execute(q.where(q.selected_columns[0].in_(ids[k:k + 500])))]
            if name == "person":
                cols, rows = [*cols, "person_source_value"], [(*r, ids[r[0] - 1]) for r in rows]
            tables[name] = (cols, rows)
    tables.update(_vocabulary(store))
    for name, (cols, rows) in tables.items():
        path = out / f"{name}.csv"
        n = _write_csv(path, cols, rows)
        if fmt == "parquet":
            path = _to_parquet(path)
        files[path.name] = {"rows": n, "sha256": _sha256(path)}
    manifest = {"definition_hash": d.hash, "tenant": tenant, "format": fmt,
                "released": count_report(c, threshold), "suppression": {"min_cell_count": threshold,
                                                                       "rule": "primary + complementary"},
                "knowledge_base_generation": store.generation(), "files": files,
                "identifiers": "pseudonymous person ids; dates shifted per person (intervals exact)"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return manifest


def _to_parquet(path: Path) -> Path:
    try:
        import duckdb
    except ModuleNotFoundError:
        raise ConfigError("Parquet export needs duckdb: pip install 'medkb[omop]'") from None
    target = path.with_suffix(".parquet")
    con = duckdb.connect(":memory:")
    try:
        src, dst = str(path).replace("'", "''"), str(target).replace("'", "''")
        con.execute(f"COPY (SELECT * FROM read_csv_auto('{src}', all_varchar=true)) TO '{dst}' (FORMAT parquet)")
    finally:
        con.close()
    path.unlink()
    return target
