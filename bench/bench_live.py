"""Benchmark: a live knowledge base — lexical quality and restart cost of the incremental index, serving during ingest.

    python bench/bench_live.py quality --db sqlite:////tmp/kb/bioasq.db   # bioasq-dev KB (eval retrieval --db)
    python bench/bench_live.py restart --db sqlite:////tmp/kb/bioasq.db
    python bench/bench_live.py live --db sqlite:////tmp/kb/kb-100k.db --docs 5000

quality: bioasq-dev BM25 nDCG@10 of today's full-rebuild bm25s index, of the incremental index (built whole, and
  grown by change-log catch-ups), and of SQLite FTS5 (porter tokeniser, and medkb's own tokens), with build times
  and per-query p50/p95, side by side in one run.
restart: opening the persisted lexical index (load + catch-up + checks) vs building it from the chunks table.
live: `medkb serve` on --db; idle /v1/search p95; then (a) one new document ingested by another process, polled
  until /v1/search finds it, every query's latency recorded; (b) --docs documents ingested by another process
  (synthetic: 3-5 real sentences of bioasq-dev/PubMedQA each, embedded for real) while /v1/search is queried.
Writes bench/out/bench_live_<part>.json; prints `uptime` beside the figures (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
from medkb.kb.sqlite_lib import dbapi as sqlite3  # the SQLite medkb runs on: one library per process
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkb.eval.metrics import best_chunk_per_doc, evaluate  # noqa: E402
from medkb.kb import models as m  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.retrieval.bm25 import BM25Generator, top_candidates  # noqa: E402
from medkb.settings import DatabaseSettings  # noqa: E402

SHARED = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "bench" / "out"
SCRATCH = Path(os.environ.get("MEDKB_BENCH_SCRATCH", "/tmp/medkb-bench-live"))  # logs and ingest files


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), p)) if xs else 0.0


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def bioasq() -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    from medkb.eval.datasets import load_beir

    ds = load_beir(SHARED / "bioasq-dev", "test")
    return ds.queries, ds.qrels


class FullRebuildBM25:
    """Today's index before this change: bm25s over every chunk, rebuilt whole (the reference)."""

    def __init__(self, g: BM25Generator) -> None:
        import bm25s

        with g.store.engine.connect() as c:
            rows = c.execute(g._select().order_by(m.Chunk.id)).all()
        texts = [" ".join(p for p in (r[3], r[2] or "", r[1]) if p) for r in rows]
        self.ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        self.model = bm25s.BM25(k1=g.k1, b=g.b)
        self.model.index([g.tokenize(t) for t in texts], show_progress=False)
        self.g = g

    def search(self, q: str, f: SearchFilters, n: int) -> list:  # type: ignore[type-arg]
        tokens = self.g.tokenize(q)
        scores = np.asarray(self.model.get_scores(tokens), dtype=np.float32) if tokens else np.zeros(self.ids.size)
        mask = np.isin(self.ids, self.g.store.allowed_chunk_ids(f))
        return top_candidates(self.ids, np.where(mask, scores, 0).astype(np.float32), n)


class FTS5:
    """SQLite FTS5 over the same chunk rows, in a scratch database: its own bm25() and tokeniser."""

    def __init__(self, g: BM25Generator, path: Path, medkb_tokens: bool) -> None:
        with g.store.engine.connect() as c:
            rows = c.execute(g._select().order_by(m.Chunk.id)).all()
        path.unlink(missing_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False)
        tok = "unicode61" if medkb_tokens else "porter unicode61"
        self.db.execute(f"CREATE VIRTUAL TABLE f USING fts5(body, tokenize='{tok}')")
        self.g, self.medkb_tokens = g, medkb_tokens
        docs = [(r[0], " ".join(p for p in (r[3], r[2] or "", r[1]) if p)) for r in rows]
        if medkb_tokens:
            docs = [(i, " ".join(g.tokenize(t))) for i, t in docs]
        self.db.executemany("INSERT INTO f(rowid, body) VALUES (?, ?)", docs)
        self.db.commit()

    def search(self, q: str, f: SearchFilters, n: int) -> list:  # type: ignore[type-arg]
        words = self.g.tokenize(q) if self.medkb_tokens else re.findall(r"\w+", q.lower())
        if not words:
            return []
        match = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
        rows = self.db.execute("SELECT rowid, -bm25(f) FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT ?",
                               (match, n * 2)).fetchall()
        allowed = set(self.g.store.allowed_chunk_ids(f).tolist())
        from medkb.retrieval.types import Candidate

        return [Candidate(int(i), float(s)) for i, s in rows if i in allowed][:n]


def run_queries(searcher, store, queries: dict[str, str], qrels, f: SearchFilters) -> dict:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    with store.engine.connect() as c:
        ext = dict(c.execute(select(m.Chunk.id, m.Document.external_id)
                             .join(m.Document, m.Document.id == m.Chunk.document_id)).all())
    run, lat = {}, []
    for qid, text in queries.items():
        t0 = time.perf_counter()
        hits = searcher.search(text, f, 100)
        lat.append((time.perf_counter() - t0) * 1000)
        run[qid] = best_chunk_per_doc([ext[h.chunk_id] for h in hits])
    scores = evaluate(run, qrels, ["ndcg@10", "recall@100"])
    return {**{k: round(v, 4) for k, v in scores.items()}, "p50_ms": round(pct(lat, 50), 2),
            "p95_ms": round(pct(lat, 95), 2), "run": run}


def part_quality(db: str) -> dict:
    store = open_store(DatabaseSettings(url=db))
    init_store(store)
    queries, qrels = bioasq()
    f = SearchFilters(tenant_id=m.PUBLIC_TENANT, sources=("bioasq-dev",))
    store.allowed_chunk_ids(f)
    out: dict = {"load": uptime(), "chunks": store.count("chunks"), "queries": len(queries)}
    systems = {}
    g = BM25Generator(store, index_path=None)
    t0 = time.perf_counter()
    systems["bm25s full rebuild (before)"] = (FullRebuildBM25(g), time.perf_counter() - t0)
    t0 = time.perf_counter()
    g.index()
    systems["incremental, built whole"] = (g, time.perf_counter() - t0)
    # The same rows reached through catch-ups: start from a view holding a random half, then apply the
    # other half as logged changes in 20 batches (plus every first-half chunk "re-written" once more).
    grown = BM25Generator(store, index_path=None)
    view = grown.index()
    from medkb.retrieval import lexical as lx

    rows = view.segments[0]
    rng = np.random.default_rng(7)
    half = rng.permutation(rows.ids)[: rows.size // 2]
    alive = ~np.isin(rows.ids, half)
    v = lx.View(view.segments, (alive,), view.seq, view.generation, 1, view.vocab)
    t0 = time.perf_counter()
    with store.engine.connect() as c:
        for batch in np.array_split(np.concatenate([half, rows.ids[alive][:500]]), 20):
            got = c.execute(grown._select().where(m.Chunk.id.in_(batch.tolist()))).all()
            v = lx.apply_changes(v, batch.tolist(), grown._docs(got), v.seq, v.generation)
            if (full := lx.needs_compaction(v)) is not None:
                v = lx.compact(v, full=full)
    grown._publish(v)
    systems["incremental, grown by 20 catch-ups"] = (grown, time.perf_counter() - t0)
    scratch = SCRATCH if SCRATCH.is_dir() else OUT
    for label, toks in (("FTS5 porter unicode61", False), ("FTS5 on medkb tokens", True)):
        t0 = time.perf_counter()
        systems[label] = (FTS5(g, scratch / f"fts5-{int(toks)}.db", toks), time.perf_counter() - t0)
    ref_run = None
    for label, (searcher, build_s) in systems.items():
        r = run_queries(searcher, store, queries, qrels, f)
        run = r.pop("run")
        if ref_run is None:
            ref_run = run
        same = sum(run[q][:10] == ref_run[q][:10] for q in run) / len(run)
        out[label] = {**r, "build_s": round(build_s, 2), "same_top10_as_before": round(same, 4)}
        print(f"{label:36s} nDCG@10 {r['ndcg@10']:.4f}  R@100 {r['recall@100']:.4f}  build {build_s:6.2f}s  "
              f"p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  same top-10 as before {same:.1%}")
    store.close()
    return out


def part_restart(db: str, repeats: int = 3) -> dict:
    """Open the index as a restarted server does, from the file and from the table, alternately."""
    store = open_store(DatabaseSettings(url=db))
    init_store(store)
    BM25Generator(store).index()  # make sure a current file exists
    loads, builds = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = BM25Generator(store)
        g.index()
        loads.append(time.perf_counter() - t0)
        assert g.loaded_from_file and g.builds == 0
        t0 = time.perf_counter()
        b = BM25Generator(store, index_path=None)
        b.index()
        builds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        FullRebuildBM25(b)
        builds.append(time.perf_counter() - t0)  # today's bm25s build, for reference (counted alike)
    out = {"load": uptime(), "chunks": store.count("chunks"), "file_mb": round(g.path.stat().st_size / 1e6, 1),
           "load_s": [round(x, 3) for x in loads], "build_s (new, bm25s alternating)": [round(x, 3) for x in builds],
           "load_median_s": round(float(np.median(loads)), 3), "build_median_s": round(float(np.median(builds[0::2])), 3),
           "bm25s_build_median_s": round(float(np.median(builds[1::2])), 3)}
    print(f"restart: load {out['load_median_s']:.3f}s vs rebuild {out['build_median_s']:.3f}s "
          f"(bm25s {out['bm25s_build_median_s']:.3f}s) over {out['chunks']} chunks; file {out['file_mb']} MB")
    store.close()
    return out


# ---- live: serving while another process ingests -------------------------------------------------------


def sentences() -> list[str]:
    sents = []
    with (SHARED / "bioasq-dev" / "corpus.jsonl").open() as fh:
        for line in fh:
            sents += re.split(r"(?<=[.!?])\s+", json.loads(line)["text"])
    pq = json.loads((SHARED / "pubmedqa" / "ori_pqal.json").read_text())
    for v in pq.values():
        for c in v["CONTEXTS"]:
            sents += re.split(r"(?<=[.!?])\s+", c)
    return [s for s in sents if 40 <= len(s) <= 400]


def write_docs(path: Path, n: int, seed: int, marker: str | None = None) -> None:
    rng = random.Random(seed)
    sents = sentences()
    with path.open("w") as fh:
        for i in range(n):
            text = " ".join(rng.sample(sents, rng.randint(3, 5)))
            if marker:
                text = f"{marker} {text}"
            fh.write(json.dumps({"id": f"live-{seed}-{i}", "title": f"synthetic live document {seed}-{i}",
                                 "text": text}) + "\n")


class Server:
    def __init__(self, db: str) -> None:
        from medkb.api.auth import create_key

        store = open_store(DatabaseSettings(url=db))
        _, self.key = create_key(store, "public", "curator", name="bench-live")
        store.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.base = f"http://127.0.0.1:{s.getsockname()[1]}"
        env = {**os.environ, "MEDKB_API_RATE_LIMIT_SEARCH": "1000000/minute", "PYTHONPATH": str(ROOT)}
        self.timed: list = []
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "medkb.cli.main", "--db", db, "serve", "--host",
                                      "127.0.0.1", "--port", self.base.rsplit(":", 1)[1]], env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(SCRATCH / "serve.log", "w"))

    def ready(self, timeout: float = 600) -> float:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit("server did not become ready")

    def search(self, client, q: str, mode: str) -> tuple[float, list[str], bool]:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        r = client.post(self.base + "/v1/search", json={"query": q, "k": 10, "mode": mode},
                        headers={"Authorization": f"Bearer {self.key}"}, timeout=60)
        ms = (time.perf_counter() - t0) * 1000
        ok = r.status_code == 200
        body = r.json() if ok else {}
        ext = [h.get("external_id") for h in body.get("hits", [])]
        self.timed.append((round(ms, 1), body.get("timings")))  # the server's own split of the slow ones
        return ms, ext, ok

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def ingest(db: str, path: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "medkb.cli.main", "--db", db, "ingest", "docs", str(path),
                             "--format", "jsonl", "--source", "live", "--no-link"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(SCRATCH / f"ingest-{path.stem}.log", "w"))


def part_live(db: str, docs: int, mode: str, idle_n: int = 150, seed: int = 11) -> dict:
    import httpx

    queries = list(bioasq()[0].values())
    scratch = SCRATCH
    out: dict = {"mode": mode}
    store = open_store(DatabaseSettings(url=db))
    init_store(store)
    out["chunks_before"] = store.count("chunks")
    store.close()
    srv = Server(db)
    try:
        out["ready_s"] = round(srv.ready(), 1)
        with httpx.Client() as client:
            for q in queries[:10]:
                srv.search(client, q, mode)
            idle = [srv.search(client, q, mode)[0] for q in queries[10 : 10 + idle_n]]
            out["idle"] = {"load": uptime(), "p50_ms": round(pct(idle, 50), 1), "p95_ms": round(pct(idle, 95), 1)}
            print(f"idle /v1/search ({mode}): p50 {pct(idle, 50):.0f} ms, p95 {pct(idle, 95):.0f} ms | {uptime()}")
            limit = 3 * pct(idle, 95)
            srv.timed = []

            # (a) one document, ingested by another process, until /v1/search finds it
            marker = "zorblaxoquine" + str(random.randint(1000, 9999))
            one = scratch / "live-one.jsonl"
            one_seed = int(time.time())
            write_docs(one, 1, seed=one_seed, marker=marker)
            # The marker plus the document's opening words: one unique word alone gives BM25 a single hit,
            # whose z-score is 0 in hybrid fusion (a query a user would not type).
            probe = json.loads(one.read_text())["text"][:160]
            proc = ingest(db, one)
            lat, found_at, qi = [], None, 0
            t_start = time.perf_counter()
            while proc.poll() is None or found_at is None:
                ms, ext, ok = srv.search(client, probe if mode == "hybrid" else marker, mode)
                lat.append(ms)
                if proc.poll() is not None and proc.returncode != 0:
                    raise SystemExit(f"ingest failed: see {SCRATCH}/ingest-{one.stem}.log")
                # This very document in the top 10 (not an earlier run's live document sharing its sentences).
                if f"live-{one_seed}-0" in ext and found_at is None:
                    found_at = time.perf_counter()
                    break
                ms2 = srv.search(client, queries[qi % len(queries)], mode)[0]  # ordinary traffic meanwhile
                lat.append(ms2)
                qi += 1
                if time.perf_counter() - t_start > 600:
                    break
            proc.wait()
            committed = _commit_time(db, "live")
            slow_a = sorted(srv.timed, key=lambda x: -x[0])[:3]
            srv.timed = []
            out["a_one_document"] = {
                "load": uptime(),
                "ingest_process_s": round(time.perf_counter() - t_start, 2),
                "found_after_commit_s": round(found_at - committed, 2) if found_at and committed else None,
                "queries": len(lat), "max_ms": round(max(lat), 1), "limit_3x_idle_p95_ms": round(limit, 1),
                "over_limit": sum(x > limit for x in lat), "slowest_with_server_timings": slow_a}
            print(f"(a) one document: findable {out['a_one_document']['found_after_commit_s']} s after its commit; "
                  f"max query {max(lat):.0f} ms vs 3x idle p95 {limit:.0f} ms ({out['a_one_document']['over_limit']} over)")

            # (b) a large ingest in another process while /v1/search is queried
            srv.timed = []
            many = scratch / "live-many.jsonl"
            write_docs(many, docs, seed=seed)  # a new seed: documents not already in the KB from an earlier run
            proc = ingest(db, many)
            lat, errors, qi = [], 0, 0
            t0 = time.perf_counter()
            while proc.poll() is None:
                ms, _, ok = srv.search(client, queries[qi % len(queries)], mode)
                lat.append(ms)
                errors += not ok
                qi += 1
            out["b_ingest"] = {"load_end": uptime(), "docs": docs, "ingest_s": round(time.perf_counter() - t0, 1),
                               "ingest_rc": proc.returncode, "queries": len(lat), "errors": errors,
                               "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1),
                               "max_ms": round(max(lat), 1), "p95_over_idle_p95": round(pct(lat, 95) / pct(idle, 95), 2),
                               "slowest_with_server_timings": sorted(srv.timed, key=lambda x: -x[0])[:3]}
            print(f"(b) {docs}-document ingest ({out['b_ingest']['ingest_s']} s): /v1/search p95 {pct(lat, 95):.0f} ms "
                  f"= {out['b_ingest']['p95_over_idle_p95']}x idle p95, errors {errors}/{len(lat)} | {uptime()}")
            idle2 = [srv.search(client, q, mode)[0] for q in queries[200 : 200 + idle_n]]
            out["idle_after"] = {"p50_ms": round(pct(idle2, 50), 1), "p95_ms": round(pct(idle2, 95), 1)}
    finally:
        srv.stop()
    store = open_store(DatabaseSettings(url=db))
    out["chunks_after"] = store.count("chunks")
    store.close()
    return out


def _commit_time(db: str, source: str) -> float | None:
    """perf_counter time of the newest document of ``source`` (its created_at, converted)."""
    store = open_store(DatabaseSettings(url=db))
    try:
        with store.session() as s:
            from sqlalchemy import func, select

            at = s.scalar(select(func.max(m.Document.created_at)).join(m.Source).where(m.Source.name == source))
    finally:
        store.close()
    if at is None:
        return None
    import datetime as dt

    age = (dt.datetime.now(dt.UTC).replace(tzinfo=None) - at).total_seconds()
    return time.perf_counter() - age


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["quality", "restart", "live"])
    ap.add_argument("--db", required=True)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--mode", default="hybrid")
    ap.add_argument("--seed", type=int, default=11, help="of the --docs documents (another seed: new documents)")
    args = ap.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    if args.part == "quality":
        out = part_quality(args.db)
    elif args.part == "restart":
        out = part_restart(args.db)
    else:
        out = part_live(args.db, args.docs, args.mode, seed=args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"bench_live_{args.part}.json").write_text(json.dumps(out, indent=2))
    print(uptime())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
