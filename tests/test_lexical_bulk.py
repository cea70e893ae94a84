"""The bulk build of the lexical index (batch tokeniser, batched segment builder) gives the same index as the
per-text tokeniser and bm25s: same terms per chunk, same postings, same BM25 scores, over real bioasq-dev text."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medkb.kb.factory import init_store, open_store
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.retrieval import bm25 as bm25_mod
from medkb.retrieval import lexical as lx
from medkb.retrieval.bm25 import BM25Generator
from medkb.settings import DatabaseSettings
from medkb.text import FUNCTION_WORDS_EN, TermCoder, add_chinese_words, terms

from .conftest import SHARED_DATA

TEXTS = [
    "Warfarin and aspirin: the INR rises; warfarin's effect is dose-dependent (5 mg, 10 mg, 2 x).",
    "It is what it is: a, an, the, and of are dropped; I and x too, but 7 stays, and so does 42.",
    "二甲双胍用于2型糖尿病的治疗，metformin 500 mg bid。",
    "",
    "β-blockers (β1) reduce mortality after myocardial infarction; beta blockers, BETA-BLOCKERS.",
    "don't won't patient's patients' O'Brien's 3'UTR 'quoted' a''b x'y'z 5'-3' '",
    "WHO: ALL in children. Who can treat all of us? CAN, ME and US; İSTANBUL ALL.",
    "\u212a-ras (Kelvin sign), \u0130stanbul, na\u00efve, caf\u00e9, 10\u00b0C, \u00b15%, 2\u00b2\ttab\nnew-line",
]


def bag(vocab: dict[str, int], ids: np.ndarray) -> Counter:
    inverse = {i: t for t, i in vocab.items()}
    return Counter(inverse[int(i)] for i in ids)


@pytest.mark.parametrize("stop", [None, FUNCTION_WORDS_EN])
def test_term_coder_gives_each_text_the_tokenizers_bag_of_terms(stop) -> None:  # type: ignore[no-untyped-def]
    add_chinese_words(["二甲双胍"])
    vocab: dict[str, int] = {}
    coder = TermCoder(vocab) if stop is None else TermCoder(vocab, stop)
    for _ in range(2):  # the second pass is served from the coder's word cache
        lengths, ids = coder.encode(TEXTS)
        assert lengths.tolist() == [len(terms(t) if stop is None else terms(t, stop)) for t in TEXTS]
        parts = np.split(ids, np.cumsum(lengths)[:-1])
        for text, part in zip(TEXTS, parts):
            assert bag(vocab, part) == Counter(terms(text) if stop is None else terms(text, stop)), text
    assert "二甲双胍" in vocab and "the" not in vocab and "7" in vocab and "x" not in vocab


def test_segment_builder_batches_equal_one_batch_and_refuse_ids_out_of_order() -> None:
    rng = np.random.default_rng(7)
    pairs = [(int(c), rng.integers(0, 300, size=int(rng.integers(0, 40))).tolist())
             for c in rng.permutation(np.arange(1, 1501)) * 5]
    one = lx.build_segment(lx.Docs.of(pairs), 300)
    want = {(c, t): n for c, ts in pairs for t, n in Counter(ts).items()}
    got = {}
    for t in range(300):
        rows, tf = one.postings(t)
        assert (np.diff(rows) > 0).all()  # rows ascending within a posting list
        got.update({(int(one.ids[r]), t): int(f) for r, f in zip(rows, tf)})
    assert got == want
    assert dict(zip(one.ids.tolist(), one.dl.tolist())) == {c: len(ts) for c, ts in pairs}
    b = lx.SegmentBuilder()
    ordered = sorted(pairs)
    for i in range(0, len(ordered), 97):
        b.add(lx.Docs.of(ordered[i : i + 97]))
    many = b.finish(300)
    for name in ("ids", "dl", "indptr", "rows", "tf"):
        assert np.array_equal(getattr(many, name), getattr(one, name)), name
    b = lx.SegmentBuilder()
    b.add(lx.Docs.of(ordered[100:200]))
    with pytest.raises(ValueError, match="ascending"):
        b.add(lx.Docs.of(ordered[:100]))


@pytest.mark.skipif(not (SHARED_DATA / "bioasq-dev").exists(), reason="needs ../shared/data/bioasq-dev")
def test_bulk_build_in_batches_scores_exactly_as_bm25s(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import bm25s

    base = SHARED_DATA / "bioasq-dev"
    with (base / "corpus.jsonl").open() as f:
        arts = [json.loads(line) for _, line in zip(range(800), f)]
    with (base / "queries.jsonl").open() as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(60), f)]
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path}/kb.db"))
    init_store(store)
    for a in arts:
        store.add_document(DocumentIn(tenant_id="public", source="bioasq", external_id=str(a["_id"]),
                                      title=a.get("title", ""), chunks=[ChunkIn(text=a["text"])]))
    monkeypatch.setattr(bm25_mod, "BUILD_BATCH", 64)  # 13 batches through the streaming build
    g = BM25Generator(store, index_path=None)
    view = g.index()
    assert g.builds == 1 and view.ids.size == len(arts)
    model = bm25s.BM25(k1=1.2, b=0.75)
    model.index([terms(" ".join(p for p in (a.get("title", ""), a["text"]) if p)) for a in arts],
                show_progress=False)
    checked = 0
    for q in queries:
        qt = [t for t in dict.fromkeys(terms(q)) if t in model.vocab_dict]
        if not qt:
            continue
        want = model.get_scores(qt)
        got = view.scores(qt, g.k1, g.b)
        assert np.allclose(got, want[view.ids - view.ids.min()], rtol=1e-4, atol=1e-5), q  # ids follow articles
        checked += 1
    assert checked > 40
    store.close()
