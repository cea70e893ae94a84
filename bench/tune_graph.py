"""Does the graph leg earn its place? Tune its boost on one half of bioasq-dev's questions, report on the other.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_graph.py --db /tmp/bioasq.db collect
    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_graph.py --db /tmp/bioasq.db grid --split dev
    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_graph.py --db /tmp/bioasq.db report --weight 4 --types drug,gene
    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_graph.py --db /tmp/bioasq.db full --json full.json

`full` is the runner's own path (``Retriever.search``, near-duplicate folding, best chunk per document) for
bm25, dense, graph, hybrid without the graph and hybrid with it, each scored on dev, test and all.

The KB is the one `medkb eval retrieval ../shared/data/bioasq-dev --db … --ontology hpo --ontology icd10cm
--ontology drugs` built. `collect` stores each query's lexical and dense candidates and linked entities once;
`grid` and `report` fuse them with medkb's own `fuse`, `GraphGenerator.boost` and `Retriever._boost` (no
near-duplicate folding, so absolute values differ slightly from the runner). Queries are split by a hash of
their id: choose the weight and entity types on `dev`, then run `report` once for `test`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkb.eval.datasets import load_beir  # noqa: E402
from medkb.eval.metrics import best_chunk_per_doc, evaluate  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.retrieval.fusion import fuse  # noqa: E402
from medkb.retrieval.retriever import Retriever, build_retriever  # noqa: E402
from medkb.retrieval.types import Candidate  # noqa: E402
from medkb.settings import Settings  # noqa: E402

DATA = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "bioasq-dev"
WEIGHTS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)
BM25_WEIGHTS = (0.8, 1.0, 1.2, 1.5, 1.8)
TYPE_SETS = ("drug", "drug,gene", "drug,gene,phenotype", "drug,gene,phenotype,disease")


def split_of(qid: str) -> str:
    return "dev" if int(hashlib.sha1(qid.encode()).hexdigest(), 16) % 2 == 0 else "test"


def retriever(db: str) -> Retriever:
    settings = Settings().with_database(f"sqlite:///{db}")
    store = open_store(settings.database)
    init_store(store)
    return build_retriever(store, settings)


def collect(r: Retriever, out: Path, max_q: int | None = None) -> None:
    ds = load_beir(DATA, "test")
    f = SearchFilters(tenant_id="public", sources=(ds.name,))
    n = r.rs.candidates
    runs = {}
    for qid, text in list(ds.queries.items())[:max_q]:
        runs[qid] = {"bm25": r.bm25.search(text, f, n), "dense": r.dense.search(r.embedder.embed_query(text), f, n),
                     "linked": r.graph.link(text, f.tenant_id)}
    out.write_bytes(pickle.dumps({"runs": runs, "filters": f}))
    print(f"wrote {out}: {len(runs)} queries", file=sys.stderr)


def score(r: Retriever, data: dict, split: str, weight: float, types: str) -> dict[str, float]:
    ds = load_beir(DATA, "test")
    r.rs.graph_weight = weight
    r.graph.boost_types = frozenset(types.split(","))
    f, run = data["filters"], {}
    qids = [q for q in data["runs"] if split in ("all", split_of(q))]
    for qid in qids:
        rr = data["runs"][qid]
        legs: dict[str, list[Candidate]] = {"bm25": rr["bm25"], "dense": rr["dense"]}
        ranked = fuse(legs, r.weights, method=r.rs.fusion, k=r.rs.rrf_k)
        if weight:
            ranked = r._boost(ranked, r.graph.boost(rr["linked"], [c for c, _ in ranked], f))
        ext = {c.id: c.external_id for c in r.store.get_chunks([c for c, _ in ranked[:100]], f)}
        run[qid] = best_chunk_per_doc([ext[c] for c, _ in ranked[:100] if c in ext])
    return evaluate(run, {q: ds.qrels[q] for q in qids}, ["ndcg@10", "recall@10", "recall@100", "mrr@10"])


def full(r: Retriever, weight: float, out: Path | None, max_q: int | None = None,
         only: Sequence[str] = (), data: Path = DATA) -> dict:
    """Every query through ``Retriever.search`` per mode (as ``medkb eval retrieval``), scored per split."""
    ds = load_beir(data, "test").limit(max_q)
    f = SearchFilters(tenant_id="public", sources=(ds.name,))
    variants = {"bm25": ("bm25", 0.0), "dense": ("dense", 0.0), "graph": ("graph", 0.0),
                "hybrid_no_graph": ("hybrid", 0.0), "hybrid": ("hybrid", weight)}
    runs: dict[str, dict[str, list[str]]] = {}
    for name, (mode, w) in variants.items():
        if only and name not in only:
            continue
        r.rs.graph_weight = w
        runs[name] = {qid: best_chunk_per_doc([h.chunk.external_id for h in r.search(text, f, k=100, mode=mode).hits])
                      for qid, text in ds.queries.items()}
    report: dict = {"load": os.getloadavg(), "weight": weight}
    for split in ("dev", "test", "all"):
        qids = [q for q in ds.queries if split in ("all", split_of(q))]
        qrels = {q: ds.qrels[q] for q in qids}
        report[split] = {name: {k: round(v, 4) for k, v in evaluate({q: run[q] for q in qids}, qrels,
                                                                     ["ndcg@10", "recall@10", "recall@100", "mrr@10"]).items()}
                         for name, run in runs.items()}
        print(split, " | ".join(f"{n} {m['ndcg@10']:.4f}" for n, m in report[split].items()))
    if out:
        out.write_text(json.dumps(report | {"runs": runs}, indent=1))
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("what", choices=("collect", "grid", "fusion", "report", "full"))
    ap.add_argument("--bm25-weight", type=float, default=None, help="report/full: this BM25 fusion weight")
    ap.add_argument("--variants", default="", help="full: only these of bm25,dense,graph,hybrid_no_graph,hybrid")
    ap.add_argument("--json", type=Path, default=None, help="full: write the metrics and runs here")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--weight", type=float, default=4.0)
    ap.add_argument("--types", default="drug,gene")
    ap.add_argument("--runs", default="/tmp/tune_graph_runs.pkl")
    ap.add_argument("--data", type=Path, default=DATA, help="full: this BEIR dataset (e.g. PubMedQA* gold PMIDs "
                    "written by medkb.eval.qa.gold_pmid_dataset) instead of bioasq-dev")
    ap.add_argument("--max", type=int, default=None, help="collect only the first N queries (a smoke run)")
    a = ap.parse_args()
    r, path = retriever(a.db), Path(a.runs)
    if a.what == "collect":
        return collect(r, path, a.max)
    if a.bm25_weight is not None:
        r.rs.bm25_weight = a.bm25_weight
    if a.what == "full":
        full(r, a.weight, a.json, a.max, a.variants.split(",") if a.variants else (), a.data)
        return
    data = pickle.loads(path.read_bytes())
    if a.what == "fusion":  # the BM25 leg's weight against dense (1.0), with and without the graph boost
        for bw in BM25_WEIGHTS:
            r.rs.bm25_weight = bw
            for w in (0.0, a.weight):
                m = score(r, data, a.split, w, a.types)
                print(f"{a.split} bm25 weight {bw} graph {w}: nDCG@10 {m['ndcg@10']:.4f} R@100 {m['recall@100']:.4f}")
        return
    if a.what == "grid":
        for types in TYPE_SETS:
            for w in WEIGHTS:
                m = score(r, data, a.split, w, types)
                print(f"{a.split} types {types} weight {w}: nDCG@10 {m['ndcg@10']:.4f} R@100 {m['recall@100']:.4f}")
        return
    for split in ("dev", "test", "all"):
        base, graph = score(r, data, split, 0.0, a.types), score(r, data, split, a.weight, a.types)
        print(f"{split}: without graph " + " ".join(f"{k} {v:.4f}" for k, v in base.items()) +
              f" | with graph (weight {a.weight}, {a.types}) " + " ".join(f"{k} {v:.4f}" for k, v in graph.items()))


if __name__ == "__main__":
    main()
