"""How many of a tenant's drug exposures overlap in time with another drug they interact with (graph edges)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from sqlalchemy import or_, select

from medkb.kb import models as m
from medkb.kb.graph.relations import HAS_INGREDIENT, INTERACTS_WITH
from medkb.kb.graph.safety import SEVERITY_RANK
from medkb.kb.graph.traversal import edge_visible
from medkb.kb.store import KnowledgeStore

SMALL_CELL = 11  # counts below this are released as "<11"
IN_BATCH = 900
_FAR = dt.date.max


@dataclass
class ExposureReport:
    exposures: int = 0  # medication rows (drug exposures) of the tenant
    linked: int = 0  # … linked to a graph entity
    interacting: int = 0  # … overlapping in time with another exposure of an interacting drug
    patients: int = 0  # patients with at least one such exposure
    by_severity: dict[str, int] = field(default_factory=dict)  # exposures by their most severe interaction
    top_pairs: list[tuple[str, str, str, int | str]] = field(default_factory=list)  # (a, b, severity, count)


def released(n: int) -> int | str:
    """A count as it may leave the building: small cells suppressed."""
    return n if n >= SMALL_CELL else f"<{SMALL_CELL}"


def interacting_exposures(store: KnowledgeStore, tenant_id: str, top: int = 10) -> ExposureReport:
    """Exposures whose drug (or one of its ingredients) interacts with a drug the same patient was exposed to
    at an overlapping time; edges of fake-data sources are ignored, as for safety notes."""
    rep = ExposureReport()
    per_patient: dict[str, list[tuple[int, int, dt.date, dt.date]]] = defaultdict(list)
    with store.session() as s:
        rows = s.execute(select(m.Medication.id, m.Medication.patient_id, m.Medication.entity_id,
                                m.Medication.start, m.Medication.stop)
                         .where(m.Medication.tenant_id == tenant_id)).all()
        rep.exposures = len(rows)
        for rid, pid, eid, start, stop in rows:
            if eid is not None:
                rep.linked += 1
                per_patient[pid].append((rid, eid, start or dt.date.min, stop or _FAR))
        drugs = sorted({r[1] for rs in per_patient.values() for r in rs})
        parts: dict[int, set[int]] = {d: {d} for d in drugs}
        for i in range(0, len(drugs), IN_BATCH):
            for prod, ingr in s.execute(select(m.Edge.source_entity_id, m.Edge.target_entity_id)
                                        .where(m.Edge.relation == HAS_INGREDIENT,
                                               m.Edge.source_entity_id.in_(drugs[i : i + IN_BATCH]))):
                parts[prod].add(ingr)
        ingredients = sorted(set().union(*parts.values())) if parts else []
        severity: dict[frozenset[int], str] = {}
        for i in range(0, len(ingredients), IN_BATCH):
            for a, b, details in s.execute(
                select(m.Edge.source_entity_id, m.Edge.target_entity_id, m.Edge.details)
                .outerjoin(m.Source, m.Source.id == m.Edge.source_id)
                .where(m.Edge.relation == INTERACTS_WITH, edge_visible([m.PUBLIC_TENANT, tenant_id]),
                       or_(m.Source.fake_data.is_(None), m.Source.fake_data.is_(False)),
                       or_(m.Edge.source_entity_id.in_(ingredients[i : i + IN_BATCH]),
                           m.Edge.target_entity_id.in_(ingredients[i : i + IN_BATCH])))
            ):
                sev = (details or {}).get("severity", "consider")
                key = frozenset((a, b))
                if key not in severity or SEVERITY_RANK.get(sev, 9) < SEVERITY_RANK.get(severity[key], 9):
                    severity[key] = sev
        names = {i: n for i, n in s.execute(select(m.Entity.id, m.Entity.name).where(m.Entity.id.in_(drugs)))}
    hit: dict[int, str] = {}
    pairs: Counter[tuple[str, str, str]] = Counter()
    for rs in per_patient.values():
        for x, y in combinations(rs, 2):
            if x[1] == y[1] or x[2] > y[3] or y[2] > x[3]:
                continue  # same drug, or not taken at the same time
            sev = _worst(severity, parts[x[1]], parts[y[1]])
            if sev is None:
                continue
            for rid in (x[0], y[0]):
                if rid not in hit or SEVERITY_RANK[sev] < SEVERITY_RANK[hit[rid]]:
                    hit[rid] = sev
            a, b = sorted((names.get(x[1], str(x[1])), names.get(y[1], str(y[1]))))
            pairs[(a, b, sev)] += 1
    rep.interacting = len(hit)
    rep.patients = len({pid for pid, rs in per_patient.items() if any(r[0] in hit for r in rs)})
    rep.by_severity = dict(Counter(hit.values()))
    rep.top_pairs = [(a, b, sev, released(n)) for (a, b, sev), n in pairs.most_common(top)]
    return rep


def _worst(severity: dict[frozenset[int], str], xs: set[int], ys: set[int]) -> str | None:
    best: str | None = None
    for a in xs:
        for b in ys:
            sev = severity.get(frozenset((a, b)))
            if sev is not None and (best is None or SEVERITY_RANK.get(sev, 9) < SEVERITY_RANK.get(best, 9)):
                best = sev
    return best
