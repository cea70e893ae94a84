"""Retrieval evaluation runs: ingest a BEIR corpus into a (throwaway) KB, search every query per mode, score."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkb import __version__
from medkb.errors import InvalidInput
from medkb.eval.datasets import BeirDataset
from medkb.eval.metrics import best_chunk_per_doc, evaluate, per_query, percentile
from medkb.kb.filters import SearchFilters
from medkb.kb.models import PUBLIC_TENANT
from medkb.kb.store import KnowledgeStore
from medkb.settings import Settings

log = logging.getLogger(__name__)

MODES = ("hybrid", "bm25", "dense", "graph")
HEADLINE = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
CURVE_KS = (1, 3, 5, 10, 20, 50, 100)
Progress = Callable[[str], None]


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]  # the headline metrics + latency + query count, as written to JSON
    recall_curve: dict[int, float]
    latencies_ms: list[float]
    run: dict[str, list[str]]  # query id -> document ids, best first
    ndcg_per_query: dict[str, float]
    seconds: float
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> judged query -> value


@dataclass
class RetrievalRun:
    dataset: str
    modes: dict[str, ModeResult]
    config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Metrics per mode, the configuration, and each judged query's nDCG@10 per mode (for paired tests)."""
        return {"dataset": self.dataset, "modes": {m: r.metrics for m, r in self.modes.items()},
                "config": self.config,
                "per_query": {m: {"ndcg@10": {q: round(v, 6) for q, v in r.ndcg_per_query.items()}}
                              for m, r in self.modes.items()}}


def check_modes(modes: Sequence[str]) -> list[str]:
    if not modes:
        return ["hybrid"]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise InvalidInput(f"--mode {bad[0]!r}: choose among {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def score_run(mode: str, run: dict[str, list[str]], qrels: dict[str, dict[str, int]],
              latencies_ms: list[float], seconds: float = 0.0) -> ModeResult:
    """Metrics of one mode's document rankings (shared by the BEIR runner and QA's retrieval-only path)."""
    metrics = evaluate(run, qrels, HEADLINE)
    metrics = {k: round(v, 4) for k, v in metrics.items()}
    metrics["latency_ms_p50"] = round(percentile(latencies_ms, 50), 2)
    metrics["latency_ms_p95"] = round(percentile(latencies_ms, 95), 2)
    metrics["queries"] = len(run)
    curve = {k: round(v, 4) for k, v in
             zip(CURVE_KS, evaluate(run, qrels, [f"recall@{k}" for k in CURVE_KS]).values())}
    pq = {m: per_query(run, qrels, m) for m in HEADLINE}
    return ModeResult(mode, metrics, curve, latencies_ms, run, pq["ndcg@10"], seconds, pq)


def ingest_corpus(store: KnowledgeStore, settings: Settings, corpus: Path, source: str,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Put the corpus into ``store`` as public literature under ``source`` (a no-op when already there)."""
    from medkb.ingest.pipeline import ingest_documents, load_linker
    from medkb.kb.embeddings import embedder_for

    es = settings.embedding
    embedder = embedder_for(es)
    t0 = time.perf_counter()
    done = [0]

    def tick(docs: int, chunks: int) -> None:
        done[0] += docs
        if progress and docs and done[0] % 1000 == 0:
            progress(f"ingesting {corpus.name}: {done[0]} documents ({time.perf_counter() - t0:.0f}s)")

    rep = ingest_documents(store, embedder, [corpus], tenant_id=PUBLIC_TENANT, source=source,
                           doc_type="literature", lang="en", version="1", effective_date=None, fmt="beir",
                           linker=load_linker(store), progress=tick)
    secs = time.perf_counter() - t0
    if progress:
        progress(f"ingested {corpus}: {rep.added} added, {rep.unchanged} unchanged, {rep.chunks} chunks "
                 f"in {secs:.1f}s")
    if rep.failed:
        log.warning("%d corpus records failed to ingest, e.g. %s", len(rep.failed), rep.failed[0])
    return {"added": rep.added, "unchanged": rep.unchanged, "chunks": rep.chunks,
            "failed": len(rep.failed), "seconds": round(secs, 1)}


def run_modes(store: KnowledgeStore, settings: Settings, ds: BeirDataset, modes: Sequence[str], *,
              k: int = 100, source: str | None = None, progress: Progress | None = None,
              retriever: Any = None) -> dict[str, ModeResult]:
    """Every query of ``ds`` through ``Retriever.search`` in each mode, over the same KB and filters."""
    from medkb.retrieval.retriever import build_retriever

    retriever = retriever or build_retriever(store, settings)
    if hasattr(retriever, "warm"):
        retriever.warm()
    filters = SearchFilters(tenant_id=PUBLIC_TENANT, sources=(source,) if source else None)
    out: dict[str, ModeResult] = {}
    for mode in modes:
        first = next(iter(ds.queries.values()))
        retriever.search(first, filters, k=k, mode=mode)  # untimed: loads models and indexes
        run: dict[str, list[str]] = {}
        lat: list[float] = []
        t_mode = time.perf_counter()
        for i, (qid, text) in enumerate(ds.queries.items(), 1):
            t0 = time.perf_counter()
            res = retriever.search(text, filters, k=k, mode=mode)
            lat.append((time.perf_counter() - t0) * 1000.0)
            run[qid] = best_chunk_per_doc([h.chunk.external_id for h in res.hits])
            if progress and i % 250 == 0:
                progress(f"{mode}: {i}/{len(ds.queries)} queries")
        out[mode] = score_run(mode, run, ds.qrels, lat, time.perf_counter() - t_mode)
        if progress:
            m = out[mode].metrics
            progress(f"{mode}: nDCG@10 {m['ndcg@10']:.3f} R@100 {m['recall@100']:.3f} "
                     f"p50 {m['latency_ms_p50']:.1f} ms")
    return out


def load_ontologies(store: KnowledgeStore, names: Sequence[str], progress: Progress | None = None) -> None:
    """Ontologies give graph mode entities to link and traverse; a throwaway KB has none otherwise."""
    if not names:
        return
    from medkb.ingest.ontologies import load_ontology

    for name in names:
        t0 = time.perf_counter()
        load_ontology(store, name)
        if progress:
            progress(f"ontology {name} loaded in {time.perf_counter() - t0:.1f}s")


def run_retrieval(ds: BeirDataset, settings: Settings, modes: Sequence[str], *, k: int = 100,
                  db_url: str | None = None, ontologies: Sequence[str] = (),
                  progress: Progress | None = None) -> RetrievalRun:
    """The whole ``medkb eval retrieval``: KB (throwaway unless ``db_url``), ingest, search, score, config."""
    from medkb.kb.embeddings import model_dimension
    from medkb.kb.factory import init_store, open_store

    modes = check_modes(modes)
    if not 10 <= k <= 1000:
        raise InvalidInput(f"--k {k}: the retrieval depth must be between 10 and 1000 (Recall@100 needs 100)")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medkb-eval-") as tmp:
        url = db_url or f"sqlite:///{Path(tmp) / 'eval.db'}"
        s = settings.with_database(url)
        store = open_store(s.database)
        try:
            init_store(store, model_dimension(s.embedding.model))
            load_ontologies(store, ontologies, progress)
            ingest = ingest_corpus(store, s, ds.corpus_path, ds.name, progress)
            results = run_modes(store, s, ds, modes, k=k, source=ds.name, progress=progress)
            config = run_config(store, s, k=k, dataset=ds, ingest=ingest, reused_db=bool(db_url))
            config["ontologies"] = list(ontologies)
        finally:
            store.close()
    config["seconds_total"] = round(time.perf_counter() - t_all, 1)
    return RetrievalRun(ds.name, results, config)


# --- configuration record (what makes two runs comparable) --------------------------------------------


def git_commit() -> str | None:
    """HEAD of the checkout medkb runs from, '+dirty' when it has local changes; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "os": platform.platform(),
            "python": platform.python_version()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"medkb": __version__}
    for pkg in ("bm25s", "sentence-transformers", "torch", "numpy", "networkx", "sqlalchemy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def run_config(store: KnowledgeStore, settings: Settings, *, k: int, dataset: BeirDataset | None = None,
               ingest: dict[str, Any] | None = None, reused_db: bool = False) -> dict[str, Any]:
    from medkb.kb.factory import redact

    model, dim = store.embedding_info()
    rs = settings.retrieval.model_dump()
    cfg: dict[str, Any] = {
        "embedding_model": model or settings.embedding.model,
        "embedding_dim": dim,
        "fusion": rs.get("fusion", "rrf"),
        "fusion_weights": {g: rs.get(f"{g}_weight") for g in ("bm25", "dense", "graph", "patient")},
        "retrieval": rs,
        "k": k,
        "medkb_version": __version__,
        "versions": _versions(),
        "git_commit": git_commit(),
        "machine": machine(),
        "database": redact(settings.database.url) if reused_db else f"throwaway {store.backend}",
        "kb": {t: store.count(t) for t in ("documents", "chunks", "entities", "edges", "mentions")},
    }
    if dataset is not None:
        cfg["split"] = dataset.split
        cfg["queries"] = len(dataset.queries)
        cfg["judgements"] = sum(len(r) for r in dataset.qrels.values())
    if ingest is not None:
        cfg["ingest"] = ingest
    return cfg
