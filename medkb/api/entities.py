"""GET /v1/entities/{id} and /neighbors: graph concepts and their typed relations visible to the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import or_, select

from medkb.api.deps import PrincipalDep, StoreDep
from medkb.api.schemas import ERRORS, MAX_ID
from medkb.errors import NotFound
from medkb.kb import models as m
from medkb.kb.models import PUBLIC_TENANT

router = APIRouter(prefix="/v1", tags=["entities"])
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
E, ED = m.Entity.__table__, m.Edge.__table__


def _entity_row(conn: Any, entity_id: int, tenants: tuple[str, ...]) -> dict[str, Any]:
    row = conn.execute(select(E.c.id, E.c.tenant_id, E.c.type, E.c.name, E.c.codes, E.c.synonyms)
                       .where(E.c.id == entity_id, E.c.tenant_id.in_(tenants))).first()
    if row is None:
        raise NotFound(f"no entity {entity_id}")
    return dict(row._mapping)


@router.get("/entities/{entity_id}", responses=ERRORS)
def get_entity(entity_id: Id, who: PrincipalDep, store: StoreDep) -> dict[str, Any]:
    """A concept: type, preferred name, codes (ICD-10-CM, HPO, …) and synonyms."""
    tenants = tuple(dict.fromkeys((who.tenant_id, PUBLIC_TENANT)))
    with store.engine.connect() as c:
        return _entity_row(c, entity_id, tenants)


@router.get("/entities/{entity_id}/neighbors", responses=ERRORS)
def neighbors(
    entity_id: Id, who: PrincipalDep, store: StoreDep,
    hops: Annotated[int, Query(ge=1, le=3)] = 1,
    relation: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Entities reached within ``hops`` edges (either direction), each with the edge that reached it."""
    tenants = tuple(dict.fromkeys((who.tenant_id, PUBLIC_TENANT)))
    out: list[dict[str, Any]] = []
    with store.engine.connect() as c:
        root = _entity_row(c, entity_id, tenants)
        seen, frontier = {entity_id}, [entity_id]
        for hop in range(1, hops + 1):
            if not frontier or len(out) >= limit:
                break
            q = (select(ED.c.source_entity_id, ED.c.target_entity_id, ED.c.relation, ED.c.weight,
                        ED.c.provenance, ED.c.chunk_id)
                 .where(ED.c.tenant_id.in_(tenants),
                        or_(ED.c.source_entity_id.in_(frontier), ED.c.target_entity_id.in_(frontier)))
                 .limit(limit * 4))
            if relation:
                q = q.where(ED.c.relation == relation)
            edges = c.execute(q).all()
            reached: dict[int, Any] = {}
            for e in edges:
                other = e.target_entity_id if e.source_entity_id in frontier else e.source_entity_id
                if other not in seen and other not in reached:
                    reached[other] = e
            if not reached:
                break
            rows = {r.id: r for r in c.execute(select(E.c.id, E.c.type, E.c.name, E.c.codes)
                                               .where(E.c.id.in_(list(reached)), E.c.tenant_id.in_(tenants)))}
            for other, e in reached.items():
                if other in rows and len(out) < limit:
                    r = rows[other]
                    out.append({"id": r.id, "type": r.type, "name": r.name, "codes": r.codes, "hops": hop,
                                "relation": e.relation, "direction": "out" if e.source_entity_id != other else "in",
                                "via": e.source_entity_id if e.source_entity_id != other else e.target_entity_id,
                                "weight": e.weight, "provenance": e.provenance, "chunk_id": e.chunk_id})
            seen |= set(rows)
            frontier = list(rows)
    return {"entity": root, "neighbors": out}
