"""Graph leg: query entities → chunks naming them (a boost of fused candidates) or, in graph mode, reached
through personalised PageRank over the edge tables."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from medkb.kb import models as m
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.retrieval.graph_index import MentionPostings, entity_coverage
from medkb.retrieval.types import Candidate

log = logging.getLogger(__name__)

# Paths are looked up for the best-reached entities only: each lookup walks the graph.
_MAX_PATHS = 10


class GraphGenerator:
    """Returns nothing when the graph package is absent or no entity dictionary is loaded."""

    name = "graph"

    def __init__(self, store: KnowledgeStore, *, hops: int = 2, top_entities: int = 50,
                 boost_types: Sequence[str] = ("drug", "gene")) -> None:
        self.store = store
        self.hops, self.top_entities = hops, top_entities
        self.boost_types = frozenset(boost_types)
        self.postings = MentionPostings(store)
        self._lock = threading.Lock()
        self._names_gen: int | None = None
        self._has_names = False
        self._linkers: dict[str | None, tuple[int, Any]] = {}

    def _available(self, gen: int | None = None) -> bool:
        """True when the graph package is installed and some entity names are loaded (checked per write)."""
        gen = self.store.generation() if gen is None else gen
        with self._lock:
            if self._names_gen is not None and self._names_gen >= gen:  # a follower's newer answer stands
                return self._has_names
        try:
            import medkb.kb.graph.linker  # noqa: F401
            import medkb.kb.graph.traversal  # noqa: F401
        except ImportError:
            log.debug("graph package not available; graph generator is off")
            has = False
        else:
            has = self.store.count("entity_names") > 0
        with self._lock:
            self._names_gen, self._has_names = gen, has
        return has

    def prepare(self, generation: int) -> None:
        """Read the mention postings and reload the linkers queries used lately for ``generation``, before a
        follower pins it (queries then find them ready)."""
        if not self._available(generation):
            return
        self.postings.prepare(generation)
        with self._lock:
            tenants = list(self._linkers)
        for t in tenants:
            self._linker(t, generation)

    def _linker(self, tenant_id: str | None, generation: int | None = None) -> Any:
        """The entity linker, or None without names. Kept per generation: ontology loads and deletes bump
        it, and checking the name table itself (what ``EntityLinker.load`` does) costs ~90 ms a query on a
        KB with three ontologies. A follower's linker for a newer generation serves older ones too."""
        gen = self.store.generation() if generation is None else generation
        with self._lock:
            hit = self._linkers.get(tenant_id)
        if hit is not None and hit[0] >= gen:
            return hit[1]
        if not self._available(gen):
            return None
        from medkb.kb.graph.linker import EntityLinker

        linker = EntityLinker.load(self.store, tenant_id)
        with self._lock:
            if len(self._linkers) > 64:
                self._linkers.clear()
            self._linkers[tenant_id] = (gen, linker)
        return linker

    def _view(self, tenant_id: str) -> Any:
        from medkb.kb.graph.traversal import GraphView

        return GraphView(self.store, tenant_id)

    def link(self, query: str, tenant_id: str | None = None) -> list[dict[str, Any]]:
        linker = self._linker(tenant_id)
        if linker is None:
            return []
        seen: dict[int, dict[str, Any]] = {}
        for e in linker.link(query):
            seen.setdefault(int(e.entity_id), {
                "entity_id": int(e.entity_id), "name": e.name, "type": e.type,
                "codes": dict(e.codes or {}), "surface": e.surface, "start": e.start, "end": e.end,
            })
        return list(seen.values())

    def search(self, query: str, filters: SearchFilters, n: int,
               linked: list[dict[str, Any]] | None = None) -> list[Candidate]:
        linked = self.link(query, filters.tenant_id) if linked is None else linked
        if not linked or not self._available():
            return []
        view = self._view(filters.tenant_id)
        seeds = [e["entity_id"] for e in linked]
        g = view.subgraph(seeds, self.hops)
        ppr: dict[int, float] = dict(view.personalized_pagerank(seeds, top=self.top_entities, g=g))
        # A chunk naming a query entity outranks one reached through a hop, whatever PageRank says.
        top = max(ppr.values(), default=1.0)
        for s in seeds:
            ppr[s] = 2.0 * top
        if not ppr:
            return []
        allowed = self.store.allowed_chunk_ids(filters)
        score: dict[int, float] = {}
        best: dict[int, tuple[float, int]] = {}
        for eid, w in ppr.items():
            chunks, counts = self.postings.postings(eid, allowed)
            for cid, cnt in zip(chunks.tolist(), counts.tolist()):
                s = w * (1.0 + 0.5 * math.log(max(cnt, 1)))
                score[cid] = score.get(cid, 0.0) + s
                if cid not in best or s > best[cid][0]:
                    best[cid] = (s, eid)
        ranked = sorted(score, key=lambda c: (-score[c], c))[:n]
        paths = self._paths(g, seeds, [best[c][1] for c in ranked])
        names = self._names({best[c][1] for c in ranked} | {x for p in paths.values() for x in p})
        paths = {t: _render(p, g, names) for t, p in paths.items()}
        return [
            Candidate(c, score[c], {"entity_id": best[c][1], "entity": names.get(best[c][1]),
                                    "path": paths.get(best[c][1])})
            for c in ranked
        ]

    def boost(self, linked: list[dict[str, Any]], candidates: Sequence[int],
              filters: SearchFilters) -> list[Candidate]:
        """The candidates naming the query's drugs and genes, scored by the share of those entities' IDF
        they name (1 = all of them), best first; nothing when the query names none.

        Only ``boost_types`` count: on bioasq-dev (bench/tune_graph.py) drug and gene links are precise,
        while disease and phenotype links of plain words ("fever", "exposure") to catch-all ICD-10-CM
        names lowered nDCG@10 when they counted too.
        """
        ents = {e["entity_id"]: e["name"] for e in linked if e["type"] in self.boost_types}
        if not ents or not candidates:
            return []
        cover = entity_coverage(self.postings, list(ents), candidates, self.store.allowed_chunk_ids(filters))
        ranked = sorted(cover, key=lambda c: (-cover[c][0], c))
        return [Candidate(c, cover[c][0], {"entity_id": cover[c][1], "entity": ents[cover[c][1]],
                                           "path": [ents[cover[c][1]]]}) for c in ranked]

    def _names(self, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        with self.store.engine.connect() as c:
            return {i: n for i, n in c.execute(select(m.Entity.id, m.Entity.name).where(m.Entity.id.in_(ids)))}

    def _paths(self, g: Any, seeds: list[int], targets: list[int]) -> dict[int, list[int]]:
        """Seed → reached entity through the neighbourhood PageRank walked (in memory, no query): the reason
        a chunk came out of the graph."""
        import networkx as nx

        out: dict[int, list[int]] = {}
        for t in dict.fromkeys(targets):
            if len(out) >= _MAX_PATHS:
                break
            if t in seeds:
                out[t] = [t]
                continue
            for s in seeds:
                if s in g and t in g:
                    try:
                        out[t] = nx.shortest_path(g, s, t)
                        break
                    except nx.NetworkXNoPath:
                        continue
        return out


def _render(nodes: list[int], g: Any, names: dict[int, str]) -> list[str]:
    """A path as alternating names and relations: ["metformin", "treats", "type 2 diabetes"]."""
    out = [names.get(nodes[0], str(nodes[0]))]
    for a, b in zip(nodes, nodes[1:]):
        out += [g.edges[a, b].get("relation", ""), names.get(b, str(b))]
    return out
