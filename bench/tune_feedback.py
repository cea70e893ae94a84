"""Dense pseudo-relevance feedback, BM25 k1/b and fusion weights, tuned jointly on one half of bioasq-dev.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_feedback.py --db /tmp/bioasq.db collect --runs /tmp/fb.pkl
    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_feedback.py --db /tmp/bioasq.db --runs /tmp/fb.pkl --split dev \\
        score "feedback_depth=2,feedback_beta=1.0,graph_weight=3,bm25_weight=1.0" "rank_power=0,feedback_beta=1.5"

``collect`` stores, per query, BM25 top-300 for a grid of (k1, b), dense top-300, the query vector and the
linked entities, plus every chunk's unit vector. ``score`` replays hybrid offline for each configuration
given (keyword arguments: k1, b, depth, bm25_weight, dense_weight, graph_weight, types, feedback_depth,
feedback_beta, rank_power: the feedback hits weigh 1 / rank ** rank_power, 0 for a plain mean) with
medkb's own ``fuse`` and graph boost; the feedback pass is the same Rocchio step as
``DenseGenerator.feedback_query`` over the in-memory matrix. No near-duplicate folding (``tune_graph.py
full`` runs the real path). Splits are ``tune_graph.split_of``: choose on dev, report test once.
"""

from __future__ import annotations

import argparse
import pickle
from medkb.kb.sqlite_lib import dbapi as sqlite3  # the SQLite medkb runs on: one library per process
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from medkb.eval.datasets import load_beir  # noqa: E402
from medkb.eval.metrics import best_chunk_per_doc, evaluate  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.retrieval.fusion import fuse  # noqa: E402
from medkb.retrieval.retriever import Retriever  # noqa: E402
from medkb.retrieval.types import Candidate  # noqa: E402
from tune_graph import DATA, retriever, split_of  # noqa: E402

DEPTH = 300
GRID = [(k1, b) for k1 in (0.9, 1.2, 1.6, 2.0) for b in (0.4, 0.6, 0.75, 0.9)]


def collect(r: Retriever, db: str, out: Path, data: Path) -> None:
    ds = load_beir(data, "test")
    f = SearchFilters(tenant_id="public", sources=(ds.name,))
    runs: dict[str, dict[Any, Any]] = {}
    for qid, text in ds.queries.items():
        rr: dict[Any, Any] = {}
        for k1, b in GRID:
            r.bm25.k1, r.bm25.b = k1, b
            c = r.bm25.search(text, f, DEPTH)
            rr[("bm25", k1, b)] = (np.array([x.chunk_id for x in c]), np.array([x.score for x in c]))
        q = r.embedder.embed_query(text)
        c = r.dense.search(q, f, DEPTH)
        rr.update(dense=(np.array([x.chunk_id for x in c]), np.array([x.score for x in c])),
                  qvec=np.asarray(q, np.float32), linked=r.graph.link(text, f.tenant_id))
        runs[qid] = rr
    con = sqlite3.connect(db)  # every chunk of this KB is the corpus's: the offline dense pass needs no filter
    rows = con.execute("SELECT c.id, c.embedding, d.external_id FROM chunks c JOIN documents d "
                       "ON d.id = c.document_id WHERE c.embedding IS NOT NULL ORDER BY c.id").fetchall()
    mat = np.frombuffer(b"".join(x[1] for x in rows), np.float32).reshape(len(rows), -1).copy()
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    out.write_bytes(pickle.dumps({"runs": runs, "filters": f, "ids": np.array([x[0] for x in rows]), "M": mat,
                                  "ext": {x[0]: x[2] for x in rows}, "data": str(data)}))
    print(f"wrote {out}: {len(runs)} queries", file=sys.stderr)


def ranking(r: Retriever, d: dict, rr: dict, *, depth: int = 100, k1: float = 1.2, b: float = 0.75,
            bm25_weight: float = 1.0, dense_weight: float = 1.0, graph_weight: float = 3.0,
            types: str = "drug,gene", feedback_depth: int = 2, feedback_beta: float = 1.0,
            feedback_union: int = 0, rank_power: float = 1.0) -> list[str]:
    def cands(pair: tuple[np.ndarray, np.ndarray]) -> list[Candidate]:
        return [Candidate(int(i), float(s)) for i, s in zip(pair[0][:depth], pair[1][:depth])]

    r.graph.boost_types, r.rs.graph_weight = frozenset(types.split(",")), graph_weight
    weights = {"bm25": bm25_weight, "dense": dense_weight}
    legs = {"bm25": cands(rr[("bm25", k1, b)]), "dense": cands(rr["dense"])}

    def run() -> list[tuple[int, float]]:
        ranked = fuse(legs, weights, method="zscore")
        if graph_weight:
            ranked = r._boost(ranked, r.graph.boost(rr["linked"], [c for c, _ in ranked], d["filters"]))
        return ranked

    ranked = run()
    if feedback_depth:
        pos = d["pos"]
        top = [pos[c] for c, _ in ranked[:feedback_depth] if c in pos]
        w = 1.0 / np.arange(1, len(top) + 1) ** rank_power  # 1 / rank as DenseGenerator; 0 = plain mean
        q = rr["qvec"] / np.linalg.norm(rr["qvec"]) + feedback_beta * (w @ d["M"][top]) / w.sum()
        s = d["M"] @ (q / np.linalg.norm(q))
        o = np.argsort(-s)[:depth]
        if feedback_union:  # the first dense pass's candidates stay in the pool, re-scored by the new query
            o = np.union1d(o, [pos[c.chunk_id] for c in legs["dense"] if c.chunk_id in pos])
            o = o[np.argsort(-s[o])]
        legs["dense"] = [Candidate(int(d["ids"][i]), float(s[i])) for i in o]
        ranked = run()
    return best_chunk_per_doc([d["ext"][c] for c, _ in ranked[:100]])


def score(r: Retriever, d: dict, split: str, **kw: Any) -> dict[str, float]:
    ds = load_beir(Path(d["data"]), "test")
    qids = [q for q in d["runs"] if split in ("all", split_of(q))]
    run = {q: ranking(r, d, d["runs"][q], **kw) for q in qids}
    return evaluate(run, {q: ds.qrels[q] for q in qids}, ["ndcg@10", "recall@100"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("what", choices=("collect", "score"))
    ap.add_argument("configs", nargs="*", help='score: e.g. "feedback_depth=2,feedback_beta=1.5"')
    ap.add_argument("--runs", default="/tmp/tune_feedback.pkl")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", default="dev")
    a = ap.parse_args()
    r = retriever(a.db)
    if a.what == "collect":
        return collect(r, a.db, Path(a.runs), a.data)
    d = pickle.loads(Path(a.runs).read_bytes())
    d["pos"] = {int(c): i for i, c in enumerate(d["ids"])}
    for cfg in a.configs or [""]:
        kw = {k: (v if k == "types" else float(v) if "." in v else int(v))
              for k, v in (p.split("=") for p in cfg.split(",") if p)}
        m = score(r, d, a.split, **kw)
        print(f"{a.split} {cfg or 'defaults'}: nDCG@10 {m['ndcg@10']:.4f} R@100 {m['recall@100']:.4f}", flush=True)


if __name__ == "__main__":
    main()
