"""`medkb eval compare`: differences per mode and metric, regressions beyond a tolerance, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.errors import BadRecord, InvalidInput
from medkb.eval.compare import compare, comparable, load_run


def _run(ndcg: float, recall: float, p50: float = 10.0, modes: tuple[str, ...] = ("bm25", "hybrid")) -> dict:
    return {"dataset": "x", "config": {"embedding_model": "m", "queries": 5, "k": 100, "split": "test"},
            "modes": {m: {"ndcg@10": ndcg, "recall@10": recall, "recall@100": 0.9, "mrr@10": 0.5,
                          "latency_ms_p50": p50, "latency_ms_p95": p50 * 2, "queries": 5} for m in modes}}


def _write(tmp: Path, name: str, data: dict) -> Path:
    p = tmp / name
    p.write_text(json.dumps(data))
    return p


def test_regression_only_beyond_tolerance() -> None:
    a = _run(0.80, 0.70)
    within = compare(a, _run(0.795, 0.70), tolerance=0.01)
    assert not any(d.regression for d in within)
    beyond = compare(a, _run(0.78, 0.71), tolerance=0.01)
    flagged = {(d.mode, d.metric) for d in beyond if d.regression}
    assert flagged == {("bm25", "ndcg@10"), ("hybrid", "ndcg@10")}
    d = next(d for d in beyond if d.metric == "recall@10")
    assert d.diff == pytest.approx(0.01) and not d.regression


def test_latency_and_missing_modes() -> None:
    a = _run(0.8, 0.7, p50=10.0)
    assert not any(d.regression for d in compare(a, _run(0.8, 0.7, p50=100.0)))  # latency off by default
    slow = compare(a, _run(0.8, 0.7, p50=16.0), latency_tolerance=0.5)
    assert {d.metric for d in slow if d.regression} == {"latency_ms_p50", "latency_ms_p95"}
    gone = compare(a, _run(0.8, 0.7, modes=("bm25",)))
    assert {d.mode for d in gone if d.regression} == {"hybrid"}
    with pytest.raises(InvalidInput):
        compare(a, a, tolerance=-1)


def test_comparable_warns_on_different_setups() -> None:
    b = _run(0.8, 0.7)
    b["config"]["embedding_model"] = "other"
    assert comparable(_run(0.8, 0.7), b) == ["different embedding_model: m vs other"]


def test_load_run_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BadRecord, match=r"\[modes\]"):
        load_run(_write(tmp_path, "a.json", {"dataset": "x"}))
    bad = _run(0.8, 0.7)
    bad["modes"]["bm25"]["ndcg@10"] = "high"
    with pytest.raises(BadRecord, match=r"\[modes.bm25.ndcg@10\]"):
        load_run(_write(tmp_path, "b.json", bad))
    (tmp_path / "c.json").write_text("{nope")
    with pytest.raises(BadRecord, match="c.json:1"):
        load_run(tmp_path / "c.json")


def test_cli_exit_code_flags_regression(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", _run(0.80, 0.70))
    b = _write(tmp_path, "b.json", _run(0.75, 0.70))
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "compare", str(a), str(b), "--tolerance", "0.01"])
    assert res.exit_code == 1, res.output
    assert "REGRESSION" in res.output and "-0.0500" in res.output
    ok = runner.invoke(app, ["eval", "compare", str(a), str(b), "--tolerance", "0.06"])
    assert ok.exit_code == 0, ok.output
    assert "no regression" in ok.output
