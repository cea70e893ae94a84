"""Which English stop list should the lexical index drop? BM25 alone on bioasq-dev, one list against another.

    PYTHONPATH=. .venv/bin/python bench/bench_stopwords.py --db /tmp/bm25-text.db
    PYTHONPATH=. .venv/bin/python bench/bench_stopwords.py --db /tmp/bm25-pmq.db --pubmedqa

``--pubmedqa``: MIRAGE's PubMedQA* questions over the 1,000 PubMedQA-L abstracts, their gold PMIDs as qrels
(the set ``medkb eval qa`` scores retrieval-only), instead of bioasq-dev.

A text-only knowledge base (one chunk per article, title + abstract, no vectors, no entities: BM25 needs
neither) is written once; then medkb's own BM25Generator ranks every judged query with each stop list (the
index built per list, in memory), scored by document on the query halves ``tune_graph.split_of`` defines
(dev: the half any choice was made on; test: held out) and on all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from medkb.eval.datasets import iter_jsonl, load_beir  # noqa: E402
from medkb.eval.metrics import best_chunk_per_doc, evaluate  # noqa: E402
from medkb.kb.factory import init_store, open_store  # noqa: E402
from medkb.kb.filters import SearchFilters  # noqa: E402
from medkb.kb.records import ChunkIn, DocumentIn  # noqa: E402
from medkb.retrieval.bm25 import BM25Generator  # noqa: E402
from medkb.settings import DatabaseSettings  # noqa: E402
from medkb.text import (ACRONYM_STOPWORDS_EN, FUNCTION_WORDS_EN, SEARCH_STOPWORDS_EN,  # noqa: E402
                        STOPWORDS_EN, terms)
from tune_graph import split_of  # noqa: E402

DATA = Path(os.environ.get("MEDKB_SHARED_DATA", ROOT.parent / "shared" / "data")) / "bioasq-dev"
METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
# (stop list, acronyms kept in capitals): Lucene's 33 (the index until tokeniser version 2) and what medkb uses now.
LISTS = {
    "lucene (tokens v1)": (STOPWORDS_EN, frozenset()),
    "function words": (FUNCTION_WORDS_EN, frozenset()),
    "function words, capitalised acronyms kept (tokens v2)": (SEARCH_STOPWORDS_EN, ACRONYM_STOPWORDS_EN),
}


def text_kb(db: Path, data: Path):  # type: ignore[no-untyped-def]
    store = open_store(DatabaseSettings(url=f"sqlite:///{db}"))
    init_store(store)
    if store.count("chunks") == 0:
        for a in iter_jsonl(data / "corpus.jsonl", ("_id", "text")):
            store.add_document(DocumentIn(tenant_id="public", source=data.name, external_id=str(a["_id"]),
                                          title=a.get("title") or "", chunks=[ChunkIn(text=a["text"])]))
    return store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--pubmedqa", action="store_true", help="PubMedQA* gold PMIDs instead of bioasq-dev")
    a = ap.parse_args()
    data = DATA
    if a.pubmedqa:
        from medkb.eval.datasets import load_mirage
        from medkb.eval.qa import gold_pmid_dataset

        shared = DATA.parent
        data = a.db.with_name(a.db.name + ".beir")
        gold_pmid_dataset(load_mirage(shared / "mirage" / "benchmark.json", "pubmedqa"), shared / "pubmedqa",
                          data, "pubmedqa-gold-pmid")
    store = text_kb(a.db, data)
    ds = load_beir(data, "test")
    f = SearchFilters(tenant_id="public")
    ext = {c.id: c.external_id for c in store.get_chunks(list(range(1, store.count("chunks") + 1)), f)}
    out: dict = {"load": os.getloadavg(), "chunks": len(ext)}
    for name, (stop, acr) in LISTS.items():
        g = BM25Generator(store, index_path=None)
        g.stop, g.acronyms, g.tokenize = stop, acr, (lambda t, stop=stop, acr=acr: terms(t, stop, acr))
        run = {q: best_chunk_per_doc([ext[c.chunk_id] for c in g.search(t, f, 100)]) for q, t in ds.queries.items()}
        out[name] = {}
        for split in ("dev", "test", "all"):
            qids = [q for q in ds.queries if split in ("all", split_of(q))]
            m = evaluate({q: run[q] for q in qids}, {q: ds.qrels[q] for q in qids}, METRICS)
            out[name][split] = {k: round(v, 4) for k, v in m.items()}
        print(name, " | ".join(f"{s} nDCG@10 {out[name][s]['ndcg@10']:.4f}" for s in ("dev", "test", "all")))
    out["load_end"] = os.getloadavg()
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
