"""The pinned CI baseline: the committed bioasq-slice figures must still be what the code produces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkb.errors import BadRecord
from medkb.eval.baseline import BASELINE, CHECKED, check, load_config, run_baseline
from tests.conftest import SHARED_DATA, shared_data


def test_committed_config_is_complete() -> None:
    cfg = load_config()
    assert cfg["queries"] >= 50 and cfg["modes"]
    for mode in cfg["modes"]:
        assert set(cfg["expected"][mode]) == set(CHECKED)
        assert all(0.0 < v <= 1.0 for v in cfg["expected"][mode].values())
    assert "measured" in cfg and cfg["measured"]["embedding_model"] == cfg["embedding_model"]


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    cfg = json.loads(BASELINE.read_text())
    del cfg["seed"]
    (tmp_path / "b.json").write_text(json.dumps(cfg))
    with pytest.raises(BadRecord, match=r"\[seed\]"):
        load_config(tmp_path / "b.json")


@pytest.mark.slow
def test_quality_has_not_moved_beyond_tolerance(embedder) -> None:  # type: ignore[no-untyped-def]
    shared_data("bioasq-dev")
    cfg = load_config()
    run = run_baseline(cfg, data_root=SHARED_DATA)
    assert run.config["kb"]["documents"] == cfg["measured"]["kb"]["documents"]  # the same slice was rebuilt
    findings = check(cfg, run)
    assert not findings, "\n".join(str(f) for f in findings)
    # The check is live: a pinned figure nudged past its tolerance must be reported.
    nudged = json.loads(json.dumps(cfg))
    mode = cfg["modes"][0]
    nudged["expected"][mode]["ndcg@10"] = run.modes[mode].metrics["ndcg@10"] + cfg["tolerance"]["ndcg@10"] + 0.01
    assert [(f.mode, f.metric, f.direction) for f in check(nudged, run)] == [(mode, "ndcg@10", "dropped")]
