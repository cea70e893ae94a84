"""`medkb ingest ontology NAME…`: load versioned vocabularies (HPO, ICD-10-CM, drugs, diseases-basic, CMeKG)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medkb.cli.context import get_ctx

console = Console()


def register_into(ingest_app: typer.Typer) -> None:
    ingest_app.command("ontology")(ontology)


def ontology(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="hpo, icd10cm, drugs, interactions, diseases-basic, cmekg")],
    limit: Annotated[Optional[int], typer.Option(help="Load only a prefix of each ontology (for trials).")] = None,
) -> None:
    """Load ontologies as public sources, then link existing records and documents to them again; running it
    again writes nothing.

    Example: medkb ingest ontology interactions drugs icd10cm hpo
    """
    from medkb.ingest.ontologies import LOADERS, load_ontology
    from medkb.errors import InvalidInput

    bad = [n for n in names if n not in LOADERS]
    if bad:
        raise InvalidInput(f"unknown ontology {', '.join(bad)}; available: {', '.join(LOADERS)}")
    c = get_ctx(ctx)
    from medkb.kb.embeddings import model_dimension
    from medkb.kb.factory import init_store

    init_store(c.store, model_dimension(c.settings.embedding.model))  # a curator need not run init first
    table = Table("ontology", "release", "entities new", "merged", "codes", "names", "edges", "seconds")
    any_written = False
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    for name in names:
        with Progress(*columns, console=console, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int | None, _name: str = name) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"{_name}: {phase}", total=total)
                bar.update(tasks[phase], completed=done, total=total)

            opts = {"limit": limit} if limit is not None else {}
            rep = load_ontology(c.store, name, progress=progress, relink=False, **opts)
        table.add_row(name, rep.release, str(rep.entities_added), str(rep.entities_merged), str(rep.codes_added),
                      str(rep.names_added), str(rep.edges_added), f"{rep.seconds:.1f}")
        any_written = any_written or bool(rep.written)
        if not rep.written:
            console.print(f"{name}: already loaded ({rep.release}), nothing written")
    console.print(table)
    if any_written:
        from medkb.cli.graph import print_relink
        from medkb.kb.graph.relink import relink

        print_relink(relink(c.store))  # records and documents loaded earlier reach the new entities
