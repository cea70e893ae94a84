"""POST /v1/cohorts/*: researcher keys get suppressed aggregates only; members and exports are admin-only and audited."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from fastapi.testclient import TestClient

from medkb.api import audit, create_app
from medkb.api.auth import create_key
from medkb.settings import Settings
from tests.omop_support import TENANT

GI = json.loads((Path(__file__).parent / "cohorts" / "eunomia_gi_bleed.json").read_text())


def test_researcher_aggregates_admin_rows_everything_audited(eunomia_kb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, db, _ = eunomia_kb
    monkeypatch.setenv("MEDKB_COHORT_REGIONS", json.dumps({"region-x": [TENANT, "empty-hospital"]}))
    settings = Settings().with_database(f"sqlite:///{db}")
    _, researcher = create_key(store, TENANT, "researcher", "study team")
    admin_id, admin = create_key(store, TENANT, "admin", "data office")
    _, regional = create_key(store, "region-x", "researcher", "regional platform")
    _, clinician = create_key(store, TENANT, "clinician", "ward")
    # The session's Eunomia store is shared: other tests' audit rows (the CLI's) may precede this test's.
    audited_before = len(audit.rows(store, TENANT))
    with TestClient(create_app(settings, store)) as c:
        def post(path: str, key: str, body: object) -> object:
            return c.post(f"/v1/cohorts/{path}", json=body, headers={"X-API-Key": key})

        r = post("count", researcher, {"definition": GI})
        assert r.status_code == 200, r.text
        assert r.json() == {"cohort": {"persons": 479, "entries": 479},
                            "attrition": {"by_person": {"base_count": 479, "final_count": 479, "rules": []},
                                          "by_event": {"base_count": 479, "final_count": 479, "rules": []}},
                            "min_cell_count": 11, "suppressed": []}
        assert post("count", clinician, {"definition": GI}).status_code == 403
        for path in ("members", "export"):
            assert post(path, researcher, {"definition": GI}).status_code == 403
        bad = post("count", researcher, {"definition": {"PrimaryCriteria": {"CriteriaList": [{"Specimen": {}}]}}})
        assert bad.status_code == 422 and "PrimaryCriteria.CriteriaList[0].Specimen" in bad.text
        assert post("count", researcher, {"defn": GI}).status_code == 422
        feas = post("feasibility", regional, {"definition": GI}).json()
        assert feas["tenants"] == {TENANT: {"persons": 479, "entries": 479}, "empty-hospital": {"persons": 0, "entries": 0}}
        assert feas["total"] == {"persons": 479, "entries": 479}
        m = post("members", admin, {"definition": GI})
        assert m.status_code == 200 and len(m.json()["members"]) == 479
        assert all(p["person_id"].startswith("p") for p in m.json()["members"])
        e = post("export", admin, {"definition": GI, "format": "parquet"})
        assert e.status_code == 200, e.text
    manifest = e.json()["manifest"]
    folder = Path(e.json()["folder"])
    assert manifest["released"]["cohort"] == {"persons": 479, "entries": 479}
    assert manifest["suppression"]["min_cell_count"] == 11 and len(manifest["definition_hash"]) == 64
    con = duckdb.connect()
    assert con.execute(f"SELECT count(DISTINCT subject_id) FROM '{folder / 'cohort.parquet'}'").fetchone()[0] == 479
    assert con.execute(f"SELECT count(*) FROM '{folder / 'person.parquet'}'").fetchone()[0] == 479
    rows = [r for r in audit.rows(store, TENANT)[audited_before:] if r["action"].startswith("cohort_")]
    assert [(r["action"], r["actor"]) for r in rows] == [("cohort_members", admin_id), ("cohort_export", admin_id)]
    assert {r["detail"]["definition_hash"] for r in rows} == {manifest["definition_hash"]}
