"""Graph traversal over the edge tables: k-hop neighbours, explanatory paths, personalised PageRank (networkx).

Only the neighbourhood a query needs is read: one indexed SQL query per hop and direction.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from sqlalchemy import Connection, ColumnElement, Text, func, select, type_coerce
from sqlalchemy.exc import OperationalError

from medkb.errors import DatabaseUnavailable

from medkb.kb import models as m
from medkb.kb.store import KnowledgeStore

IN_BATCH = 900  # ids per IN (...) list; SQLite allows 999 parameters by default in old builds
EDGE_COLS = (m.Edge.id, m.Edge.source_entity_id, m.Edge.target_entity_id, m.Edge.relation, m.Edge.weight,
             m.Edge.curated, m.Edge.source_id, m.Edge.chunk_id, m.Edge.provenance)


def edge_visible(tenants: Sequence[str]) -> ColumnElement[bool]:
    """Edges these tenants may see. Wrapped in coalesce on purpose: a bare ``tenant_id IN`` lures
    SQLite's planner onto the tenant index (every ontology edge is public), scanning the whole table
    instead of seeking the endpoint index."""
    return func.coalesce(m.Edge.tenant_id, "").in_(list(tenants))


@dataclass(frozen=True, slots=True)
class EdgeInfo:
    id: int
    source_id: int  # entity ids
    target_id: int
    relation: str
    weight: float
    curated: bool
    provenance: str | None  # "<source name> <release>" for ontology edges
    chunk_id: int | None
    source_name: str | None = None  # the KB source (ontology) the edge came from
    details: dict[str, Any] | None = None  # severity, wording, origin (read by ``with_sources`` only)


@dataclass
class EntityInfo:
    """An entity as traversal returns it; codes are decoded on first use (thousands per 2-hop query)."""

    id: int
    name: str
    type: str
    raw_codes: str | dict | None = field(default=None, repr=False)

    @functools.cached_property
    def codes(self) -> dict[str, list[str]]:
        raw = self.raw_codes
        return json.loads(raw) if isinstance(raw, str) else dict(raw or {})

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": self.type, "codes": self.codes}


@dataclass
class Neighbor:
    entity: EntityInfo
    hops: int
    via: EdgeInfo  # the edge through which BFS first reached this entity


@dataclass
class GraphPath:
    nodes: list[EntityInfo]
    edges: list[EdgeInfo]  # edges[i] joins nodes[i] and nodes[i + 1] (in either direction)

    def __len__(self) -> int:
        return len(self.edges)


@dataclass
class _Frontier:
    parent: dict[int, tuple[int, EdgeInfo] | None] = field(default_factory=dict)
    frontier: set[int] = field(default_factory=set)


class GraphView:
    """Read-only view of the graph for one tenant (public ontology edges are visible to all)."""

    def __init__(self, store: KnowledgeStore, tenant_id: str | None = None, max_edges_per_hop: int = 2_000) -> None:
        self.store = store
        self.tenants = [m.PUBLIC_TENANT] + ([tenant_id] if tenant_id and tenant_id != m.PUBLIC_TENANT else [])
        self.max_edges_per_hop = max_edges_per_hop

    # ---- SQL --------------------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        """A plain Core connection: reads only, and ORM row handling would cost more than SQLite itself."""
        try:
            with self.store.engine.connect() as c:
                yield c
        except OperationalError as exc:
            raise DatabaseUnavailable(f"database error: {exc.orig}") from exc

    def _edges(self, ids: Iterable[int], relations: Sequence[str] | None = None,
               direction: str = "both", limit: int | None = None) -> list[EdgeInfo]:
        """Edges touching ``ids`` (per ``direction``), at most ``limit`` (heaviest first when cut)."""
        ids = list(ids)
        limit = limit or self.max_edges_per_hop
        out: list[EdgeInfo] = []
        cols = [(m.Edge.source_entity_id, "out"), (m.Edge.target_entity_id, "in")]
        with self._conn() as s:
            for col, d in cols:
                if direction not in ("both", d):
                    continue
                for i in range(0, len(ids), IN_BATCH):
                    q = select(*EDGE_COLS).where(col.in_(ids[i : i + IN_BATCH]), edge_visible(self.tenants))
                    if relations:
                        q = q.where(m.Edge.relation.in_(list(relations)))
                    out.extend(EdgeInfo(*row[:6], provenance=row[8], chunk_id=row[7])
                               for row in s.execute(q.limit(limit + 1)))
        if len(out) > limit:  # hubs: keep the strongest, curated first, so latency stays bounded
            out.sort(key=lambda e: (not e.curated, -e.weight, e.id))
            out = out[:limit]
        return out

    def entities(self, ids: Iterable[int]) -> dict[int, EntityInfo]:
        ids = list(set(ids))
        out: dict[int, EntityInfo] = {}
        with self._conn() as s:
            for i in range(0, len(ids), IN_BATCH):
                for eid, name, typ, codes in s.execute(
                    select(m.Entity.id, m.Entity.name, m.Entity.type, type_coerce(m.Entity.codes, Text))
                    .where(m.Entity.id.in_(ids[i : i + IN_BATCH]))
                ):
                    out[eid] = EntityInfo(eid, name, typ, codes)
        return out

    def find(self, name: str, limit: int = 5) -> list[EntityInfo]:
        """Entities whose name or synonym folds to ``name`` (or that carry it as a code), best first."""
        from medkb.kb.graph.names import fold
        from medkb.kb.graph.relations import TYPE_PRIORITY

        norm = fold(name)
        with self.store.session() as s:
            ids = set(s.scalars(select(m.EntityName.entity_id).where(m.EntityName.norm == norm)))
            ids |= set(s.scalars(select(m.EntityCode.entity_id).where(m.EntityCode.code == name.strip())))
        ents = [e for e in self.entities(ids).values()]
        ents.sort(key=lambda e: (fold(e.name) != norm, TYPE_PRIORITY.get(e.type, 99), e.id))
        return ents[:limit]

    def with_sources(self, edges: list[EdgeInfo]) -> list[EdgeInfo]:
        """The same edges with the name of the source (ontology) each came from and their details."""
        if not edges:
            return edges
        with self.store.session() as s:
            rows = s.execute(select(m.Edge.id, m.Source.name, m.Edge.details)
                             .outerjoin(m.Source, m.Source.id == m.Edge.source_id)
                             .where(m.Edge.id.in_([e.id for e in edges][:IN_BATCH])))
            found = {i: (name, details) for i, name, details in rows}
        return [dataclasses.replace(e, source_name=found.get(e.id, (None, None))[0],
                                    details=found.get(e.id, (None, None))[1]) for e in edges]

    # ---- queries ----------------------------------------------------------------------------

    def neighbors(self, entity_ids: Iterable[int], hops: int = 1, relations: Sequence[str] | None = None,
                  types: Sequence[str] | None = None, direction: str = "both") -> list[Neighbor]:
        """Entities within ``hops`` of the seeds, nearest first; ``types`` filters what is returned,
        ``relations`` what is walked."""
        seeds = set(entity_ids)
        seen: dict[int, tuple[int, EdgeInfo]] = {}
        frontier = set(seeds)
        for hop in range(1, hops + 1):
            if not frontier:
                break
            nxt: set[int] = set()
            for e in self._edges(frontier, relations, direction):
                for here, there in ((e.source_id, e.target_id), (e.target_id, e.source_id)):
                    if here in frontier and there not in seeds and there not in seen:
                        seen[there] = (hop, e)
                        nxt.add(there)
            frontier = nxt
        info = self.entities(seen)
        out = [Neighbor(info[i], h, e) for i, (h, e) in seen.items() if i in info
               and (not types or info[i].type in types)]
        out.sort(key=lambda n: (n.hops, not n.via.curated, -n.via.weight, n.entity.id))
        return out

    def subgraph(self, seed_ids: Iterable[int], hops: int = 2, relations: Sequence[str] | None = None) -> nx.Graph:
        """The undirected weighted neighbourhood of the seeds as a networkx graph."""
        g = nx.Graph()
        frontier = set(seed_ids)
        g.add_nodes_from(frontier)
        seen = set(frontier)
        for _ in range(hops):
            if not frontier:
                break
            nxt: set[int] = set()
            for e in self._edges(frontier, relations):
                # Co-mention weights are counts; curated edges count as strong evidence.
                w = (2.0 if e.curated else 0.5) * max(e.weight, 0.05)
                prev = g.get_edge_data(e.source_id, e.target_id)
                if prev is None or prev["weight"] < w:
                    g.add_edge(e.source_id, e.target_id, weight=w, relation=e.relation)
                for x in (e.source_id, e.target_id):
                    if x not in seen:
                        seen.add(x)
                        nxt.add(x)
            frontier = nxt
        return g

    def personalized_pagerank(self, seed_ids: Iterable[int], hops: int = 2, top: int = 50,
                              relations: Sequence[str] | None = None, alpha: float = 0.85,
                              g: nx.Graph | None = None) -> dict[int, float]:
        """PageRank restarted at the seeds over their ``hops`` neighbourhood (or over ``g``, a ``subgraph``
        the caller built and reuses, e.g. for paths): {entity id: score}, best first."""
        seeds = list(dict.fromkeys(seed_ids))
        if not seeds:
            return {}
        g = self.subgraph(seeds, hops, relations) if g is None else g
        if g.number_of_edges() == 0:
            return {s: 1.0 / len(seeds) for s in seeds[:top]}
        pr = nx.pagerank(g, alpha=alpha, personalization={s: 1.0 for s in seeds if s in g}, weight="weight")
        best = sorted(pr.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return dict(best)

    def path(self, a_id: int, b_id: int, max_hops: int = 6, relations: Sequence[str] | None = None,
             max_nodes: int = 200_000) -> GraphPath | None:
        """A shortest path between two entities (edges in either direction), by bidirectional BFS
        that always expands the smaller frontier; None when none exists within ``max_hops``."""
        if a_id == b_id:
            ents = self.entities([a_id])
            return GraphPath([ents[a_id]], []) if a_id in ents else None
        sides = (_Frontier({a_id: None}, {a_id}), _Frontier({b_id: None}, {b_id}))
        for _ in range(max_hops):
            side, other = sorted(sides, key=lambda f: len(f.frontier))
            if not side.frontier:
                return None
            nxt: set[int] = set()
            meet: int | None = None
            # Hubs (a symptom named by thousands of labels) are cut to the strongest edges: a path
            # stays explainable and the query bounded, at the price of optimality through hubs.
            for e in self._edges(side.frontier, relations):
                for here, there in ((e.source_id, e.target_id), (e.target_id, e.source_id)):
                    if here in side.frontier and there not in side.parent:
                        side.parent[there] = (here, e)
                        nxt.add(there)
                        if there in other.parent and meet is None:
                            meet = there
            side.frontier = nxt
            if meet is not None:
                return self._join(sides[0], sides[1], meet)
            if len(sides[0].parent) + len(sides[1].parent) > max_nodes:
                return None
        return None

    def _join(self, fa: _Frontier, fb: _Frontier, meet: int) -> GraphPath:
        left: list[tuple[int, EdgeInfo | None]] = []
        x: int | None = meet
        while x is not None:
            p = fa.parent[x]
            left.append((x, p[1] if p else None))
            x = p[0] if p else None
        left.reverse()  # a … meet
        nodes = [n for n, _ in left]
        edges = [e for _, e in left if e is not None]  # each reached its node from the previous one
        x = meet
        while fb.parent[x] is not None:
            prev, e = fb.parent[x]  # type: ignore[misc]
            nodes.append(prev)
            edges.append(e)
            x = prev
        info = self.entities(nodes)
        return GraphPath([info[n] for n in nodes], self.with_sources(edges))


def edge_dict(e: EdgeInfo) -> dict[str, Any]:
    return dataclasses.asdict(e)
