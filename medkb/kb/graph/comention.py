"""Co-mention edges: entities named in the same chunks, kept apart from curated edges (relation co_mention)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import aliased

from medkb.kb import models as m
from medkb.kb.graph.relations import CO_MENTION
from medkb.kb.store import KnowledgeStore

BATCH = 5000


@dataclass
class CoMentionReport:
    pairs: int
    added: int
    updated: int
    removed: int


def build_comention_edges(store: KnowledgeStore, tenant_id: str, min_count: int = 1) -> CoMentionReport:
    """(Re)build the tenant's co_mention edges from ``mentions``: weight = number of chunks naming both.

    Written as a diff against what is there, so an unchanged corpus writes nothing.
    """
    a, b = aliased(m.Mention), aliased(m.Mention)
    with store.session() as s:
        rows = s.execute(
            select(a.entity_id, b.entity_id, func.count())
            .join(b, (b.chunk_id == a.chunk_id) & (b.entity_id > a.entity_id))
            .where(a.tenant_id == tenant_id, b.tenant_id == tenant_id)
            .group_by(a.entity_id, b.entity_id)
            .having(func.count() >= min_count)
        ).all()
        want = {(x, y): float(n) for x, y, n in rows}
        have = {
            (x, y): (eid, w) for eid, x, y, w in s.execute(
                select(m.Edge.id, m.Edge.source_entity_id, m.Edge.target_entity_id, m.Edge.weight)
                .where(m.Edge.relation == CO_MENTION, m.Edge.tenant_id == tenant_id, m.Edge.curated.is_(False))
            )
        }
        stale = [eid for k, (eid, _w) in have.items() if k not in want]
        changed = [(eid, want[k]) for k, (eid, w) in have.items() if k in want and w != want[k]]
        new = [
            {"tenant_id": tenant_id, "source_entity_id": x, "target_entity_id": y, "relation": CO_MENTION,
             "weight": w, "curated": False, "provenance": f"co-mentioned in {int(w)} chunk(s)"}
            for (x, y), w in want.items() if (x, y) not in have
        ]
    # Each batch is its own transaction: a large tenant's rebuild stays under a server's transaction
    # size limit (TiDB), and an interrupted rebuild is finished by running it again (it is a diff).
    for i in range(0, len(stale), BATCH):
        with store.session() as s:
            s.execute(delete(m.Edge).where(m.Edge.id.in_(stale[i : i + BATCH])))
    for i in range(0, len(changed), BATCH):
        with store.session() as s:
            if changed[i : i + BATCH]:
                s.execute(update(m.Edge), [{"id": eid, "weight": w, "provenance": f"co-mentioned in {int(w)} chunk(s)"}
                                           for eid, w in changed[i : i + BATCH]])
    for i in range(0, len(new), BATCH):
        with store.session() as s:
            s.connection().execute(insert(m.Edge.__table__), new[i : i + BATCH])
    return CoMentionReport(pairs=len(want), added=len(new), updated=len(changed), removed=len(stale))


__all__ = ["CoMentionReport", "build_comention_edges"]
