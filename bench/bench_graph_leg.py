"""What the graph leg costs inside a hybrid search: mean ms of linking, the graph step and the whole search.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_graph_leg.py --db /tmp/bioasq.db --queries 200

Run two checkouts side by side on copies of the same KB (PYTHONPATH picks the code) to compare versions;
timings come from ``SearchResult.timings`` (link and graph overlap other legs in the thread pool).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import medkb
from medkb.eval.datasets import load_beir
from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.retrieval.retriever import build_retriever
from medkb.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "bioasq-dev"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--queries", type=int, default=200)
    a = ap.parse_args()
    s = Settings().with_database(f"sqlite:///{a.db}")
    store = open_store(s.database)
    init_store(store)
    r = build_retriever(store, s)
    ds = load_beir(DATA, "test")
    f = SearchFilters(tenant_id="public", sources=(ds.name,))
    qs = list(ds.queries.values())[: a.queries]
    r.warm()
    r.search(qs[0], f, k=100)  # models, indexes, linker and postings built before timing
    rows, cpu0, t0 = [], time.process_time(), time.perf_counter()
    for q in qs:
        rows.append(r.search(q, f, k=100).timings)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out = {k: round(statistics.mean(t.get(k, 0.0) for t in rows), 2) for k in ("link", "graph", "total")}
    out.update(queries=len(qs), cpu_ms_per_query=round(1000 * cpu / len(qs), 1),
               wall_ms_per_query=round(1000 * wall / len(qs), 1), load=os.getloadavg()[0],
               code=str(Path(medkb.__file__).parent))
    print(json.dumps(out))
    r.close()


if __name__ == "__main__":
    main()
