"""End-to-end ingest throughput vs raw embedding throughput of the same model on the same chunk texts.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python -m bench.bench_ingest [--docs 1000] [--model all-MiniLM-L6-v2]

Raw = one embed_passages call over every chunk text the pipeline produces (the model's best case).
End-to-end = ingest_documents into a fresh SQLite file: parse, chunk, hash, embed, write, commit.
Raw is measured before and after the ingest and averaged, because the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medkb.ingest.chunker import Budget  # noqa: E402
from medkb.ingest.corpora import iter_pubmedqa  # noqa: E402
from medkb.ingest.pipeline import ingest_documents, to_document  # noqa: E402
from medkb.kb.embeddings import load_embedder, token_counter  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.settings import DatabaseSettings  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa" / "ori_pqal.json"


def chunk_texts(src: Path, model: str = "all-MiniLM-L6-v2") -> list[str]:
    """The chunk texts the ingest pipeline makes of a PubMedQA file (sized in ``model``'s own tokens)."""
    budget = Budget.for_embedder(token_counter(model))
    return [c.text for p in iter_pubmedqa(src) if not isinstance(p, Exception)
            for c in to_document(p, tenant_id="public", source="b", doc_type="literature", lang="en",
                                 version="1", effective_date=None, budget=budget).chunks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"))
    args = ap.parse_args()

    data = json.loads(args.data.read_text())
    subset = dict(list(data.items())[: args.docs])
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "ori_pqal.json"
        src.write_text(json.dumps(subset))
        texts = chunk_texts(src, args.model)
        emb = load_embedder(args.model, backend=args.backend)
        emb.embed_passages(texts[:32])  # warm-up

        def raw() -> float:
            t = time.perf_counter()
            emb.embed_passages(texts)
            return time.perf_counter() - t

        raw1 = raw()
        store = open_store(DatabaseSettings(url=f"sqlite:///{Path(tmp) / 'kb.db'}"))
        init_store(store)
        t = time.perf_counter()
        report = ingest_documents(store, emb, [src], source="pubmedqa", fmt="pubmedqa")
        e2e = time.perf_counter() - t
        t = time.perf_counter()
        again = ingest_documents(store, emb, [src], source="pubmedqa", fmt="pubmedqa")
        rerun = time.perf_counter() - t
        store.close()
        raw2 = raw()

    assert report.chunks == len(texts), (report.chunks, len(texts))
    raw_s = (raw1 + raw2) / 2
    print(f"model {args.model} ({getattr(emb, 'backend', '?')}): {len(subset)} documents, {len(texts)} chunks")
    print(f"raw embedding : {len(texts) / raw_s:8.1f} chunks/s  ({raw_s:.1f} s; runs {raw1:.1f} s, {raw2:.1f} s)")
    print(f"end-to-end    : {len(texts) / e2e:8.1f} chunks/s  ({e2e:.1f} s; {report.added / e2e:.1f} documents/s)")
    print(f"ratio         : {raw_s / e2e:8.2%}  (goal >= 85%)")
    print(f"re-run        : {again.unchanged} unchanged in {rerun:.2f} s")


if __name__ == "__main__":
    main()
