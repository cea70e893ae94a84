"""The HTTP API on a real knowledge base: keys (401/403), tenant isolation on every endpoint, audit rows,
limits and validation, SSE order, OpenAI compatibility (the `openai` SDK against a real uvicorn server)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from medkb.api import audit, create_app
from tests.conftest import live_server
from tests.test_api_kb import KB, OTHER, auth

Q = "Is multiple sclerosis associated with streptococcal infection?"


def chat(question: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}], **extra}


def endpoints(kb: KB) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("POST", "/v1/search", {"query": "sclerosis"}),
        ("POST", "/v1/chat", chat(Q)),
        ("POST", "/v1/chat/completions", {"model": "medkb", **chat(Q)}),
        ("GET", "/v1/models", None),
        ("GET", f"/v1/documents/{kb.public_doc}", None),
        ("GET", f"/v1/chunks/{kb.public_chunk}", None),
        ("GET", f"/v1/entities/{kb.public_entity}", None),
        ("GET", f"/v1/entities/{kb.public_entity}/neighbors", None),
        ("GET", f"/v1/patients/{kb.demo_patients[0]}/summary", None),
    ]


def test_every_endpoint_needs_a_valid_key(kb: KB, client: TestClient) -> None:
    for method, path, body in endpoints(kb):
        for headers in ({}, auth("mk_nope_nope"), auth(kb.keys["demo-clinician"] + "x"), auth(kb.keys["revoked"]),
                        {"X-API-Key": "garbage"}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["type"] == "AuthenticationError"
        ok = client.request(method, path, json=body, headers={"X-API-Key": kb.keys["demo-clinician"]})
        assert ok.status_code == 200, (method, path, ok.text)


def test_patient_data_needs_clinician_or_admin(kb: KB, client: TestClient) -> None:
    pid = kb.demo_patients[0]
    cur, adm = auth(kb.keys["demo-curator"]), auth(kb.keys["demo-admin"])
    for method, path, body in [
        ("GET", f"/v1/patients/{pid}/summary", None),
        ("POST", "/v1/chat", chat("What medications?", patient_id=pid)),
        ("POST", "/v1/chat/completions", chat("What medications?", patient_id=pid)),
        ("POST", "/v1/search", {"query": "medication", "patient_id": pid}),
        ("GET", f"/v1/chunks/{kb.demo_note_chunk}", None),
    ]:
        assert client.request(method, path, json=body, headers=cur).status_code == 403, path
        assert client.request(method, path, json=body, headers=adm).status_code == 200, path
    # The curator still reads public knowledge.
    assert client.post("/v1/search", json={"query": "sclerosis"}, headers=cur).status_code == 200


def test_tenant_isolation_on_every_endpoint(kb: KB, client: TestClient) -> None:
    demo, other = auth(kb.keys["demo-clinician"]), auth(kb.keys["other-clinician"])
    foreign_patient = kb.other_patients[0]
    # Direct reads: tenant B's rows do not exist for tenant A (404, not 403: no existence leak); B sees them.
    for path in (f"/v1/patients/{foreign_patient}/summary", f"/v1/documents/{kb.other_doc}",
                 f"/v1/chunks/{kb.other_chunk}", f"/v1/chunks/{kb.other_note_chunk}",
                 f"/v1/entities/{kb.other_entity}", f"/v1/entities/{kb.other_entity}/neighbors"):
        assert client.get(path, headers=demo).status_code == 404, path
        assert client.get(path, headers=other).status_code == 200, path
    assert client.get(f"/v1/patients/{kb.demo_patients[0]}/summary", headers=other).status_code == 404
    assert client.get(f"/v1/chunks/{kb.demo_note_chunk}", headers=other).status_code == 404
    # Public knowledge is visible to both.
    for key in (demo, other):
        assert client.get(f"/v1/chunks/{kb.public_chunk}", headers=key).status_code == 200
    # Search, chat and completions never surface tenant B's guideline or patients to tenant A.
    zq = "Zorblax protocol vancomycin dosing renal failure trough"
    b_hits = client.post("/v1/search", json={"query": zq, "k": 20}, headers=other).json()["hits"]
    assert kb.other_chunk in {h["chunk_id"] for h in b_hits}
    a_hits = client.post("/v1/search", json={"query": zq, "k": 50}, headers=demo).json()["hits"]
    assert a_hits and all(h["chunk_id"] != kb.other_chunk and "Zorblax" not in h["text"] for h in a_hits)
    a_chat = client.post("/v1/chat", json=chat(zq), headers=demo).json()
    assert all(c["chunk_id"] != kb.other_chunk for c in a_chat["citations"]) and "Zorblax" not in a_chat["answer"]
    b_chat = client.post("/v1/chat", json=chat(zq), headers=other).json()
    assert kb.other_chunk in {c["chunk_id"] for c in b_chat["citations"]}
    a_comp = client.post("/v1/chat/completions", json=chat(zq), headers=demo).json()
    assert "Zorblax" not in a_comp["choices"][0]["message"]["content"]
    for method, path, body in [("POST", "/v1/chat", chat("medications?", patient_id=foreign_patient)),
                               ("POST", "/v1/chat/completions", chat("medications?", patient_id=foreign_patient)),
                               ("POST", "/v1/search", {"query": "medications", "patient_id": foreign_patient})]:
        assert client.request(method, path, json=body, headers=demo).status_code == 404, path


def test_patient_access_is_audited_and_the_audit_log_is_append_only(kb: KB, client: TestClient) -> None:
    pid = kb.demo_patients[1]
    before = len(audit.rows(kb.store, "demo", pid))
    r = client.get(f"/v1/patients/{pid}/summary", headers=auth(kb.keys["demo-clinician"]))
    assert r.status_code == 200 and r.json()["patient"]["id"] == pid
    assert r.json()["conditions"] or r.json()["medications"]
    r = client.post("/v1/chat", json=chat("Which medications does the patient take?", patient_id=pid),
                    headers=auth(kb.keys["demo-clinician"]))
    assert r.status_code == 200
    assert any(c["kind"] == "patient_fact" for c in r.json()["citations"])
    rows = audit.rows(kb.store, "demo", pid)[before:]
    assert [(x["action"], x["actor"], x["role"]) for x in rows] == [
        ("patient_summary", kb.key_ids["demo-clinician"], "clinician"),
        ("chat", kb.key_ids["demo-clinician"], "clinician")]
    assert rows[0]["endpoint"] == f"/v1/patients/{pid}/summary"
    for stmt in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            with kb.store.engine.begin() as c:
                c.execute(text(stmt))
    assert len(audit.rows(kb.store, "demo", pid)) == before + 2


def test_chat_stream_is_trace_then_tokens_then_final(kb: KB, client: TestClient) -> None:
    with client.stream("POST", "/v1/chat", json=chat(Q, stream=True),
                       headers=auth(kb.keys["demo-clinician"])) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [(b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
                  for b in r.read().decode().strip().split("\n\n")]
    kinds = [k for k, _ in events]
    assert kinds[0] == "trace" and kinds[-1] == "final" and set(kinds[1:-1]) == {"token"}
    assert events[0][1]["hits"] and all("trace" in h for h in events[0][1]["hits"])
    final = events[-1][1]
    assert "".join(d["text"] for k, d in events if k == "token") == final["answer"]
    assert final["citations"] and {"chunk_id", "document_id", "title", "section", "page", "source"} <= set(
        final["citations"][0])


def test_nothing_relevant_means_no_answer(kb: KB, client: TestClient) -> None:
    r = client.post("/v1/chat", json=chat("Which cryptocurrency wallet supports lightning payments?"),
                    headers=auth(kb.keys["demo-clinician"]))
    assert r.status_code == 200
    body = r.json()
    assert body["mode"] == "no_evidence" and body["citations"] == []
    assert "no evidence" in body["answer"]
    zh = client.post("/v1/chat", json=chat("哪个加密货币钱包支持闪电网络支付？"), headers=auth(kb.keys["demo-clinician"]))
    assert zh.json()["language"] == "zh"


def test_limits_and_validation_errors(kb: KB, client: TestClient) -> None:
    h = auth(kb.keys["demo-clinician"])
    big = chat("x" * (kb.settings.api.max_body_bytes + 10))
    r = client.post("/v1/chat", json=big, headers=h)
    assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
    # A chunked upload (no Content-Length) is cut off while it is read.
    chunks = iter([json.dumps(big).encode()[i : i + 65536] for i in range(0, len(json.dumps(big)), 65536)])
    r = client.post("/v1/chat", content=chunks, headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
    for body, where in (({"messages": []}, "messages"), ({"query": "a", "k": 0}, "k"),
                        ({"query": "a", "filters": {"doc_types": ["memo"]}}, "doc_types"),
                        ({"query": "a", "bogus": 1}, "bogus")):
        path = "/v1/chat" if "messages" in body else "/v1/search"
        r = client.post(path, json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        assert where in r.json()["error"]["message"]
    r = client.post("/v1/chat", json=chat("   "), headers=h)
    assert r.status_code == 422 and "user message" in r.json()["error"]["message"]
    assert client.get("/v1/chunks/0", headers=h).status_code == 422
    assert client.get("/v1/chunks/999999999", headers=h).status_code == 404


def test_health_readiness_and_metrics(kb: KB, client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 90
    while (r := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    client.get(f"/v1/patients/{kb.demo_patients[0]}/summary", headers=auth(kb.keys["demo-clinician"]))
    metrics = client.get("/metrics").text
    assert 'medkb_http_requests_total{method="GET",route="/v1/patients/{patient_id}/summary",status="200"}' in metrics
    assert kb.demo_patients[0] not in metrics


def test_no_phi_or_secrets_in_logs(kb: KB, client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    pid, key = kb.demo_patients[2], kb.keys["demo-clinician"]
    with caplog.at_level(logging.DEBUG):
        client.get(f"/v1/patients/{pid}/summary", headers=auth(key))
        client.post("/v1/chat", json=chat("Does the patient take methylprednisolone?", patient_id=pid),
                    headers=auth(key))
        client.get(f"/v1/patients/{pid}/summary", headers=auth(key + "wrong"))
    # The server side's logs (the test's own HTTP client logs its URLs, which is not the service).
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    assert "/v1/patients/{patient_id}/summary" in logged  # requests are logged, by route template
    assert pid not in logged and key.split("_", 2)[2] not in logged and "methylprednisolone" not in logged


def test_openai_sdk_against_a_real_server(kb: KB) -> None:
    from openai import OpenAI

    with live_server(create_app(kb.settings, kb.store)) as base:
        sdk = OpenAI(base_url=base, api_key=kb.keys["demo-clinician"], max_retries=0)
        resp = sdk.chat.completions.create(model="medkb", messages=[{"role": "user", "content": Q}])
        content = resp.choices[0].message.content or ""
        citations = (resp.model_extra or {})["citations"]
        assert resp.object == "chat.completion" and content.startswith("Retrieved evidence")
        assert citations and all(f"[{c['n']}]" in content for c in citations)
        pieces, extra = [], {}
        for chunk in sdk.chat.completions.create(model="medkb", messages=[{"role": "user", "content": Q}],
                                                 stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason == "stop":
                extra = chunk.model_extra or {}
        assert "".join(pieces) == content
        assert [c["chunk_id"] for c in extra["citations"]] == [c["chunk_id"] for c in citations]
        bad = OpenAI(base_url=base, api_key="mk_x_y", max_retries=0)
        with pytest.raises(Exception) as err:
            bad.chat.completions.create(model="medkb", messages=[{"role": "user", "content": Q}])
        assert getattr(err.value, "status_code", None) == 401


def test_keys_cli_create_list_revoke(kb: KB, client: TestClient) -> None:
    from typer.testing import CliRunner

    from medkb.cli.main import app

    run = CliRunner()
    db = ["--db", kb.settings.database.url]
    r = run.invoke(app, [*db, "keys", "create", "--tenant", OTHER, "--role", "curator", "--name", "cli-test"])
    assert r.exit_code == 0, r.output
    key = r.output.strip().splitlines()[-1]
    assert key.startswith("mk_")
    assert client.post("/v1/search", json={"query": "renal"}, headers=auth(key)).status_code == 200
    listing = run.invoke(app, [*db, "keys", "list", "--tenant", OTHER]).output
    assert key.split("_")[1] in listing and key.split("_", 2)[2] not in listing
    assert run.invoke(app, [*db, "keys", "revoke", key.split("_")[1]]).exit_code == 0
    assert client.post("/v1/search", json={"query": "renal"}, headers=auth(key)).status_code == 401
    bad = run.invoke(app, [*db, "keys", "create", "--tenant", OTHER, "--role", "superuser"])
    assert bad.exit_code != 0


def test_searches_beyond_the_process_slots_wait_their_turn(kb: KB) -> None:
    """With MEDKB_API_SEARCH_CONCURRENCY=1, eight concurrent requests (four /v1/search, four /v1/chat) run one
    retrieval at a time and all answer. The real retriever runs; it is wrapped only to count how many searches
    are inside it at once (and to hold each one 50 ms, so that the others have arrived while it runs)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from medkb.api.service import search_slots

    api = kb.settings.api.model_copy(update={"search_concurrency": 1})
    settings = kb.settings.model_copy(update={"api": api})
    assert search_slots(settings) == 1
    threads2 = kb.settings.model_copy(update={"embedding": kb.settings.embedding.model_copy(update={"threads": 2})})
    assert search_slots(threads2) == 2  # by default as many searches as the process has intra-op threads
    app = create_app(settings, kb.store)
    running, peak, lock = 0, 0, threading.Lock()
    with TestClient(app) as c:
        retriever = app.state.service.retriever
        real = retriever.search

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                time.sleep(0.05)
                return real(*args, **kwargs)
            finally:
                with lock:
                    running -= 1

        def ask(i: int, q: str) -> int:
            h = auth(kb.keys["demo-clinician"])
            if i % 2:  # chat's retrieval takes the same slots as /v1/search
                return c.post("/v1/chat", json={"messages": [{"role": "user", "content": q}]}, headers=h).status_code
            return c.post("/v1/search", json={"query": q, "k": 3}, headers=h).status_code

        retriever.search = counted
        try:
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(ask, range(8), ["sclerosis", "metformin", "asthma", "fever"] * 2))
        finally:
            del retriever.search
    assert codes == [200] * 8
    assert peak == 1
