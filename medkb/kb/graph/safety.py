"""Safety facts for a patient: interactions, contraindications, cautions, adverse reactions, with provenance.

``safety_notes`` turns them into the documented shape of ``safety_notes`` in the patient summary and in chat
answers (one dict per note, most severe first)::

    {"kind": "interaction" | "contraindication" | "caution" | "adverse_reaction",
     "severity": "contraindicated" | "avoid" | "precaution" | "consider",
     "original_severity": ["CONTRE-INDICATION"], "language": "fr",
     "entities": [{"id": 1, "name": "Warfarin", "type": "drug", "codes": {"RxNorm": ["11289"], ...}}, ...],
     "text": "Warfarin + Aspirin: contraindicated. <mechanism> <what to do>",
     "mechanism": "...", "conduct": "...",
     "source": {"name": "interactions", "origin": "ANSM", "release": "2020-01", "licence": "..."}}

Edges of a source built for fake data (``sources.fake_data``, e.g. diseases-basic) never become a fact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from typing import Any

from sqlalchemy import or_, select

from medkb.errors import NotFound
from medkb.kb import models as m
from medkb.kb.codes import canonical_system
from medkb.kb.graph.relations import ADVERSE_REACTION, HAS_INGREDIENT, INTERACTS_WITH, SAFETY_RELATIONS
from medkb.kb.graph.traversal import edge_visible
from medkb.kb.store import KnowledgeStore

MAX_ADVERSE_PER_DRUG = 15
SEVERITIES = ("contraindicated", "avoid", "precaution", "consider")
SEVERITY_RANK = {sev: i for i, sev in enumerate(SEVERITIES)}
DEFAULT_SEVERITY = {"interaction": "precaution", "contraindication": "contraindicated", "caution": "precaution",
                    "adverse_reaction": "consider"}
KIND_ORDER = {"interaction": 0, "contraindication": 1, "caution": 2, "adverse_reaction": 3}


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
    details: dict[str, Any] | None = None  # the edge's severity, wording, mechanism, origin, licence

    @property
    def severity(self) -> str:
        """The English scale; an edge that states none gets its kind's default."""
        sev = (self.details or {}).get("severity")
        return sev if sev in SEVERITY_RANK else DEFAULT_SEVERITY[self.kind]


def patient_entities(store: KnowledgeStore, tenant_id: str, patient_id: str) -> set[int]:
    """Entity ids of the patient's conditions and medications (by entity id, else by code)."""
    with store.session() as s:
        pat = s.get(m.Patient, patient_id)
        if pat is None or pat.tenant_id != tenant_id:
            raise NotFound(f"no patient {patient_id!r} in tenant {tenant_id!r}")  # never reveal other tenants
        ids: set[int] = set()
        unresolved: list[tuple[str | None, str]] = []
        for table in (m.Condition, m.Medication):
            # Current facts only: a stopped drug interacts with nothing, a resolved condition needs no caution.
            for eid, system, code in s.execute(
                select(table.entity_id, table.code_system, table.code)
                .where(table.patient_id == patient_id, table.tenant_id == tenant_id, table.stop.is_(None))
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
                   m.Edge.curated, m.Edge.provenance, m.Source.name, m.Source.release, m.Edge.details)
            .outerjoin(m.Source, m.Source.id == m.Edge.source_id)
            .where(m.Edge.relation.in_(list(SAFETY_RELATIONS)), edge_visible(tenants),
                   or_(m.Source.fake_data.is_(None), m.Source.fake_data.is_(False)),
                   or_(m.Edge.source_entity_id.in_(subjects), m.Edge.target_entity_id.in_(ids)))
        ).all()
        names = dict(s.execute(select(m.Entity.id, m.Entity.name).where(
            m.Entity.id.in_({r[0] for r in rows} | {r[1] for r in rows} | set(products.values())))).all())
    facts: list[SafetyFact] = []
    adverse: dict[int, int] = {}
    seen: set[tuple[int, int, str]] = set()
    rows.sort(key=lambda r: (r[1] not in ctx, not r[4], -r[3]))  # patient-relevant, curated, strong first
    for a, b, rel, _w, curated, prov, src, release, details in rows:
        if rel == INTERACTS_WITH and a not in ctx and a not in products and b in ctx:
            a, b = b, a  # an interaction is symmetric: state it from the context's drug
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
        key = (*sorted((subject_drug or a, b)), rel, (details or {}).get("origin"))
        if key in seen:
            continue
        seen.add(key)
        via = names.get(a) if a not in ctx else None
        facts.append(SafetyFact(
            kind=SAFETY_RELATIONS[rel], relation=rel, subject_id=subject_drug or a,
            subject=names.get(subject_drug or a, ""), object_id=b, object=names.get(b, ""), source=src,
            release=release, provenance=prov, curated=bool(curated), involves_patient=in_ctx_b, via=via,
            details=details,
        ))
    facts.sort(key=lambda f: (not f.involves_patient, SEVERITY_RANK[f.severity], KIND_ORDER[f.kind],
                              f.subject, f.object))
    return facts


def safety_notes(store: KnowledgeStore, tenant_id: str, patient_id: str | None = None,
                 entity_ids: Iterable[int] = ()) -> list[dict[str, Any]]:
    """The facts that concern the patient (both ends in context) as notes, most severe first (module doc)."""
    facts = [f for f in safety_facts(store, tenant_id, patient_id, entity_ids) if f.involves_patient]
    if not facts:
        return []
    ids = {f.subject_id for f in facts} | {f.object_id for f in facts}
    with store.session() as s:
        ents = {eid: {"id": eid, "name": name, "type": typ, "codes": codes or {}} for eid, name, typ, codes in
                s.execute(select(m.Entity.id, m.Entity.name, m.Entity.type, m.Entity.codes)
                          .where(m.Entity.id.in_(ids)))}
    return [_note(f, ents) for f in facts]


def _note(f: SafetyFact, ents: dict[int, dict[str, Any]]) -> dict[str, Any]:
    d = f.details or {}
    sev = f.severity
    joiner = " + " if f.kind == "interaction" else " / "
    head = f"{f.subject}{joiner}{f.object}: {f.kind.replace('_', ' ')}, {sev}"
    if d.get("original_severity"):
        head += f" ({'; '.join(d['original_severity'])})"
    parts = [head + "."] + [d[k] for k in ("description", "mechanism", "conduct") if d.get(k)]
    return {
        "kind": f.kind, "severity": sev,
        "original_severity": list(d.get("original_severity") or []), "language": d.get("language"),
        "entities": [ents.get(i, {"id": i, "name": n, "type": None, "codes": {}})
                     for i, n in ((f.subject_id, f.subject), (f.object_id, f.object))],
        "text": " ".join(parts), "mechanism": d.get("mechanism"), "conduct": d.get("conduct"),
        "source": {"name": f.source, "origin": d.get("origin") or f.source,
                   "release": d.get("release") or f.release, "licence": d.get("licence"),
                   "label_source": d.get("label_source")},
        "via": f.via,
    }
