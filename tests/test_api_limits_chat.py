"""Per-key rate limits (429 + Retry-After), follow-up questions retrieved with their conversation, SSE keep-alive,
request temperature/max_tokens held within server bounds. A real SQLite knowledge base and the real embedder;
the LLM-side checks (usage from the LLM, bounds reaching it) run against the real local model in test_llm_local."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medkb.api import create_app
from medkb.api.auth import create_key
from medkb.api.chat import retrieval_query, with_keepalive
from medkb.ingest.pipeline import ingest_documents
from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings, Settings

GUIDES = {
    "metformin-pregnancy.md": "# Metformin in pregnancy\n\nMetformin crosses the placenta. In pregnancy metformin "
                              "may be continued for gestational diabetes when the benefits outweigh the risks.\n",
    "insulin-pregnancy.md": "# Insulin in pregnancy\n\nInsulin is the first choice in pregnancy. Pregnancy raises "
                            "insulin needs; in pregnancy doses are reviewed every two weeks until delivery.\n",
    "metformin-renal.md": "# Metformin in renal impairment\n\nStop metformin when eGFR is below 30 mL/min; "
                          "halve the dose between 30 and 45 mL/min.\n",
}


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[tuple[Settings, object, dict[str, str]]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("limits")
    (root / "guides").mkdir()
    for name, text in GUIDES.items():
        (root / "guides" / name).write_text(text)
    settings = Settings().with_database(f"sqlite:///{root / 'kb.db'}")
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={
        "rate_limit_answers": "3/minute", "rate_limit_search": "4/minute"})})
    store = open_store(DatabaseSettings(url=settings.database.url))
    init_store(store)
    ingest_documents(store, embedder, [root / "guides"], source="guides", doc_type="guideline", lang="en")
    keys = {label: create_key(store, "clinic", "clinician", label)[1] for label in ("a", "b", "c")}
    yield settings, store, keys
    store.close()  # type: ignore[attr-defined]


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _chat(messages: list[dict[str, str]]) -> dict[str, object]:
    return {"messages": messages}


def test_rate_limits_are_per_key_and_per_kind(kb) -> None:  # type: ignore[no-untyped-def]
    settings, store, keys = kb
    with TestClient(create_app(settings, store)) as c:
        ask = _chat([{"role": "user", "content": "metformin in pregnancy"}])
        for _ in range(3):
            assert c.post("/v1/chat", headers=_h(keys["a"]), json=ask).status_code == 200
        # Chat and OpenAI completions share the answers limit of key a.
        r = c.post("/v1/chat/completions", headers=_h(keys["a"]), json={"model": "medkb", **ask})
        assert r.status_code == 429 and r.json()["error"]["type"] == "RateLimited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert c.post("/v1/chat", headers=_h(keys["b"]), json=ask).status_code == 200  # another key: its own
        for _ in range(4):  # search has its own window, untouched by the answers above
            assert c.post("/v1/search", headers=_h(keys["a"]), json={"query": "insulin"}).status_code == 200
        r = c.post("/v1/search", headers=_h(keys["a"]), json={"query": "insulin"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_a_follow_up_is_retrieved_with_the_conversation(kb) -> None:  # type: ignore[no-untyped-def]
    settings, store, keys = kb
    first = "Is metformin safe in renal impairment?"
    assert retrieval_query("and in pregnancy?", [{"role": "user", "content": first},
                                                 {"role": "assistant", "content": "Stop it below 30 [1]."}]) \
        == f"{first} and in pregnancy?"
    standalone = "Which insulin regimen is used for type 1 diabetes in adolescents?"
    assert retrieval_query(standalone, [{"role": "user", "content": first}]) == standalone
    with TestClient(create_app(settings, store)) as c:
        def titles(messages: list[dict[str, str]]) -> list[str]:
            r = c.post("/v1/chat", headers=_h(keys["c"]), json=_chat(messages))
            assert r.status_code == 200, r.text
            return [h["title"] for h in r.json()["trace"]["hits"]]

        alone = titles([{"role": "user", "content": "and in pregnancy?"}])
        followed = titles([{"role": "user", "content": first},
                           {"role": "assistant", "content": "Stop metformin when eGFR is below 30 [1]."},
                           {"role": "user", "content": "and in pregnancy?"}])
    # Alone, "pregnancy" leads to insulin; after a question about metformin it leads to metformin in pregnancy.
    assert alone.index("Insulin in pregnancy") < alone.index("Metformin in pregnancy")
    assert followed.index("Metformin in pregnancy") < followed.index("Insulin in pregnancy")


def test_keepalive_comments_fill_quiet_stretches_only() -> None:
    def slow() -> Iterator[str]:
        yield "event: trace\n\n"
        time.sleep(0.35)  # the model thinking before its first token
        yield "event: token\n\n"

    out = list(with_keepalive(slow(), every=0.1))
    assert out[0] == "event: trace\n\n" and out[-1] == "event: token\n\n"
    assert 2 <= out.count(": keep-alive\n\n") <= 4
    assert list(with_keepalive(iter(["a", "b"]), every=5)) == ["a", "b"]  # a fast stream gets none

    def failing() -> Iterator[str]:
        yield "x"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(with_keepalive(failing(), every=1))


def test_request_generation_settings_are_validated(kb) -> None:  # type: ignore[no-untyped-def]
    settings, store, keys = kb
    with TestClient(create_app(settings, store)) as c:
        r = c.post("/v1/chat", headers=_h(keys["c"]), json={**_chat([{"role": "user", "content": "x"}]),
                                                            "temperature": 3})
        assert r.status_code == 422 and "temperature" in r.json()["error"]["message"]


def test_bad_rate_limit_setting_is_a_config_error(tmp_path: Path) -> None:
    from medkb.api.ratelimit import RateLimits
    from medkb.errors import ConfigError

    with pytest.raises(ConfigError, match="MEDKB_API_RATE_LIMIT"):
        RateLimits(Settings().api.model_copy(update={"rate_limit_answers": "often"}))
