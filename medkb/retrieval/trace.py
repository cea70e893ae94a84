"""The trace of one hit: which generators found it, at which rank and score, the graph path, the fused score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medkb.retrieval.types import Candidate

# Bump when the shape below changes: `medkb search --json` consumers rely on it.
TRACE_VERSION = 1


def build_trace(chunk_id: int, runs: Mapping[str, Sequence[Candidate]], *, fused_score: float,
                method: str, rank: int, duplicates: Sequence[int] = (),
                rerank_score: float | None = None) -> dict[str, Any]:
    generators: dict[str, dict[str, Any]] = {}
    graph_path: list[str] | None = None
    for name, cands in runs.items():
        for r, c in enumerate(cands, start=1):
            if c.chunk_id == chunk_id:
                entry: dict[str, Any] = {"rank": r, "score": round(float(c.score), 6)}
                if c.reason:
                    entry["reason"] = c.reason
                    if name == "graph" and c.reason.get("path"):
                        graph_path = list(c.reason["path"])
                generators[name] = entry
                break
    return {
        "version": TRACE_VERSION,
        "rank": rank,
        "fusion": method,
        "fused_score": round(float(fused_score), 6),
        "generators": generators,
        "graph_path": graph_path,
        "duplicates": list(duplicates),
        "rerank_score": rerank_score,
    }
