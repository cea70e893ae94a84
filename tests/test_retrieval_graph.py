"""The graph generator on a real store and the real linker: query entity → neighbours → mentioning chunks."""

from __future__ import annotations

import pytest

from medkb.kb import models as m
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.retriever import build_retriever
from medkb.settings import Settings
from tests.test_retrieval_bm25 import add_doc

pytest.importorskip("medkb.kb.graph.linker")


def entity(store: KnowledgeStore, name: str, typ: str) -> int:
    from medkb.kb.graph.names import fold

    with store.session() as s:
        e = m.Entity(tenant_id=m.PUBLIC_TENANT, type=typ, name=name, codes={}, synonyms={})
        s.add(e)
        s.flush()
        s.add(m.EntityName(entity_id=e.id, norm=fold(name), language="en"))
        return e.id


def test_graph_mode_follows_edges_keeps_the_path_and_the_filters(sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    from medkb.kb.records import ChunkIn, DocumentIn

    met = entity(sqlite_store, "metformin", "drug")
    t2d = entity(sqlite_store, "type 2 diabetes", "disease")
    entity(sqlite_store, "migraine", "disease")
    with sqlite_store.session() as s:
        s.add(m.Edge(source_entity_id=met, target_entity_id=t2d, relation="treats", weight=1.0))

    def doc(tenant: str, ext: str, text: str, ents: dict[int, int]) -> int:
        v = embedder.embed_passages([text])[0]
        return sqlite_store.add_document(DocumentIn(
            tenant_id=tenant, source="lit", external_id=ext, title=ext,
            chunks=[ChunkIn(text=text, embedding=v, entity_ids=ents)])).chunk_ids[0]

    a = doc("mine", "a", "Metformin dosing in renal impairment.", {met: 1})
    b = doc("public", "b", "Lifestyle change delays type 2 diabetes.", {t2d: 2})
    doc("mine", "c", "Unrelated text about fractures.", {})
    hidden = doc("other", "d", "Metformin in the other hospital.", {met: 1})

    r = build_retriever(sqlite_store, Settings(), embedder=embedder)
    res = r.search("metformin dosing", SearchFilters(tenant_id="mine"), k=10, mode="graph")
    assert [e["name"] for e in res.linked_entities] == ["metformin"]
    ids = [h.chunk.id for h in res.hits]
    assert ids[0] == a and b in ids and hidden not in ids and len(ids) == 2
    by_id = {h.chunk.id: h for h in res.hits}
    assert by_id[a].trace["graph_path"] == ["metformin"]
    assert by_id[b].trace["graph_path"] == ["metformin", "treats", "type 2 diabetes"]
    assert by_id[b].trace["generators"]["graph"]["reason"]["entity"] == "type 2 diabetes"
    hyb = r.search("metformin dosing", SearchFilters(tenant_id="mine"), k=10)
    assert "graph" in {g for h in hyb.hits for g in h.trace["generators"]}
    assert hidden not in {h.chunk.id for h in hyb.hits}
    r.close()


def test_hybrid_boosts_candidates_naming_the_query_drug_and_only_drugs_and_genes(sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    from medkb.kb.graph.names import fold

    met = entity(sqlite_store, "metformin", "drug")
    t2d = entity(sqlite_store, "type 2 diabetes", "disease")
    with sqlite_store.session() as s:
        s.add(m.EntityName(entity_id=met, norm=fold("Glucophage"), language="en"))
    texts = {
        "brand": ("Glucophage in renal impairment: halve the daily dose when eGFR falls below 45.", {met: 1}),
        "generic": ("Dosing in renal impairment: principles of dose adjustment in renal impairment.", {}),
        "insulin": ("Type 2 diabetes in renal impairment: insulin dosing needs care.", {t2d: 1}),
        "ckd": ("Chronic kidney disease staging uses eGFR and albuminuria.", {}),
        "fracture": ("Hip fracture surgery within 48 hours lowers mortality.", {}),
    }
    ids = {}
    for ext, (text, ents) in texts.items():
        ids[ext] = sqlite_store.add_document(DocumentIn(
            tenant_id="public", source="lit", external_id=ext, title=ext,
            chunks=[ChunkIn(text=text, embedding=embedder.embed_passages([text])[0], entity_ids=ents)])).chunk_ids[0]

    # The boost alone, without the feedback pass (tests/test_retrieval_feedback.py): over five passages the
    # second dense search's z-scores swing the two leaders by less than the boost's own effect is worth.
    on_settings, off_settings = Settings(), Settings()
    on_settings.retrieval.feedback_depth = off_settings.retrieval.feedback_depth = 0
    on = build_retriever(sqlite_store, on_settings, embedder=embedder)
    off_settings.retrieval.graph_weight = 0.0
    off = build_retriever(sqlite_store, off_settings, embedder=embedder)
    q = "metformin dosing in renal impairment"
    plain = off.search(q, SearchFilters(), k=5).hits
    without = [h.chunk.id for h in plain]
    assert without.index(ids["generic"]) < without.index(ids["brand"])  # lexically the generic page wins
    res = on.search(q, SearchFilters(), k=5)
    # It names the query's drug, by its brand: it gains the whole boost and passes every other passage but the
    # lexical leader; nothing else moves.
    score = {h.chunk.id: h.score for h in res.hits}
    before = {h.chunk.id: h.score for h in plain}
    assert score[ids["brand"]] - before[ids["brand"]] == pytest.approx(on.rs.graph_weight)
    assert all(score[c] == pytest.approx(before[c]) for c in before if c != ids["brand"])
    assert [h.chunk.id for h in res.hits][:2] == [ids["generic"], ids["brand"]]
    top = next(h for h in res.hits if h.chunk.id == ids["brand"]).trace
    assert top["generators"]["graph"]["reason"]["entity"] == "metformin" and top["graph_path"] == ["metformin"]
    assert top["generators"]["graph"]["score"] == 1.0  # it names every drug and gene of the query
    # A disease link alone does not move anything: such links were noise on bioasq-dev.
    q2 = "type 2 diabetes dosing in renal impairment"
    res2 = on.search(q2, SearchFilters(), k=5)
    assert [e["name"] for e in res2.linked_entities] == ["type 2 diabetes"]
    assert [h.chunk.id for h in res2.hits] == [h.chunk.id for h in off.search(q2, SearchFilters(), k=5).hits]
    assert all("graph" not in h.trace["generators"] for h in res2.hits)
    # Another tenant's chunk naming metformin is neither boosted nor counted.
    hidden = sqlite_store.add_document(DocumentIn(
        tenant_id="other", source="lit", external_id="h", title="h",
        chunks=[ChunkIn(text="Metformin in another hospital.", embedding=embedder.embed_passages(["x"])[0],
                        entity_ids={met: 1})])).chunk_ids[0]
    assert hidden not in {h.chunk.id for h in on.search(q, SearchFilters(tenant_id="mine"), k=10).hits}
    on.close()
    off.close()


def test_mention_postings_follow_filters_and_writes(sqlite_store: KnowledgeStore, embedder) -> None:  # type: ignore[no-untyped-def]
    from medkb.retrieval.graph_index import MentionPostings, entity_coverage

    met = entity(sqlite_store, "metformin", "drug")
    ins = entity(sqlite_store, "insulin", "drug")

    def doc(tenant: str, ext: str, ents: dict[int, int]) -> int:
        return sqlite_store.add_document(DocumentIn(
            tenant_id=tenant, source="lit", external_id=ext, title=ext,
            chunks=[ChunkIn(text=ext, embedding=embedder.embed_passages([ext])[0], entity_ids=ents)])).chunk_ids[0]

    a = doc("public", "a", {met: 2})
    b = doc("public", "b", {met: 1, ins: 1})
    c = doc("public", "c", {})
    p = MentionPostings(sqlite_store)
    pub = sqlite_store.allowed_chunk_ids(SearchFilters())
    assert p.postings(met, pub)[0].tolist() == [a, b] and p.postings(met, pub)[1].tolist() == [2, 1]
    hidden = doc("other", "d", {ins: 1})  # a write: the postings are rebuilt on next use
    assert p.postings(ins)[0].tolist() == [b, hidden]
    assert p.postings(ins, sqlite_store.allowed_chunk_ids(SearchFilters()))[0].tolist() == [b]
    # insulin is rarer than metformin among public chunks, so naming it is worth more of the share.
    cover = entity_coverage(p, [met, ins], [a, b, c], sqlite_store.allowed_chunk_ids(SearchFilters()))
    assert set(cover) == {a, b} and cover[b][0] == pytest.approx(1.0) and 0 < cover[a][0] < 0.5
    assert cover[b][1] == ins
