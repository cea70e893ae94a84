"""The evidence gate on the real sample knowledge base (committed abstracts, real MiniLM vectors, real BM25 index):
its features, the shipped model, the operating point from settings, and the no-evidence answer in both languages."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medkb.api import create_app
from medkb.errors import ConfigError
from medkb.kb.filters import SearchFilters
from medkb.retrieval.gate import ANSWER_FEATURES, FEATURES, EvidenceGate, GateModel, gate_features
from medkb.retrieval.retriever import build_retriever
from medkb.sample.slicer import DATA
from medkb.settings import GateSettings
from tests.test_api_kb import KB, auth

ABSENT_EN = "Which cryptocurrency wallet supports lightning payments?"
ABSENT_ZH = "哪个加密货币钱包支持闪电网络支付？"
# A topic medicine knows but the sample abstracts do not cover.
ABSENT_MED_EN = "What is the recommended dose of dupilumab for atopic dermatitis in children?"
ABSENT_MED_ZH = "儿童特应性皮炎使用度普利尤单抗的推荐剂量是多少？"


def _present_question(kb: KB) -> tuple[str, str]:
    """(question, PMID) of an abstract the test KB holds."""
    data = json.loads((DATA / "pubmedqa" / "pubmedqa_sample.json").read_text())
    pmid = list(data)[3]
    return data[pmid]["QUESTION"], pmid


def ask(client: TestClient, kb: KB, question: str) -> dict[str, Any]:
    r = client.post("/v1/chat", json={"messages": [{"role": "user", "content": question}]},
                    headers=auth(kb.keys["demo-clinician"]))
    assert r.status_code == 200, r.text
    return r.json()


def test_shipped_model_loads_and_says_what_it_was_fitted_on() -> None:
    model = GateModel.load()
    assert model.passage.coef.shape == (len(FEATURES),) and model.answer.coef.shape == (len(ANSWER_FEATURES),)
    assert model.version and model.training["split"] and model.training["description"]
    assert 0 < model.threshold < 1 and 0 < model.passage_threshold < 1 and model.curve
    # A higher target coverage can only lower (or keep) the threshold.
    ts = [model.threshold_for(c) for c in (0.8, 0.9, 0.95, 0.98, 1.0)]
    assert ts == sorted(ts, reverse=True)


def test_bad_model_file_is_a_clear_config_error(tmp_path) -> None:
    p = tmp_path / "gate.json"
    p.write_text(json.dumps({**GateModel.load().to_json(), "features": ["dense_cos"]}))
    with pytest.raises(ConfigError, match="features"):
        GateModel.load(p)
    p.write_text(json.dumps({k: v for k, v in GateModel.load().to_json().items() if k != "answer"}))
    with pytest.raises(ConfigError, match="not a gate model"):
        GateModel.load(p)
    with pytest.raises(ConfigError, match="does not exist"):
        GateModel.load(tmp_path / "missing.json")


def test_query_terms_read_idf_and_presence_from_the_index(kb: KB) -> None:
    r = build_retriever(kb.store, kb.settings)
    res = r.search("multiple sclerosis streptococcal zorblaxoquine", SearchFilters(), k=5)
    qt = r.bm25.query_terms("multiple sclerosis streptococcal zorblaxoquine", [h.chunk.id for h in res.hits])
    assert len(qt.terms) == 4
    oov = qt.terms.index("zorblaxoquin")  # stemmed; the index has never seen it
    assert qt.df[oov] == 0 and qt.idf[oov] == qt.idf.max()
    for i, h in enumerate(res.hits):
        tokens = set(r.bm25.tokenize(h.chunk.title + " " + (h.chunk.section or "") + " " + h.chunk.text))
        assert list(qt.present[i]) == [t in tokens for t in qt.terms]


def test_present_abstract_scores_above_absent_topics(kb: KB) -> None:
    r = build_retriever(kb.store, kb.settings)
    question, pmid = _present_question(kb)
    best = {}
    for q in (question, ABSENT_EN, ABSENT_MED_EN):
        res = r.search(q, SearchFilters(tenant_id="demo"), k=8)
        x = gate_features(r.bm25, q, res)
        assert x.shape == (len(res.hits), len(FEATURES)) and np.isfinite(x).all()
        d = r.gate.assess(q, res)
        best[q] = d.answer_score
        if q == question:
            shown = [res.hits[i].chunk.external_id for i in d.evidence(5)]
            assert pmid in shown
        else:
            assert d.evidence(5) == []
    assert best[question] > r.gate.threshold > max(best[ABSENT_EN], best[ABSENT_MED_EN])


def test_absent_topic_gets_the_no_evidence_answer_in_english_and_chinese(kb: KB, client: TestClient) -> None:
    for q, lang in ((ABSENT_EN, "en"), (ABSENT_MED_EN, "en"), (ABSENT_ZH, "zh"), (ABSENT_MED_ZH, "zh")):
        body = ask(client, kb, q)
        assert body["mode"] == "no_evidence" and body["citations"] == [] and body["language"] == lang, q
        why = body["abstention"]
        assert why["answer_score"] < why["threshold"]
        if lang == "en":
            assert body["answer"].startswith("The knowledge base has no evidence for this question")
            assert f"{why['answer_score']:.2f} is below the gate's threshold {why['threshold']:.2f}" in body["answer"]
        else:
            assert body["answer"].startswith("知识库中没有与此问题相关的证据")
            assert f"{why['answer_score']:.2f} 低于阈值 {why['threshold']:.2f}" in body["answer"]
        # The trace shows each passage's gate score, none passing, and the same reason.
        r = client.post("/v1/chat", json={"messages": [{"role": "user", "content": q}], "stream": True},
                        headers=auth(kb.keys["demo-clinician"]))
        trace = json.loads(r.text.split("\n\n")[0].split("\n")[1].removeprefix("data: "))
        assert trace["hits"] and all("score" in h["gate"] and not h["gate"]["passed"] for h in trace["hits"])
        assert trace["abstention"]["answer_score"] == why["answer_score"] and trace["evidence"] == []


def test_present_question_shows_only_passages_that_passed(kb: KB, client: TestClient) -> None:
    question, pmid = _present_question(kb)
    body = ask(client, kb, question)
    assert body["mode"] == "evidence"
    assert pmid in {c["external_id"] for c in body["citations"]}
    r = client.post("/v1/chat", json={"messages": [{"role": "user", "content": question}], "stream": True},
                    headers=auth(kb.keys["demo-clinician"]))
    trace = json.loads(r.text.split("\n\n")[0].split("\n")[1].removeprefix("data: "))
    passed = {h["chunk_id"] for h in trace["hits"] if h["gate"]["passed"]}
    assert {e["chunk_id"] for e in trace["evidence"]} <= passed
    assert trace["gate"]["threshold"] == pytest.approx(GateModel.load().threshold, abs=1e-4)


def test_operator_sets_the_operating_point(kb: KB) -> None:
    question, _ = _present_question(kb)
    strict = kb.settings.model_copy(update={"gate": GateSettings(threshold=1.01)})
    with TestClient(create_app(strict, kb.store)) as c:
        body = ask(c, kb, question)
    assert body["mode"] == "no_evidence" and body["abstention"]["threshold"] == 1.01
    off = kb.settings.model_copy(update={"gate": GateSettings(enabled=False)})
    with TestClient(create_app(off, kb.store)) as c:
        body = ask(c, kb, ABSENT_EN)
    assert body["mode"] == "evidence" and body["citations"]  # the gate off shows whatever was retrieved
    model = GateModel.load()
    lenient = EvidenceGate.operating_point(model, GateSettings(target_coverage=1.0))
    assert lenient <= model.threshold <= EvidenceGate.operating_point(model, GateSettings(target_coverage=0.8))


def test_medkb_ask_uses_the_same_gate(kb: KB) -> None:
    from typer.testing import CliRunner

    from medkb.cli.main import app

    question, pmid = _present_question(kb)
    url = kb.settings.database.url
    res = CliRunner().invoke(app, ["--db", url, "ask", ABSENT_MED_ZH, "--tenant", "demo", "--json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.output)
    assert body["mode"] == "no_evidence" and body["answer"].startswith("知识库中没有与此问题相关的证据")
    assert body["trace"]["abstention"]["answer_score"] < body["trace"]["gate"]["threshold"]
    res = CliRunner().invoke(app, ["--db", url, "ask", question, "--tenant", "demo", "--json"])
    body = json.loads(res.output)
    assert body["mode"] == "evidence" and pmid in {c["external_id"] for c in body["citations"]}
