"""The one LLM client (medkb.llm): bounded time and retries, request settings clamped, errors without prompt text.

The upstream here is a real TCP server that accepts connections and never answers: a hanging provider cannot be
produced on demand with the real local model (tests/test_llm_local.py covers real completions, streaming and usage).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from medkb.errors import ConfigError, UpstreamError
from medkb.llm import LLMClient
from medkb.settings import LLMSettings


@pytest.fixture()
def hanging_upstream() -> Iterator[tuple[str, list[socket.socket]]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(32)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1", accepted
    srv.close()
    for c in accepted:
        c.close()


def _client(base: str, retries: int) -> LLMClient:
    return LLMClient(LLMSettings(model="openai/x", api_base=base, api_key="x", timeout_s=0.5, max_retries=retries))


def test_timeouts_and_retries_are_bounded(hanging_upstream: tuple[str, list[socket.socket]]) -> None:
    base, accepted = hanging_upstream
    question = "does the secret-question text leak into errors?"
    for retries in (0, 2):
        accepted.clear()
        client = _client(base, retries)
        t0 = time.perf_counter()
        with pytest.raises(UpstreamError) as err:
            client.complete([{"role": "user", "content": question}])
        elapsed = time.perf_counter() - t0
        attempts = len(accepted)
        if retries == 0:
            assert attempts == 1 and elapsed < 5
        else:
            assert retries + 1 <= attempts <= 2 * retries + 1 and elapsed < 20
        assert "openai/x" in err.value.message and "secret-question" not in err.value.message


def test_streaming_failures_are_upstream_errors_too(hanging_upstream: tuple[str, list[socket.socket]]) -> None:
    base, accepted = hanging_upstream
    with pytest.raises(UpstreamError):
        list(_client(base, 0).stream([{"role": "user", "content": "hi"}]))
    assert len(accepted) == 1


def test_request_settings_stay_within_server_bounds() -> None:
    c = LLMClient(LLMSettings(model="openai/x", temperature=0.2, max_temperature=1.0, max_tokens=512))
    assert c.bounded(None, None) == (0.2, 512)
    assert c.bounded(0.7, 100) == (0.7, 100)
    assert c.bounded(1.9, 100000) == (1.0, 512)  # never beyond the server's ceiling
    assert c.bounded(-1, 0) == (0.0, 1)


def test_no_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MEDKB_LLM_MODEL"):
        LLMClient(LLMSettings(model=None))
