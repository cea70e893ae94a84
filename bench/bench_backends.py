"""SQLite vs MariaDB side by side on bioasq-dev: ingest chunks/s and hybrid search p50/p95.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_backends.py [--docs 7661] [--queries 100]
        [--mariadb mysql+pymysql://root@127.0.0.1:3306/]

Both backends ingest the corpus through the real ``ingest_documents`` (parse, chunk, hash, write one
transaction per document); every chunk text is embedded ONCE by the real model (cached in ``--cache``)
and served to both runs from that cache, so the ingest figure measures the stores, not the model. Search runs the same queries through the
full ``Retriever.search`` (hybrid: BM25 + dense + graph, fused), alternating backends query by query so
both see the same machine load; the query embedding is timed apart and subtracted. The MariaDB database
is created for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from medkb.eval.datasets import load_beir  # noqa: E402
from medkb.ingest.chunker import Budget  # noqa: E402
from medkb.ingest.corpora import iter_items  # noqa: E402
from medkb.ingest.pipeline import ingest_documents, to_document  # noqa: E402
from medkb.kb.embeddings import load_embedder  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.settings import DatabaseSettings, Settings  # noqa: E402

DATA = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "bioasq-dev"
MODEL = "all-MiniLM-L6-v2"


def pct(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)), float(np.percentile(xs, 95))


class CachedEmbedder:
    """The real model's passage vectors, computed once and served by text (queries go to the model):
    the ingest figures then measure parse + chunk + hash + link + write, not the model."""

    def __init__(self, model, vectors: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
        self.model, self.vectors = model, vectors
        self.name, self.dim, self.max_tokens = model.name, model.dim, model.max_tokens

    def embed_passages(self, texts):  # type: ignore[no-untyped-def]
        return np.vstack([self.vectors[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.model.embed_query(text)

    def token_count(self, text: str) -> int:
        return self.model.token_count(text)


def corpus_slice(n: int, tmp: Path) -> Path:
    """The first ``n`` articles of bioasq-dev as a BEIR corpus file (all 7,661 by default)."""
    out = tmp / "corpus.jsonl"
    with (DATA / "corpus.jsonl").open() as f, out.open("w") as g:
        for i, line in enumerate(f):
            if i == n:
                break
            g.write(line)
    return out


def embedder_for(corpus: Path, cache: Path) -> CachedEmbedder:
    """Chunk exactly as the pipeline does, embed every chunk text once (cached on disk)."""
    model = load_embedder(MODEL)
    budget = Budget.for_embedder(model)  # as ingest_documents sizes chunks
    texts = sorted({c.text for item in iter_items([corpus], "beir") if not isinstance(item, Exception)
                    for c in to_document(item, tenant_id="public", source="bioasq-dev", doc_type="literature",
                                         lang="en", version="1", effective_date=None, budget=budget).chunks})
    key = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:12]
    path = cache / f"bioasq-{MODEL}-{key}.npy"
    if path.exists():
        vecs = np.load(path)
        print(f"embeddings: {len(texts)} chunk texts reused from {path}")
    else:
        t0 = time.perf_counter()
        vecs = np.asarray(model.embed_passages(texts), dtype=np.float32)
        np.save(path, vecs)
        print(f"embeddings: {len(texts)} chunk texts embedded once in {time.perf_counter() - t0:.0f} s "
              f"(cached in {path}); both backends ingest these same vectors")
    return CachedEmbedder(model, dict(zip(texts, vecs)))


def ingest(url: str, corpus: Path, emb: CachedEmbedder) -> tuple[float, int, int]:
    """The real ``ingest_documents`` (parse, chunk, hash, write one transaction per document)."""
    store = open_store(DatabaseSettings(url=url))
    init_store(store, emb.dim)
    t0 = time.perf_counter()
    report = ingest_documents(store, emb, [corpus], source="bioasq-dev", fmt="beir", lang="en")  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    assert report.ok and report.added == report.documents, report
    store.close()
    return seconds, report.documents, report.chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=7661)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--mariadb", default=os.environ.get("MEDKB_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"))
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    corpus = corpus_slice(args.docs, Path(tmp.name))
    emb = embedder_for(corpus, args.cache)
    server = create_engine(args.mariadb)
    name = f"medkb_bench_{uuid.uuid4().hex[:8]}"
    with server.begin() as c:
        c.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    urls = {"sqlite": f"sqlite:///{Path(tmp.name) / 'kb.db'}", "mariadb": args.mariadb.rstrip("/") + "/" + name}
    try:
        rates = {}
        for backend, url in urls.items():
            seconds, n_docs, chunks = ingest(url, corpus, emb)
            rates[backend] = chunks / seconds
            print(f"[{backend:7s}] ingest {n_docs} documents / {chunks} chunks in {seconds:6.1f} s: "
                  f"{rates[backend]:7.1f} chunks/s (write lanes: {open_store(DatabaseSettings(url=url)).write_lanes})")
        print(f"ingest ratio mariadb/sqlite: {rates['mariadb'] / rates['sqlite']:.2f} (target >= 0.80)")

        from medkb.retrieval.retriever import build_retriever

        ds = load_beir(DATA)
        queries = [q for qid, q in ds.queries.items() if qid in ds.qrels][: args.queries]
        stores = {b: open_store(DatabaseSettings(url=u)) for b, u in urls.items()}
        rets = {b: build_retriever(s, Settings(), embedder=emb.model) for b, s in stores.items()}
        for r in rets.values():
            r.warm()
            r.search(queries[0], SearchFilters(), k=10, mode="hybrid")  # vector matrix, linker, BM25
        total: dict[str, list[float]] = {b: [] for b in urls}
        embed: dict[str, list[float]] = {b: [] for b in urls}
        for q in queries:
            for b, r in rets.items():
                t = r.search(q, SearchFilters(), k=10, mode="hybrid").timings
                embed[b].append(t.get("embed_query", 0.0))
                total[b].append(t["total"] - t.get("embed_query", 0.0))
        for b in urls:
            (p50, p95), (e50, e95) = pct(total[b]), pct(embed[b])
            print(f"[{b:7s}] hybrid search ({len(queries)} queries, k=10) without query embedding: "
                  f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms | query embedding apart: p50 {e50:5.1f} ms  p95 {e95:5.1f} ms")
        s50, s95 = pct(total["sqlite"])
        m50, m95 = pct(total["mariadb"])
        print(f"hybrid search ratio mariadb/sqlite: p50 {m50 / s50:.2f}  p95 {m95 / s95:.2f}")
        for r in rets.values():
            r.close()
        for s in stores.values():
            s.close()
    finally:
        with server.begin() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    main()
