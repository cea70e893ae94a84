"""Safety facts for a patient (by code or entity), tenant isolation, and co-mention edges kept apart."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from medkb.errors import NotFound
from medkb.ingest.ontologies import load_ontology
from medkb.kb import models as m
from medkb.kb.graph.comention import build_comention_edges
from medkb.kb.graph.linker import EntityLinker
from medkb.kb.graph.safety import safety_facts
from medkb.kb.graph.traversal import GraphView
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.kb.store import KnowledgeStore


@pytest.fixture
def kb(sqlite_store: KnowledgeStore) -> KnowledgeStore:
    load_ontology(sqlite_store, "diseases-basic")
    load_ontology(sqlite_store, "cmekg", subjects=["盐酸二甲双胍片", "注射用卡托普利", "乳酸性酸中毒"])
    return sqlite_store


def add_patient(store: KnowledgeStore, tenant: str, pid: str, conditions: list[tuple], meds: list[tuple]) -> None:
    store.ensure_tenant(tenant)
    with store.session() as s:
        s.add(m.Patient(id=pid, tenant_id=tenant, birth_year=1960, sex="F"))
        s.flush()
        for system, code, eid in conditions:
            s.add(m.Condition(patient_id=pid, tenant_id=tenant, code_system=system, code=code, entity_id=eid))
        for system, code, eid in meds:
            s.add(m.Medication(patient_id=pid, tenant_id=tenant, code_system=system, code=code, entity_id=eid))


def eid(store: KnowledgeStore, name: str) -> int:
    hits = GraphView(store).find(name)
    assert hits, name
    return hits[0].id


def test_patient_drug_adverse_reactions_via_products_with_provenance(kb: KnowledgeStore, tenant: str) -> None:
    metformin = eid(kb, "二甲双胍")
    add_patient(kb, tenant, "p1", conditions=[("ICD-10-CM", "E11.9", None)], meds=[(None, None, metformin)])
    facts = safety_facts(kb, tenant, patient_id="p1")
    adverse = [f for f in facts if f.kind == "adverse_reaction"]
    assert adverse and all(f.subject_id == metformin for f in adverse)
    assert {f.via for f in adverse} == {"盐酸二甲双胍片"}  # stated on the CMeKG product containing it
    assert all(f.source == "cmekg" and f.release and "PyCMeKG" in f.release for f in adverse)
    assert "低血糖症" in {f.object for f in adverse}


def test_interaction_between_context_entities(kb: KnowledgeStore, tenant: str) -> None:
    captopril, triamterene = eid(kb, "注射用卡托普利"), eid(kb, "氨苯蝶啶")
    facts = safety_facts(kb, tenant, entity_ids=[captopril, triamterene])
    inter = [f for f in facts if f.kind == "interaction"]
    assert [(f.subject_id, f.object_id) for f in inter] == [(captopril, triamterene)]
    assert inter[0].involves_patient and inter[0].provenance.startswith("cmekg")
    # one drug alone: no interaction is reported (the other end is not in the context)
    assert not [f for f in safety_facts(kb, tenant, entity_ids=[captopril]) if f.kind == "interaction"]


def test_patient_of_another_tenant_is_not_found(kb: KnowledgeStore, tenant: str) -> None:
    add_patient(kb, "other-hospital", "p2", conditions=[("ICD10CM", "E11.9", None)], meds=[])
    with pytest.raises(NotFound):
        safety_facts(kb, tenant, patient_id="p2")
    assert safety_facts(kb, tenant, patient_id=None) == []


def test_comention_edges_are_separate_and_counted(kb: KnowledgeStore, tenant: str) -> None:
    linker = EntityLinker.load(kb)
    texts = ["Metformin is first line in type 2 diabetes.", "Metformin for type 2 diabetes; asthma unrelated.",
             "Asthma alone."]
    kb.add_document(DocumentIn(tenant_id=tenant, source="notes", external_id="d1",
                               chunks=[ChunkIn(text=t, entity_ids=linker.entity_ids(t)) for t in texts]))
    rep = build_comention_edges(kb, tenant)
    assert rep.added == rep.pairs > 0
    met, t2d, asthma = eid(kb, "metformin"), eid(kb, "type 2 diabetes"), eid(kb, "asthma")
    with kb.session() as s:
        rows = {(a, b): (w, c) for a, b, w, c in s.execute(
            select(m.Edge.source_entity_id, m.Edge.target_entity_id, m.Edge.weight, m.Edge.curated)
            .where(m.Edge.relation == "co_mention"))}
    assert rows[tuple(sorted((met, t2d)))] == (2.0, False)
    assert rows[tuple(sorted((met, asthma)))] == (1.0, False)
    again = build_comention_edges(kb, tenant)
    assert (again.added, again.updated, again.removed) == (0, 0, 0)
    # other tenants do not see this tenant's co-mention edges; the tenant does
    assert not GraphView(kb, "someone-else").neighbors([met], relations=["co_mention"])
    mine = GraphView(kb, tenant).neighbors([met], relations=["co_mention"])
    assert {n.entity.id for n in mine} == {t2d, asthma}
    assert all(not n.via.curated for n in mine)
