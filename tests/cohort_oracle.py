"""The test oracle: OHDSI Circe as ported by duckcdm, run on the original Eunomia DuckDB file (a copy, since Circe writes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
from duckcdm.circe import build_cohort_query
from duckcdm.sqlrender import render, split_sql, translate

from medkb.ingest.deid import Deidentifier
from medkb.ingest.omop import eunomia_file

_RESULTS = {
    "cohort": "cohort_definition_id int, subject_id bigint, cohort_start_date date, cohort_end_date date",
    "cohort_inclusion": "cohort_definition_id int, rule_sequence int, name varchar, description varchar",
    "cohort_inclusion_result": "cohort_definition_id int, inclusion_rule_mask bigint, person_count bigint, mode_id int",
    "cohort_inclusion_stats": "cohort_definition_id int, rule_sequence int, person_count bigint, gain_count bigint, "
                              "person_total bigint, mode_id int",
    "cohort_summary_stats": "cohort_definition_id int, base_count bigint, final_count bigint, mode_id int",
    "cohort_censor_stats": "cohort_definition_id int, lost_count bigint",
}


_DATES = {"condition_occurrence": ("condition_start_date", "condition_end_date"),
          "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
          "procedure_occurrence": ("procedure_date",), "measurement": ("measurement_date",),
          "observation": ("observation_date",), "visit_occurrence": ("visit_start_date", "visit_end_date"),
          "observation_period": ("observation_period_start_date", "observation_period_end_date")}


class CirceOracle:
    """``deid``: first apply to the copy what medkb's de-identification does to ages and intervals (per-person date
    shifts, Safe Harbor birth years), so that figures depending on an age at a date can be compared exactly."""

    def __init__(self, workdir: Path, cdm: Path | None = None, deid: Deidentifier | None = None) -> None:
        self.path = workdir / "oracle.duckdb"
        shutil.copy(cdm or eunomia_file(), self.path)
        self.con = duckdb.connect(str(self.path))
        if deid is not None:
            self._deidentify(deid)
        # Eunomia's empty death table holds its CSV header as a row under placeholder names, which Circe's SQL
        # cannot read: give the copy the real (empty) CDM table instead.
        cols = [r[0] for r in self.con.execute("DESCRIBE death").fetchall()]
        if cols and cols[0].lower() == "column0":
            self.con.execute("DROP TABLE death")
            self.con.execute("CREATE TABLE death (person_id bigint, death_date date, death_datetime timestamp, "
                             "death_type_concept_id bigint, cause_concept_id bigint, cause_source_value varchar, "
                             "cause_source_concept_id bigint)")
        self.con.execute("CREATE SCHEMA IF NOT EXISTS results")
        for t, cols in _RESULTS.items():
            self.con.execute(f"CREATE TABLE results.{t} ({cols})")
        self._next = 1

    def _deidentify(self, deid: Deidentifier) -> None:
        people = self.con.execute("SELECT person_id, birth_datetime FROM person").fetchall()
        self.con.execute("CREATE TABLE shift (person_id BIGINT, days INTEGER, yob INTEGER)")
        self.con.executemany("INSERT INTO shift VALUES (?, ?, ?)",
                             [(p, deid.date_offset(str(p)), Deidentifier.birth_year(b)) for p, b in people])
        self.con.execute("UPDATE person SET year_of_birth = s.yob FROM shift s WHERE s.person_id = person.person_id")
        for table, cols in _DATES.items():
            sets = ", ".join(f"{c} = {c} + s.days" for c in cols)
            self.con.execute(f"UPDATE {table} SET {sets} FROM shift s WHERE s.person_id = {table}.person_id")

    def close(self) -> None:
        self.con.close()

    def run(self, definition: dict[str, Any]) -> dict[str, Any]:
        """Generate with stats; the same report shape medkb's engine returns (raw counts)."""
        cid, self._next = self._next, self._next + 1
        sql = build_cohort_query(json.dumps(definition), cdm_schema="main", vocabulary_schema="main",
                                 result_schema="results", target_table="results.cohort", cohort_id=cid,
                                 generate_stats=True)
        for i, rule in enumerate(definition.get("InclusionRules") or []):
            self.con.execute("INSERT INTO results.cohort_inclusion VALUES (?, ?, ?, '')", [cid, i, rule.get("name")])
        for stmt in split_sql(translate(render(sql), "duckdb")):
            if stmt.strip():
                self.con.execute(stmt)
        persons, entries = self.con.execute("SELECT count(DISTINCT subject_id), count(*) FROM results.cohort "
                                            "WHERE cohort_definition_id = ?", [cid]).fetchone()
        out: dict[str, Any] = {"persons": persons, "entries": entries}
        for mode, key in ((1, "by_person"), (0, "by_event")):
            row = self.con.execute("SELECT base_count, final_count FROM results.cohort_summary_stats "
                                   "WHERE cohort_definition_id = ? AND mode_id = ?", [cid, mode]).fetchone()
            rules = self.con.execute(
                "SELECT rule_sequence, person_count, gain_count, person_total FROM results.cohort_inclusion_stats "
                "WHERE cohort_definition_id = ? AND mode_id = ? ORDER BY rule_sequence", [cid, mode]).fetchall()
            out[key] = {"base_count": row[0] if row else None, "final_count": row[1] if row else None,
                        "rules": [list(r) for r in rules]}
        return out
