"""Ontology loading: real package data, merge on codes then names, idempotent re-runs, source deletion."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from sqlalchemy import func, select

from medkb.errors import InvalidInput
from medkb.ingest.ontologies import load_ontology
from medkb.ingest.ontologies.writer import OntologyReport
from medkb.kb import models as m
from medkb.kb.factory import init_store, open_store
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings

# A slice of each ontology that keeps the session under budget on two shared cores while keeping
# every kind of record: whole drug and disease tables, ICD-10-CM chapters E and I, HPO's whole
# hierarchy with its first annotations, and the CMeKG subjects the Chinese tests talk about.
ICD_PREFIXES = ["E", "I10", "I21", "N18"]
HPO_ROWS = 25_000
CMEKG_SUBJECTS = ["盐酸二甲双胍片", "乳酸性酸中毒", "糖尿病", "注射用卡托普利", "氨苯蝶啶片"]
LOADS: list[tuple[str, dict]] = [
    ("diseases-basic", {}),
    ("drugs", {}),
    ("icd10cm", {"prefixes": ICD_PREFIXES}),
    ("hpo", {"limit": HPO_ROWS}),
    ("cmekg", {"subjects": CMEKG_SUBJECTS}),
]


@functools.cache
def _loaded(base: Path) -> tuple[str, dict[str, OntologyReport]]:
    base.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{base / 'graph.db'}"
    store = open_store(DatabaseSettings(url=url))
    init_store(store)
    reports = {name: load_ontology(store, name, **opts) for name, opts in LOADS}
    store.close()
    return url, reports


def graph_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, OntologyReport]]:
    """(database URL, load reports) of the session's ontology database, built once per session."""
    return _loaded(tmp_path_factory.getbasetemp() / "graph-session")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[KnowledgeStore, dict[str, OntologyReport]]:
    url, reports = graph_db(tmp_path_factory)
    store = open_store(DatabaseSettings(url=url))
    yield store, reports
    store.close()


def entity_by_code(store: KnowledgeStore, system: str, code: str) -> m.Entity:
    with store.session() as s:
        ent = s.scalar(select(m.Entity).join(m.EntityCode, m.EntityCode.entity_id == m.Entity.id)
                       .where(m.EntityCode.system == system, m.EntityCode.code == code))
        assert ent is not None, f"no entity for {system}:{code}"
        return ent


def names_of(store: KnowledgeStore, entity_id: int) -> set[str]:
    with store.session() as s:
        return set(s.scalars(select(m.EntityName.norm).where(m.EntityName.entity_id == entity_id)))


def test_every_ontology_loads_with_its_release(loaded) -> None:
    store, reports = loaded
    sources = {s.name: s for s in store.list_sources()}
    for name, _ in LOADS:
        rep = reports[name]
        assert rep.entities_added > 0 and rep.names_added > 0, name
        assert sources[name].kind == "ontology" and sources[name].release == rep.release
        assert sources[name].entities > 0
    assert reports["hpo"].release.startswith("HPO 20")  # the hp.obo data-version, not a guess
    assert "ICD-10-CM" in reports["icd10cm"].release
    for name in ("diseases-basic", "icd10cm", "hpo", "cmekg"):
        assert sources[name].edges == reports[name].edges_added > 0, name


def test_icd10_codes_shared_by_two_ontologies_are_one_entity(loaded) -> None:
    store, _ = loaded
    t2d = entity_by_code(store, "ICD10CM", "E11.9")
    names = names_of(store, t2d.id)
    assert "type 2 diabetes" in names  # diseases-basic
    assert "type 2 diabetes mellitus without complications" in names  # icd10cm
    assert "非胰岛素依赖型糖尿病" in names  # diseases-basic zh_CN, aligned slot by slot
    with store.session() as s:
        srcs = set(s.scalars(select(m.Source.name).join(m.EntityName, m.EntityName.source_id == m.Source.id)
                             .where(m.EntityName.entity_id == t2d.id)))
    assert {"diseases-basic", "icd10cm"} <= srcs


def test_names_merge_drugs_across_languages_and_ontologies(loaded) -> None:
    store, _ = loaded
    metformin = entity_by_code(store, "DrugBank", "DB00331")
    names = names_of(store, metformin.id)
    assert {"metformin", "glucophage", "二甲双胍"} <= names
    assert metformin.codes["DrugBank"] == ["DB00331"]
    with store.session() as s:
        treated = set(s.scalars(select(m.Edge.target_entity_id).where(
            m.Edge.source_entity_id == metformin.id, m.Edge.relation == "treats")))
        # CMeKG's product lists 二甲双胍 as ingredient: the edge lands on the same merged entity.
        products = set(s.scalars(select(m.Edge.source_entity_id).where(
            m.Edge.target_entity_id == metformin.id, m.Edge.relation == "has_ingredient")))
    assert entity_by_code(store, "ICD10CM", "E11.9").id in treated
    assert products, "the CMeKG ingredient edge did not merge onto metformin"


def test_mesh_class_ids_do_not_merge_distinct_drugs(loaded) -> None:
    store, _ = loaded
    metformin = entity_by_code(store, "DrugBank", "DB00331")
    other = entity_by_code(store, "DrugBank", "DB00414")  # acetohexamide shares metformin's MeSH class
    assert metformin.id != other.id


def test_rerunning_an_ontology_writes_nothing(loaded) -> None:
    store, _ = loaded
    before, gen = store.stats(), store.generation()
    for name, opts in LOADS:
        if name == "hpo":
            continue  # same writer; its parse alone is the slowest step
        rep = load_ontology(store, name, **opts)
        assert rep.written == 0, (name, rep)
        assert rep.entities_added == 0 and rep.entities_merged == rep.terms
    assert store.stats() == before
    assert store.generation() == gen


def test_unknown_ontology_is_refused(sqlite_store: KnowledgeStore) -> None:
    with pytest.raises(InvalidInput, match="unknown ontology 'snomed'"):
        load_ontology(sqlite_store, "snomed")


def test_deleting_a_source_removes_its_names_edges_and_orphans(sqlite_store: KnowledgeStore) -> None:
    store = sqlite_store
    load_ontology(store, "diseases-basic")
    base = store.stats()
    rep = load_ontology(store, "cmekg", subjects=["盐酸二甲双胍片", "乳酸性酸中毒"])
    assert rep.edges_added > 0
    assert store.count("entities") > base["entities"]
    src = store.get_source("public", "cmekg")
    store.delete_source("public", "cmekg")
    after = store.stats()
    for table in ("entities", "entity_names", "entity_codes", "edges"):
        assert after[table] == base[table], table
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Edge).where(m.Edge.source_id == src.id)) == 0
        # the merged entity (metformin, from diseases-basic) survives, without CMeKG's names
        met = s.scalar(select(m.EntityName.entity_id).where(m.EntityName.norm == "metformin"))
        assert met is not None
    assert "盐酸二甲双胍片" not in names_of(store, met)
    store.delete_source("public", "diseases-basic")
    assert store.count("entities") == 0 and store.count("edges") == 0
