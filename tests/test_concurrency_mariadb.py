"""Concurrency on the real MariaDB server: two processes ingest into one database while a third
queries. The generation counter ends at exactly the number of committed writes, no deadlock or
duplicate-key race reaches the caller, and every query sees whole documents (all chunks or none)."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from medkb.kb import models as m
from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.settings import DatabaseSettings

pytestmark = pytest.mark.mariadb
DIM, CHUNKS, OWN, SHARED = 16, 3, 15, 10


def _doc(ext: str, seed: int) -> DocumentIn:
    rng = np.random.default_rng(seed)
    return DocumentIn(tenant_id="h1", source="shared-source", external_id=ext, title=ext,
                      chunks=[ChunkIn(text=f"{ext} part {i}", embedding=rng.standard_normal(DIM).astype(np.float32))
                              for i in range(CHUNKS)])


def writer(url: str, name: str, out: Any) -> None:
    """Own documents plus ones the other writer also writes (same content: one adds, one is unchanged)."""
    store = open_store(DatabaseSettings(url=url))
    written, errors = 0, []
    docs = [(f"{name}-{i}", hash(name) % 1000 + i) for i in range(OWN)] + [(f"shared-{i}", 10_000 + i)
                                                                           for i in range(SHARED)]
    for ext, seed in docs:
        try:
            written += store.add_document(_doc(ext, seed)).status != "unchanged"
        except Exception as exc:  # noqa: BLE001 - any error reaching the caller fails the test
            errors.append(f"{type(exc).__name__}: {exc}")
    store.close()
    out.put((name, written, errors))


def reader(url: str, stop: Any, out: Any) -> None:
    store = open_store(DatabaseSettings(url=url))
    f, queries, problems = SearchFilters(tenant_id="h1"), 0, []
    rng = np.random.default_rng(7)
    while not stop.is_set():
        try:
            hits = store.vector_search(rng.standard_normal(DIM).astype(np.float32), 10, f)
            views = store.get_chunks([h.chunk_id for h in hits])
            if len(views) != len(hits):
                problems.append("a hit's chunk is missing")
            with store.session() as s:
                per_doc = s.execute(select(m.Chunk.document_id, func.count()).group_by(m.Chunk.document_id)).all()
            if any(n != CHUNKS for _, n in per_doc):
                problems.append(f"a half-written document: {per_doc}")
            queries += 1
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{type(exc).__name__}: {exc}")
    store.close()
    out.put(("reader", queries, problems))


def test_two_writers_and_a_reader(mariadb_url: str) -> None:
    store = open_store(DatabaseSettings(url=mariadb_url))
    init_store(store, DIM)
    start = store.generation()
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=writer, args=(mariadb_url, n, out)) for n in ("w1", "w2")]
    read = ctx.Process(target=reader, args=(mariadb_url, stop, out))
    read.start()
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        name, written, errors = out.get(timeout=300)
        results[name] = (written, errors)
    time.sleep(0.5)
    stop.set()
    _, queries, problems = out.get(timeout=120)
    for p in (*procs, read):
        p.join(timeout=60)
    assert all(not errs for _, errs in results.values()), results
    assert not problems, problems[:3]
    assert queries > 0
    committed = sum(w for w, _ in results.values())
    assert committed == 2 * OWN + SHARED  # each shared document was added by exactly one writer
    assert store.generation() - start == committed
    assert store.count("documents") == committed and store.count("chunks") == committed * CHUNKS
    store.close()
