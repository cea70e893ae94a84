"""Compare two run JSON files: metric by metric against a tolerance, and by a paired test over per-query nDCG@10."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord, InvalidInput
from medkb.eval.datasets import read_json

QUALITY = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
LATENCY = ("latency_ms_p50", "latency_ms_p95")


@dataclass(frozen=True)
class Delta:
    mode: str
    metric: str
    a: float | None
    b: float | None
    regression: bool

    @property
    def diff(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


def load_run(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    data = read_json(p, "run file")
    if not isinstance(data, dict) or not isinstance(data.get("modes"), dict):
        raise BadRecord(str(p), "not a medkb eval run (no 'modes' object)", field="modes")
    for mode, metrics in data["modes"].items():
        if not isinstance(metrics, dict):
            raise BadRecord(str(p), "expected an object of metrics", field=f"modes.{mode}")
        for k, v in metrics.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise BadRecord(str(p), f"metric value {v!r} is not a number", field=f"modes.{mode}.{k}")
    return data


def compare(a: dict[str, Any], b: dict[str, Any], *, tolerance: float = 0.01,
            latency_tolerance: float | None = None) -> list[Delta]:
    """B against A for every mode and metric either has. A quality metric regresses when B is lower than A
    by more than ``tolerance`` (absolute); latency regresses when B is slower by more than
    ``latency_tolerance`` (relative, e.g. 0.5 = 50 %; None = never flagged, latency is machine-dependent)."""
    if tolerance < 0:
        raise InvalidInput(f"--tolerance must be >= 0 (got {tolerance})")
    out: list[Delta] = []
    modes = list(dict.fromkeys([*a["modes"], *b["modes"]]))
    for mode in modes:
        ma, mb = a["modes"].get(mode, {}), b["modes"].get(mode, {})
        names = [n for n in dict.fromkeys([*ma, *mb]) if n != "queries"]
        for name in names:
            va, vb = ma.get(name), mb.get(name)
            reg = False
            if va is not None and vb is not None:
                if name in LATENCY:
                    reg = latency_tolerance is not None and vb > va * (1 + latency_tolerance)
                else:
                    reg = vb < va - tolerance - 1e-12
            elif va is not None and name not in LATENCY:
                reg = True  # a metric (or a whole mode) that disappeared counts as a regression
            out.append(Delta(mode, name, va, vb, reg))
    return out


def comparable(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Warnings when the runs differ in what they measured (dataset, model, query count)."""
    warn = []
    if a.get("dataset") != b.get("dataset"):
        warn.append(f"different datasets: {a.get('dataset')} vs {b.get('dataset')}")
    ca, cb = a.get("config", {}), b.get("config", {})
    for key in ("embedding_model", "split", "queries", "k"):
        if ca.get(key) != cb.get(key):
            warn.append(f"different {key}: {ca.get(key)} vs {cb.get(key)}")
    return warn


def format_table(deltas: list[Delta]) -> list[list[str]]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    return [[d.mode, d.metric, f(d.a), f(d.b), "-" if d.diff is None else f"{d.diff:+.4f}",
             "REGRESSION" if d.regression else ""] for d in deltas]


@dataclass(frozen=True)
class Paired:
    """B against A on the queries both runs judged: means, and the two-sided paired t-test's p-value."""

    mode: str
    metric: str
    queries: int
    mean_a: float
    mean_b: float
    p_value: float

    @property
    def diff(self) -> float:
        return self.mean_b - self.mean_a

    def worse(self, alpha: float) -> bool:
        return self.diff < 0 and self.p_value < alpha


def paired_test(a: dict[str, Any], b: dict[str, Any], metric: str = "ndcg@10") -> list[Paired]:
    """A paired t-test (scipy.stats.ttest_rel) of B against A over per-query ``metric``, for every mode both
    runs have; queries judged in only one run are left out. Runs without per-query figures are an error."""
    from scipy.stats import ttest_rel

    out: list[Paired] = []
    for mode in [m for m in a["modes"] if m in b["modes"]]:
        pa, pb = (_per_query(run, mode, metric, name) for run, name in ((a, "A"), (b, "B")))
        common = sorted(set(pa) & set(pb))
        if len(common) < 2:
            raise InvalidInput(f"mode {mode}: the runs share {len(common)} judged queries; a paired test needs 2+")
        x, y = [pa[q] for q in common], [pb[q] for q in common]
        same = all(abs(i - j) < 1e-12 for i, j in zip(x, y))
        p = 1.0 if same else float(ttest_rel(y, x).pvalue)
        out.append(Paired(mode, metric, len(common), sum(x) / len(x), sum(y) / len(y), p))
    return out


def _per_query(run: dict[str, Any], mode: str, metric: str, name: str) -> dict[str, float]:
    values = ((run.get("per_query") or {}).get(mode) or {}).get(metric)
    if not isinstance(values, dict) or not values:
        raise InvalidInput(f"run {name} has no per-query {metric} for mode {mode}; re-run `medkb eval retrieval` "
                           "with this version to record them")
    return {str(q): float(v) for q, v in values.items()}
