"""Per-app state: settings, store, key verifier, lazily built retriever/embedder/generator, Prometheus metrics."""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from medkb.api.answer import AnswerEngine
from medkb.api.auth import KeyVerifier
from medkb.api.ratelimit import RateLimits
from medkb.kb.store import KnowledgeStore
from medkb.llm import LLMClient
from medkb.settings import Settings

log = logging.getLogger(__name__)


class Metrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("medkb_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("medkb_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.answers = Counter("medkb_answers_total", "Answers by mode", ["mode"], registry=self.registry)
        self.unsupported = Counter("medkb_unsupported_sentences_total", "Generated sentences flagged unsupported",
                                   registry=self.registry)
        self.ready = Gauge("medkb_ready", "1 when the database answers and the models are loaded",
                           registry=self.registry)


def search_slots(settings: Settings) -> int:
    """How many searches this process runs at once (MEDKB_API_SEARCH_CONCURRENCY; else its intra-op threads)."""
    if settings.api.search_concurrency > 0:
        return settings.api.search_concurrency
    from medkb.kb.onnx_embedder import default_threads  # the count the embedder itself takes when threads is 0

    return settings.embedding.threads if settings.embedding.threads > 0 else default_threads()


class Service:
    def __init__(self, settings: Settings, store: KnowledgeStore) -> None:
        self.settings = settings
        self.store = store
        self.verifier = KeyVerifier(store)
        self.metrics = Metrics()
        self._lock = threading.Lock()
        self._retriever: Any = None
        self._embedder: Any = None
        self.generator = LLMClient(settings.llm) if settings.llm.model else None
        self.limits = RateLimits(settings.api)
        self.search_slots = threading.BoundedSemaphore(search_slots(settings))

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    from medkb.kb.embeddings import embedder_for

                    e = self.settings.embedding
                    self._embedder = embedder_for(e)
        return self._embedder

    @property
    def models_loaded(self) -> bool:
        return self._embedder is not None and self._retriever is not None and self._retriever.bm25.ready

    @property
    def retriever(self) -> Any:
        if self._retriever is None:
            with self._lock:
                if self._retriever is None:
                    from medkb.retrieval.retriever import build_retriever

                    self._retriever = build_retriever(self.store, self.settings)
        return self._retriever

    def warm_up(self) -> None:
        """Load the embedder and retriever in the background so /readyz turns ready without a first query;
        then keep the indexes following other processes' writes from background threads (never a query)."""
        try:
            _ = self.embedder
            self.retriever.warm()
            self.retriever.follow()
        except Exception as exc:  # readiness reports it; the process stays up
            log.warning("warm-up failed: %s", type(exc).__name__)

    def shutdown(self) -> None:
        """Stop the background refreshers (the lexical index persists its last state)."""
        if self._retriever is not None:
            self._retriever.close()

    def engine(self) -> AnswerEngine:
        return AnswerEngine(self.store, self.retriever, embedder=self.embedder, generator=self.generator)
