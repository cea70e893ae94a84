"""The graph generator on a real store and the real linker: query entity → neighbours → mentioning chunks."""

from __future__ import annotations

import pytest

from medkb.kb import models as m
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
