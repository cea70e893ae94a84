"""The pinned CI baseline: a deterministic slice of bioasq-dev, its committed expected figures and tolerances.

Check:  python -m medkb.eval.baseline            (exit 1 when a figure left its tolerance band)
Update: python -m medkb.eval.baseline --update   (re-measure and rewrite the expected figures, deliberately)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord, NotFound
from medkb.eval.datasets import load_beir, read_json, slice_beir
from medkb.eval.runner import RetrievalRun, run_retrieval
from medkb.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "eval" / "baselines" / "bioasq-slice.json"
CHECKED = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


@dataclass(frozen=True)
class Finding:
    mode: str
    metric: str
    expected: float
    observed: float
    tolerance: float

    @property
    def direction(self) -> str:
        return "dropped" if self.observed < self.expected else "improved"

    def __str__(self) -> str:
        hint = ("quality regression" if self.direction == "dropped"
                else "better than pinned: re-pin with `python -m medkb.eval.baseline --update`")
        return (f"{self.mode} {self.metric}: {self.observed:.4f} vs pinned {self.expected:.4f} "
                f"(tolerance ±{self.tolerance}) — {hint}")


def shared_data_root() -> Path:
    return Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data"))


def load_config(path: Path = BASELINE) -> dict[str, Any]:
    cfg = read_json(path, "baseline config")
    for key in ("dataset", "split", "queries", "distractors", "seed", "modes", "k", "tolerance"):
        if key not in cfg:
            raise BadRecord(str(path), "missing", field=key)
    return cfg


def run_baseline(cfg: dict[str, Any], settings: Settings | None = None, data_root: Path | None = None,
                 progress: Any = None) -> RetrievalRun:
    """Build the slice from the shared data (never committed), then the ordinary ``eval retrieval`` run."""
    src = (data_root or shared_data_root()) / cfg["dataset"]
    if not src.is_dir():
        raise NotFound(f"baseline needs {src} (../shared/data)")
    settings = settings or Settings()
    if cfg.get("embedding_model"):
        settings = settings.model_copy(update={"embedding": settings.embedding.model_copy(
            update={"model": cfg["embedding_model"]})})
    with tempfile.TemporaryDirectory(prefix="medkb-baseline-") as tmp:
        ds = slice_beir(load_beir(src, cfg["split"]), Path(tmp) / cfg["name"], queries=cfg["queries"],
                        distractors=cfg["distractors"], seed=cfg["seed"])
        ds.name = cfg["name"]
        return run_retrieval(ds, settings, cfg["modes"], k=cfg["k"], progress=progress)


def check(cfg: dict[str, Any], run: RetrievalRun) -> list[Finding]:
    """Every pinned figure that moved beyond its tolerance, either way (the pinned numbers stay honest)."""
    out: list[Finding] = []
    expected = cfg.get("expected") or {}
    for mode in cfg["modes"]:
        if mode not in expected:
            raise BadRecord(str(BASELINE), "no pinned figures; run --update", field=f"expected.{mode}")
        for metric in CHECKED:
            tol = float(cfg["tolerance"].get(metric, cfg["tolerance"].get("default", 0.02)))
            exp, obs = float(expected[mode][metric]), float(run.modes[mode].metrics[metric])
            if abs(obs - exp) > tol + 1e-9:
                out.append(Finding(mode, metric, exp, obs, tol))
    return out


def update(cfg: dict[str, Any], run: RetrievalRun, path: Path = BASELINE) -> None:
    cfg = dict(cfg)
    cfg["expected"] = {m: {k: r.metrics[k] for k in CHECKED} for m, r in run.modes.items()}
    c = run.config
    cfg["measured"] = {
        "date": dt.date.today().isoformat(), "git_commit": c.get("git_commit"),
        "embedding_model": c.get("embedding_model"), "fusion": c.get("fusion"),
        "fusion_weights": c.get("fusion_weights"), "kb": c.get("kb"), "machine": c.get("machine"),
        "latency_ms_p50": {m: r.metrics["latency_ms_p50"] for m, r in run.modes.items()},
        "seconds_total": c.get("seconds_total"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medkb.eval.baseline", description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="re-measure and rewrite the pinned figures")
    ap.add_argument("--config", type=Path, default=BASELINE)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(args.config)
    run = run_baseline(cfg, progress=lambda m: print(m, file=sys.stderr))
    for mode, r in run.modes.items():
        print(mode, {k: r.metrics[k] for k in (*CHECKED, "latency_ms_p50")})
    if args.update:
        update(cfg, run, args.config)
        print(f"pinned figures written to {args.config}")
        return 0
    findings = check(cfg, run)
    for f in findings:
        print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
