"""The console's server side on a real knowledge base: the page and its local assets (CSP, no CDN, weight),
GET /v1/me, the tenant-scoped audited patient search, the timeline, and the fixture patient's safety note."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from medkb.api import audit, create_app
from medkb.api.console import STATIC
from medkb.sample.build import DEMO_TENANT
from tests.console_kb import FIXTURE_SOURCE, OTHER, ConsoleKB, console_kb
from tests.test_api_kb import auth


@pytest.fixture(scope="module")
def kb() -> ConsoleKB:
    return console_kb()


@pytest.fixture(scope="module")
def client(kb: ConsoleKB) -> Iterator[TestClient]:
    with TestClient(create_app(kb.settings, kb.store)) as c:
        yield c


def test_page_and_assets_are_local_small_and_locked_down(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assets = [u for u in refs if u.startswith("/console/")]
    assert len(assets) >= 2 and all(u.startswith(("/console/", "#", "data:")) for u in refs), refs
    total = len(r.content)
    for path in STATIC.iterdir():
        body = path.read_text()
        # No CDN or any other host: every import and URL is this server's.
        assert not re.search(r"https?://", body), path.name
        for imp in re.findall(r'from "([^"]+)"', body):
            assert imp.startswith("./") and (STATIC / imp[2:]).exists(), (path.name, imp)
        got = client.get(f"/console/{path.name}")
        assert got.status_code == 200, path.name
        total += len(got.content)
    assert total < 300_000
    assert client.get("/console/../console.py").status_code == 404


def test_me_names_tenant_and_role_and_refuses_a_wrong_key(kb: ConsoleKB, client: TestClient) -> None:
    r = client.get("/v1/me", headers=auth(kb.keys["demo-clinician"]))
    assert r.status_code == 200
    assert r.json() == {"key_id": kb.keys["demo-clinician"].split("_")[1], "tenant": DEMO_TENANT, "role": "clinician"}
    bad = client.get("/v1/me", headers=auth(kb.keys["demo-clinician"] + "x"))
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "AuthenticationError"


def search(client: TestClient, key: str, **params: object) -> list[dict]:
    r = client.get("/v1/patients", params=params, headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()["patients"]


def test_patient_search_is_tenant_scoped(kb: ConsoleKB, client: TestClient) -> None:
    key = kb.keys["demo-clinician"]
    assert {p["id"] for p in search(client, key)} == set(kb.demo_patients)
    assert kb.fixture_patient in kb.demo_patients and kb.other_fixture_patient not in kb.demo_patients
    # Another tenant's patient is not found by its exact id, by its condition, or by its birth year.
    assert search(client, key, q=kb.other_fixture_patient) == []
    assert [p["id"] for p in search(client, key, condition="atrial fibrillation")] == [kb.fixture_patient]
    assert {p["id"] for p in search(client, kb.keys["other-clinician"])} == set(kb.other_patients)
    assert kb.other_fixture_patient in kb.other_patients


def test_patient_search_criteria(kb: ConsoleKB, client: TestClient) -> None:
    key = kb.keys["demo-clinician"]
    fx = kb.fixture_patient
    assert [p["id"] for p in search(client, key, q=fx[:6])] == [fx]
    assert [p["id"] for p in search(client, key, condition="49436004")] == [fx]
    assert [p["id"] for p in search(client, key, birth_year_from=1940, birth_year_to=1950)] == [fx]
    row = search(client, key, q=fx)[0]
    assert row["birth_year"] == 1948 and row["sex"] == "male" and row["counts"] == {"conditions": 2, "medications": 2}
    males = search(client, key, sex="male")
    assert fx in {p["id"] for p in males} and all(p["sex"] == "male" for p in males)
    assert all(p["sex"] == "female" for p in search(client, key, sex="female"))
    # LIKE wildcards are taken literally, so "%" matches nothing rather than everything.
    assert search(client, key, condition="%%") == []
    r = client.get("/v1/patients", params={"limit": 1}, headers=auth(key))
    assert len(r.json()["patients"]) == 1 and r.json()["more"] is True
    for params in ({"sex": "M"}, {"birth_year_from": 10}, {"q": "a b"}, {"limit": 0}):
        bad = client.get("/v1/patients", params=params, headers=auth(key))
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "InvalidInput", params


def test_patient_search_needs_clinician_role_and_is_audited(kb: ConsoleKB, client: TestClient) -> None:
    r = client.get("/v1/patients", headers=auth(kb.keys["demo-curator"]))
    assert r.status_code == 403 and r.json()["error"]["type"] == "PermissionDenied"
    assert client.get("/v1/patients").status_code == 401
    before = len(audit.rows(kb.store, DEMO_TENANT))
    search(client, kb.keys["demo-clinician"], condition="fibrillation", sex="male")
    rows = audit.rows(kb.store, DEMO_TENANT)
    assert len(rows) == before + 1
    assert rows[-1]["action"] == "patient_search" and rows[-1]["endpoint"] == "/v1/patients"
    assert rows[-1]["detail"] == {"criteria": {"sex": "male", "condition": "fibrillation"}}


def test_timeline_is_newest_first_every_kind_audited_and_tenant_scoped(kb: ConsoleKB, client: TestClient) -> None:
    key = kb.keys["demo-clinician"]
    r = client.get(f"/v1/patients/{kb.fixture_patient}/timeline", headers=auth(key))
    assert r.status_code == 200, r.text
    events = r.json()["events"]
    assert {e["kind"] for e in events} == {"encounter", "condition", "medication", "procedure", "observation"}
    dates = [e["date"] for e in events]
    assert dates == sorted(dates, reverse=True)
    inr = next(e for e in events if e["kind"] == "observation")
    assert inr["value"] == "2.8" and inr["code"] == "6301-6"
    assert {e["description"] for e in events if e["kind"] == "medication"} == {"Warfarin", "Aspirin"}
    assert audit.rows(kb.store, DEMO_TENANT, kb.fixture_patient)[-1]["action"] == "patient_timeline"
    for pid in (kb.other_fixture_patient, kb.other_patients[0]):
        other = client.get(f"/v1/patients/{pid}/timeline", headers=auth(key))
        assert other.status_code == 404, pid
    assert client.get(f"/v1/patients/{kb.fixture_patient}/timeline",
                      headers=auth(kb.keys["demo-curator"])).status_code == 403


def test_fixture_patient_summary_carries_its_safety_notes_with_their_source(kb: ConsoleKB, client: TestClient) -> None:
    r = client.get(f"/v1/patients/{kb.fixture_patient}/summary", headers=auth(kb.keys["demo-clinician"]))
    notes = {n["kind"]: n for n in r.json()["safety_notes"]}
    assert {"interaction", "contraindication"} <= set(notes), r.json()["safety_notes"]
    assert FIXTURE_SOURCE in str(notes["interaction"]) and "warfarin" in str(notes["interaction"]).lower()
    assert "peptic ulcer" in str(notes["contraindication"]).lower()
    other = client.get(f"/v1/patients/{kb.other_fixture_patient}/summary", headers=auth(kb.keys["other-clinician"]))
    assert other.status_code == 200 and OTHER != DEMO_TENANT
