"""A serving process's follower: one background thread that moves every cache to a new generation, off the query path."""

from __future__ import annotations

import logging
import threading
import time

from medkb.kb.store import KnowledgeStore
from medkb.retrieval.bm25 import BM25Generator

log = logging.getLogger(__name__)


class Follower:
    """Polls the generation counter; when it moved (any process's commit), catches the lexical index up,
    prepares the filter sets queries used lately, and only then pins the store to the new generation,
    so queries switch from one complete state to the next and never rebuild anything themselves.
    The vector cache (``prepare_vectors``; a no-op on backends without one) is asked to follow right after."""

    def __init__(self, store: KnowledgeStore, bm25: BM25Generator, interval: float = 0.2) -> None:
        self.store, self.bm25, self.interval = store, bm25, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0  # generations followed (benches read it)

    def step(self) -> bool:
        """One refresh; True when the generation had moved."""
        gen = self.store.read_generation()
        if gen == self.store.generation():
            self.bm25.save_if_due()
            return False
        self.bm25.refresh()
        for f in self.store.recent_filters():
            self.store.allowed_chunk_ids(f, generation=gen)
        self.store.pin_generation(gen)
        self.store.prepare_vectors()  # a no-op where the backend keeps no vector cache
        self.steps += 1
        return True

    def start(self) -> None:
        if self._thread is not None:
            return
        self.bm25.index()
        self.bm25.followed = True
        self.store.pin_generation(self.store.read_generation())

        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.step()
                except Exception as exc:  # the database may be away a while: keep serving the last state
                    log.warning("refresh failed: %s", type(exc).__name__)
                    time.sleep(1.0)

        self._thread = threading.Thread(target=loop, name="medkb-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.bm25.followed = False
        self.store.pin_generation(None)
