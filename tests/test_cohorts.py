"""Cohorts on the ingested Eunomia records agree with OHDSI Circe (duckcdm) on the original file; releases are suppressed."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.cohorts import engine
from medkb.cohorts.definition import parse_definition
from medkb.cohorts.disclosure import Suppressor, count_report, feasibility_report, min_cell_count
from medkb.cohorts.service import count as released_count
from medkb.errors import InvalidInput
from tests.cohort_oracle import CirceOracle
from medkb.ingest.deid import Deidentifier
from tests.omop_support import SECRET, TENANT

DEFS = {p.stem: json.loads(p.read_text()) for p in sorted((Path(__file__).parent / "cohorts").glob("*.json"))}
# De-identification: Safe Harbor floors birth years more than 90 years back and dates shift per patient, so
# an age at the index date can differ from the source's (README: Cohorts). These definitions use an age rule.
AGE_RULES = {"celecoxib_new_users_attrition": 2, "gi_bleed_after_nsaid_no_prior_bleed": 2}
ORPHAN_PERIODS = 2649  # observation_period rows of persons that do not exist: Circe counts them as entry events


def _raw(c: engine.CohortCounts) -> dict[str, Any]:
    def att(a: engine.Attrition) -> dict[str, Any]:
        return {"base_count": a.base_count, "final_count": a.final_count,
                "rules": [[r.sequence, r.person_count, r.gain_count, r.person_total] for r in a.rules]}
    return {"persons": c.persons, "entries": c.entries, "by_person": att(c.by_person), "by_event": att(c.by_event)}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    o = CirceOracle(tmp_path_factory.mktemp("circe"))
    yield o
    o.close()


@pytest.fixture(scope="module")
def deid_oracle(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    o = CirceOracle(tmp_path_factory.mktemp("circe-deid"), deid=Deidentifier(SECRET, TENANT))
    yield o
    o.close()


def test_the_test_set_uses_every_supported_element() -> None:
    text = json.dumps(list(DEFS.values()))
    assert len(DEFS) >= 15 and {"eunomia_celecoxib", "eunomia_diclofenac", "eunomia_gi_bleed", "eunomia_nsaids"} <= set(DEFS)
    for element in ("includeDescendants\": true", "isExcluded\": true", "includeMapped\": true", "\"First\": true",
                    "ConditionOccurrence", "DrugExposure", "ProcedureOccurrence", "Measurement", "\"Observation\"",
                    "VisitOccurrence", "Death", "ObservationPeriod", "PriorDays\": 365", "\"Type\": \"ANY\"",
                    "\"Type\": \"AT_LEAST\"", "\"Type\": \"AT_MOST\"", "\"Groups\": [{", "\"Type\": 0", "\"Type\": 1",
                    "\"Type\": 2", "\"Age\"", "\"Gender\"", "AdditionalCriteria", "\"QualifiedLimit\": {\"Type\": \"Last\"",
                    "\"ExpressionLimit\": {\"Type\": \"First\"", "\"PrimaryCriteriaLimit\": {\"Type\": \"Last\"",
                    "DateOffset", "\"DateField\": \"EndDate\"", "\"EraPad\": 90", "UseIndexEnd", "UseEventEnd",
                    "IgnoreObservationPeriod"):
        assert element in text, element


def test_every_definition_agrees_with_circe_on_the_original_eunomia(eunomia_kb, oracle) -> None:  # type: ignore[no-untyped-def]
    store = eunomia_kb[0]
    exact = 0
    for name, raw in DEFS.items():
        want = oracle.run(raw)
        got = _raw(engine.counts(store, parse_definition(raw), TENANT))
        if not raw["InclusionRules"]:  # Circe writes no attrition without rules; medkb reports base = final
            assert want["by_person"]["rules"] == [] and got["by_event"]["rules"] == []
            want["by_person"], want["by_event"] = got["by_person"], got["by_event"]
        if name in AGE_RULES:
            i = AGE_RULES[name]
            for mode in ("by_person", "by_event"):
                assert [r for r in got[mode]["rules"] if r[0] != i] == [r for r in want[mode]["rules"] if r[0] != i]
                assert got[mode]["base_count"] == want[mode]["base_count"]
            continue
        if name == "observation_period_female_bronchitis":
            for mode in ("by_person", "by_event"):
                assert want[mode]["base_count"] - got[mode]["base_count"] == ORPHAN_PERIODS
                assert [r[:3] for r in got[mode]["rules"]] == [r[:3] for r in want[mode]["rules"]]
                assert got[mode]["final_count"] == want[mode]["final_count"]
            assert (got["persons"], got["entries"]) == (want["persons"], want["entries"])
            continue
        assert got == want, name
        exact += 1
    assert exact == len(DEFS) - 3


def test_age_rules_agree_exactly_once_circe_sees_what_deidentification_does(eunomia_kb, deid_oracle) -> None:  # type: ignore[no-untyped-def]
    """Circe on a copy with medkb's per-person shifts and Safe Harbor birth years: the age rules agree to the person."""
    store = eunomia_kb[0]
    for name in AGE_RULES:
        want = deid_oracle.run(DEFS[name])
        assert _raw(engine.counts(store, parse_definition(DEFS[name]), TENANT)) == want, name


def test_gi_bleed_is_479_persons(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    c = engine.counts(eunomia_kb[0], parse_definition(DEFS["eunomia_gi_bleed"]), TENANT)
    assert (c.persons, c.entries) == (479, 479)


def test_a_rule_switched_off_is_recounted_from_stored_masks(eunomia_kb, oracle) -> None:  # type: ignore[no-untyped-def]
    store = eunomia_kb[0]
    raw = DEFS["any_of_nested_groups"]
    d = parse_definition(raw)
    run = engine.generate(store, d, TENANT)
    with store.session() as s:
        from medkb.kb import models as m
        entries_before = s.query(m.CohortEntry).filter_by(run_id=run).count()
    off = engine.counts(store, d, TENANT, disabled_rules=[1], run_id=run)
    without = copy.deepcopy(raw)
    del without["InclusionRules"][1]
    want = oracle.run(without)
    got = _raw(off)
    for mode in ("by_person", "by_event"):  # the remaining rules renumber 0, 1 as in the edited definition
        got[mode]["rules"] = [[i, *r[1:]] for i, r in enumerate(got[mode]["rules"])]
    assert got == want
    assert engine.latest_run(store, d, TENANT) == run  # nothing regenerated
    with store.session() as s:
        assert s.query(m.CohortEntry).filter_by(run_id=run).count() == entries_before
    failed = engine.failed_rules(store, d, run)
    assert failed and all(set(v) <= {0, 1, 2} and v for v in failed.values())
    with pytest.raises(InvalidInput, match="no inclusion rule 7"):
        engine.counts(store, d, TENANT, disabled_rules=[7], run_id=run)


def _released_numbers(report: Any) -> list[int]:
    out: list[int] = []
    if isinstance(report, dict):
        for k, v in report.items():
            if k not in ("min_cell_count", "sequence"):
                out += _released_numbers(v)
    elif isinstance(report, list):
        for v in report:
            out += _released_numbers(v)
    elif isinstance(report, int) and not isinstance(report, bool):
        out.append(report)
    return out


def _attack(report: dict[str, Any], t: int) -> list[str]:
    """Everything an analyst could try with released numbers; returns the ways a suppressed value was found."""
    found: list[str] = []
    nums = _released_numbers(report)
    found += [f"small cell {n}" for n in nums if 0 < n < t]
    found += [f"difference {a}-{b}" for a in nums for b in nums if 0 < a - b < t]
    for mode in ("by_person", "by_event"):
        a = report["attrition"][mode]
        for r in a["rules"]:
            known = [v for v in (r["person_total"], a["base_count"]) if isinstance(v, int)]
            if known and any(isinstance(v, str) for v in (r["person_total"], a["base_count"])):
                found.append(f"{mode} total equals base")
            if len(a["rules"]) == 1:  # base = meets + fails; with one rule, fails = gain and final = meets
                vals = [a["base_count"], r["person_count"], r["gain_count"]]
                if sum(isinstance(v, str) for v in vals) == 1:
                    found.append(f"{mode} base = meets + gain")
                if isinstance(a["final_count"], str) != isinstance(r["person_count"], str):
                    found.append(f"{mode} final = meets")
    return found


def test_no_suppressed_cell_can_be_recovered_from_any_release(eunomia_kb) -> None:  # type: ignore[no-untyped-def]
    store = eunomia_kb[0]
    suppressed_somewhere = 0
    for name, raw in DEFS.items():
        report = released_count(store, raw, TENANT, reuse=True)
        assert set(report) == {"cohort", "attrition", "min_cell_count", "suppressed"} and report["min_cell_count"] == 11
        assert _attack(report, 11) == [], name
        for path in report["suppressed"]:
            value = eval("report" + "".join(f"[{p}]" if p.isdigit() else f"[{p!r}]"  # noqa: S307 - test-built path
                                            for p in re.findall(r"\w+", path)))
            assert value == "<11"
        suppressed_somewhere += len(report["suppressed"])
    assert suppressed_somewhere > 0  # the set does exercise suppression (e.g. the empty death cohort's neighbours)


def test_suppression_rules_on_crafted_figures() -> None:
    s = Suppressor(11)
    for path, v in {"a": 479, "b": 475, "c": 0, "d": 7, "e": 300}.items():
        s.add(path, v)
    assert s.run() == {"b", "d"}  # 7 is small; 479 - 475 = 4 would give a small difference
    feas = feasibility_report({"h1": _counts(500, 500), "h2": _counts(4, 4), "h3": _counts(130, 130)}, 11)
    assert feas["tenants"]["h2"]["persons"] == "<11"
    hidden = [t for t, v in feas["tenants"].items() if v["persons"] == "<11"]
    # h2 alone would be the total minus the other hospitals: a second one (the smallest) is withheld with it
    assert hidden == ["h2", "h3"] and feas["total"]["persons"] == 634
    assert min_cell_count("ohdsi") == 5 and min_cell_count(None) == 11 and min_cell_count("20") == 20
    with pytest.raises(InvalidInput):
        min_cell_count("zero")
    five = count_report(_counts(7, 7), 5)
    assert five["cohort"]["persons"] == 7 and five["min_cell_count"] == 5


def _counts(persons: int, entries: int) -> engine.CohortCounts:
    a = engine.Attrition(persons, persons)
    return engine.CohortCounts(persons, entries, a, a, 0)


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d.__setitem__("CensoringCriteria", [{"Death": {}}]), "$.CensoringCriteria"),
    (lambda d: d["PrimaryCriteria"]["CriteriaList"][0]["ConditionOccurrence"].__setitem__(
        "ConditionType", [{"CONCEPT_ID": 1}]), "PrimaryCriteria.CriteriaList[0].ConditionOccurrence.ConditionType"),
    (lambda d: d["PrimaryCriteria"]["CriteriaList"].__setitem__(0, {"DeviceExposure": {}}),
     "PrimaryCriteria.CriteriaList[0].DeviceExposure"),
    (lambda d: d["InclusionRules"][0]["expression"]["CriteriaList"][0].__setitem__("EndWindow", {"Start": {}}),
     "InclusionRules[0].expression.CriteriaList[0].EndWindow"),
])
def test_elements_outside_the_subset_are_refused_by_path(mutate, path: str) -> None:  # type: ignore[no-untyped-def]
    raw = copy.deepcopy(DEFS["sinusitis_throat_culture_30d"])
    mutate(raw)
    with pytest.raises(InvalidInput) as err:
        parse_definition(raw)
    assert err.value.message.startswith(path + ":")


def test_cli_count_json_and_bad_definition(eunomia_kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, db, _ = eunomia_kb
    defn = Path(__file__).parent / "cohorts" / "eunomia_gi_bleed.json"
    out = CliRunner().invoke(app, ["--db", f"sqlite:///{db}", "cohort", "count", str(defn), "--tenant", TENANT,
                                   "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["cohort"] == {"persons": 479, "entries": 479} and report["suppressed"] == []
    bad = tmp_path / "bad.json"
    bad.write_text('{"ConceptSets": [], "PrimaryCriteria": {"CriteriaList": [{"Specimen": {}}]}}')
    proc = subprocess.run([sys.executable, "-m", "medkb.cli.main", "--db", f"sqlite:///{db}", "cohort", "count",
                           str(bad), "--tenant", TENANT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "PrimaryCriteria.CriteriaList[0].Specimen: criteria type" in proc.stderr


def test_mariadb_gives_the_same_counts_and_attrition_as_sqlite(eunomia_kb, eunomia_mariadb) -> None:  # type: ignore[no-untyped-def]
    """The same SQLAlchemy Core statements on the real MariaDB server: every figure of every definition equal."""
    maria, report = eunomia_mariadb
    assert report.added == 2694 and report.failed == []
    assert maria.count("conditions") == eunomia_kb[0].count("conditions")
    for name, raw in DEFS.items():
        d = parse_definition(raw)
        assert _raw(engine.counts(maria, d, TENANT)) == _raw(engine.counts(eunomia_kb[0], d, TENANT)), name


MS = {"ConceptSets": [
    {"id": 0, "name": "multiple sclerosis", "expression": {"items": [
        {"concept": {"VOCABULARY_ID": "SNOMED", "CONCEPT_CODE": "24700007"}, "includeDescendants": True}]}},
    {"id": 1, "name": "Betaferon (RxNorm 152605)", "expression": {"items": [{"concept": {"VOCABULARY_ID": "RxNorm", "CONCEPT_CODE": "152605"}}]}}],
    "PrimaryCriteria": {"CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0, "First": True}}],
                        "ObservationWindow": {"PriorDays": 0, "PostDays": 0}, "PrimaryCriteriaLimit": {"Type": "First"}},
    "InclusionRules": [{"name": "that drug after the diagnosis", "expression": {"Type": "ALL", "CriteriaList": [
        {"Criteria": {"DrugExposure": {"CodesetId": 1}}, "StartWindow": {"Start": {"Days": 0, "Coeff": 1},
                                                                          "End": {"Coeff": 1}},
         "Occurrence": {"Type": 2, "Count": 1}}]}}]}


def test_definitions_run_on_synthea_codes_and_match_direct_sql(tmp_path: Path) -> None:
    """Synthea rows carry SNOMED / RxNorm codes and no OMOP ids: concepts resolve by vocabulary + code."""
    from sqlalchemy import text

    from medkb.ingest.records import ingest_records
    from medkb.kb.factory import init_store, open_store
    from medkb.settings import DatabaseSettings
    from tests.conftest import shared_data
    from tests.omop_support import NoEmbedder

    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'syn.db'}"))
    init_store(store)
    rep = ingest_records(store, shared_data("synthea"), fmt="synthea-csv", tenant_id="syn", secret=SECRET,
                         embedder=NoEmbedder(), notes=False)  # type: ignore[arg-type]
    assert rep.added == 413 and store.count("observation_periods") == 413  # derived, one per patient
    for name, raw in DEFS.items():
        engine.counts(store, parse_definition(raw), "syn")  # every definition runs; none of these codes occur
    c = engine.counts(store, parse_definition(MS), "syn")
    with store.engine.connect() as conn:
        first = "SELECT patient_id, min(start) AS start FROM conditions WHERE tenant_id = 'syn' AND code_system = " \
                "'SNOMEDCT' AND code = '24700007' GROUP BY patient_id"
        persons = conn.execute(text(f"SELECT count(*) FROM ({first}) f")).scalar()
        treated = conn.execute(text(
            f"SELECT count(*) FROM ({first}) f JOIN observation_periods op ON op.patient_id = f.patient_id "
            "WHERE EXISTS (SELECT 1 FROM medications d WHERE d.patient_id = f.patient_id AND d.code = '152605' "
            "AND d.start >= f.start AND d.start <= op.stop)")).scalar()
    assert persons == 413 and c.by_person.base_count == persons
    assert c.persons == c.by_person.final_count == treated == 102
    store.close()


def test_quick_form_resolves_words_through_the_linker_and_counts_like_circe(eunomia_kb, oracle) -> None:  # type: ignore[no-untyped-def]
    from medkb.cohorts.quick import quick_definition

    store = eunomia_kb[0]
    raw, resolved = quick_definition(store, condition="GI bleeding", drug="celecoxib", after=365)
    assert [(r.name, r.codes["OMOP"]) for r in resolved] == [("Gastrointestinal hemorrhage", ["192671"]),
                                                             ("celecoxib", ["1118084"])]
    got = _raw(engine.counts(store, parse_definition(raw), TENANT))
    assert got == oracle.run(raw) and 0 < got["persons"] < 479
    with pytest.raises(InvalidInput, match="no concept"):
        quick_definition(store, condition="zzzz qqqq")


@pytest.mark.parametrize("name", ["sinusitis_throat_culture_30d", "era_pad_end_offset_enddate"])
def test_export_read_back_into_duckdb_is_counted_by_circe_as_medkb_counts(eunomia_kb, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    import duckdb

    from medkb.cohorts.export import export

    store = eunomia_kb[0]
    d = parse_definition(DEFS[name])
    manifest = export(store, d, TENANT, tmp_path / "out")
    c = engine.counts(store, d, TENANT)
    cdm = tmp_path / "export.duckdb"
    con = duckdb.connect(str(cdm))
    for f in sorted((tmp_path / "out").glob("*.csv")):
        con.execute(f"CREATE TABLE {f.stem} AS SELECT * FROM read_csv_auto('{f}', header=true)")
    con.close()
    (tmp_path / "o").mkdir()
    oracle = CirceOracle(tmp_path / "o", cdm=cdm)
    want = oracle.run(DEFS[name])
    oracle.close()
    assert (want["persons"], want["entries"]) == (c.persons, c.entries)
    assert manifest["released"]["cohort"]["persons"] in (c.persons, "<11")  # the manifest releases only suppressed
    assert manifest["files"]["cohort.csv"]["rows"] == c.entries


def test_cli_members_and_export_are_audited(eunomia_kb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from medkb.api import audit

    store, db, _ = eunomia_kb
    defn = str(Path(__file__).parent / "cohorts" / "eunomia_gi_bleed.json")
    out = CliRunner().invoke(app, ["--db", f"sqlite:///{db}", "cohort", "members", defn, "--tenant", TENANT])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)["members"]) == 479
    out = CliRunner().invoke(app, ["--db", f"sqlite:///{db}", "cohort", "export", defn, "--tenant", TENANT,
                                   "--out", str(tmp_path / "study")])
    assert out.exit_code == 0, out.output
    manifest = json.loads((tmp_path / "study" / "manifest.json").read_text())
    assert manifest["files"]["person.csv"]["rows"] == 479
    cli_rows = [r for r in audit.rows(store, TENANT) if r["actor"] == "cli"]
    assert [r["action"] for r in cli_rows][-2:] == ["cohort_members", "cohort_export"]
    assert all(r["detail"]["definition_hash"] == manifest["definition_hash"] for r in cli_rows[-2:])
