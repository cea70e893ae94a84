"""A serving process's follower: one background thread that moves every cache to a new generation, off the query path."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from medkb.kb.store import KnowledgeStore
from medkb.retrieval.bm25 import BM25Generator

log = logging.getLogger(__name__)

# Change-log rows always kept behind the oldest persisted index position: other processes following the
# same knowledge base in memory (``serve --workers N``) read from their own positions, a few steps behind.
PRUNE_KEEP = 100_000
PRUNE_EVERY_S = 60.0


class Follower:
    """Polls the generation counter; when it moved (any process's commit), prepares the next state of every
    cache — the lexical index and its filter masks, the allowed-id sets of the filters queries used lately,
    the vector matrix or ANN graph with their masks, the graph leg's mention postings and linkers — and
    only then publishes the lexical view and pins the store to the new generation, so queries switch from
    one complete state to the next and never catch anything up themselves.

    When idle it persists the lexical index (at most every 30 s) and prunes the change log below the
    oldest position any persisted index holds, less PRUNE_KEEP rows."""

    def __init__(self, store: KnowledgeStore, bm25: BM25Generator, interval: float = 0.2, graph: Any = None) -> None:
        self.store, self.bm25, self.graph, self.interval = store, bm25, graph, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_at = 0.0
        self.steps = 0  # generations followed (benches read it)
        self.pruned = 0  # change-log rows deleted
        self.last_step_s = 0.0

    def step(self) -> bool:
        """One refresh; True when the generation had moved."""
        gen = self.store.read_generation()
        if gen == self.store.generation():
            self.bm25.save_if_due()
            self.prune_if_due()
            return False
        t0 = time.perf_counter()
        self._prepare_and_pin(gen)
        self.steps += 1
        self.last_step_s = time.perf_counter() - t0
        return True

    def _prepare_and_pin(self, gen: int) -> None:
        filters = self.store.recent_filters()
        for f in filters:
            self.store.allowed_chunk_ids(f, generation=gen)
        view = self.bm25.prepare(gen, filters)
        self.store.prepare_vectors(gen)
        if self.graph is not None:
            self.graph.prepare(gen)
        self.bm25.publish(view)
        self.store.pin_generation(gen)

    def prune_if_due(self, force: bool = False) -> int:
        """Delete change-log rows no persisted index needs (only where every index this process keeps is
        persisted with its position: a file-less lexical index on a server backend keeps the log whole)."""
        if not force and time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
            return 0
        self._pruned_at = time.monotonic()
        lexical = self.bm25.saved_seq
        if lexical is None:
            return 0
        positions = [lexical, *self.store.saved_positions().values()]
        if any(p is None for p in positions):
            return 0
        n = self.store.prune_chunk_changes(min(positions) - PRUNE_KEEP)  # type: ignore[type-var,operator]
        self.pruned += n
        return n

    def start(self) -> None:
        if self._thread is not None:
            return
        self.bm25.index()
        self.bm25.followed = True
        # What warm-up opened may be a write behind by now: the first pin is prepared like every later one.
        self._prepare_and_pin(self.store.read_generation())

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
