"""The `medkb` entry point: global options, `init`, `stats`, and the command groups; errors → one line."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from medkb import __version__
from medkb.cli.context import CLIContext, get_ctx
from medkb.errors import DatabaseUnavailable, MedkbError
from medkb.kb import models as m
from medkb.kb.factory import init_store, redact
from medkb.kb.sqlite_threads import statistics_off_at_start
from medkb.settings import Settings

app = typer.Typer(
    name="medkb",
    help="medkb: a medical knowledge base (documents, graph, vectors, de-identified records) "
    "with a hybrid retriever for grounded clinical answers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"medkb {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[
        Optional[str],
        typer.Option("--db", help="Database URL (default: $MEDKB_DATABASE_URL or sqlite:///./medkb.db).",
                     show_default=False),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    settings = Settings().with_database(db)
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = CLIContext(settings=settings)


@app.command()
def init(
    ctx: typer.Context,
    app_user: Annotated[Optional[str], typer.Option(
        "--app-user", help="Also create this restricted database user for `medkb serve` (server databases): "
        "INSERT and SELECT only on audit_log. Its password is printed once.")] = None,
    app_host: Annotated[str, typer.Option("--app-host", help="Host part of the --app-user account.")] = "%",
    print_grants: Annotated[bool, typer.Option(
        "--print-grants", help="With --app-user: print the CREATE USER / GRANT statements for a DBA "
        "instead of running them.")] = False,
) -> None:
    """Create or upgrade the schema. Running it again changes nothing.

    Example: medkb --db sqlite:///./kb.db init
    Example: medkb --db mysql+pymysql://admin@db:4000/medkb init --app-user medkb_app --print-grants
    """
    c = get_ctx(ctx)
    from medkb.kb.embeddings import model_dimension

    changed = init_store(c.store, model_dimension(c.settings.embedding.model))
    where = redact(c.settings.database.url)
    console.print(f"initialised {where}" if changed else f"{where} is already up to date")
    if app_user:
        from medkb.kb.factory import create_app_user

        stmts, password = create_app_user(c.store, app_user, app_host, execute=not print_grants,
                                          password="<choose a password>" if print_grants else None)
        if print_grants:
            console.print(";\n".join(stmts) + ";", markup=False, highlight=False, soft_wrap=True)
        else:
            console.print(f"created database user {app_user}@{app_host} (audit_log: INSERT and SELECT only); "
                          f"password, shown once: {password}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def stats(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Rows per table, the embedding model and dimension, and the database URL (password hidden).

    Example: medkb stats
    """
    import json

    c = get_ctx(ctx)
    counts = c.store.stats()
    model, dim = c.store.embedding_info()
    sources = c.store.list_sources()
    if json_out:
        console.print_json(json.dumps({
            "database": redact(c.settings.database.url), "backend": c.store.backend,
            "embedding_model": model, "embedding_dim": dim, "tables": counts,
            "sources": [s.__dict__ for s in sources],
        }))
        return
    console.print(f"database: {redact(c.settings.database.url)} ({c.store.backend})")
    console.print(f"embedding: {model or '-'} (dimension {dim or '-'})")
    t = Table("table", "rows")
    for name in m.TABLES:
        t.add_row(name, str(counts[name]))
    console.print(t)
    if sources:
        from medkb.cli.sources import sources_table

        console.print(sources_table(sources))


def _register_groups() -> None:
    """Command groups live in their own modules; each exposes ``register(app)``."""
    import importlib

    for name in ("ingest", "sources", "search", "ask", "graph", "keys", "serve", "evaluate", "cohort"):
        try:
            module = importlib.import_module(f"medkb.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"medkb.cli.{name}":
                continue  # that group has not been built yet
            raise
        module.register(app)


_register_groups()


def main() -> None:
    statistics_off_at_start()  # before any SQLite connection: a cohort run then uses every core
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        app(standalone_mode=True)
    except MedkbError as exc:
        err.print(f"error: {exc.message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except SQLAlchemyError as exc:
        from medkb.kb.dberrors import classify

        known = classify(exc) if isinstance(exc, DBAPIError) else DatabaseUnavailable(
            str(getattr(exc, "orig", exc)).splitlines()[0])
        err.print(f"error: {known.message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(known.exit_code)


if __name__ == "__main__":
    main()
