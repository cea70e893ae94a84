"""`medkb eval abstain` on the real test knowledge base (15 committed abstracts, MiniLM, BM25): the harness
scores exactly what the chat endpoint does, its curve and AUROC are consistent, and the reports are written."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medkb.api.answer import AnswerEngine
from medkb.cli.main import app
from medkb.eval.abstain import Question, Split, run_abstain
from medkb.eval.abstain_report import write_all
from medkb.kb.filters import SearchFilters
from medkb.retrieval.retriever import build_retriever
from medkb.sample.slicer import DATA
from tests.test_api_kb import build_kb


def _split() -> Split:
    """8 questions whose abstract the test KB holds (its first 15) and 8 whose abstract it does not."""
    data = json.loads((DATA / "pubmedqa" / "pubmedqa_sample.json").read_text())
    items = list(data.items())
    qs = [Question(p, it["QUESTION"], (p,)) for p, it in items[:8] + items[100:108]]
    return Split("test-split", "8 present + 8 absent sample questions", qs, [])


def test_harness_matches_the_chat_gate_and_reports(tmp_path) -> None:
    kb = build_kb()
    split = _split()
    run = run_abstain(split, kb.settings, db_url=kb.settings.database.url, tenant="demo")
    m = run.metrics
    assert (m["answerable"], m["unanswerable"]) == (8, 8)
    assert 0.0 <= m["abstention_unanswerable"] <= 1.0 and 0.0 <= m["gold_cited_answerable"] <= 1.0
    assert m["auroc"] > 0.8
    assert m["gate_off"]["abstention_unanswerable"] == 0.0  # with the gate off nothing is ever withheld
    # The curve runs up to abstaining on everything; raising the threshold never cites more gold.
    last = run.curve[-1]
    assert last["abstention_unanswerable"] == 1.0 and last["gold_cited_answerable"] == 0.0
    ab = [p["abstention_unanswerable"] for p in run.curve]
    cited = [p["gold_cited_answerable"] for p in run.curve]
    assert ab == sorted(ab) and cited == sorted(cited, reverse=True)
    assert run.curve[0]["gold_cited_answerable"] >= m["gold_cited_answerable"]

    # The chat endpoint's engine abstains on exactly the questions the harness counts as abstained.
    retriever = build_retriever(kb.store, kb.settings)
    engine = AnswerEngine(kb.store, retriever)
    abstained = 0
    for q in split.questions[8:]:
        abstained += not engine.prepare(q.text, SearchFilters(tenant_id="demo")).relevant
    assert abstained / 8 == m["abstention_unanswerable"]

    paths = write_all(run, tmp_path / "abstain.json")
    assert json.loads(paths["json"].read_text())["metrics"]["auroc"] == m["auroc"]
    assert "| test-split |" in paths["md"].read_text()
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 2 and "Threshold sweep" in page


def test_cli_rejects_an_unknown_split() -> None:
    res = CliRunner().invoke(app, ["eval", "abstain", "--split", "nope"])
    assert res.exit_code != 0 and "--split must be one of" in str(res.exception or res.output)
