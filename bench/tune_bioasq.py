"""Tune and score the retriever on bioasq-dev: nDCG@10, Recall@10/100, MRR@10 per mode and fusion setting.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_bioasq.py [--db /tmp/bioasq.db] [--grid]

The corpus is ingested once (one chunk per article: title kept as the document title, the text as the
chunk, the embedding of "title. text") into a cached SQLite DB that later runs reuse.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkb.eval.datasets import load_beir  # noqa: E402
from medkb.eval.metrics import best_chunk_per_doc, evaluate  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.kb.records import ChunkIn, DocumentIn  # noqa: E402
from medkb.kb.store import KnowledgeStore  # noqa: E402
from medkb.settings import DatabaseSettings, Settings  # noqa: E402

DATA = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "bioasq-dev"
SOURCE = "bioasq-dev"


def load_data(data: Path = DATA) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """The corpus, the judged queries and their qrels (medkb.eval.datasets, as ``medkb eval`` reads them)."""
    ds = load_beir(data)
    return list(ds.corpus()), {q: t for q, t in ds.queries.items() if q in ds.qrels}, ds.qrels


def ingest(db: str, corpus: list[dict]) -> KnowledgeStore:
    """Open (and on first use fill) the cached bioasq-dev knowledge base."""
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    if store.count("documents") >= len(corpus):
        return store
    from medkb.kb.embeddings import load_embedder

    emb = load_embedder("all-MiniLM-L6-v2")
    store.set_embedding_model(emb.name, emb.dim)
    t0 = time.perf_counter()
    batch = 256
    for i in range(0, len(corpus), batch):
        part = corpus[i : i + batch]
        vecs = emb.embed_passages([f"{d.get('title', '')}. {d['text']}" for d in part])
        for d, v in zip(part, vecs):
            store.add_document(DocumentIn(
                tenant_id="public", source=SOURCE, external_id=str(d["_id"]), title=d.get("title", ""),
                chunks=[ChunkIn(text=d["text"], embedding=v)],
            ))
        print(f"  ingested {i + len(part)}/{len(corpus)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return store


def metrics(runs: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """medkb.eval.metrics over document rankings (a document ranks where its best chunk does); queries
    without a relevant judgement are skipped, as ``medkb eval`` and trec_eval do."""
    docs = {q: best_chunk_per_doc(r) for q, r in runs.items()}
    m = evaluate(docs, qrels, ("ndcg@10", "recall@10", "recall@100", "mrr@10"))
    return {"nDCG@10": m["ndcg@10"], "R@10": m["recall@10"], "R@100": m["recall@100"], "MRR@10": m["mrr@10"]}


def doc_map(store: KnowledgeStore) -> dict[int, str]:
    from sqlalchemy import select

    from medkb.kb import models as m

    with store.engine.connect() as c:
        return dict(c.execute(select(m.Chunk.id, m.Document.external_id)
                              .join(m.Document, m.Document.id == m.Chunk.document_id)).all())


def score_fn(runs_fn: Callable[[str, str], list[int]], queries: dict[str, str], ext: dict[int, str],
             qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    return metrics({qid: [ext[c] for c in runs_fn(qid, q)] for qid, q in queries.items()}, qrels)


def fmt(name: str, m: dict[str, float]) -> str:
    return f"| {name} | " + " | ".join(f"{m[x]:.3f}" for x in ("nDCG@10", "R@10", "R@100", "MRR@10")) + " |"


def grid(cache: dict[str, dict[str, list]], queries: dict[str, str], ext: dict[int, str],
         qrels: dict[str, dict[str, int]]) -> list[tuple[str, dict[str, float]]]:
    """Fusion settings over cached generator runs (no re-retrieval): RRF k and weights, z-score weights."""
    from medkb.retrieval.fusion import fuse

    out = []
    configs: list[tuple[str, str, int, dict[str, float]]] = []
    for k in (5, 10, 20, 30, 60):
        for wb in (0.6, 0.8, 1.0, 1.2, 1.5):
            configs.append((f"rrf k={k} w_bm25={wb}", "rrf", k, {"bm25": wb, "dense": 1.0}))
    for wb in (0.6, 0.8, 1.0, 1.2, 1.5):
        configs.append((f"zscore w_bm25={wb}", "zscore", 60, {"bm25": wb, "dense": 1.0}))
    for name, method, k, w in configs:
        def run(qid: str, _q: str) -> list[int]:
            r = {g: cache[g][qid] for g in ("bm25", "dense")}
            return [c for c, _ in fuse(r, w, method=method, k=k)[:100]]
        out.append((name, score_fn(run, queries, ext, qrels)))
    return out


class _Precomputed:
    """The real embedder, with the 1,497 query vectors computed once in a batch (a shared 2-core box
    embeds one query at a time far slower than in batches); unknown texts go to the model."""

    def __init__(self, base, by_text: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
        self.base, self.by_text = base, by_text
        self.name, self.dim = base.name, base.dim

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.base.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        v = self.by_text.get(text)
        return v if v is not None else self.base.embed_query(text)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", default="/tmp/bioasq.db")
    ap.add_argument("--grid", action="store_true", help="also sweep fusion settings on cached runs")
    ap.add_argument("--bm25-grid", action="store_true", help="also sweep BM25 k1/b (rebuilds the index)")
    ap.add_argument("--fusion", choices=("rrf", "zscore"), help="override retrieval.fusion")
    ap.add_argument("--limit", type=int, default=0, help="only the first N queries (smoke runs)")
    args = ap.parse_args(argv)

    corpus, queries, qrels = load_data()
    if args.limit:
        queries = dict(list(queries.items())[: args.limit])
        qrels = {q: qrels[q] for q in queries}
    store = ingest(args.db, corpus)
    ext = doc_map(store)

    from medkb.retrieval.retriever import build_retriever
    from medkb.retrieval.types import Candidate

    settings = Settings()
    if args.fusion:
        settings = settings.model_copy(update={
            "retrieval": settings.retrieval.model_copy(update={"fusion": args.fusion})})
    from medkb.kb.embeddings import load_embedder

    base = load_embedder("all-MiniLM-L6-v2")
    qfile = Path(args.db + ".queries.npy")
    t0 = time.perf_counter()
    if qfile.exists() and np.load(qfile).shape[0] == len(queries):
        mat = np.load(qfile)
    else:
        mat = base.embed_passages(list(queries.values()))
        np.save(qfile, mat)
    print(f"query embeddings ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    qvecs = dict(zip(queries, mat))
    by_text = {q: mat[i] for i, q in enumerate(queries.values())}
    retr = build_retriever(store, settings, embedder=_Precomputed(base, by_text))
    retr.warm()
    f = SearchFilters()
    cache: dict[str, dict[str, list[Candidate]]] = {"bm25": {}, "dense": {}}
    for qid, q in queries.items():
        cache["bm25"][qid] = retr.bm25.search(q, f, 100)
        cache["dense"][qid] = retr.dense.search(qvecs[qid], f, 100)

    rows = [
        ("BM25 (title-aware)", score_fn(lambda i, q: [c.chunk_id for c in cache["bm25"][i]], queries, ext, qrels)),
        ("dense", score_fn(lambda i, q: [c.chunk_id for c in cache["dense"][i]], queries, ext, qrels)),
    ]
    t0 = time.perf_counter()
    rows.append(("graph (Retriever, mode=graph)",
                 score_fn(lambda i, q: [h.chunk.id for h in retr.search(q, f, 100, "graph").hits],
                          queries, ext, qrels)))
    print(f"graph mode: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    from medkb.retrieval.fusion import fuse

    rows.append(("RRF(bm25, dense) k=60 equal", score_fn(
        lambda i, q: [c for c, _ in fuse({g: cache[g][i] for g in cache}, {}, method="rrf", k=60)[:100]],
        queries, ext, qrels)))
    t0 = time.perf_counter()
    rows.append((f"hybrid (Retriever, fusion={settings.retrieval.fusion})", score_fn(
        lambda i, q: [h.chunk.id for h in retr.search(q, f, 100, "hybrid").hits], queries, ext, qrels)))
    print(f"hybrid mode: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print("| run | nDCG@10 | Recall@10 | Recall@100 | MRR@10 |\n|---|---|---|---|---|")
    for name, m in rows:
        print(fmt(name, m))
    if args.grid:
        print("\nfusion sweep on cached bm25/dense top-100 runs:")
        for name, m in sorted(grid(cache, queries, ext, qrels), key=lambda x: -x[1]["nDCG@10"]):
            print(fmt(name, m))
    if args.bm25_grid:
        from medkb.retrieval.bm25 import BM25Generator

        print("\nBM25 k1/b sweep (title-aware):")
        for k1, b in ((0.9, 0.4), (1.2, 0.75), (1.5, 0.75), (1.2, 0.5), (0.7, 0.3)):
            g = BM25Generator(store, k1=k1, b=b)
            print(fmt(f"bm25 k1={k1} b={b}", score_fn(lambda i, q: [c.chunk_id for c in g.search(q, f, 100)],
                                                      queries, ext, qrels)))
    retr.close()


if __name__ == "__main__":
    main()
