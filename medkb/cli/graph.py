"""`medkb graph neighbors|path`: explore the knowledge graph from the shell, with codes and provenance."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medkb.cli.context import get_ctx
from medkb.errors import NotFound
from medkb.kb.graph.relations import check_relation, check_type
from medkb.kb.graph.traversal import EntityInfo, GraphView, edge_dict

console = Console()
graph_app = typer.Typer(help="Explore the knowledge graph (entities, relations, paths).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(graph_app, name="graph")


def _codes(codes: dict[str, list[str]]) -> str:
    return "; ".join(f"{k}:{','.join(v[:3])}" for k, v in codes.items())


def _resolve(view: GraphView, name: str) -> list[EntityInfo]:
    found = view.find(name)
    if not found:
        raise NotFound(f"no entity named {name!r} (load ontologies with `medkb ingest ontology …`)")
    return found


@graph_app.command("neighbors")
def neighbors(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Entity name, synonym or code.")],
    hops: Annotated[int, typer.Option(min=1, max=4, help="How far to walk.")] = 1,
    relation: Annotated[Optional[list[str]], typer.Option("--relation", "-r", help="Walk only these.")] = None,
    entity_type: Annotated[Optional[list[str]], typer.Option("--type", "-t", help="Return only these types.")] = None,
    tenant: Annotated[Optional[str], typer.Option(help="Tenant whose private edges are visible too.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 30,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Entities within N hops of NAME, with their codes and the edge (and its source) that reached them.

    Example: medkb graph neighbors "type 2 diabetes" --hops 1 --type symptom
    """
    rels = [check_relation(r) for r in relation or []] or None
    types = [check_type(t) for t in entity_type or []] or None
    view = GraphView(get_ctx(ctx).store, tenant_id=tenant)
    seed = _resolve(view, name)[0]
    found = view.neighbors([seed.id], hops=hops, relations=rels, types=types)
    shown = found[:limit]
    edges = {e.id: e for e in view.with_sources([n.via for n in shown])}
    if json_out:
        console.print_json(json.dumps({
            "entity": seed.to_dict(), "total": len(found),
            "neighbors": [{"entity": n.entity.to_dict(), "hops": n.hops, "edge": edge_dict(edges[n.via.id])}
                          for n in shown],
        }, default=str))
        return
    console.print(escape(f"{seed.name} [{seed.type}] {_codes(seed.codes)} — {len(found)} within {hops} hop(s)"),
                  highlight=False)
    t = Table("hops", "entity", "type", "codes", "relation", "severity", "provenance")
    for n in shown:
        e = edges[n.via.id]
        arrow = f"{e.relation} →" if e.source_id != n.entity.id else f"← {e.relation}"
        d = e.details or {}
        severity = f"{d['severity']} ({'; '.join(d.get('original_severity', []))})" if d.get("severity") else ""
        t.add_row(str(n.hops), n.entity.name, n.entity.type, _codes(n.entity.codes), arrow, severity,
                  e.provenance or (f"chunk {e.chunk_id}" if e.chunk_id else ""))
    console.print(t)


@graph_app.command("path")
def path(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="From (name, synonym or code).")],
    b: Annotated[str, typer.Argument(help="To (name, synonym or code).")],
    max_hops: Annotated[int, typer.Option(min=1, max=8)] = 6,
    tenant: Annotated[Optional[str], typer.Option(help="Tenant whose private edges are visible too.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The shortest explanatory path between two entities, each edge with its provenance.

    Example: medkb graph path "type 2 diabetes" "lactic acidosis"
    """
    view = GraphView(get_ctx(ctx).store, tenant_id=tenant)
    best = None
    # A name can denote a disease and a phenotype; the shortest path over the candidates explains best.
    for x in _resolve(view, a)[:3]:
        for y in _resolve(view, b)[:3]:
            p = view.path(x.id, y.id, max_hops=max_hops if best is None else min(max_hops, len(best) - 1))
            if p is not None and (best is None or len(p) < len(best)):
                best = p
    if best is None:
        raise NotFound(f"no path between {a!r} and {b!r} within {max_hops} hops")
    if json_out:
        console.print_json(json.dumps({"nodes": [n.to_dict() for n in best.nodes],
                                       "edges": [edge_dict(e) for e in best.edges]}, default=str))
        return
    for i, node in enumerate(best.nodes):
        console.print(f"[bold]{escape(node.name)}[/bold] " + escape(f"[{node.type}] {_codes(node.codes)}"),
                      highlight=False)
        if i < len(best.edges):
            e = best.edges[i]
            arrow = "↓" if e.source_id == node.id else "↑"
            prov = e.provenance or (f"chunk {e.chunk_id}" if e.chunk_id else "")
            console.print(escape(f"   {arrow} {e.relation}  ({prov})"), highlight=False)


def print_relink(rep: Any) -> None:
    """One line per record table (linked / rows) and one for document mentions."""
    for table, n in rep.rows.items():
        linked = rep.linked.get(table, 0)
        console.print(f"{table}: {linked}/{n} rows linked to an entity ({100 * linked / n:.1f} %)" if n else
                      f"{table}: no rows", highlight=False)
    console.print(f"record rows changed: {rep.changed}; chunks scanned: {rep.chunks}, mentions added: "
                  f"{rep.mentions_added}, removed: {rep.mentions_removed}", highlight=False)


@graph_app.command("relink")
def relink_cmd(ctx: typer.Context) -> None:
    """Link every record row (by code, then by description) and every chunk's mentions to the current graph.

    `ingest ontology` runs it after loading; run it by hand after deleting a source. Nothing is re-embedded.

    Example: medkb graph relink
    """
    from medkb.kb.graph.relink import relink

    print_relink(relink(get_ctx(ctx).store))
