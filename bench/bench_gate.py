"""Benchmark: what the evidence gate adds to a /v1/chat request (evidence mode), side by side with the gate off,
and evidence-mode /v1/chat against /v1/search on the same knowledge base.

    python -m bench.bench_gate --db sqlite:////tmp/i16/sample.db [--requests 200]

Runs in one process (FastAPI TestClient, no network): three apps over the same store — gate on, gate off — and
/v1/search, the requests interleaved question by question so load from other processes hits all alike.
Half the questions have their abstract in the sample KB, half do not. Writes bench/out/bench_gate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def questions(n: int, pubmedqa: Path) -> list[str]:
    from medkb.sample.slicer import DATA

    present = json.loads((DATA / "pubmedqa" / "pubmedqa_sample.json").read_text())
    every = json.loads((pubmedqa / "ori_pqal.json").read_text())
    inside = [v["QUESTION"] for v in present.values()]
    outside = [v["QUESTION"] for k, v in every.items() if k not in present]
    return [q for pair in zip(inside, outside) for q in pair][:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="a KB built by `python -m medkb.sample build`")
    ap.add_argument("--requests", type=int, default=200, help="questions, each asked of every app")
    ap.add_argument("--pubmedqa", type=Path, default=ROOT.parent / "shared" / "data" / "pubmedqa")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fastapi.testclient import TestClient

    from medkb.api import create_app
    from medkb.api.auth import create_key
    from medkb.kb.factory import open_store
    from medkb.settings import GateSettings, Settings

    settings = Settings().with_database(args.db)
    # Evidence mode; latency is measured here, not the per-key rate-limit policy.
    settings = settings.model_copy(update={
        "llm": settings.llm.model_copy(update={"model": None}),
        "api": settings.api.model_copy(update={"rate_limit_answers": "1000000/minute",
                                               "rate_limit_search": "1000000/minute"})})
    store = open_store(settings.database)
    _, key = create_key(store, "demo", "clinician", name="bench-gate")
    h = {"Authorization": f"Bearer {key}"}
    apps = {
        "chat, gate on": TestClient(create_app(settings, store)),
        "chat, gate off": TestClient(create_app(settings.model_copy(update={"gate": GateSettings(enabled=False)}),
                                                store)),
    }
    qs = questions(args.requests, args.pubmedqa)
    for c in apps.values():
        c.__enter__()
        for q in qs[:5]:  # untimed: models, BM25 index, vector matrix, filter masks
            c.post("/v1/chat", json={"messages": [{"role": "user", "content": q}]}, headers=h)
    search = apps["chat, gate on"]
    lat: dict[str, list[float]] = {name: [] for name in (*apps, "search")}
    gate_ms: list[float] = []
    inside: dict[str, list[float]] = {name: [] for name in apps}  # retrieval + gate, timed inside the request
    abstained = 0
    for n, q in enumerate(qs):
        # Alternate which app goes first: whatever the first request warms must not favour one side.
        for name, c in (list(apps.items()) if n % 2 == 0 else list(apps.items())[::-1]):
            t = time.perf_counter()
            r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": q}], "stream": True}, headers=h)
            lat[name].append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
            trace = json.loads(r.text.split("\n\n")[0].split("\n")[1].removeprefix("data: "))
            inside[name].append(trace["timings"]["total_retrieval"])
            if name == "chat, gate on":
                gate_ms.append(trace["timings"]["evidence_gate"])
                abstained += "abstention" in trace
        t = time.perf_counter()
        assert search.post("/v1/search", json={"query": q, "k": 8}, headers=h).status_code == 200
        lat["search"].append((time.perf_counter() - t) * 1000)
    for c in apps.values():
        c.__exit__(None, None, None)
    store.close()
    out = {name: {"p50_ms": round(pct(v, 50), 2), "p95_ms": round(pct(v, 95), 2)} for name, v in lat.items()}
    out["inside_request_p50_ms"] = {name: round(pct(v, 50), 2) for name, v in inside.items()}
    out["gate_step"] = {"p50_ms": round(pct(gate_ms, 50), 3), "p95_ms": round(pct(gate_ms, 95), 3)}
    out["requests"], out["abstained_gate_on"], out["cpu_count"] = len(qs), abstained, os.cpu_count()
    out["gate_adds_p50_ms"] = round(out["chat, gate on"]["p50_ms"] - out["chat, gate off"]["p50_ms"], 2)
    # The same question on both sides, one right after the other: the median of those differences.
    out["gate_adds_paired_median_ms"] = round(pct([a - b for a, b in zip(lat["chat, gate on"],
                                                                       lat["chat, gate off"])], 50), 2)
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "out" / "bench_gate.json").write_text(json.dumps(out, indent=2))
    for name in (*apps, "search"):
        inner = f", retrieval + gate inside it p50 {out['inside_request_p50_ms'][name]:.1f} ms" if name in apps else ""
        print(f"{name:>15}: p50 {out[name]['p50_ms']:.1f} ms, p95 {out[name]['p95_ms']:.1f} ms{inner}")
    print(f"gate step alone (trace timing): p50 {out['gate_step']['p50_ms']:.2f} ms; gate adds "
          f"{out['gate_adds_p50_ms']:+.1f} ms to chat p50 (paired median {out['gate_adds_paired_median_ms']:+.1f} ms); "
          f"chat/search p50 ratio "
          f"{out['chat, gate on']['p50_ms'] / out['search']['p50_ms']:.2f}; abstained {abstained}/{len(qs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
