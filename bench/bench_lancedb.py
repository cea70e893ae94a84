"""medkb (SQLite) and LanceDB side by side in one run: the same corpus, the same MiniLM vectors, the same queries —
ingest chunks/s, dense and hybrid p50/p95 (query embedding excluded on both sides), nDCG@10 on bioasq-dev; and
why LanceDB's full-text index scores as it does against medkb's BM25 (tokeniser, stemming, stop words, fields).

    .venv/bin/python bench/bench_lancedb.py bioasq [--queries 200]        # bioasq-dev: 7,661 articles, 1 chunk each
    .venv/bin/python bench/bench_lancedb.py scale --db /tmp/i13b/kb-1m.db  # the 1M scale corpus (synthetic, see
                                                                           # bench/scale_corpus.py), speed only

Both sides are fed precomputed vectors (embedded once: bench/scale_corpus.py), so the ingest figures measure the
stores. medkb hybrid is the production retriever (BM25 + dense + graph, weighted RRF); LanceDB hybrid is its own
``query_type="hybrid"`` (native FTS + vector, its default RRF reranker). LanceDB's FTS indexes "title text" like
medkb's BM25 does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scale_corpus as sc  # noqa: E402
from bench_scale import load_avg, pcts  # noqa: E402

from medkb.eval.datasets import load_beir  # noqa: E402
from medkb.eval.metrics import best_chunk_per_doc, evaluate  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.settings import DatabaseSettings, Settings  # noqa: E402

WORK = sc.WORK


class Precomputed:
    """The real embedder's interface over query vectors computed once in a batch (latency excludes embedding)."""

    name, dim, max_tokens = sc.MODEL, 384, 256

    def __init__(self, by_text: dict[str, np.ndarray]) -> None:
        self.by_text = by_text

    def embed_query(self, text: str) -> np.ndarray:
        return self.by_text[text]

    def embed_passages(self, texts):  # type: ignore[no-untyped-def]
        return np.vstack([self.by_text[t] for t in texts])


def ndcg(runs: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    docs = {q: best_chunk_per_doc(r) for q, r in runs.items()}
    return round(evaluate(docs, qrels, ("ndcg@10",))["ndcg@10"], 4)


def lance_table(path: Path, rows: dict[str, list], fts_kwargs: dict | None = None):  # type: ignore[no-untyped-def]
    """A fresh LanceDB table from ``rows``; returns (table, ingest seconds, FTS index seconds)."""
    import lancedb
    import pyarrow as pa

    shutil.rmtree(path, ignore_errors=True)
    db = lancedb.connect(str(path))
    schema = pa.schema([("id", pa.int64()), ("doc", pa.string()), ("tenant", pa.string()), ("text", pa.string()),
                        ("vector", pa.list_(pa.float32(), 384))])
    t0 = time.perf_counter()
    tbl = db.create_table("chunks", schema=schema)
    step = 50_000
    for i in range(0, len(rows["id"]), step):
        tbl.add(pa.table({k: v[i : i + step] if k != "vector" else pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(v[i : i + step], dtype=np.float32).ravel()), 384) for k, v in rows.items()},
            schema=schema))
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tbl.create_fts_index("text", replace=True, **(fts_kwargs or {}))
    return tbl, ingest_s, time.perf_counter() - t0


def timed(fn, items):  # type: ignore[no-untyped-def]
    out, ms = [], []
    for it in items:
        t0 = time.perf_counter()
        out.append(fn(it))
        ms.append((time.perf_counter() - t0) * 1000)
    return out, pcts(ms)


def bioasq(args: argparse.Namespace) -> dict:
    ds = load_beir(sc.BIOASQ)
    queries = {q: t for q, t in ds.queries.items() if q in ds.qrels}
    qids, qvecs = sc.query_vectors(WORK)
    qvec = dict(zip(qids, qvecs))
    vecs = sc.base_vectors(WORK)
    arts = sc.articles()
    report: dict = {"load_start": load_avg(), "articles": len(arts), "queries_scored": len(queries)}

    # medkb: a fresh SQLite knowledge base, one chunk per article, the same vectors.
    db = WORK / "bioasq-peer.db"
    for p in WORK.glob("bioasq-peer.db*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    store.set_embedding_model(sc.MODEL, 384)
    t0 = time.perf_counter()
    sc.ingest_real(store, vecs)
    report["medkb_ingest_chunks_per_s"] = round(len(arts) / (time.perf_counter() - t0))
    from medkb.retrieval.retriever import Retriever

    r = Retriever(store, Settings(), embedder=Precomputed({queries[q]: qvec[q] for q in queries}))
    t0 = time.perf_counter()
    r.warm()
    report["medkb_index_s"] = round(time.perf_counter() - t0, 2)
    ext = dict(zip(range(1, len(arts) + 1), (str(a["_id"]) for a in arts)))  # chunk ids follow article order
    lat = list(queries)[: args.queries]
    for mode in ("dense", "bm25", "hybrid"):
        runs = {q: [ext[h.chunk.id] for h in r.search(queries[q], SearchFilters(), 10, mode).hits] for q in queries}
        report[f"medkb_{mode}_ndcg10"] = ndcg(runs, ds.qrels)
        res, report[f"medkb_{mode}_ms"] = timed(lambda q: r.search(queries[q], SearchFilters(), 10, mode), lat)
        stages = sorted({k for x in res for k in x.timings} - {"total"})
        # Where medkb's time goes: generators run on a thread pool, then chunks are fetched, folded, traced.
        report[f"medkb_{mode}_stage_p50_ms"] = {k: round(float(np.median([x.timings.get(k, 0.0) for x in res])), 2)
                                                for k in stages}

    # LanceDB: the same rows.
    rows = {"id": list(range(1, len(arts) + 1)), "doc": [str(a["_id"]) for a in arts],
            "tenant": ["public"] * len(arts), "text": [f"{a.get('title', '')} {a['text']}".strip() for a in arts],
            "vector": list(vecs)}
    tbl, ingest_s, fts_s = lance_table(WORK / "lance-bioasq", rows)
    report["lance_ingest_chunks_per_s"] = round(len(arts) / ingest_s)
    report["lance_fts_index_s"] = round(fts_s, 2)

    def lance(mode: str, q: str, text: str, t=tbl) -> list[str]:  # type: ignore[no-untyped-def]
        if mode == "dense":
            s = t.search(qvec[q], vector_column_name="vector").distance_type("cosine")
        elif mode == "fts":
            s = t.search(text, query_type="fts", fts_columns="text")
        else:
            s = t.search(query_type="hybrid", vector_column_name="vector", fts_columns="text").vector(qvec[q]).text(text)
        return [d["doc"] for d in s.limit(10).select(["doc", "text"]).to_list()]  # texts too, as medkb returns

    for mode in ("dense", "fts", "hybrid"):
        report[f"lance_{mode}_ndcg10"] = ndcg({q: lance(mode, q, queries[q]) for q in queries}, ds.qrels)
        _, report[f"lance_{mode}_ms"] = timed(lambda q: lance(mode, q, queries[q]), lat)
    if not args.no_analysis:
        report["fts_analysis"] = fts_analysis(rows, queries, ds.qrels)
    report["load_end"] = load_avg()
    store.close()
    return report


def fts_analysis(rows: dict[str, list], queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict:
    """One factor at a time: LanceDB's FTS with each text-processing step switched off, and medkb's BM25 scoring
    (bm25s, k1 1.2, b 0.75) over medkb's tokeniser against variants that keep non-ASCII letters."""
    import re

    import bm25s

    from medkb.text import STOPWORDS_EN, stem_words

    out: dict = {}
    lance_rows = {k: v for k, v in rows.items() if k != "vector"} | {"vector": [np.zeros(384, np.float32)] * len(rows["id"])}
    for name, kw in {"lance default (simple, lower, ascii-fold, stem, stop)": {},
                     "lance no stemming": {"stem": False},
                     "lance no stop words": {"remove_stop_words": False},
                     "lance no ascii folding": {"ascii_folding": False}}.items():
        tbl, _, _ = lance_table(WORK / "lance-fts", lance_rows, kw)
        runs = {q: [d["doc"] for d in tbl.search(t, query_type="fts", fts_columns="text").limit(10)
                    .select(["doc"]).to_list()] for q, t in queries.items()}
        out[name] = ndcg(runs, qrels)
    docs = rows["doc"]
    ascii_term = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
    word = re.compile(r"\w+")
    import unicodedata

    def fold(s: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))

    tokenisers = {
        "medkb terms(): ascii [a-z0-9]+, Lucene stop, Porter2": None,
        "unicode \\w+ (keeps β, α, ö as letters), Lucene stop, Porter2": lambda s: word.findall(s.lower()),
        "ascii-folded then unicode \\w+ (as LanceDB simple+ascii_folding)": lambda s: word.findall(fold(s.lower())),
        "ascii [a-z0-9]+ without the apostrophe rule": lambda s: ascii_term.findall(s.lower()),
    }
    from medkb.text import terms

    for name, tok in tokenisers.items():
        def toks(s: str, tok=tok) -> list[str]:
            if tok is None:
                return terms(s, STOPWORDS_EN, frozenset())  # the Lucene list these figures were measured with
            return stem_words([w for w in tok(s) if w not in STOPWORDS_EN])
        model = bm25s.BM25(k1=1.2, b=0.75)
        model.index([toks(t) for t in rows["text"]], show_progress=False)
        runs = {}
        for q, t in queries.items():
            qt = [w for w in toks(t) if w in model.vocab_dict]
            if not qt:
                runs[q] = []
                continue
            res, _ = model.retrieve([qt], k=10, show_progress=False)
            runs[q] = [docs[i] for i in res[0]]
        out[name] = ndcg(runs, qrels)
    return out


def scale(args: argparse.Namespace) -> dict:
    """LanceDB over the 1M scale corpus read out of the SQLite file; medkb's side is bench_scale's 1M figures."""
    from medkb.kb.sqlite_lib import dbapi as sqlite3

    con = sqlite3.connect(args.db)
    rows: dict[str, list] = {"id": [], "doc": [], "tenant": [], "text": [], "vector": []}
    for cid, doc, tenant, text, emb in con.execute(
            "SELECT c.id, c.document_id, c.tenant_id, d.title || ' ' || c.text, c.embedding "
            "FROM chunks c JOIN documents d ON d.id = c.document_id ORDER BY c.id"):
        rows["id"].append(cid), rows["doc"].append(str(doc)), rows["tenant"].append(tenant)
        rows["text"].append(text), rows["vector"].append(np.frombuffer(emb, dtype=np.float32))
    con.close()
    report: dict = {"chunks": len(rows["id"]), "load_start": load_avg(), "note": sc.SYNTHETIC_NOTE}
    tbl, ingest_s, fts_s = lance_table(WORK / "lance-1m", rows)
    del rows
    report["lance_ingest_chunks_per_s"] = round(report["chunks"] / ingest_s)
    report["lance_fts_index_s"] = round(fts_s, 1)
    t0 = time.perf_counter()
    tbl.create_index(metric="cosine", vector_column_name="vector", index_type=args.vector_index)
    report["lance_vector_index"] = args.vector_index
    report["lance_vector_index_s"] = round(time.perf_counter() - t0, 1)
    qids, qvecs = sc.query_vectors(WORK)
    texts = sc.queries()
    lat = list(zip(qids, qvecs))[: args.queries]
    for mode in ("dense", "fts", "hybrid"):
        def run(item, mode=mode):  # type: ignore[no-untyped-def]
            q, v = item
            if mode == "dense":
                s = tbl.search(v, vector_column_name="vector").distance_type("cosine")
            elif mode == "fts":
                s = tbl.search(texts[q], query_type="fts", fts_columns="text")
            else:
                s = tbl.search(query_type="hybrid", vector_column_name="vector", fts_columns="text").vector(v).text(texts[q])
            return s.limit(10).select(["id"]).to_list()
        _, report[f"lance_{mode}_ms"] = timed(run, lat)
    def top(v, exact: bool) -> set:  # type: ignore[no-untyped-def]
        s = tbl.search(v, vector_column_name="vector").distance_type("cosine")
        return {d["id"] for d in (s.bypass_vector_index() if exact else s).limit(10).select(["id"]).to_list()}
    report["lance_dense_recall_at_10"] = round(float(np.mean(
        [len(top(v, False) & top(v, True)) / 10 for _, v in lat[: args.recall_queries]])), 4)
    _, report["lance_hybrid_tenant_filtered_ms"] = timed(
        lambda it: tbl.search(query_type="hybrid", vector_column_name="vector", fts_columns="text").vector(it[1])
        .text(texts[it[0]]).where("tenant IN ('hosp-a', 'public')", prefilter=True).limit(10).to_list(), lat[:50])
    report["rss_gb"] = round(int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                                      if line.startswith("VmHWM"))) / 1e6, 2)
    report["load_end"] = load_avg()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("bioasq", "scale"))
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--db", default=str(WORK / "kb-1m.db"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-analysis", action="store_true", help="bioasq: skip the one-factor FTS analysis")
    ap.add_argument("--vector-index", default="IVF_HNSW_SQ", help="scale: LanceDB vector index type")
    ap.add_argument("--recall-queries", type=int, default=50, help="scale: dense recall@10 against its exact scan")
    args = ap.parse_args()
    report = bioasq(args) if args.what == "bioasq" else scale(args)
    text = json.dumps(report, indent=1)
    print(text)
    (args.out or WORK / f"bench_lancedb_{args.what}.json").write_text(text)


if __name__ == "__main__":
    main()
