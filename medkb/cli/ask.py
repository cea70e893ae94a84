"""`medkb ask`: the chat service's grounded answer (or evidence) on the command line."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console

from medkb.cli.context import get_ctx

console = Console()


def register(app: typer.Typer) -> None:
    @app.command()
    def ask(
        ctx: typer.Context,
        question: Annotated[str, typer.Argument(help="The question (English or Chinese).")],
        patient: Annotated[Optional[str], typer.Option("--patient", help="Pseudonymous patient id in scope.")] = None,
        tenant: Annotated[str, typer.Option(help="Tenant whose knowledge (and patients) to use.")] = "public",
        k: Annotated[int, typer.Option(help="Passages to retrieve.")] = 8,
        json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Answer from the knowledge base with numbered citations; with no LLM configured, show the cited evidence.

        Example: medkb ask "Is methylprednisolone used for multiple sclerosis relapses?" --tenant demo
        """
        from medkb.api.answer import AnswerEngine
        from medkb.kb.embeddings import embedder_for
        from medkb.kb.filters import SearchFilters
        from medkb.llm import LLMClient
        from medkb.retrieval.retriever import build_retriever

        c = get_ctx(ctx)
        s = c.settings
        embedder = embedder_for(s.embedding)
        engine = AnswerEngine(c.store, build_retriever(c.store, s, embedder=embedder), embedder=embedder,
                              generator=LLMClient(s.llm) if s.llm.model else None)
        if patient:
            # The CLI is an operator's tool; patient access through it is audited like the API's.
            from medkb.api import audit
            from medkb.api.auth import Principal

            audit.record(c.store, Principal("cli", tenant, "admin"), "ask", endpoint="cli:ask", patient_id=patient)
        prepared = engine.prepare(question, SearchFilters(tenant_id=tenant, patient_id=patient), k=k)
        result = engine.answer(prepared)
        if json_out:
            typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
            return
        console.print(result["answer"], markup=False, highlight=False)
        if result["citations"]:
            console.print("\nSources:", style="bold")
            for cit in result["citations"]:
                where = f"chunk {cit['chunk_id']}, document {cit['document_id']}" if cit["chunk_id"] else "record"
                console.print(f"[{cit['n']}] {cit['title']} ({where})", markup=False, highlight=False)
        for note in result["safety_notes"]:
            console.print(f"safety ({note['severity']}): {note['text']}", markup=False, highlight=False)
