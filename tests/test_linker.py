"""Entity linking on the real ontology dictionary: codes, longest match, folding, abbreviations, Chinese."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from medkb.ingest.ontologies import load_ontology
from medkb.kb import models as m
from medkb.kb.factory import open_store
from medkb.kb.graph.linker import EntityLinker
from medkb.kb.graph.names import fold, fold_with_offsets
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings
from tests.test_ontologies import entity_by_code, graph_db


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> KnowledgeStore:
    url, _ = graph_db(tmp_path_factory)
    store = open_store(DatabaseSettings(url=url))
    yield store
    store.close()


@pytest.fixture(scope="module")
def linker(kb: KnowledgeStore) -> EntityLinker:
    return EntityLinker.load(kb)


def by_surface(matches) -> dict:
    return {x.surface: x for x in matches}


def test_acceptance_sentence_links_drug_and_disease_with_codes(linker: EntityLinker) -> None:
    text = "Patient on metformin with T2DM and lactic acidosis risk"
    found = by_surface(linker.link(text))
    assert found["metformin"].codes["DrugBank"] == ["DB00331"]
    assert found["metformin"].type == "drug"
    t2dm = found["T2DM"]
    assert t2dm.type == "disease" and any(c.startswith("E11") for c in t2dm.codes["ICD10CM"])
    assert "lactic acidosis" in found
    for x in found.values():
        assert text[x.start : x.end] == x.surface


def test_chinese_sentence_links_the_same_entities(linker: EntityLinker) -> None:
    en = by_surface(linker.link("Patient on metformin with T2DM"))
    zh = by_surface(linker.link("二甲双胍治疗2型糖尿病"))
    assert zh["二甲双胍"].entity_id == en["metformin"].entity_id
    assert zh["2型糖尿病"].entity_id == en["T2DM"].entity_id
    # A CMeKG-only product name links, and a label phrase does not swallow the disease it mentions.
    cm = by_surface(linker.link("盐酸二甲双胍片可引起乳酸性酸中毒，高血压患者慎用"))
    assert "盐酸二甲双胍片" in cm and "乳酸性酸中毒" in cm and "高血压" in cm
    assert "引起" not in cm


def test_longest_match_wins(kb: KnowledgeStore, linker: EntityLinker) -> None:
    e119 = entity_by_code(kb, "ICD10CM", "E11.9")
    found = linker.link("Known type 2 diabetes mellitus without complications since 2010.")
    diabetes = [x for x in found if "diabetes" in x.surface]
    assert [x.entity_id for x in diabetes] == [e119.id]
    assert diabetes[0].surface == "type 2 diabetes mellitus without complications"


def test_case_and_punctuation_folding(linker: EntityLinker) -> None:
    a = linker.link("TYPE-2 DIABETES, poorly controlled")
    b = linker.link("type 2 diabetes")
    assert a and b and a[0].entity_id == b[0].entity_id
    assert a[0].surface == "TYPE-2 DIABETES"
    folded, pos = fold_with_offsets("Type-2  Diabetes!")
    assert folded == fold("Type-2  Diabetes!") == "type 2 diabetes"
    assert len(pos) == len(folded) and pos[-1] == len("Type-2  Diabetes") - 1


def test_trademark_signs_do_not_glue_onto_a_brand_name(linker: EntityLinker) -> None:
    """NFKC turns "™" into the letters "TM": "Yescarta™" folded to "yescartatm" and never linked, so abstracts
    naming CAR-T products with the sign got no mention of them (bioasq-dev: 43 abstracts carry ™ or ℠)."""
    plain = by_surface(linker.link("Kymriah and Yescarta were approved"))
    marked = by_surface(linker.link("Kymriah™ and Yescarta℠ were approved; Gleevec® too"))
    assert marked["Kymriah"].entity_id == plain["Kymriah"].entity_id
    assert marked["Yescarta"].entity_id == plain["Yescarta"].entity_id
    assert "Gleevec" in marked
    assert fold("Kymriah™ (tisagenlecleucel)") == "kymriah tisagenlecleucel"
    folded, pos = fold_with_offsets("Kymriah™ 2")
    assert folded == "kymriah 2" and len(pos) == len(folded)


def test_whole_words_only_and_exact_case_symbols(kb: KnowledgeStore, linker: EntityLinker) -> None:
    assert not [x for x in linker.link("submetformins and metforminX") if x.surface.lower().startswith("metformin")]
    with kb.session() as s:
        genes = s.scalars(select(m.Entity.name).where(m.Entity.type == "gene", m.Entity.name.like("%____%"))
                          .order_by(m.Entity.id).limit(500)).all()
    symbol = next(g for g in genes if g.isalpha())
    assert [x.type for x in linker.link(f"{symbol} variant")] == ["gene"]
    assert all(x.type != "gene" for x in linker.link(f"{symbol.lower()} variant"))


def test_symbols_with_a_digit_link_in_any_case(kb: KnowledgeStore, linker: EntityLinker) -> None:
    """Mouse and yeast papers write "Chd1", "Twist1", "MeCP2" for the gene CHD1: a symbol with a digit in it is
    no English word, so its case may differ (bioasq-dev: 201 more gene mentions in abstracts)."""
    with kb.session() as s:
        genes = s.scalars(select(m.Entity.name).where(m.Entity.type == "gene", m.Entity.name.like("%____%"))
                          .order_by(m.Entity.id).limit(500)).all()
    symbol = next(g for g in genes if any(c.isdigit() for c in g) and g.isupper())
    exact = linker.link(f"{symbol} knockout")
    titled = linker.link(f"{symbol.title()} knockout")
    assert [x.type for x in exact] == ["gene"]
    assert [(x.entity_id, x.surface) for x in titled] == [(exact[0].entity_id, symbol.title())]


def test_mention_counts_for_ingestion(linker: EntityLinker) -> None:
    counts = linker.entity_ids("Metformin, then metformin again; HTN.")
    met = by_surface(linker.link("metformin"))["metformin"].entity_id
    htn = by_surface(linker.link("HTN"))["HTN"].entity_id
    assert counts[met] == 2 and counts[htn] == 1


def test_dictionary_is_cached_until_names_change(sqlite_store: KnowledgeStore) -> None:
    load_ontology(sqlite_store, "cmekg", subjects=["乳酸性酸中毒"])
    first = EntityLinker.load(sqlite_store)
    assert EntityLinker.load(sqlite_store) is first
    assert not first.link("二甲双胍")
    load_ontology(sqlite_store, "diseases-basic")
    second = EntityLinker.load(sqlite_store)
    assert second is not first
    assert [x.name for x in second.link("二甲双胍")] == ["Metformin"]
    sqlite_store.delete_source("public", "diseases-basic")
    assert not EntityLinker.load(sqlite_store).link("二甲双胍")
