"""Traversal over the real edge tables: k-hop neighbours, shortest explanatory paths, personalised PageRank, CLI."""

from __future__ import annotations

import networkx as nx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.kb import models as m
from medkb.kb.factory import open_store
from medkb.kb.graph.traversal import GraphView
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings
from tests.test_ontologies import entity_by_code, graph_db


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, KnowledgeStore]:
    url, _ = graph_db(tmp_path_factory)
    store = open_store(DatabaseSettings(url=url))
    yield url, store
    store.close()


@pytest.fixture(scope="module")
def whole_graph(db) -> nx.Graph:
    """The whole (test-sized) edge table in networkx: the reference the SQL-by-hop traversal must match."""
    g = nx.Graph()
    with db[1].session() as s:
        g.add_edges_from(s.execute(select(m.Edge.source_entity_id, m.Edge.target_entity_id)))
    return g


def hpo_disease(store: KnowledgeStore) -> int:
    with store.session() as s:
        return s.scalar(select(m.Edge.source_entity_id).where(m.Edge.relation == "has_phenotype")
                        .order_by(m.Edge.id).limit(1))


def test_neighbors_of_a_disease_are_its_phenotypes_with_codes(db) -> None:
    store = db[1]
    disease = hpo_disease(store)
    got = GraphView(store).neighbors([disease], hops=1, relations=["has_phenotype"], direction="out")
    with store.session() as s:
        want = set(s.scalars(select(m.Edge.target_entity_id).where(
            m.Edge.source_entity_id == disease, m.Edge.relation == "has_phenotype")))
    assert {n.entity.id for n in got} == want and want
    for n in got:
        assert n.entity.type == "phenotype" and n.entity.codes["HPO"][0].startswith("HP:")
        assert n.hops == 1 and n.via.relation == "has_phenotype" and n.via.provenance.startswith("hpo HPO ")


def test_symptoms_of_type_2_diabetes(db) -> None:
    store = db[1]
    t2d = entity_by_code(store, "ICD10CM", "E11.9")
    got = GraphView(store).neighbors([t2d.id], hops=1, types=["symptom"])
    names = {n.entity.name for n in got}
    assert {"Frequent Urination", "Fatigue", "Blurred Vision"} <= names
    assert all(n.entity.type == "symptom" for n in got)


def test_k_hop_matches_networkx_on_the_whole_graph(db, whole_graph: nx.Graph) -> None:
    store = db[1]
    seed = entity_by_code(store, "ICD10CM", "E11.9").id
    got = GraphView(store, max_edges_per_hop=10**7).neighbors([seed], hops=2)  # no hub cap: exact
    want = nx.single_source_shortest_path_length(whole_graph, seed, cutoff=2)
    assert {n.entity.id: n.hops for n in got} == {k: v for k, v in want.items() if k != seed}


def test_path_type_2_diabetes_to_lactic_acidosis(db, whole_graph: nx.Graph) -> None:
    store = db[1]
    view = GraphView(store, max_edges_per_hop=10**7)  # no hub cap, so the path must be a shortest one
    a = view.find("type 2 diabetes")[0]
    b = view.find("lactic acidosis")[0]
    p = view.path(a.id, b.id)
    assert p is not None
    assert p.nodes[0].id == a.id and p.nodes[-1].id == b.id
    assert len(p) == nx.shortest_path_length(whole_graph, a.id, b.id)
    for x, y, e in zip(p.nodes, p.nodes[1:], p.edges):
        assert {e.source_id, e.target_id} == {x.id, y.id}
        assert e.provenance and e.source_name in {"hpo", "icd10cm", "diseases-basic", "cmekg", "drugs"}


def test_hub_cap_bounds_each_hop_to_the_strongest_edges(db) -> None:
    store = db[1]
    seed = entity_by_code(store, "ICD10CM", "E11.9").id
    full = GraphView(store, max_edges_per_hop=10**7).neighbors([seed], hops=2)
    capped = GraphView(store, max_edges_per_hop=5).neighbors([seed], hops=2)
    assert len(full) > len(capped) > 0
    assert {n.entity.id for n in capped} <= {n.entity.id for n in full}
    assert sum(1 for n in capped if n.hops == 1) <= 5


def test_path_none_when_disconnected(db, whole_graph: nx.Graph) -> None:
    store = db[1]
    with store.session() as s:
        lonely = s.scalar(select(m.Entity.id).where(m.Entity.type == "drug", m.Entity.id.not_in(
            select(m.Edge.source_entity_id)), m.Entity.id.not_in(select(m.Edge.target_entity_id))).limit(1))
    t2d = entity_by_code(store, "ICD10CM", "E11.9").id
    assert lonely is not None and lonely not in whole_graph
    assert GraphView(store).path(t2d, lonely, max_hops=3) is None


def test_personalized_pagerank_equals_networkx_on_the_same_subgraph(db, whole_graph: nx.Graph) -> None:
    store = db[1]
    seed = entity_by_code(store, "ICD10CM", "E11.9").id
    view = GraphView(store, max_edges_per_hop=10**7)  # no hub cap: the exact 2-hop neighbourhood
    pr = view.personalized_pagerank([seed], hops=2, top=20)
    sub = view.subgraph([seed], hops=2)
    # The subgraph is the seed's 2-hop neighbourhood of the whole edge table ...
    assert set(sub) == set(nx.single_source_shortest_path_length(whole_graph, seed, cutoff=2))
    # ... and the ranking is networkx's own personalised PageRank on it: the same top 20, the same scores.
    ref = nx.pagerank(sub, alpha=0.85, personalization={seed: 1.0}, weight="weight")
    want = sorted(ref, key=lambda n: (-ref[n], n))[:20]
    assert list(pr) == want
    assert all(abs(pr[n] - ref[n]) < 1e-9 for n in want)
    assert abs(sum(ref.values()) - 1.0) < 1e-6 and pr[seed] == max(ref.values())


def test_cli_neighbors_and_path_print_codes_and_provenance(db) -> None:
    url, _ = db
    runner = CliRunner()
    res = runner.invoke(app, ["--db", url, "graph", "neighbors", "type 2 diabetes", "--hops", "1",
                              "--type", "disease"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "ICD10CM:E11.9" in res.output and "icd10cm ICD-10-CM" in res.output
    res = runner.invoke(app, ["--db", url, "graph", "path", "type 2 diabetes", "lactic acidosis"],
                        env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "Type 2 Diabetes" in res.output and ("HPO" in res.output or "ICD10CM" in res.output)
    assert "(" in res.output  # every hop prints its provenance in parentheses
    bad = runner.invoke(app, ["--db", url, "graph", "neighbors", "metformin", "--relation", "cures"])
    assert bad.exit_code != 0
