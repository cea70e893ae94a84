"""Scale benchmark on SQLite: 10k, 100k and 1M chunks — ingest rate, index build / load / catch-up, server memory,
search p50/p95 per mode with query embedding shown apart, ANN recall against exact, restart-to-ready.

    nice -n 10 .venv/bin/python bench/scale_corpus.py --db /tmp/i13b/kb-1m.db --chunks 1000000   # once, ~15 min
    .venv/bin/python bench/bench_scale.py --db 10k=/tmp/i13b/kb-10k.db --db 1m=/tmp/i13b/kb-1m.db [--queries 200]

The corpora past the 7,661 real bioasq-dev articles are SYNTHETIC (bench/scale_corpus.py says how); the output
says so. Each size is measured by child processes that play the server: "cold" (opens the knowledge base, builds
or loads every index, answers the queries) then "restart" (the same again: what a restarted server pays), each
reporting its own peak RSS. Ingest is measured in this process: 2,000 chunks appended to the knowledge base at its
size and deleted again (the catch-up after each is timed in the server child), and, once, 1,000 chunks through
the real ``ingest_documents`` with real embedding against the raw embedding rate of the same texts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scale_corpus as sc  # noqa: E402

from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.settings import DatabaseSettings, Settings  # noqa: E402

MODES = ("dense", "bm25", "hybrid")


def pcts(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2)}


def rss_gb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    field = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")}
    return {"rss_gb": round(int(field["VmRSS"]) / 1e6, 2), "peak_rss_gb": round(int(field["VmHWM"]) / 1e6, 2)}


def since_exec() -> float:
    """Seconds since this process started (from /proc: interpreter start-up and imports included)."""
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---- the server child ----------------------------------------------------------------------------

def serve_child(db: str, queries: list[str], recall_queries: int, modes: tuple[str, ...] = MODES) -> dict:
    """Open, warm every index, answer each query in each mode; timings and memory of this process alone."""
    from medkb.retrieval.retriever import build_retriever

    t_start = time.perf_counter()
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    r = build_retriever(store, Settings())
    out: dict = {"ann": bool(getattr(store, "uses_ann", lambda: False)()), "modes": list(modes)}
    if "bm25" in modes or "hybrid" in modes:
        t0 = time.perf_counter()
        r.bm25.index()
        out["bm25_index_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    store.allowed_chunk_ids(SearchFilters())
    out["allowed_ids_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    store.prepare_vectors()
    out["vectors_s"] = round(time.perf_counter() - t0, 2)
    out["ann_load"] = dict(getattr(store, "last_ann_load", {}))
    t0 = time.perf_counter()
    _ = r.embedder
    out["model_load_s"] = round(time.perf_counter() - t0, 2)
    r.search(queries[0], SearchFilters(), k=10, mode=modes[-1])
    out["ready_s"] = round(time.perf_counter() - t_start, 2)
    out["ready_since_exec_s"] = round(since_exec(), 2)  # imports included: what a restarted server pays
    out.update(rss_gb())
    out["load_before_queries"] = load_avg()
    for mode in modes:
        total, emb = [], []
        for q in queries:
            res = r.search(q, SearchFilters(), k=10, mode=mode)
            total.append(res.timings["total"])
            emb.append(res.timings.get("embed_query", 0.0))
        out[mode] = {"search_ms": pcts(total), "minus_embedding_ms": pcts([t - e for t, e in zip(total, emb)])}
        if mode != "bm25":
            out[mode]["embed_query_ms"] = pcts(emb)
    tenant = [r.search(q, SearchFilters(tenant_id="hosp-a"), k=10, mode=modes[-1]) for q in queries[:50]]
    out[f"{modes[-1]}_tenant_hosp_a_minus_embedding_ms"] = pcts(
        [x.timings["total"] - x.timings.get("embed_query", 0.0) for x in tenant])
    if out["ann"] and recall_queries:
        out["ann_recall_at_10"] = ann_recall(store, r.embedder, queries[:recall_queries])
    out.update({f"after_{k}": v for k, v in rss_gb().items()})
    out["load_after"] = load_avg()
    return out


def ann_recall(store, embedder, queries: list[str]) -> float:  # type: ignore[no-untyped-def]
    """ANN top-10 against an exact scan of the very same vectors (the graph's own storage), unfiltered."""
    graph = store._sync_graph()
    allowed = np.isin(graph.positions_ids, store.allowed_chunk_ids(SearchFilters()))
    hits = []
    for q in queries:
        v = embedder.embed_query(q)
        got = {h.chunk_id for h in store.vector_search(v, 10, SearchFilters())}
        scores = np.where(allowed, graph.vectors @ (v / np.linalg.norm(v)), -np.inf)
        want = set(graph.positions_ids[np.argpartition(-scores, 9)[:10]].tolist())
        hits.append(len(got & want) / 10)
    return round(float(np.mean(hits)), 4)


def catch_up_child(db: str, query: str) -> dict:
    """In a warmed server process: time the first dense search after another process appended, then deleted,
    chunks (the dense index's catch-up; the lexical index's is the other half of issue 13, measured there)."""
    from medkb.retrieval.retriever import build_retriever

    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    r = build_retriever(store, Settings())
    store.prepare_vectors()
    r.search(query, SearchFilters(), k=10, mode="dense")
    out = {}
    for step in ("append", "delete"):
        print(f"ready {step}", flush=True)
        sys.stdin.readline()  # the parent has written
        t0 = time.perf_counter()
        res = r.search(query, SearchFilters(), k=10, mode="dense")
        out[f"first_dense_after_{step}_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        out[f"first_dense_after_{step}_timings"] = res.timings
        out[f"ann_after_{step}"] = dict(getattr(store, "last_ann_load", {}))
    return out


def child(args: list[str], env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(f"child {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- ingest ----------------------------------------------------------------------------------------

def append_and_delete(db: str, query: str, env: dict[str, str] | None = None) -> dict:
    """2,000 chunks (40 documents) written into the knowledge base at its size, then deleted, while a warmed
    server child waits; its first search after each write is timed (the catch-up a query pays)."""
    vecs = sc.base_vectors(sc.WORK)
    server = subprocess.Popen([sys.executable, __file__, "--child-catchup", db, query], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    assert server.stdout is not None and server.stdin is not None
    server.stdout.readline()
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    docs = list(sc.synthetic_docs(10_000_000, 40, vecs))  # document numbers no corpus uses
    t0 = time.perf_counter()
    added = [store.add_document(d) for d in docs]
    write_s = time.perf_counter() - t0
    server.stdin.write("go\n")
    server.stdin.flush()
    server.stdout.readline()
    t0 = time.perf_counter()
    for a in added:
        store.delete_document(a.document_id)
    delete_s = time.perf_counter() - t0
    server.stdin.write("go\n")
    server.stdin.flush()
    out = json.loads(server.stdout.read().strip().splitlines()[-1])
    server.wait(60)
    store.close()
    n = sum(len(d.chunks) for d in docs)
    return {"append_chunks": n, "append_chunks_per_s": round(n / write_s), "delete_s": round(delete_s, 2), **out}


def real_ingest(n: int = 1000) -> dict:
    """``n`` chunk texts of the synthetic corpus through the real ingest_documents (parse, chunk, embed, write)
    into a fresh knowledge base, against embedding the same texts alone (same model, same process)."""
    from medkb.ingest.pipeline import ingest_documents
    from medkb.kb.embeddings import load_embedder

    vecs = sc.base_vectors(sc.WORK)
    texts = [c.text for d in sc.synthetic_docs(20_000_000, n // sc.PER_DOC, vecs) for c in d.chunks]
    emb = load_embedder(sc.MODEL, threads=1)
    emb.embed_passages(texts[:32])
    with tempfile.TemporaryDirectory(dir=sc.WORK) as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"_id": f"r{i}", "title": "", "text": t}) + "\n"
                                  for i, t in enumerate(texts)))
        t0 = time.perf_counter()
        emb.embed_passages(texts)
        raw = len(texts) / (time.perf_counter() - t0)
        store = open_store(DatabaseSettings(url=f"sqlite:///{tmp}/kb.db"))
        init_store(store)
        t0 = time.perf_counter()
        rep = ingest_documents(store, emb, [corpus], source="real", fmt="beir", lang="en")
        rate = rep.chunks / (time.perf_counter() - t0)
        store.close()
    return {"texts": len(texts), "chunks": rep.chunks, "ingest_chunks_per_s": round(rate, 1),
            "raw_embed_texts_per_s": round(raw, 1), "ratio": round(rate / raw, 2), "load": load_avg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", action="append", default=[], help="LABEL=PATH of a scale_corpus knowledge base")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=sc.WORK / "bench_scale.json")
    ap.add_argument("--skip-real-ingest", action="store_true")
    ap.add_argument("--skip-write", action="store_true", help="no append/delete from another process")
    ap.add_argument("--modes", default=",".join(MODES), help="search modes to time (the last one is also timed "
                    "tenant-filtered); dense alone skips building the lexical index")
    ap.add_argument("--runs", default="cold,restart", help="server children per size (restart only: indexes exist)")
    ap.add_argument("--child-serve", nargs=2, metavar=("DB", "QUERIES_JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--child-catchup", nargs=2, metavar=("DB", "QUERY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_serve:
        qs = json.loads(Path(args.child_serve[1]).read_text())
        print(json.dumps(serve_child(args.child_serve[0], qs["queries"], qs["recall"], tuple(qs.get("modes", MODES)))))
        return
    if args.child_catchup:
        print(json.dumps(catch_up_child(*args.child_catchup)))
        return
    print(sc.SYNTHETIC_NOTE)
    qs = list(sc.queries().values())[: args.queries]
    qfile = args.out.with_suffix(".queries.json")
    qfile.write_text(json.dumps({"queries": qs, "recall": args.recall_queries, "modes": args.modes.split(",")}))
    report: dict = {"note": sc.SYNTHETIC_NOTE, "sizes": {}}
    if not args.skip_real_ingest:
        report["real_ingest"] = real_ingest()
        print("real ingest:", json.dumps(report["real_ingest"]), flush=True)
    for spec in args.db:
        label, db = spec.split("=", 1)
        # A label ending in "-ann" forces approximate dense search below the default threshold (side by side).
        env = {"MEDKB_DATABASE_ANN_THRESHOLD": "1"} if label.endswith("-ann") else {}
        size: dict = {"load_start": load_avg()}
        for run in args.runs.split(","):
            size[run] = child(["--child-serve", db, str(qfile)], env)
            print(label, f"{run}:", json.dumps(size[run]), flush=True)
        if not args.skip_write:
            size["write"] = append_and_delete(db, qs[0], env)
            print(label, "write:", json.dumps(size["write"]), flush=True)
        report["sizes"][label] = size
        args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}; maxrss of this driver {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
