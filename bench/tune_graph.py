"""Does the graph leg earn its place? Per-query candidates of each generator on a bioasq-dev split, fused offline.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_graph.py --db /tmp/bioasq.db collect --split dev --max 600
    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_graph.py --db /tmp/bioasq.db fuse --split dev

The KB is the one `medkb eval retrieval ../shared/data/bioasq-dev --db … --ontology hpo --ontology icd10cm
--ontology drugs` built. Queries are split by a hash of their id: tune on `dev`, report on `test` once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkb.eval.datasets import load_beir  # noqa: E402
from medkb.eval.metrics import evaluate  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.retrieval.fusion import fuse  # noqa: E402
from medkb.retrieval.retriever import build_retriever  # noqa: E402
from medkb.settings import Settings  # noqa: E402

DATA = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "bioasq-dev"


def split_of(qid: str) -> str:
    return "dev" if int(hashlib.sha1(qid.encode()).hexdigest(), 16) % 2 == 0 else "test"


def collect(db: str, split: str, max_q: int, out: Path) -> None:
    settings = Settings().with_database(f"sqlite:///{db}")
    store = open_store(settings.database)
    init_store(store)
    ds = load_beir(DATA, "test")
    r = build_retriever(store, settings)
    f = SearchFilters(tenant_id="public")
    qs = [(q, t) for q, t in ds.queries.items() if split_of(q) == split][:max_q]
    runs: dict[str, dict[str, list[tuple[int, float]]]] = {}
    t = {"bm25": 0.0, "dense": 0.0, "graph": 0.0}
    for i, (qid, text) in enumerate(qs, 1):
        t0 = time.perf_counter()
        bm = r.bm25.search(text, f, 100)
        t1 = time.perf_counter()
        de = r.dense.search(r.embedder.embed_query(text), f, 100)
        t2 = time.perf_counter()
        gr = r.graph.search(text, f, 100)
        t3 = time.perf_counter()
        t["bm25"] += t1 - t0
        t["dense"] += t2 - t1
        t["graph"] += t3 - t2
        runs[qid] = {n: [(c.chunk_id, c.score) for c in cs] for n, cs in (("bm25", bm), ("dense", de),
                                                                          ("graph", gr))}
        if i % 100 == 0:
            print(f"{i}/{len(qs)} " + " ".join(f"{k} {1000 * v / i:.1f} ms" for k, v in t.items()), file=sys.stderr)
    ids = sorted({c for rr in runs.values() for cs in rr.values() for c, _ in cs})
    docs = {c.id: c.external_id for c in store.get_chunks(ids)}
    out.write_bytes(pickle.dumps({"runs": runs, "docs": docs, "ms": {k: 1000 * v / len(qs) for k, v in t.items()}}))
    print(f"wrote {out}: {len(runs)} queries; mean ms per generator {t}", file=sys.stderr)


def fuse_grid(path: Path) -> None:
    from medkb.retrieval.types import Candidate

    data = pickle.loads(path.read_bytes())
    ds = load_beir(DATA, "test")
    qrels = {q: ds.qrels[q] for q in data["runs"]}
    print("mean ms per generator:", {k: round(v, 1) for k, v in data["ms"].items()})
    for method in ("zscore", "rrf"):
        for gw in (0.0, 0.1, 0.2, 0.3, 0.5, 0.8):
            for bw in (1.0, 1.2):
                run = {}
                for qid, rr in data["runs"].items():
                    cands = {n: [Candidate(c, s, {}) for c, s in cs] for n, cs in rr.items()}
                    ranked = fuse(cands, {"bm25": bw, "dense": 1.0, "graph": gw}, method=method, k=60)
                    run[qid] = list(dict.fromkeys(data["docs"][c] for c, _ in ranked[:200]))
                m = evaluate(run, qrels, ["ndcg@10", "recall@100"])
                print(f"{method} bm25 {bw} graph {gw}: nDCG@10 {m['ndcg@10']:.4f} R@100 {m['recall@100']:.4f}")
    graph_only = {q: list(dict.fromkeys(data["docs"][c] for c, _ in rr["graph"])) for q, rr in data["runs"].items()}
    print("graph alone:", evaluate(graph_only, qrels, ["ndcg@10"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("what", choices=("collect", "fuse"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--max", type=int, default=600)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = Path(a.out or f"/tmp/tune_graph_{a.split}.pkl")
    collect(a.db, a.split, a.max, out) if a.what == "collect" else fuse_grid(out)


if __name__ == "__main__":
    main()
