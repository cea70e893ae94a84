"""`medkb search`: run the hybrid retriever from the shell and print hits with their traces."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medkb.cli.context import get_ctx
from medkb.errors import InvalidInput
from medkb.kb.filters import SearchFilters
from medkb.kb.models import PUBLIC_TENANT
from medkb.retrieval.types import MODES, SearchResult

console = Console()

# Version of the --json document; bump on any incompatible change.
JSON_VERSION = 1


def _date(value: str | None, name: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name}: expected YYYY-MM-DD, got {value!r}") from None


def result_json(query: str, mode: str, k: int, filters: SearchFilters, res: SearchResult) -> dict[str, Any]:
    """The stable machine-readable form of a search (keys are sorted when printed)."""
    return {
        "version": JSON_VERSION,
        "query": query,
        "mode": mode,
        "k": k,
        "filters": {
            "tenant_id": filters.tenant_id, "doc_types": list(filters.doc_types or []) or None,
            "sources": list(filters.sources or []) or None, "patient_id": filters.patient_id,
            "languages": list(filters.languages or []) or None,
        },
        "hits": [
            {
                "rank": i + 1, "score": h.score, "chunk_id": h.chunk.id, "document_id": h.chunk.document_id,
                "external_id": h.chunk.external_id, "title": h.chunk.title, "source": h.chunk.source,
                "doc_type": h.chunk.doc_type, "tenant_id": h.chunk.tenant_id, "version": h.chunk.version,
                "section": h.chunk.section, "text": h.chunk.text, "trace": h.trace,
            }
            for i, h in enumerate(res.hits)
        ],
        "linked_entities": res.linked_entities,
        "patient_facts": res.patient_facts,
        "timings_ms": res.timings,
    }


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        ctx: typer.Context,
        query: Annotated[str, typer.Argument(help="The question or keywords.")],
        k: Annotated[int, typer.Option("--k", help="How many hits.")] = 10,
        mode: Annotated[str, typer.Option("--mode", help="hybrid | bm25 | dense | graph.")] = "hybrid",
        json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output with traces.")] = False,
        tenant: Annotated[str, typer.Option("--tenant", help="Tenant whose documents (and public ones) to search.")]
        = PUBLIC_TENANT,
        patient: Annotated[Optional[str], typer.Option("--patient", help="Pseudonymous patient id in scope.")]
        = None,
        doc_type: Annotated[Optional[list[str]], typer.Option("--doc-type", help="Repeatable: guideline, literature, record_note.")]
        = None,
        source: Annotated[Optional[list[str]], typer.Option("--source", help="Repeatable source name.")] = None,
        lang: Annotated[Optional[list[str]], typer.Option("--lang", help="Repeatable language code.")] = None,
        since: Annotated[Optional[str], typer.Option("--since", help="Effective on or after YYYY-MM-DD.")] = None,
        until: Annotated[Optional[str], typer.Option("--until", help="Effective on or before YYYY-MM-DD.")] = None,
    ) -> None:
        """Search the knowledge base; every hit shows which generators found it and why.

        Example: medkb search "first-line treatment of type 2 diabetes" --k 5 --mode hybrid --json
        """
        from medkb.retrieval.retriever import build_retriever

        if mode not in MODES:
            raise InvalidInput(f"--mode: must be one of {', '.join(MODES)}, not {mode!r}")
        c = get_ctx(ctx)
        filters = SearchFilters(
            tenant_id=tenant, doc_types=tuple(doc_type) if doc_type else None,
            sources=tuple(source) if source else None, languages=tuple(lang) if lang else None,
            patient_id=patient, effective_from=_date(since, "--since"), effective_to=_date(until, "--until"),
        )
        retriever = build_retriever(c.store, c.settings)
        try:
            res = retriever.search(query, filters, k=k, mode=mode)
        finally:
            retriever.close()
        if json_out:
            typer.echo(json.dumps(result_json(query, mode, k, filters, res), sort_keys=True, default=str))
            return
        if res.linked_entities:
            console.print("entities: " + ", ".join(f"{e['name']} ({e['type']})" for e in res.linked_entities))
        t = Table("#", "score", "document", "found by", "text")
        for i, h in enumerate(res.hits, start=1):
            found = ", ".join(f"{g}#{v['rank']}" for g, v in h.trace["generators"].items())
            if h.trace.get("graph_path"):
                found += "\n" + " → ".join(h.trace["graph_path"])
            doc = f"{h.chunk.title[:50]}\n[{h.chunk.source}:{h.chunk.external_id} v{h.chunk.version}]"
            t.add_row(str(i), f"{h.score:.4f}", escape(doc), escape(found),
                      escape(h.chunk.text[:160].replace("\n", " ")))
        console.print(t)
        console.print(f"{len(res.hits)} hits in {res.timings.get('total', 0):.1f} ms "
                      f"(query embedding {res.timings.get('embed_query', 0):.1f} ms)")
