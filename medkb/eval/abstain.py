"""Abstention evaluation: answerable and unanswerable questions over one KB, scored through the evidence gate."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from medkb.errors import InvalidInput
from medkb.eval.datasets import load_beir, write_beir
from medkb.eval.metrics import percentile
from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.gate import FEATURES, GateModel, gate_features
from medkb.sample.slicer import DATA as SAMPLE_DATA
from medkb.settings import Settings

Progress = Callable[[str], None]
SPLITS = ("pubmedqa-dev", "pubmedqa-sample", "bioasq")
BIOASQ_QUESTIONS = 150  # per side (answerable, unanswerable): keeps the throwaway KB quick to embed
BIOASQ_DISTRACTORS = 600


@dataclass
class Question:
    id: str
    text: str
    gold: tuple[str, ...]  # external ids of the documents that answer it


@dataclass
class Split:
    """Questions and the corpus of the knowledge base they are asked of (some questions' gold is absent)."""

    name: str
    description: str
    questions: list[Question]
    corpus: list[dict[str, Any]]  # BEIR rows; ingested into a throwaway KB unless one is given


def _hash(ident: str, seed: str = "medkb-abstain") -> str:
    return hashlib.sha1(f"{seed}:{ident}".encode()).hexdigest()


def _pubmedqa(root: Path) -> dict[str, Any]:
    p = root / "ori_pqal.json"
    if not p.is_file():
        raise InvalidInput(f"PubMedQA-L not found: {p} (--pubmedqa)")
    return json.loads(p.read_text(encoding="utf-8"))


def _abstract(pmid: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"_id": pmid, "title": "", "text": " ".join(item.get("CONTEXTS", []))}


def load_split(name: str, *, pubmedqa: Path, bioasq: Path, max_questions: int | None = None) -> Split:
    """One of ``SPLITS``. Question order and the answerable/unanswerable cut are deterministic (hash order)."""
    if name in ("pubmedqa-dev", "pubmedqa-sample"):
        data = _pubmedqa(pubmedqa)
        sample = set(json.loads((SAMPLE_DATA / "pubmedqa" / "pubmedqa_sample.json").read_text(encoding="utf-8")))
        if name == "pubmedqa-sample":
            qs = [Question(p, it["QUESTION"], (p,)) for p, it in data.items()]
            corpus = [_abstract(p, data[p]) for p in data if p in sample]
            desc = ("PubMedQA-L: all 1,000 questions over the 200 abstracts `make run` ingests (medkb/sample); "
                    "800 questions' abstracts are absent")
        else:
            rest = [p for p in data if p not in sample]
            keep = set(sorted(rest, key=_hash)[: len(rest) // 2])
            qs = [Question(p, data[p]["QUESTION"], (p,)) for p in rest]
            corpus = [_abstract(p, data[p]) for p in rest if p in keep]
            desc = (f"PubMedQA-L without the 200 sample abstracts: {len(rest)} questions over a KB of half of "
                    f"their abstracts ({len(keep)}, hash order)")
    elif name == "bioasq":
        ds = load_beir(bioasq)
        order = sorted(ds.qrels, key=_hash)
        n = min(len(order) // 3, BIOASQ_QUESTIONS)
        absent_q, present_q, others = order[:n], order[n : 2 * n], order[2 * n :]
        removed = {d for q in absent_q for d in ds.qrels[q]}
        keep = {d for q in present_q for d in ds.qrels[q]} - removed
        # Distractors: articles judged for other questions, so the KB is not only the answerable ones' gold.
        pool = sorted({d for q in others for d in ds.qrels[q]} - removed - keep, key=_hash)
        keep |= set(pool[:BIOASQ_DISTRACTORS])
        corpus = [r for r in ds.corpus() if str(r["_id"]) in keep]
        qs = [Question(q, ds.queries[q], tuple(ds.qrels[q])) for q in absent_q + present_q]
        desc = (f"BioASQ (bioasq-dev): {2 * n} expert questions (hash order); the {len(removed)} articles judged "
                f"for half of them are left out of a KB of {len(corpus)} articles (the other half's judged "
                f"articles and {min(len(pool), BIOASQ_DISTRACTORS)} judged for further questions)")
    else:
        raise InvalidInput(f"--split must be one of {', '.join(SPLITS)} (got {name!r})")
    qs.sort(key=lambda q: _hash(q.id))
    if max_questions:
        qs = qs[:max_questions]
    return Split(name, desc, qs, corpus)


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class Asked:
    """One question through retrieval and the gate: each hit's document, features and gate score."""

    id: str
    answerable: bool
    gold: tuple[str, ...]
    docs: list[str]
    features: np.ndarray
    scores: list[float] = field(default_factory=list)  # per hit: the passage score
    answer: float = 0.0  # the answer score
    ms: float = 0.0

    def gold_hits(self) -> list[bool]:
        return [d in self.gold for d in self.docs]


def present_documents(store: KnowledgeStore, filters: SearchFilters, ids: Sequence[str]) -> set[str]:
    """Which of these external ids are documents ``filters`` lets a query see."""
    from medkb.kb.filters import document_clause

    out: set[str] = set()
    ids = sorted(set(ids))
    with store.session() as s:
        for i in range(0, len(ids), 500):
            q = select(m.Document.external_id).where(m.Document.external_id.in_(ids[i : i + 500]),
                                                     document_clause(filters))
            if filters.sources:
                q = q.join(m.Source, m.Source.id == m.Document.source_id)
            out.update(s.scalars(q))
    return out


def ask_all(store: KnowledgeStore, settings: Settings, questions: Sequence[Question], filters: SearchFilters,
            *, k: int = 8, progress: Progress | None = None) -> list[Asked]:
    """Each question through the retriever and the gate's features, exactly as the chat endpoints do."""
    from medkb.retrieval.retriever import build_retriever

    retriever = build_retriever(store, settings)
    present = present_documents(store, filters, [g for q in questions for g in q.gold])
    retriever.search(questions[0].text, filters, k=k)  # untimed: loads models and indexes
    out: list[Asked] = []
    for i, q in enumerate(questions, 1):
        t0 = time.perf_counter()
        res = retriever.search(q.text, filters, k=k, mode="hybrid")
        x = gate_features(retriever.bm25, q.text, res)
        ms = (time.perf_counter() - t0) * 1000
        out.append(Asked(q.id, any(g in present for g in q.gold), q.gold,
                         [h.chunk.external_id for h in res.hits], x, ms=ms))
        if progress and i % 200 == 0:
            progress(f"{i}/{len(questions)} questions")
    return out


def with_kb(split: Split, settings: Settings, fn: Callable[[KnowledgeStore, Settings, SearchFilters], Any], *,
            db_url: str | None = None, tenant: str = m.PUBLIC_TENANT, progress: Progress | None = None) -> Any:
    """Run ``fn`` over the given KB (``db_url``, used as it is) or a throwaway one holding the split's corpus."""
    from medkb.eval.runner import ingest_corpus
    from medkb.kb.embeddings import model_dimension
    from medkb.kb.factory import init_store, open_store

    with tempfile.TemporaryDirectory(prefix="medkb-abstain-") as tmp:
        s = settings.with_database(db_url or f"sqlite:///{Path(tmp) / 'abstain.db'}")
        store = open_store(s.database)
        try:
            if db_url:
                filters = SearchFilters(tenant_id=tenant)
            else:
                init_store(store, model_dimension(s.embedding.model))
                corpus = write_beir(Path(tmp) / split.name, split.corpus, {}, {}) / "corpus.jsonl"
                ingest_corpus(store, s, corpus, split.name, progress)
                filters = SearchFilters(tenant_id=tenant, sources=(split.name,))
            return fn(store, s, filters)
        finally:
            store.close()


# --- scoring -------------------------------------------------------------------------------------------


def outcome(a: Asked, threshold: float, passage_threshold: float, max_chunks: int) -> tuple[bool, bool]:
    """(abstained, gold cited) at an answer threshold: the evidence is the first ``max_chunks`` passing hits."""
    shown = [i for i, s in enumerate(a.scores) if s >= passage_threshold][:max_chunks] \
        if a.answer >= threshold else []
    return not shown, any(a.docs[i] in a.gold for i in shown)


def rates(asked: Sequence[Asked], threshold: float, passage_threshold: float, max_chunks: int) -> dict[str, float]:
    ans = [outcome(a, threshold, passage_threshold, max_chunks) for a in asked if a.answerable]
    una = [outcome(a, threshold, passage_threshold, max_chunks) for a in asked if not a.answerable]
    return {
        "threshold": round(float(threshold), 6),
        "abstention_unanswerable": round(sum(x for x, _ in una) / len(una), 4) if una else float("nan"),
        "gold_cited_answerable": round(sum(c for _, c in ans) / len(ans), 4) if ans else float("nan"),
        "answered_answerable": round(sum(not x for x, _ in ans) / len(ans), 4) if ans else float("nan"),
    }


def curve(asked: Sequence[Asked], passage_threshold: float, max_chunks: int,
          points: int = 101) -> list[dict[str, float]]:
    """The trade-off over answer thresholds: from answering everything to abstaining on everything."""
    best = np.array([a.answer for a in asked])
    grid = np.unique(np.concatenate([np.quantile(best, np.linspace(0, 1, points)), [0.0, 1.0 + 1e-9]]))
    return [rates(asked, float(t), passage_threshold, max_chunks) for t in grid]


def auroc(asked: Sequence[Asked]) -> float:
    """AUROC of the answer score: answerable against unanswerable questions."""
    from sklearn.metrics import roc_auc_score

    y = [a.answerable for a in asked]
    if len(set(y)) < 2:
        return float("nan")
    return round(float(roc_auc_score(y, [a.answer for a in asked])), 4)


def score(asked: Sequence[Asked], model: GateModel) -> None:
    for a in asked:
        a.scores, a.answer = model.score(a.features)


@dataclass
class AbstainRun:
    split: str
    description: str
    metrics: dict[str, Any]
    curve: list[dict[str, float]]
    config: dict[str, Any]
    scores: dict[str, list[float]]  # answer score per question, answerable / unanswerable (for plots)

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "description": self.description, "metrics": self.metrics,
                "curve": self.curve, "config": self.config, "scores": self.scores}


def summarise(split: Split, asked: list[Asked], model: GateModel, threshold: float, max_chunks: int,
              config: dict[str, Any]) -> AbstainRun:
    pt = model.passage_threshold
    at = rates(asked, threshold, pt, max_chunks)
    off = rates(asked, -1.0, -1.0, max_chunks)  # the gate switched off: every hit is shown
    lat = [a.ms for a in asked]
    metrics = {
        **at, "auroc": auroc(asked),
        "answerable": sum(a.answerable for a in asked), "unanswerable": sum(not a.answerable for a in asked),
        "gate_off": {k: off[k] for k in ("abstention_unanswerable", "gold_cited_answerable")},
        "gold_retrieved_answerable": round(float(np.mean([any(a.gold_hits()) for a in asked if a.answerable]
                                                         or [np.nan])), 4),
        "latency_ms_p50": round(percentile(lat, 50), 2), "latency_ms_p95": round(percentile(lat, 95), 2),
    }
    config = {**config, "gate_model": model.version, "threshold": threshold, "passage_threshold": pt,
              "max_chunks": max_chunks, "features": list(FEATURES)}
    best = {"answerable": [], "unanswerable": []}  # type: dict[str, list[float]]
    for a in asked:
        best["answerable" if a.answerable else "unanswerable"].append(round(a.answer, 4))
    return AbstainRun(split.name, split.description, metrics, curve(asked, pt, max_chunks), config, best)


def run_abstain(split: Split, settings: Settings, *, db_url: str | None = None, tenant: str = m.PUBLIC_TENANT,
                k: int = 8, max_chunks: int = 5, model: GateModel | None = None,
                progress: Progress | None = None) -> AbstainRun:
    """The whole ``medkb eval abstain``: KB, every question through retrieval and the gate, rates, curve, AUROC."""
    from medkb.eval.runner import run_config
    from medkb.retrieval.gate import EvidenceGate

    t0 = time.perf_counter()

    def go(store: KnowledgeStore, s: Settings, filters: SearchFilters) -> tuple[list[Asked], dict[str, Any]]:
        return ask_all(store, s, split.questions, filters, k=k, progress=progress), \
            run_config(store, s, k=k, reused_db=bool(db_url))

    asked, config = with_kb(split, settings, go, db_url=db_url, tenant=tenant, progress=progress)
    if not asked:
        raise InvalidInput(f"split {split.name}: no questions")
    model = model or GateModel.load(settings.gate.model_path)
    threshold = EvidenceGate.operating_point(model, settings.gate)
    score(asked, model)
    config["seconds_total"] = round(time.perf_counter() - t0, 1)
    config["tenant"] = tenant
    return summarise(split, asked, model, threshold, max_chunks, config)
