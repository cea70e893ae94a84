"""Fitting the evidence gate: two logistic regressions (per passage, per answer) on a development split."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medkb.errors import InvalidInput
from medkb.eval.abstain import Asked, curve, rates, score
from medkb.retrieval.gate import GateModel, LogReg, answer_features

# The passage threshold keeps this share of the gold citations the ungated top hits would give.
PASSAGE_KEEP = 0.995


def _logreg(x: np.ndarray, y: np.ndarray, c: float) -> LogReg:
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():
        raise InvalidInput("the development split needs both positive and negative examples")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    lr = LogisticRegression(C=c, max_iter=3000).fit((x - mean) / scale, y)
    return LogReg(mean, scale, lr.coef_[0].astype(np.float64), float(lr.intercept_[0]))


def _highest(points: list[dict[str, float]], target: float) -> float:
    ok = [p["threshold"] for p in points if p["gold_cited_answerable"] >= target]
    return max(ok) if ok else min(p["threshold"] for p in points)


def fit_gate(asked: Sequence[Asked], *, target_coverage: float, max_chunks: int, version: str,
             training: dict[str, Any], c: float = 1.0) -> GateModel:
    """Passage model: is this hit a passage of the question's gold document? Answer model: does the KB hold
    the answer? The passage threshold keeps ``PASSAGE_KEEP`` of the gold citations; the answer threshold is
    the highest whose gold-cited rate on answerable questions meets ``target_coverage``."""
    qs = [a for a in asked if len(a.features)]
    if not qs:
        raise InvalidInput("no hits to fit the gate on")
    x = np.vstack([a.features for a in qs])
    y = np.concatenate([np.array([a.answerable and g for g in a.gold_hits()], dtype=np.int64) for a in qs])
    passage = _logreg(x, y, c)
    answer = _logreg(np.vstack([answer_features(a.features) for a in qs]),
                     np.array([a.answerable for a in qs], dtype=np.int64), c)
    model = GateModel(version, passage, answer, 0.0, 0.0, target_coverage)
    score(asked, model)
    off = rates(asked, -1.0, -1.0, max_chunks)["gold_cited_answerable"]
    sweep = sorted({round(s, 6) for a in asked for s in a.scores})
    grid = np.quantile(sweep, np.linspace(0, 1, 401)) if sweep else [0.0]
    passage_threshold = max([float(t) for t in grid
                             if rates(asked, -1.0, float(t), max_chunks)["gold_cited_answerable"]
                             >= PASSAGE_KEEP * off] or [0.0])
    points = curve(asked, passage_threshold, max_chunks, points=201)
    dev_curve = [{"threshold": p["threshold"], "coverage": p["gold_cited_answerable"],
                  "abstention": p["abstention_unanswerable"]} for p in points]
    training = {**training, "passages": int(len(y)), "gold_passages": int(y.sum()), "questions": len(asked),
                "answerable": sum(a.answerable for a in asked), "fitted": dt.date.today().isoformat(),
                "regularisation_C": c, "max_chunks": max_chunks, "passage_keep": PASSAGE_KEEP}
    return GateModel(version, passage, answer, passage_threshold, _highest(points, target_coverage),
                     target_coverage, dev_curve, training)


def save(model: GateModel, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model.to_json(), indent=1) + "\n", encoding="utf-8")
    return path
