"""Plain data the retriever hands out: candidates from generators, fused hits and the search result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medkb.kb.records import ChunkView

MODES = ("hybrid", "bm25", "dense", "graph")


@dataclass(frozen=True)
class Candidate:
    """One chunk a generator found, with its raw score and why (e.g. a graph path)."""

    chunk_id: int
    score: float
    reason: dict[str, Any] | None = None


@dataclass
class Hit:
    chunk: ChunkView
    score: float
    trace: dict[str, Any]


@dataclass
class SearchResult:
    hits: list[Hit]
    linked_entities: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds
    patient_facts: list[dict[str, Any]] = field(default_factory=list)
    # Each generator's candidate scores, best first: the background the evidence gate compares hits with.
    run_scores: dict[str, list[float]] = field(default_factory=dict)
