"""The evidence gate: a calibrated relevance score per passage and per answer, from signals retrieval already has."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from medkb.errors import ConfigError
from medkb.retrieval.bm25 import BM25Generator
from medkb.retrieval.types import SearchResult
from medkb.settings import GateSettings

# The signals, in the order the model's coefficients use them. All come from the search that already ran:
# the dense generator's stored-vector cosines, BM25 scores and the index's document frequencies, ranks.
FEATURES = (
    "dense_cos",     # cosine of query and passage (the dense generator's score, from stored vectors)
    "dense_gap",     # that cosine minus the cosine of the dense run's 20th candidate (the KB's background)
    "lex_norm",      # BM25 score / the query's total IDF (the score a passage containing every term nears)
    "idf_cov",       # share of the query's IDF mass whose terms the passage contains
    "query_oov",     # share of the query's IDF mass in terms the knowledge base has never seen
    "bm25_rrank",    # 1 / rank in the BM25 run (0 when BM25 missed it)
    "dense_rrank",   # 1 / rank in the dense run (0 when dense missed it)
    "hit_rrank",     # 1 / rank after fusion
)
# The answer's signals: the best value over the hits and the top hit's value of the first five passage signals.
ANSWER_BASE = FEATURES[:5]
ANSWER_FEATURES = tuple(f"max_{f}" for f in ANSWER_BASE) + tuple(f"top_{f}" for f in ANSWER_BASE)
BACKGROUND_RANK = 20
MODEL_FILE = "gate_model.json"


def answer_features(x: np.ndarray) -> np.ndarray:
    """The answer-level row of ``ANSWER_FEATURES`` from the per-hit rows of ``FEATURES`` (hits in rank order)."""
    base = np.atleast_2d(x)[:, : len(ANSWER_BASE)]
    return np.concatenate([base.max(axis=0), base[0]])


@dataclass(frozen=True)
class LogReg:
    """A fitted logistic regression over standardised inputs."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LogReg:
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef")), float(d["intercept"]))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = ((np.atleast_2d(x) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class GateModel:
    """Two small logistic regressions with the curve of their development split: per passage, the probability
    that it is evidence for the question; per answer, that the knowledge base holds the answer at all."""

    version: str
    passage: LogReg
    answer: LogReg
    passage_threshold: float  # a passage below it is never evidence
    threshold: float  # the default operating point on the answer score
    target_coverage: float  # the answerable coverage that threshold was chosen for
    curve: list[dict[str, float]] = field(default_factory=list)  # threshold, coverage, abstention on dev
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "gate model") -> GateModel:
        try:
            feats, afeats = tuple(data["features"]), tuple(data["answer_features"])
            if feats != FEATURES or afeats != ANSWER_FEATURES:
                raise ConfigError(f"{where}: its features do not match this medkb's ({', '.join(FEATURES)}); "
                                  "refit it with `medkb eval fit-gate`")
            return cls(str(data["version"]), LogReg.from_json(data["passage"]), LogReg.from_json(data["answer"]),
                       float(data["passage_threshold"]), float(data["threshold"]), float(data["target_coverage"]),
                       list(data.get("curve", [])), dict(data.get("training", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: not a gate model ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: Path | None = None) -> GateModel:
        """The model at ``path``, or the one shipped inside the package."""
        if path is None:
            text = resources.files("medkb.retrieval").joinpath(MODEL_FILE).read_text(encoding="utf-8")
            return cls.from_json(json.loads(text), f"medkb/retrieval/{MODEL_FILE}")
        if not Path(path).is_file():
            raise ConfigError(f"MEDKB_GATE_MODEL_PATH: {path} does not exist")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_json(data, str(path))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "features": list(FEATURES), "answer_features": list(ANSWER_FEATURES),
                "passage": self.passage.to_json(), "answer": self.answer.to_json(),
                "passage_threshold": self.passage_threshold, "threshold": self.threshold,
                "target_coverage": self.target_coverage, "training": self.training, "curve": self.curve}

    def score(self, x: np.ndarray) -> tuple[list[float], float]:
        """(per-hit passage scores, the answer score) for one question's hit rows."""
        if len(x) == 0:
            return [], 0.0
        return [float(v) for v in self.passage(x)], float(self.answer(answer_features(x))[0])

    def threshold_for(self, coverage: float) -> float:
        """The highest answer threshold whose development answerable coverage is at least ``coverage``."""
        if not 0.0 < coverage <= 1.0:
            raise ConfigError(f"MEDKB_GATE_TARGET_COVERAGE must be in (0, 1], not {coverage}")
        ok = [p["threshold"] for p in self.curve if p["coverage"] >= coverage]
        return max(ok) if ok else min((p["threshold"] for p in self.curve), default=0.0)


@dataclass
class GateDecision:
    """Per hit: its features and passage score; the answer score; the thresholds. Disabled, it passes every hit."""

    enabled: bool
    threshold: float
    passage_threshold: float
    scores: list[float]
    answer_score: float
    features: list[dict[str, float]]
    model_version: str | None

    @property
    def answers(self) -> bool:
        return not self.enabled or self.answer_score >= self.threshold

    def passed(self, i: int) -> bool:
        return not self.enabled or (self.answers and self.scores[i] >= self.passage_threshold)

    def evidence(self, limit: int) -> list[int]:
        """Indices of the hits shown as evidence: those that passed, in rank order, at most ``limit``."""
        return [i for i in range(len(self.scores)) if self.passed(i)][:limit]

    def summary(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        return {"enabled": True, "answer_score": round(self.answer_score, 4), "threshold": round(self.threshold, 4),
                "best_passage_score": round(max(self.scores, default=0.0), 4),
                "passage_threshold": round(self.passage_threshold, 4),
                "passed": sum(self.passed(i) for i in range(len(self.scores))), "model_version": self.model_version}


def gate_features(bm25: BM25Generator, query: str, result: SearchResult) -> np.ndarray:
    """One row of ``FEATURES`` per hit of ``result``."""
    hits = result.hits
    x = np.zeros((len(hits), len(FEATURES)), dtype=np.float64)
    if not hits:
        return x
    qt = bm25.query_terms(query, [h.chunk.id for h in hits])
    total = qt.total_idf
    dense_run = result.run_scores.get("dense") or []
    floor = dense_run[-1] if dense_run else 0.0  # a hit dense did not return scores at most this
    background = dense_run[min(BACKGROUND_RANK, len(dense_run)) - 1] if dense_run else 0.0
    oov = float(qt.idf[qt.df == 0].sum() / total) if total > 0 else 1.0
    for i, h in enumerate(hits):
        gens = (h.trace or {}).get("generators", {})
        dense, lex = gens.get("dense"), gens.get("bm25")
        cos = float(dense["score"]) if dense else floor
        x[i] = (
            cos,
            cos - background,
            float(lex["score"]) / total if lex and total > 0 else 0.0,
            float(qt.idf[qt.present[i]].sum() / total) if total > 0 else 0.0,
            oov,
            1.0 / lex["rank"] if lex else 0.0,
            1.0 / dense["rank"] if dense else 0.0,
            1.0 / (i + 1),
        )
    return x


class EvidenceGate:
    """Scores every hit of a search and decides which may be shown as evidence or sent to an LLM."""

    def __init__(self, bm25: BM25Generator, settings: GateSettings, model: GateModel | None = None) -> None:
        self.bm25, self.settings = bm25, settings
        self.model = model or GateModel.load(settings.model_path)
        self.threshold = self.operating_point(self.model, settings)

    @staticmethod
    def operating_point(model: GateModel, settings: GateSettings) -> float:
        """MEDKB_GATE_THRESHOLD, else the threshold reaching MEDKB_GATE_TARGET_COVERAGE, else the model's own."""
        if settings.threshold is not None:
            return float(settings.threshold)
        if settings.target_coverage is not None:
            return model.threshold_for(settings.target_coverage)
        return model.threshold

    def assess(self, query: str, result: SearchResult) -> GateDecision:
        n = len(result.hits)
        if not self.settings.enabled:
            return GateDecision(False, self.threshold, 0.0, [1.0] * n, 1.0, [{}] * n, None)
        x = gate_features(self.bm25, query, result)
        scores, answer = self.model.score(x)
        feats = [{f: round(float(v), 4) for f, v in zip(FEATURES, row)} for row in x]
        return GateDecision(True, self.threshold, self.model.passage_threshold, scores, answer, feats,
                            self.model.version)
