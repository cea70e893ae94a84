"""`medkb sources list|show|delete`: see what the knowledge base holds, and remove a source entirely."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from medkb.cli.context import get_ctx
from medkb.kb.records import SourceInfo
from medkb.kb.models import PUBLIC_TENANT

console = Console()

sources_app = typer.Typer(help="List, inspect and delete sources (named collections).", no_args_is_help=True)


@sources_app.command("list")
def list_sources(
    ctx: typer.Context,
    tenant: Annotated[Optional[str], typer.Option("--tenant", help="Only this tenant (and public).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every source with its documents, chunks, entities, edges and patients.

    Example: medkb sources list --tenant demo
    """
    rows = get_ctx(ctx).store.list_sources(tenant)
    if json_out:
        console.print_json(json.dumps([s.__dict__ for s in rows]))
        return
    if not rows:
        console.print("no sources yet; add some with `medkb ingest docs PATH`")
        return
    console.print(sources_table(rows))


def sources_table(rows: list[SourceInfo]) -> Table:
    """One row per source with what it holds (shared by `sources list` and `stats`)."""
    t = Table("tenant", "source", "kind", "release", "documents", "chunks", "entities", "edges", "patients")
    for s in rows:
        t.add_row(s.tenant_id, s.name, s.kind, s.release or "", str(s.documents), str(s.chunks),
                  str(s.entities), str(s.edges), str(s.patients))
    return t


@sources_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Source name.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant that owns the source.")] = PUBLIC_TENANT,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Counts by document type, language and version, superseded documents, and the latest documents.

    Example: medkb sources show pubmedqa
    """
    from medkb.ingest.catalog import source_details

    d = source_details(get_ctx(ctx).store, tenant, name)
    if json_out:
        console.print_json(json.dumps(d, default=str))
        return
    console.print(f"[bold]{d['name']}[/bold] (tenant {d['tenant_id']}, kind {d['kind']}"
                  f"{', release ' + d['release'] if d['release'] else ''})")
    console.print(f"documents {d['documents']} ({d['superseded']} superseded) · chunks {d['chunks']} · "
                  f"entities {d['entities']} · edges {d['edges']} · patients {d['patients']}")
    for key in ("doc_types", "languages", "versions"):
        if d[key]:
            console.print(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {n}" for k, n in sorted(d[key].items())))
    if d["recent"]:
        t = Table("id", "external id", "title", "version", "superseded", "added", title="latest documents")
        for r in d["recent"]:
            t.add_row(str(r["id"]), r["external_id"], (r["title"] or "")[:60], r["version"],
                      "yes" if r["superseded"] else "", r["created_at"])
        console.print(t)


@sources_app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Source name.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant that owns the source.")] = PUBLIC_TENANT,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a source and everything derived from it: documents, chunks, mentions, edges, patients.

    Example: medkb sources delete old-guidelines --yes
    """
    store = get_ctx(ctx).store
    info = store.get_source(tenant, name)
    if not yes:
        typer.confirm(
            f"delete source {name!r} of tenant {tenant!r}: {info.documents} documents, {info.chunks} chunks, "
            f"{info.edges} edges, {info.patients} patients?", abort=True,
        )
    store.delete_source(tenant, name)
    console.print(f"deleted {name!r} ({info.documents} documents, {info.chunks} chunks, {info.edges} edges, "
                  f"{info.patients} patients)")


def register(app: typer.Typer) -> None:
    app.add_typer(sources_app, name="sources")
