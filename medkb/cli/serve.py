"""`medkb serve`: run the HTTP API (FastAPI under uvicorn) on the configured database."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from medkb.cli.context import get_ctx


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        ctx: typer.Context,
        host: Annotated[Optional[str], typer.Option(help="Interface to bind (default $MEDKB_API_HOST or 127.0.0.1).")] = None,
        port: Annotated[Optional[int], typer.Option(help="Port (default $MEDKB_API_PORT or 8000).")] = None,
        workers: Annotated[int, typer.Option(help="Worker processes (each loads its own models).")] = 1,
    ) -> None:
        """Serve /v1/chat, /v1/chat/completions, /v1/search, documents, entities, patients, health and metrics.

        Example: medkb serve --host 127.0.0.1 --port 8000
        """
        import uvicorn

        from medkb.api import create_app

        c = get_ctx(ctx)
        settings = c.settings
        # Access logs would carry patient ids in paths; the app logs route templates instead.
        uvicorn.run(create_app(settings, c.store), host=host or settings.api.host, port=port or settings.api.port,
                    workers=workers if workers == 1 else None, access_log=False,
                    log_level=settings.log_level.lower())
