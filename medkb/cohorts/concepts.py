"""Concept sets resolved through the knowledge graph: OMOP id or vocabulary + code, descendants by is-a / ingredient."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select, tuple_

from medkb.cohorts.definition import ConceptItem, ConceptSet
from medkb.kb import models as m
from medkb.kb.codes import canonical_system
from medkb.kb.store import KnowledgeStore

OMOP = "OMOP"
# Edges that point from a narrower concept to a broader one: following them backwards finds descendants.
DESCENDANT_RELATIONS = ("is_a", "descendant_of", "has_ingredient")
MAPPED_RELATIONS = ("maps_to",)


@dataclass
class Codes:
    """What a concept set matches on record rows: OMOP concept ids, and (system, code) pairs for rows without one."""

    concept_ids: set[int] = field(default_factory=set)
    pairs: set[tuple[str, str]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.concept_ids or self.pairs)


class ConceptResolver:
    """Reads the graph once per definition: codes → entities, and the reverse is-a / ingredient / maps-to edges."""

    def __init__(self, store: KnowledgeStore) -> None:
        self.store = store

    def resolve(self, sets: tuple[ConceptSet, ...]) -> dict[int, Codes]:
        keys = {self._key(it) for cs in sets for it in cs.items}
        with self.store.session() as s:
            by_key: dict[tuple[str, str], int] = {}
            wanted = sorted(k for k in keys if k is not None)
            for i in range(0, len(wanted), 500):
                for sy, code, eid in s.execute(
                        select(m.EntityCode.system, m.EntityCode.code, m.EntityCode.entity_id)
                        .where(tuple_(m.EntityCode.system, m.EntityCode.code).in_(wanted[i:i + 500]))):
                    by_key[(sy, code)] = eid
            narrower: dict[int, set[int]] = defaultdict(set)
            mapped: dict[int, set[int]] = defaultdict(set)
            for src, dst, rel in s.execute(select(m.Edge.source_entity_id, m.Edge.target_entity_id, m.Edge.relation)
                                           .where(m.Edge.relation.in_(DESCENDANT_RELATIONS + MAPPED_RELATIONS))):
                (mapped if rel in MAPPED_RELATIONS else narrower)[dst].add(src)
            resolved = {cs.id: self._expand(cs, by_key, narrower, mapped) for cs in sets}
            entity_ids = sorted({e for ents, _ in resolved.values() for e in ents})
            codes_of: dict[int, list[tuple[str, str]]] = defaultdict(list)
            for i in range(0, len(entity_ids), 500):
                for sy, code, eid in s.execute(select(m.EntityCode.system, m.EntityCode.code, m.EntityCode.entity_id)
                                               .where(m.EntityCode.entity_id.in_(entity_ids[i:i + 500]))):
                    codes_of[eid].append((sy, code))
        out: dict[int, Codes] = {}
        for cs_id, (ents, loose) in resolved.items():
            codes = Codes()
            for e in ents:
                for sy, code in codes_of.get(e, []):
                    if sy == OMOP:
                        codes.concept_ids.add(int(code))
                    else:
                        codes.pairs.add((sy, code))
            for sy, code in loose:  # an item the graph does not know still matches rows by its own code
                if sy == OMOP:
                    codes.concept_ids.add(int(code))
                else:
                    codes.pairs.add((sy, code))
            out[cs_id] = codes
        return out

    @staticmethod
    def _key(it: ConceptItem) -> tuple[str, str] | None:
        if it.concept_id is not None:
            return (OMOP, str(it.concept_id))
        system = canonical_system(it.vocabulary)
        return (system, str(it.code)) if system and it.code else None

    @staticmethod
    def _keys(it: ConceptItem) -> list[tuple[str, str]]:
        keys = []
        if it.concept_id is not None:
            keys.append((OMOP, str(it.concept_id)))
        system = canonical_system(it.vocabulary)
        if system and it.code:
            keys.append((system, str(it.code)))
        return keys

    def _expand(self, cs: ConceptSet, by_key: dict[tuple[str, str], int], narrower: dict[int, set[int]],
                mapped: dict[int, set[int]]) -> tuple[set[int], set[tuple[str, str]]]:
        """(entities, codes of items the graph lacks) after descendants, exclusions and mapped concepts."""
        def one(it: ConceptItem) -> tuple[set[int], set[tuple[str, str]]]:
            eid = next((by_key[k] for k in self._keys(it) if k in by_key), None)
            if eid is None:
                # found by neither its OMOP id nor its code: without the vocabulary, an OMOP id alone matches
                # rows carrying that id, and a vocabulary code matches rows with that code
                return set(), set(self._keys(it))
            ents = {eid}
            if it.descendants:
                stack = [eid]
                while stack:
                    for child in narrower.get(stack.pop(), ()):
                        if child not in ents:
                            ents.add(child)
                            stack.append(child)
            if it.mapped:  # Circe: the (non-standard) concepts that map to this item's concepts
                ents |= {src for e in list(ents) for src in mapped.get(e, ())}
            return ents, set()

        inc_e: set[int] = set()
        inc_l: set[tuple[str, str]] = set()
        exc_e: set[int] = set()
        exc_l: set[tuple[str, str]] = set()
        for it in cs.items:
            e, loose = one(it)
            if it.excluded:
                exc_e |= e
                exc_l |= loose
            else:
                inc_e |= e
                inc_l |= loose
        return inc_e - exc_e, inc_l - exc_l


def resolve_concept_sets(store: KnowledgeStore, sets: tuple[ConceptSet, ...]) -> dict[int, Codes]:
    return ConceptResolver(store).resolve(sets)
