"""Scale corpora for bench_scale: the real bioasq-dev articles plus synthetic chunks made of real parts.

    nice -n 10 .venv/bin/python bench/scale_corpus.py --db /tmp/i13b/kb-1m.db --chunks 1000000

Embedding a million chunks is hours of CPU here, so every chunk past the 7,661 real articles is SYNTHETIC:
its vector mixes the real MiniLM embeddings of two real bioasq-dev articles (weights w and 1-w, w uniform in
0.3..0.7) plus Gaussian noise, re-normalised; its text is real sentences of those two articles in about the
same proportion plus one or two random sentences (bioasq-dev and PubMedQA abstracts). A first version put
~130 noisy copies around each article (cosine ~0.9): tight clusters that no real corpus has and on which an
HNSW graph cannot navigate between clusters (recall@10 0.58 at 1M) — mixing spreads the vectors over the
space the real embeddings span. ``--vectors clustered`` still makes the first version (the 1M figures of the
2026-12-02 report were measured on it). One in ten synthetic documents belongs to a hospital tenant
(hosp-a / hosp-b), so tenant-filtered search is measured on the same corpus. Chunks are written through
``KnowledgeStore.add_document`` (one transaction per 50-chunk document), as an ingest writes them, or with
``--bulk N`` as the same rows, N documents per transaction (``bulk_add``): on a loaded 2-core machine the
per-document path wrote 55-160 chunks/s, too slow for 1M (ingest rates are measured by bench_scale instead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.records import ChunkIn, DocumentIn  # noqa: E402
from medkb.kb.store import KnowledgeStore  # noqa: E402
from medkb.settings import DatabaseSettings  # noqa: E402

SHARED = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data"))
BIOASQ = SHARED / "bioasq-dev"
MODEL = "all-MiniLM-L6-v2"
WORK = Path(os.environ.get("MEDKB_BENCH_DIR", "/tmp/i13b"))  # vector caches and bench outputs
PER_DOC = 50
NOISE = 0.3  # norm of the noise added to the (unit-length) mix of two article vectors
SYNTHETIC_NOTE = ("SYNTHETIC corpus past the 7,661 real bioasq-dev articles: vectors = mixes of the real MiniLM "
                  "embeddings of two real articles + Gaussian noise, texts = real sentences of those articles "
                  "(bioasq-dev) plus random ones (bioasq-dev, PubMedQA), 3-6 per chunk")


CLUSTERED_NOTE = ("SYNTHETIC corpus past the 7,661 real bioasq-dev articles (first version, --vectors clustered): "
                  "vectors = real MiniLM embeddings of real articles + Gaussian noise (cos ~0.9), texts = real "
                  "sentences of bioasq-dev and PubMedQA assembled 3-5 per chunk")


def articles() -> list[dict]:
    with (BIOASQ / "corpus.jsonl").open() as f:
        return [json.loads(line) for line in f]


def article_text(d: dict) -> str:
    return f"{d.get('title', '')}. {d['text']}"


def base_vectors(cache: Path, threads: int = 1) -> np.ndarray:
    """Real MiniLM embeddings of every bioasq-dev article ("title. text"), embedded once, cached on disk."""
    texts = [article_text(d) for d in articles()]
    key = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:12]
    path = cache / f"bioasq-articles-{MODEL}-{key}.npy"
    if path.exists():
        return np.load(path)
    from medkb.kb.embeddings import load_embedder

    emb = load_embedder(MODEL, threads=threads)
    t0 = time.perf_counter()
    vecs = np.asarray(emb.embed_passages(texts), dtype=np.float32)
    print(f"embedded {len(texts)} articles once in {time.perf_counter() - t0:.0f} s -> {path}", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def queries() -> dict[str, str]:
    with (BIOASQ / "queries.jsonl").open() as f:
        return {str(q["_id"]): q["text"] for q in map(json.loads, f)}


def query_vectors(cache: Path, threads: int = 1) -> tuple[list[str], np.ndarray]:
    """Every bioasq-dev query (ids, real MiniLM query vectors), embedded once in a batch, cached on disk."""
    qs = queries()
    ids = sorted(qs)
    key = hashlib.sha1("\x00".join(qs[i] for i in ids).encode()).hexdigest()[:12]
    path = cache / f"bioasq-queries-{MODEL}-{key}.npy"
    if not path.exists():
        from medkb.kb.embeddings import load_embedder

        emb = load_embedder(MODEL, threads=threads)
        np.save(path, np.asarray(emb.embed_passages([qs[i] for i in ids]), dtype=np.float32))
    return ids, np.load(path)


def sentence_pool() -> tuple[list[list[str]], list[str]]:
    """Sentences per bioasq-dev article, and every sentence of bioasq-dev and PubMedQA in one list."""
    split = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
    per_article = [[s for s in split.split(d["text"]) if len(s) > 20] or [d["text"]] for d in articles()]
    pool = [s for ss in per_article for s in ss]
    pq = json.loads((SHARED / "pubmedqa" / "ori_pqal.json").read_text())
    for item in pq.values():
        for ctx in item.get("CONTEXTS", []):
            pool += [s for s in split.split(ctx) if len(s) > 20]
    return per_article, pool


def ingest_real(store: KnowledgeStore, vecs: np.ndarray, bulk: int = 0) -> None:
    """The real bioasq-dev articles, one chunk each with its real vector (the queries' relevant documents)."""
    docs = [DocumentIn(tenant_id="public", source="bioasq-dev", external_id=str(d["_id"]), title=d.get("title", ""),
                       chunks=[ChunkIn(text=d["text"], embedding=v)]) for d, v in zip(articles(), vecs)]
    if bulk:
        for i in range(0, len(docs), bulk * PER_DOC):
            bulk_add(store, docs[i : i + bulk * PER_DOC])
        return
    for doc in docs:
        store.add_document(doc)


def synthetic_docs(start: int, count: int, vecs: np.ndarray, seed: int = 13, clustered: bool = False):
    """``count`` synthetic documents from number ``start`` on (deterministic per document number)."""
    per_article, pool = sentence_pool()
    dim = vecs.shape[1]
    for d in range(start, start + count):
        rng = np.random.default_rng([seed, d])
        if clustered:
            src1 = rng.integers(0, len(vecs), size=PER_DOC)
            v = vecs[src1] + rng.standard_normal((PER_DOC, dim)).astype(np.float32) * (0.5 / np.sqrt(dim))
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            chunks = []
            for a, vec in zip(src1, v):
                own = per_article[a]
                sents = [own[int(i)] for i in rng.integers(0, len(own), size=int(rng.integers(2, 4)))]
                sents += [pool[int(i)] for i in rng.integers(0, len(pool), size=int(rng.integers(1, 3)))]
                chunks.append(ChunkIn(text=" ".join(sents), embedding=vec))
            yield _doc(d, chunks)
            continue
        src = rng.integers(0, len(vecs), size=(PER_DOC, 2))
        w = rng.uniform(0.3, 0.7, size=(PER_DOC, 1)).astype(np.float32)
        v = w * vecs[src[:, 0]] + (1 - w) * vecs[src[:, 1]]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v += rng.standard_normal((PER_DOC, dim)).astype(np.float32) * (NOISE / np.sqrt(dim))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        chunks = []
        for (a, b), wa, vec in zip(src, w[:, 0], v):
            n = int(rng.integers(3, 6))
            n_a = max(1, round(n * wa))
            sents = [per_article[a][int(i)] for i in rng.integers(0, len(per_article[a]), size=n_a)]
            sents += [per_article[b][int(i)] for i in rng.integers(0, len(per_article[b]), size=max(1, n - n_a))]
            sents += [pool[int(i)] for i in rng.integers(0, len(pool), size=int(rng.integers(0, 2)))]
            chunks.append(ChunkIn(text=" ".join(sents), embedding=vec))
        yield _doc(d, chunks)


def _doc(d: int, chunks: list[ChunkIn]) -> DocumentIn:
    tenant = ("hosp-a", "hosp-b")[d % 2] if d % 10 == 0 else "public"
    return DocumentIn(tenant_id=tenant, source="synthetic", external_id=f"syn-{d}", title=f"synthetic {d}",
                      chunks=chunks)


def bulk_add(store: KnowledgeStore, docs: list[DocumentIn]) -> None:
    """The rows ``add_document`` writes for new documents (documents, chunks, change log, generation), for
    many documents in one transaction: multi-row INSERTs without the per-document session, sibling lookup
    and commit. Only for new external ids (no replace, no versions), which is all a synthetic corpus has."""
    from sqlalchemy import insert

    from medkb.kb import models as m

    sources = {k: store.ensure_source(*k) for k in {(d.tenant_id, d.source) for d in docs}}
    with store.session() as s:
        conn = s.connection()
        doc_rows = [{"tenant_id": d.tenant_id, "source_id": sources[(d.tenant_id, d.source)], "external_id": d.external_id,
                     "title": d.title, "doc_type": d.doc_type, "language": d.language, "version": d.version,
                     "content_hash": d.compute_hash()} for d in docs]
        doc_ids = conn.execute(insert(m.Document.__table__).returning(m.Document.id, sort_by_parameter_order=True),
                               doc_rows).scalars().all()
        chunk_rows = [{"tenant_id": d.tenant_id, "document_id": did, "ordinal": i, "section": c.section,
                       "text": c.text, "token_count": c.token_count, "char_start": c.char_start,
                       "char_end": c.char_end, "page": c.page, "embedding": np.asarray(c.embedding, np.float32)}
                      for d, did in zip(docs, doc_ids) for i, c in enumerate(d.chunks)]
        ids = conn.execute(insert(m.Chunk.__table__).returning(m.Chunk.id, sort_by_parameter_order=True),
                           chunk_rows).scalars().all()
        conn.execute(insert(m.ChunkChange.__table__), [{"chunk_id": int(i)} for i in ids])
        store._bump_generation(s)
    store._invalidate()


def build(db: Path, chunks: int, cache: Path, log_every: int = 20_000, clustered: bool = False,
          bulk: int = 0) -> dict:
    """Fill ``db`` up to ``chunks`` chunks (resumable: documents already written are not rewritten)."""
    vecs = base_vectors(cache)
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store, vecs.shape[1])
    store.set_embedding_model(MODEL, vecs.shape[1])
    if store.count("documents") == 0:
        ingest_real(store, vecs, bulk)
    have = store.count("chunks")
    start = store.count("documents") - len(vecs)
    need = max(0, chunks - have) // PER_DOC
    t0, written, pending = time.perf_counter(), 0, []
    for doc in synthetic_docs(start, need, vecs, clustered=clustered):
        if bulk:
            pending.append(doc)
            if len(pending) == bulk:
                bulk_add(store, pending)
                pending = []
        else:
            store.add_document(doc)
        written += PER_DOC
        if written % log_every == 0:
            print(f"  {have + written} chunks, {written / (time.perf_counter() - t0):.0f} chunks/s", file=sys.stderr)
    if pending:
        bulk_add(store, pending)
    secs = time.perf_counter() - t0
    total = store.count("chunks")
    store.close()
    return {"chunks": total, "written": written, "seconds": secs, "chunks_per_s": written / secs if secs else 0.0}


def build_indexes(db: Path) -> dict:
    """Build (or load) and persist the lexical index and the dense index of ``db`` once, as a first server start
    would, timing each: run under ``nice`` before the timed restart runs of bench_scale."""
    from medkb.retrieval.bm25 import BM25Generator
    from medkb.settings import Settings

    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    settings = Settings()
    out: dict = {"chunks": store.count("chunks")}
    t0 = time.perf_counter()
    g = BM25Generator(store)
    view = g.index()
    out["lexical_s"] = round(time.perf_counter() - t0, 1)
    out["lexical_built"] = g.builds == 1
    out["lexical_terms"] = len(view.vocab)
    out["lexical_postings"] = int(sum(seg.rows.size for seg in view.segments))
    out["lexical_file_mb"] = round(g.path.stat().st_size / 1e6, 1) if g.path and g.path.exists() else None
    t0 = time.perf_counter()
    store.prepare_vectors()
    out["vectors_s"] = round(time.perf_counter() - t0, 1)
    out["ann"] = dict(getattr(store, "last_ann_load", {}))
    out["ann_threshold"] = settings.database.ann_threshold
    status = Path("/proc/self/status").read_text()
    out["peak_rss_gb"] = round(int(next(x.split()[1] for x in status.splitlines() if x.startswith("VmHWM"))) / 1e6, 2)
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--chunks", type=int, required=True)
    ap.add_argument("--cache", type=Path, default=WORK)
    ap.add_argument("--vectors", choices=("mix", "clustered"), default="mix")
    ap.add_argument("--bulk", type=int, default=0, help="write this many documents per transaction (bulk_add) "
                    "instead of add_document per document: the same rows, far less CPU on a loaded machine")
    ap.add_argument("--indexes", action="store_true", help="then build and persist the lexical and dense indexes "
                    "(timed), so that bench_scale's restart runs load them")
    args = ap.parse_args()
    print(SYNTHETIC_NOTE if args.vectors == "mix" else CLUSTERED_NOTE)
    print(json.dumps(build(args.db, args.chunks, args.cache, clustered=args.vectors == "clustered",
                           bulk=args.bulk)), flush=True)
    if args.indexes:
        print(json.dumps({"indexes": build_indexes(args.db)}))


if __name__ == "__main__":
    main()
