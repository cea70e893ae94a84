"""The BM25 generator: stemming, Chinese segmentation, and an index that follows inserts and deletes."""

from __future__ import annotations

from medkb.kb.filters import SearchFilters
from medkb.kb.records import AddResult, ChunkIn, DocumentIn
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.bm25 import BM25Generator
from medkb.text import add_chinese_words, terms


def add_doc(store: KnowledgeStore, embedder, tenant: str, ext: str, texts: list[str], **kw) -> AddResult:  # type: ignore[no-untyped-def]
    vecs = embedder.embed_passages(texts)
    return store.add_document(DocumentIn(
        tenant_id=tenant, source=kw.pop("source", "lit"), external_id=ext, title=kw.pop("title", f"doc {ext}"),
        chunks=[ChunkIn(text=t, embedding=v) for t, v in zip(texts, vecs)], **kw,
    ))


def test_tokenizer_stems_drops_stop_words_and_segments_chinese() -> None:
    tok = terms
    assert tok("Are the diabetic complications?") == tok("diabetes complication")
    assert "the" not in tok("the drug") and tok("the drug") == ["drug"]
    zh = tok("糖尿病患者的治疗")
    assert "糖尿病" in zh and "的" not in zh


def test_index_follows_inserts_replacements_and_deletes(sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    g = BM25Generator(sqlite_store)
    f = SearchFilters(tenant_id="t1")
    assert g.search("warfarin", f, 10) == []
    a = add_doc(sqlite_store, embedder, "t1", "a", ["warfarin interacts with aspirin"])
    first = g.index()
    assert [c.chunk_id for c in g.search("warfarin", f, 10)] == list(a.chunk_ids)
    assert g.index() is first  # no write, no rebuild
    b = add_doc(sqlite_store, embedder, "t1", "b", ["warfarin dosing in the elderly", "vitamin k antagonists"])
    assert g.index() is not first
    assert {c.chunk_id for c in g.search("warfarin", f, 10)} == {a.chunk_ids[0], b.chunk_ids[0]}
    # A new version supersedes the old one: only the new text is findable.
    b2 = add_doc(sqlite_store, embedder, "t1", "b", ["apixaban dosing in the elderly"], version="2")
    assert [c.chunk_id for c in g.search("warfarin", f, 10)] == list(a.chunk_ids)
    assert [c.chunk_id for c in g.search("apixaban", f, 10)] == list(b2.chunk_ids)
    sqlite_store.delete_document(a.document_id)
    assert g.search("warfarin", f, 10) == []
    assert g.search("warfarin", SearchFilters(tenant_id="t1", include_superseded=True), 10)[0].chunk_id == b.chunk_ids[0]


def test_two_generators_on_one_database_see_each_others_writes(tmp_path, embedder) -> None:  # type: ignore[no-untyped-def]
    from medkb.kb.factory import init_store, open_store
    from medkb.settings import DatabaseSettings

    url = f"sqlite:///{tmp_path / 'kb.db'}"
    s1, s2 = open_store(DatabaseSettings(url=url)), open_store(DatabaseSettings(url=url))
    init_store(s1)
    g2 = BM25Generator(s2)
    assert g2.search("sepsis", SearchFilters(), 5) == []
    r = add_doc(s1, embedder, "public", "x", ["early antibiotics in sepsis"])  # written by "another process"
    assert [c.chunk_id for c in g2.search("sepsis", SearchFilters(), 5)] == list(r.chunk_ids)
    s1.close()
    s2.close()


def test_filters_are_inside_scoring_not_a_post_filter(sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    # Many strong matches for another tenant would crowd out the one allowed match under post-filtering.
    for i in range(30):
        add_doc(sqlite_store, embedder, "other", f"o{i}", ["asthma asthma asthma inhaler"])
    mine = add_doc(sqlite_store, embedder, "mine", "m", ["a long note that mentions asthma once among many words"])
    got = BM25Generator(sqlite_store).search("asthma", SearchFilters(tenant_id="mine"), 5)
    assert [c.chunk_id for c in got] == list(mine.chunk_ids)


def test_title_counts_for_bm25(sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    r = add_doc(sqlite_store, embedder, "public", "t", ["first line therapy and dosing"], title="Hypertension guideline")
    assert [c.chunk_id for c in BM25Generator(sqlite_store).search("hypertension", SearchFilters(), 5)] == list(r.chunk_ids)
    assert BM25Generator(sqlite_store, with_title=False).search("hypertension", SearchFilters(), 5) == []


_ZH_SCRIPT = r"""
import sys
from medkb.ingest.ontologies import load_ontology
from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.retrieval.bm25 import BM25Generator
from medkb.settings import DatabaseSettings
from medkb.text import terms

store = open_store(DatabaseSettings(url=f"sqlite:///{sys.argv[1]}"))
init_store(store)
if sys.argv[2] == "cmekg":
    load_ontology(store, "cmekg", subjects=["盐酸二甲双胍片", "乳酸性酸中毒"], relink=False)
texts = {
    "target": "服用二甲双胍的糖尿病患者出现乳酸性酸中毒时应立即停药并就医治疗，同时监测血乳酸水平。",
    "distractor": "二甲，双，胍，乳酸，性，酸中毒；二甲，双，胍，乳酸，性，酸中毒。",
    "other": "高血压患者应控制血压。",
}
for ext, text in texts.items():
    store.add_document(DocumentIn(tenant_id="public", source="zh", external_id=ext, title="",
                                  chunks=[ChunkIn(text=text)]))
g = BM25Generator(store, with_title=False)
top = g.search("二甲双胍 乳酸性酸中毒", SearchFilters(), 2)
chunks = store.get_chunks([c.chunk_id for c in top])
print(chunks[0].external_id if chunks else "", "|".join(terms("二甲双胍 乳酸性酸中毒")))
"""


def test_chinese_entity_names_join_the_segmenter_dictionary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Fresh interpreters: jieba's dictionary is process-wide, so 'without' must run where nothing added words."""
    import os
    import subprocess
    import sys

    def run(kind: str) -> tuple[str, str]:
        out = subprocess.run([sys.executable, "-c", _ZH_SCRIPT, str(tmp_path / f"{kind}.db"), kind],
                             capture_output=True, text=True, timeout=300, env=os.environ.copy())
        assert out.returncode == 0, out.stderr[-2000:]
        top, toks = out.stdout.strip().splitlines()[-1].split(" ", 1)
        return top, toks

    plain_top, plain_terms = run("plain")
    kb_top, kb_terms = run("cmekg")
    assert "二甲双胍" not in plain_terms.split("|") and plain_top == "distractor"
    assert {"二甲双胍", "乳酸性酸中毒"} <= set(kb_terms.split("|")) and kb_top == "target"


def test_question_words_do_not_outrank_the_subject_and_capitalised_acronyms_stay(sqlite_store: KnowledgeStore,
                                                                                  embedder) -> None:  # type: ignore[no-untyped-def]
    """BioASQ-style questions ("What is…", "Which…") once matched passages by their question words."""
    target = add_doc(sqlite_store, embedder, "public", "t", ["Imatinib is the first line treatment of chronic "
                                                             "myeloid leukaemia in adults and in children."])
    add_doc(sqlite_store, embedder, "public", "q", ["What should we ask? Which trials, how many, and what does it mean?"])
    leuk = add_doc(sqlite_store, embedder, "public", "all", ["ALL relapse after transplant"])
    add_doc(sqlite_store, embedder, "public", "kids", ["all children relapse"])
    for i in range(4):
        add_doc(sqlite_store, embedder, "public", f"x{i}", [f"Background text number {i} about hypertension care."])
    g = BM25Generator(sqlite_store)
    got = g.search("What is imatinib, and which disease does it treat?", SearchFilters(), 5)
    assert got[0].chunk_id == target.chunk_ids[0]
    assert [c.chunk_id for c in g.search("Which ALL?", SearchFilters(), 5)] == list(leuk.chunk_ids)
    assert terms("How does ALL relapse?") == ["all", "relaps"] and terms("how does all relapse") == ["relaps"]
