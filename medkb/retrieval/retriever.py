"""The Retriever: runs the generators concurrently under one filter object, fuses, de-duplicates, traces."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from medkb.errors import InvalidInput
from medkb.kb.embeddings import Embedder, embedder_for
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.bm25 import BM25Generator
from medkb.retrieval.dense import DenseGenerator
from medkb.retrieval.gate import EvidenceGate
from medkb.retrieval.fusion import FUSIONS, Reranker, fuse, mmr, near_duplicates
from medkb.retrieval.graph import GraphGenerator
from medkb.retrieval.patient import PatientGenerator
from medkb.retrieval.trace import build_trace
from medkb.retrieval.types import MODES, Candidate, Hit, SearchResult
from medkb.settings import RetrievalSettings, Settings

MAX_K = 1000


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


class Retriever:
    """Build once per store (``build_retriever``) and share: indexes and caches live here."""

    def __init__(self, store: KnowledgeStore, settings: Settings, *, embedder: Embedder | None = None,
                 reranker: Reranker | None = None) -> None:
        rs: RetrievalSettings = settings.retrieval
        if rs.fusion not in FUSIONS:
            raise InvalidInput(f"retrieval.fusion must be one of {', '.join(FUSIONS)}, not {rs.fusion!r}")
        self.store, self.settings, self.rs = store, settings, rs
        self.reranker = reranker
        self.bm25 = BM25Generator(store, k1=rs.bm25_k1, b=rs.bm25_b)
        self.dense = DenseGenerator(store)
        self.graph = GraphGenerator(store, hops=rs.graph_hops, boost_types=rs.graph_types)
        self.patient = PatientGenerator(store)
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="medkb-retrieval")
        self._gate: EvidenceGate | None = None
        self._follower: Any = None

    @property
    def gate(self) -> EvidenceGate:
        """The evidence gate every answer path uses (settings.gate picks its model and operating point)."""
        if self._gate is None:
            self._gate = EvidenceGate(self.bm25, self.settings.gate)
        return self._gate

    @property
    def weights(self) -> dict[str, float]:
        rs = self.rs
        return {"bm25": rs.bm25_weight, "dense": rs.dense_weight, "graph": rs.graph_weight,
                "patient": rs.patient_weight}

    @property
    def embedder(self) -> Embedder:
        """Loaded on first dense query (bm25-only searches never pay for loading a model)."""
        with self._embedder_lock:
            if self._embedder is None:
                model, _ = self.store.embedding_info()
                es = self.settings.embedding
                self._embedder = embedder_for(es, model)
            return self._embedder

    def close(self) -> None:
        if self._follower is not None:
            self._follower.stop()
        self._pool.shutdown(wait=False)
        self.bm25.close()

    def warm(self) -> None:
        """Open the BM25 index and the store's vector matrix or ANN index now rather than on the first query."""
        self.bm25.index()
        gen = self.store.generation()
        self.store.allowed_chunk_ids(SearchFilters(), generation=gen)
        self.store.prepare_vectors(gen)
        if self.rs.graph_weight > 0:
            self.graph.prepare(gen)

    def follow(self, interval: float = 0.2) -> None:
        """Move the indexes and caches to each new generation from a background thread (a server's
        queries then never wait for a refresh); without this a query catches up first, incrementally."""
        from medkb.retrieval.follow import Follower

        if self._follower is None:
            self._follower = Follower(self.store, self.bm25, interval, graph=self.graph)
            self._follower.start()

    def search(self, query: str, filters: SearchFilters | None = None, k: int = 10,
               mode: str = "hybrid") -> SearchResult:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query: must be a non-empty string")
        if mode not in MODES:
            raise InvalidInput(f"mode: must be one of {', '.join(MODES)}, not {mode!r}")
        if not 1 <= int(k) <= MAX_K:
            raise InvalidInput(f"k: must be between 1 and {MAX_K}, not {k}")
        filters = filters or SearchFilters()
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        n = max(self.rs.candidates, k)
        use = {
            "bm25": mode in ("hybrid", "bm25"),
            "dense": mode in ("hybrid", "dense"),
            "graph": mode in ("hybrid", "graph") and self.rs.graph_weight > 0 or mode == "graph",
            "patient": mode == "hybrid" and PatientGenerator.scope(filters) is not None,
        }

        def timed(name: str, fn: Any, *args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                timings[name] = _ms(t0)

        futures: dict[str, Future] = {}
        linked_f: Future | None = None
        # Lexical and graph work needs no vector, so it overlaps with embedding the query.
        if use["bm25"]:
            futures["bm25"] = self._pool.submit(timed, "bm25", self.bm25.search, query, filters, n)
        if use["graph"]:
            linked_f = self._pool.submit(timed, "link", self.graph.link, query, filters.tenant_id)
        if use["patient"]:
            facts_f = self._pool.submit(timed, "patient_facts", self.patient.facts, filters)
        qvec: np.ndarray | None = None
        if use["dense"] or use["patient"]:
            qvec = timed("embed_query", self.embedder.embed_query, query)
        if use["dense"]:
            futures["dense"] = self._pool.submit(timed, "dense", self.dense.search, qvec, filters, n)
        if use["patient"]:
            futures["patient"] = self._pool.submit(timed, "patient", self.patient.search, qvec, filters, n)
        linked = linked_f.result() if linked_f is not None else []
        if use["graph"] and mode == "graph":
            futures["graph"] = self._pool.submit(timed, "graph", self.graph.search, query, filters, n, linked)
        runs: dict[str, list[Candidate]] = {name: f.result() for name, f in futures.items()}

        t0 = time.perf_counter()
        if mode == "hybrid":
            ranked = self._fuse(runs, linked, filters, use["graph"], timed)
            if use["dense"] and self.rs.feedback_depth > 0 and ranked and qvec is not None:
                fb = timed("feedback", self._feedback, qvec, ranked, filters, n)
                if fb is not None:
                    runs["feedback"] = fb
                    ranked = self._fuse(runs, linked, filters, use["graph"], timed)
        else:
            ranked = [(c.chunk_id, c.score) for c in runs.get(mode, [])]
        timings["fuse"] = _ms(t0)

        t0 = time.perf_counter()
        hits = self._finish(query, ranked, runs, filters, k, mode)
        timings["assemble"] = _ms(t0)
        timings["total"] = _ms(t_all)
        return SearchResult(
            hits=hits, linked_entities=linked, timings=timings,
            patient_facts=facts_f.result() if use["patient"] else [],
            run_scores={name: [c.score for c in cands] for name, cands in runs.items()},
        )

    def _fuse(self, runs: dict[str, list[Candidate]], linked: list[dict[str, Any]], filters: SearchFilters,
              graph: bool, timed: Any) -> list[tuple[int, float]]:
        """Fusion of the legs, then the graph boost (its own list in ``runs`` for the trace, never fused).

        A feedback pass takes the first dense pass's place in fusion, at the dense weight; the first pass
        stays in ``runs``, so traces and the evidence gate still read query-passage cosines."""
        legs = {name: c for name, c in runs.items() if name != "graph"}
        if "feedback" in legs:
            legs["dense"] = legs.pop("feedback")
        ranked = fuse(legs, self.weights, method=self.rs.fusion, k=self.rs.rrf_k)
        if graph:
            runs["graph"] = timed("graph", self.graph.boost, linked, [c for c, _ in ranked], filters)
            ranked = self._boost(ranked, runs["graph"])
        return ranked

    def _feedback(self, qvec: np.ndarray, ranked: list[tuple[int, float]], filters: SearchFilters,
                  n: int) -> list[Candidate] | None:
        """The dense leg again, from the query moved towards the top fused hits (pseudo-relevance feedback).

        On bioasq-dev (tuned on one half of the questions, bench/tune_feedback.py) the top 2 fused hits at
        beta 1.5 lifted hybrid nDCG@10 by about a point on the other half, with the graph boost and without.
        The top hits come after the graph boost, so the graph also chooses what the feedback looks like.
        """
        top = [cid for cid, _ in ranked[: self.rs.feedback_depth]]
        q = self.dense.feedback_query(qvec, top, self.rs.feedback_beta)
        return None if q is None else self.dense.search(q, filters, n)

    def _boost(self, ranked: list[tuple[int, float]], graph: list[Candidate]) -> list[tuple[int, float]]:
        """Fused scores + graph_weight × the share of the query's drugs and genes a candidate names.

        The graph re-scores what the lexical and dense legs found rather than adding a list of its own:
        as a separate list it gained 0.1-0.3 points of nDCG@10 on bioasq-dev, as this boost over 1
        (bench/tune_graph.py). Units are z-scores; under RRF one unit is a rank-1 hit (1 / (k + 1)).
        """
        if not graph:
            return ranked
        unit = 1.0 if self.rs.fusion == "zscore" else 1.0 / (self.rs.rrf_k + 1)
        add = {c.chunk_id: self.rs.graph_weight * unit * c.score for c in graph}
        out = [(cid, s + add.get(cid, 0.0)) for cid, s in ranked]
        return sorted(out, key=lambda kv: (-kv[1], kv[0]))

    def _finish(self, query: str, ranked: list[tuple[int, float]], runs: dict[str, list[Candidate]],
                filters: SearchFilters, k: int, mode: str) -> list[Hit]:
        """Top ids → chunks, near-duplicates folded into the hit they repeat, optional MMR and rerank."""
        depth = k * 3 if (self.rs.mmr_lambda is not None or self.reranker is not None) else k * 2
        pool_ids = [cid for cid, _ in ranked[: max(depth, k + 10)]]
        fused = dict(ranked)
        # Ids are already filtered; get_chunks re-checks them, which guards against a write in between.
        chunks = self.store.get_chunks(pool_ids, filters)
        dups = near_duplicates([c.text for c in chunks], self.rs.dedup_threshold)
        kept, folded = [], {}
        for c, d in zip(chunks, dups):
            if d is None:
                kept.append(c)
            else:
                folded.setdefault(_root(d, dups, chunks), []).append(c.id)
        scores = [fused[c.id] for c in kept]
        if self.rs.mmr_lambda is not None and len(kept) > k:
            emb = self.embedder.embed_passages([c.text for c in kept])
            order = mmr(scores, emb, k, self.rs.mmr_lambda)
            kept, scores = [kept[i] for i in order], [scores[i] for i in order]
        rerank: list[float] | None = None
        if self.reranker is not None and kept:
            rerank = [float(x) for x in self.reranker.score(query, [c.text for c in kept])]
            order = sorted(range(len(kept)), key=lambda i: -rerank[i])  # type: ignore[index]
            kept, scores, rerank = [kept[i] for i in order], [scores[i] for i in order], [rerank[i] for i in order]
        method = self.rs.fusion if mode == "hybrid" else mode
        out = []
        for i, (c, s) in enumerate(zip(kept[:k], scores[:k])):
            trace = build_trace(c.id, runs, fused_score=s, method=method, rank=i + 1,
                                duplicates=folded.get(c.id, []),
                                rerank_score=None if rerank is None else rerank[i])
            out.append(Hit(chunk=c, score=float(rerank[i]) if rerank is not None else float(s), trace=trace))
        return out


def _root(j: int, dups: list[int | None], chunks: list[Any]) -> int:
    while dups[j] is not None:
        j = dups[j]  # type: ignore[assignment]
    return chunks[j].id


def build_retriever(store: KnowledgeStore, settings: Settings, *, embedder: Embedder | None = None,
                    reranker: Reranker | None = None) -> Retriever:
    """The retriever for ``store``, configured by ``settings.retrieval`` (weights, fusion, depths)."""
    return Retriever(store, settings, embedder=embedder, reranker=reranker)
