"""Search latency per mode (p50/p95) on bioasq-dev and on a synthetic 100k-chunk corpus; dense vs bare numpy.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_search.py [--queries 200] [--chunks 100000] [--skip-bioasq]

Query embedding time is reported on its own; "search" is the whole ``Retriever.search`` call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.kb.records import ChunkIn, DocumentIn  # noqa: E402
from medkb.kb.store import KnowledgeStore  # noqa: E402
from medkb.settings import DatabaseSettings, Settings  # noqa: E402

WORDS = ("insulin metformin aspirin warfarin asthma fever migraine sepsis anemia statin cholesterol renal "
         "hepatic cardiac stroke tumour lymphoma dose trial cohort risk therapy infection vaccine antibody "
         "gene mutation protein receptor inhibitor pressure glucose oxygen lung kidney liver brain").split()


def pct(xs: list[float]) -> str:
    a = np.asarray(xs)
    return f"p50 {np.percentile(a, 50):7.2f} ms  p95 {np.percentile(a, 95):7.2f} ms"


def bench_modes(store: KnowledgeStore, queries: list[str], label: str, filters: SearchFilters) -> None:
    from medkb.retrieval.retriever import build_retriever

    r = build_retriever(store, Settings())
    t0 = time.perf_counter()
    r.warm()
    print(f"[{label}] warm-up (BM25 index + filter cache): {time.perf_counter() - t0:.1f} s")
    r.search(queries[0], filters, k=10, mode="hybrid")  # loads the model and the vector matrix
    for mode in ("bm25", "dense", "graph", "hybrid"):
        total, emb = [], []
        for q in queries:
            res = r.search(q, filters, k=10, mode=mode)
            total.append(res.timings["total"])
            if "embed_query" in res.timings:
                emb.append(res.timings["embed_query"])
        line = f"[{label}] {mode:6s} search {pct(total)}"
        if emb:
            no_emb = [t - e for t, e in zip(total, emb)]
            line += f" | embed_query {pct(emb)} | search minus embedding {pct(no_emb)}"
        print(line)
    r.close()


def dense_vs_numpy(store: KnowledgeStore, label: str, n: int = 200) -> None:
    """store.vector_search against a bare matrix product + argpartition over the very same matrix."""
    from sqlalchemy import select

    from medkb.kb import models as m

    store.vector_search(np.ones(384, dtype=np.float32), 10, SearchFilters())  # load the cached matrix
    with store.engine.connect() as c:
        rows = c.execute(select(m.Chunk.__table__.c.embedding).order_by(m.Chunk.id)).all()
    mat = np.vstack([np.asarray(r[0], dtype=np.float32) for r in rows])
    rng = np.random.default_rng(0)
    qs = rng.standard_normal((n, mat.shape[1])).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    t_store, t_np = [], []
    for q in qs:
        t0 = time.perf_counter()
        store.vector_search(q, 100, SearchFilters())
        t_store.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        s = mat @ q
        top = np.argpartition(-s, 99)[:100]
        top[np.argsort(-s[top])]
        t_np.append((time.perf_counter() - t0) * 1000)
    ratio = np.median(t_store) / np.median(t_np)
    print(f"[{label}] dense top-100 over {mat.shape[0]} vectors: store.vector_search {pct(t_store)} | "
          f"bare numpy {pct(t_np)} | ratio of medians {ratio:.2f}x")


def synthetic(db: Path, chunks: int, per_doc: int = 100) -> KnowledgeStore:
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    if store.count("chunks") >= chunks:
        return store
    store.set_embedding_model("all-MiniLM-L6-v2", 384)
    rng = np.random.default_rng(42)
    t0 = time.perf_counter()
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()  # Zipf-like word frequencies, as in real text
    for d in range(chunks // per_doc):
        vecs = rng.standard_normal((per_doc, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        texts = [" ".join(rng.choice(WORDS, size=40, p=p)) for _ in range(per_doc)]
        store.add_document(DocumentIn(
            tenant_id="public" if d % 4 else "hosp-a", source="synthetic", external_id=f"s{d}", title=f"doc {d}",
            chunks=[ChunkIn(text=t, embedding=v) for t, v in zip(texts, vecs)],
        ))
    print(f"[synthetic] built {chunks} chunks in {time.perf_counter() - t0:.0f} s")
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--bioasq-db", default="/tmp/bioasq.db")
    ap.add_argument("--synthetic-db", default="/tmp/synth100k.db")
    ap.add_argument("--skip-bioasq", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads for query embedding (1 avoids thrashing a shared 2-core box)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)

    if not args.skip_bioasq:
        from tune_bioasq import ingest, load_beir

        corpus, queries, _ = load_beir()
        store = ingest(args.bioasq_db, corpus)
        qs = list(queries.values())[: args.queries]
        bench_modes(store, qs, "bioasq-dev", SearchFilters())
        dense_vs_numpy(store, "bioasq-dev")
        store.close()
    if not args.skip_synthetic:
        store = synthetic(Path(args.synthetic_db), args.chunks)
        rng = np.random.default_rng(7)
        qs = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 6)))) for _ in range(args.queries)]
        bench_modes(store, qs, f"synthetic-{args.chunks // 1000}k", SearchFilters())
        bench_modes(store, qs[: max(20, args.queries // 4)], f"synthetic-{args.chunks // 1000}k tenant-filtered",
                    SearchFilters(tenant_id="hosp-a"))
        dense_vs_numpy(store, f"synthetic-{args.chunks // 1000}k")
        store.close()


if __name__ == "__main__":
    main()
