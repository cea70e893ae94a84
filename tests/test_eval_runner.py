"""A real retrieval run (real KB, embedder, retriever) on a bioasq slice: JSON shape, reports, trec_eval agreement."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.errors import InvalidInput
from medkb.eval.datasets import load_beir, slice_beir
from medkb.eval.metrics import evaluate
from medkb.eval.report import write_all
from medkb.eval.runner import RetrievalRun, run_retrieval
from medkb.settings import Settings
from tests.conftest import shared_data
from tests.test_eval_metrics import trec_eval_scores

MODES = ["bm25", "dense", "graph", "hybrid"]
MODE_KEYS = {"ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms_p50", "latency_ms_p95", "queries"}


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "bioasq-mini"
    slice_beir(load_beir(shared_data("bioasq-dev")), out, queries=12, distractors=40, seed="runner-test")
    return out


@pytest.fixture(scope="module")
def run(slice_dir: Path, embedder) -> RetrievalRun:  # type: ignore[no-untyped-def]
    return run_retrieval(load_beir(slice_dir), Settings(), MODES, k=100)


def test_json_has_exactly_the_promised_shape(run: RetrievalRun, slice_dir: Path) -> None:
    data = run.to_json()
    assert set(data) == {"dataset", "modes", "config", "per_query"} and data["dataset"] == "bioasq-mini"
    assert all(len(data["per_query"][m]["ndcg@10"]) == 12 for m in MODES)
    assert list(data["modes"]) == MODES
    for m in MODES:
        assert set(data["modes"][m]) == MODE_KEYS and data["modes"][m]["queries"] == 12
    cfg = data["config"]
    assert cfg["embedding_model"] == "all-MiniLM-L6-v2" and cfg["embedding_dim"] == 384
    assert set(cfg["fusion_weights"]) >= {"bm25", "dense", "graph"}
    assert cfg["medkb_version"] and cfg["machine"]["cores"] >= 1 and "rrf_k" in cfg["retrieval"]
    assert cfg["kb"]["documents"] == load_beir(slice_dir).corpus_size() == cfg["ingest"]["added"]
    json.dumps(data)  # serialisable as is


def test_real_retrieval_finds_the_judged_documents(run: RetrievalRun) -> None:
    # Chunk hits map back to corpus ids: lexical and dense search on this slice find most judged docs.
    for m in ("bm25", "dense", "hybrid"):
        assert run.modes[m].metrics["recall@100"] > 0.8, m
        assert run.modes[m].metrics["ndcg@10"] > 0.4, m
        assert all(len(docs) == len(set(docs)) for docs in run.modes[m].run.values())
    assert all(r.metrics["latency_ms_p95"] >= r.metrics["latency_ms_p50"] > 0 for r in run.modes.values())


def test_metrics_agree_with_trec_eval_on_the_real_run(run: RetrievalRun, slice_dir: Path) -> None:
    qrels = load_beir(slice_dir).qrels
    for m, r in run.modes.items():
        theirs = trec_eval_scores(r.run, qrels, cut=10, deep=100)
        ours = evaluate(r.run, qrels, list(theirs))
        for metric, v in theirs.items():
            assert ours[metric] == pytest.approx(v, abs=1e-9), (m, metric)
            assert r.metrics[metric] == pytest.approx(v, abs=1e-4), (m, metric)


def test_reports_are_written_beside_the_json(run: RetrievalRun, tmp_path: Path) -> None:
    paths = write_all(run, tmp_path / "out" / "run.json")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(run.to_json()))
    md = paths["md"].read_text()
    assert md.count("\n| ") >= 2 * len(MODES) and "all-MiniLM-L6-v2" in md
    assert f"| hybrid | {run.modes['hybrid'].metrics['ndcg@10']:.3f}" in md
    page = paths["html"].read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 3  # bars, Recall@k curves, latency
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in page and "https://" not in page  # self-contained


def test_trec_run_files_and_per_query_tables_check_out_with_trec_eval(
        run: RetrievalRun, slice_dir: Path, tmp_path: Path) -> None:
    """What quality staff do without medkb: read the run file, score it with trec_eval (pytrec_eval), and find
    the per-query table and the JSON's figures."""
    import pytrec_eval

    paths = write_all(run, tmp_path / "r.json")
    qrels = load_beir(slice_dir).qrels
    judged = {q: r for q, r in qrels.items() if any(v > 0 for v in r.values())}
    for mode in ("bm25", "hybrid"):
        trec: dict[str, dict[str, float]] = {}
        for line in paths[f"{mode}.run"].read_text().splitlines():
            qid, q0, doc, rank, score, tag = line.split()
            assert q0 == "Q0" and tag == f"medkb-{mode}" and int(rank) >= 1
            trec.setdefault(qid, {})[doc] = float(score)
        scored = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recip_rank"}).evaluate(trec)
        rows = [r.split("\t") for r in paths[f"{mode}.perquery"].read_text().splitlines()]
        assert rows[0] == ["qid", "ndcg@10", "recall@10", "recall@100", "mrr@10"] and len(rows) == 13
        for qid, ndcg, *_ in rows[1:]:
            assert float(ndcg) == pytest.approx(scored[qid]["ndcg_cut_10"], abs=1e-6), (mode, qid)
        mean = sum(scored[q]["ndcg_cut_10"] for q in judged) / len(judged)
        assert run.modes[mode].metrics["ndcg@10"] == pytest.approx(mean, abs=1e-4)


def test_compare_tests_two_runs_for_a_significant_difference(run: RetrievalRun, tmp_path: Path) -> None:
    from scipy.stats import ttest_rel

    from medkb.eval.compare import paired_test

    data = run.to_json()
    a = {**data, "modes": {"x": data["modes"]["graph"]}, "per_query": {"x": data["per_query"]["graph"]}}
    b = {**data, "modes": {"x": data["modes"]["hybrid"]}, "per_query": {"x": data["per_query"]["hybrid"]}}
    (r,) = paired_test(a, b)
    qa, qb = data["per_query"]["graph"]["ndcg@10"], data["per_query"]["hybrid"]["ndcg@10"]
    assert r.queries == 12 and r.p_value == pytest.approx(ttest_rel([qb[q] for q in qa], list(qa.values())).pvalue)
    assert paired_test(a, a)[0].p_value == 1.0
    for i, (x, y) in enumerate(((a, b), (b, a))):
        (tmp_path / f"a{i}.json").write_text(json.dumps(x))
        (tmp_path / f"b{i}.json").write_text(json.dumps(y))
    # Hybrid against graph-only on the same queries: hybrid is the better run, graph the significantly worse.
    assert r.diff > 0 and r.p_value < 0.05
    res = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "a0.json"), str(tmp_path / "b0.json"),
                                   "--tolerance", "1", "--alpha", "0.05"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "significantly better" in res.output
    res = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "a1.json"), str(tmp_path / "b1.json"),
                                   "--tolerance", "1", "--alpha", "0.05"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "significantly worse" in res.output


def test_cli_retrieval_reuses_a_db_idempotently(  # type: ignore[no-untyped-def]
    slice_dir: Path, tmp_path: Path, embedder
) -> None:
    db = f"sqlite:///{tmp_path / 'kb.db'}"
    runner = CliRunner()
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        res = runner.invoke(app, ["eval", "retrieval", str(slice_dir), "--mode", "bm25", "--max-queries", "3",
                                  "--json", str(out), "--db", db])
        assert res.exit_code == 0, res.output + repr(res.exception)
        outs.append(json.loads(out.read_text()))
        assert out.with_suffix(".md").is_file() and out.with_suffix(".html").is_file()
    n = load_beir(slice_dir).corpus_size()
    assert outs[0]["config"]["ingest"]["added"] == n
    assert outs[1]["config"]["ingest"] == {**outs[1]["config"]["ingest"], "added": 0, "unchanged": n}
    assert outs[0]["modes"]["bm25"]["queries"] == 3
    assert {k: v for k, v in outs[0]["modes"]["bm25"].items() if "latency" not in k} == \
        {k: v for k, v in outs[1]["modes"]["bm25"].items() if "latency" not in k}


def test_cli_rejects_bad_options(slice_dir: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "retrieval", str(slice_dir), "--mode", "fancy"])
    assert isinstance(res.exception, InvalidInput) and "fancy" in str(res.exception)
    res = runner.invoke(app, ["eval", "retrieval", str(slice_dir), "--k", "5"])
    assert isinstance(res.exception, InvalidInput) and "--k 5" in str(res.exception)
