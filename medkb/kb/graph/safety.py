"""Safety facts for a patient: interactions, contraindications, cautions, adverse reactions, with provenance."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import or_, select

from medkb.errors import NotFound
from medkb.kb import models as m
from medkb.kb.codes import canonical_system
from medkb.kb.graph.relations import ADVERSE_REACTION, HAS_INGREDIENT, SAFETY_RELATIONS
from medkb.kb.graph.traversal import edge_visible
from medkb.kb.store import KnowledgeStore

MAX_ADVERSE_PER_DRUG = 15


@dataclass(frozen=True)
class SafetyFact:
    kind: str  # interaction | contraindication | caution | adverse_reaction
    relation: str
    subject_id: int
    subject: str
    object_id: int
    object: str
    source: str | None  # the ontology (KB source) that states it
    release: str | None
    provenance: str | None
    curated: bool
    involves_patient: bool  # both ends are in the patient context (not just the drug)
    via: str | None = None  # e.g. the product whose ingredient is the patient's drug


def patient_entities(store: KnowledgeStore, tenant_id: str, patient_id: str) -> set[int]:
    """Entity ids of the patient's conditions and medications (by entity id, else by code)."""
    with store.session() as s:
        pat = s.get(m.Patient, patient_id)
        if pat is None or pat.tenant_id != tenant_id:
            raise NotFound(f"no patient {patient_id!r} in tenant {tenant_id!r}")  # never reveal other tenants
        ids: set[int] = set()
        unresolved: list[tuple[str | None, str]] = []
        for table in (m.Condition, m.Medication):
            for eid, system, code in s.execute(
                select(table.entity_id, table.code_system, table.code)
                .where(table.patient_id == patient_id, table.tenant_id == tenant_id)
            ):
                if eid is not None:
                    ids.add(eid)
                elif code:
                    unresolved.append((canonical_system(system), code.strip()))
        for system, code in unresolved:
            q = select(m.EntityCode.entity_id).where(m.EntityCode.code == code)
            if system:
                q = q.where(m.EntityCode.system == system)
            hits = set(s.scalars(q))
            if len(hits) == 1 or system:
                ids |= hits
    return ids


def safety_facts(store: KnowledgeStore, tenant_id: str, patient_id: str | None = None,
                 entity_ids: Iterable[int] = ()) -> list[SafetyFact]:
    """Known safety-relevant edges among the patient's conditions/medications and ``entity_ids``.

    Interactions, contraindications and cautions are reported when both ends are in the context;
    adverse reactions of a context drug (or of products containing it) always, flagged when the
    reaction is itself one of the patient's conditions. Only public and ``tenant_id`` edges are read.
    """
    ctx = set(entity_ids)
    if patient_id is not None:
        ctx |= patient_entities(store, tenant_id, patient_id)
    if not ctx:
        return []
    tenants = [m.PUBLIC_TENANT, tenant_id]
    ids = sorted(ctx)
    with store.session() as s:
        # Products whose ingredient is a context drug carry the label facts (CMeKG states them per product).
        products: dict[int, int] = {}
        for prod, ingr in s.execute(
            select(m.Edge.source_entity_id, m.Edge.target_entity_id)
            .where(m.Edge.relation == HAS_INGREDIENT, m.Edge.target_entity_id.in_(ids),
                   edge_visible(tenants)).limit(200)
        ):
            products.setdefault(prod, ingr)
        subjects = sorted(ctx | set(products))
        rows = s.execute(
            select(m.Edge.source_entity_id, m.Edge.target_entity_id, m.Edge.relation, m.Edge.weight,
                   m.Edge.curated, m.Edge.provenance, m.Source.name, m.Source.release)
            .outerjoin(m.Source, m.Source.id == m.Edge.source_id)
            .where(m.Edge.relation.in_(list(SAFETY_RELATIONS)), edge_visible(tenants),
                   or_(m.Edge.source_entity_id.in_(subjects), m.Edge.target_entity_id.in_(ids)))
        ).all()
        names = dict(s.execute(select(m.Entity.id, m.Entity.name).where(
            m.Entity.id.in_({r[0] for r in rows} | {r[1] for r in rows} | set(products.values())))).all())
    facts: list[SafetyFact] = []
    adverse: dict[int, int] = {}
    seen: set[tuple[int, int, str]] = set()
    rows.sort(key=lambda r: (r[1] not in ctx, not r[4], -r[3]))  # patient-relevant, curated, strong first
    for a, b, rel, _w, curated, prov, src, release in rows:
        in_ctx_a, in_ctx_b = a in ctx, b in ctx
        subject_drug = a if in_ctx_a else products.get(a)
        if rel == ADVERSE_REACTION:
            if subject_drug is None:
                continue
            if not in_ctx_b:
                if adverse.get(subject_drug, 0) >= MAX_ADVERSE_PER_DRUG:
                    continue
                adverse[subject_drug] = adverse.get(subject_drug, 0) + 1
        elif subject_drug is None or not (in_ctx_b or b in products):
            continue  # interactions, contraindications, cautions: both ends must be in the context
        key = (subject_drug or a, b, rel)
        if key in seen:
            continue
        seen.add(key)
        via = names.get(a) if a not in ctx else None
        facts.append(SafetyFact(
            kind=SAFETY_RELATIONS[rel], relation=rel, subject_id=subject_drug or a,
            subject=names.get(subject_drug or a, ""), object_id=b, object=names.get(b, ""), source=src,
            release=release, provenance=prov, curated=bool(curated), involves_patient=in_ctx_b, via=via,
        ))
    order = {"interaction": 0, "contraindication": 1, "caution": 2, "adverse_reaction": 3}
    facts.sort(key=lambda f: (not f.involves_patient, order[f.kind], f.subject, f.object))
    return facts
