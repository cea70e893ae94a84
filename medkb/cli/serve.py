"""`medkb serve`: run the HTTP API (FastAPI under uvicorn) on the configured database, in one or N processes."""

from __future__ import annotations

import logging
import os
import socket
from typing import Annotated, Optional

import typer

from medkb.cli.context import get_ctx
from medkb.settings import Settings

log = logging.getLogger(__name__)
WORKER_HEALTHCHECK_S = 120


def worker_environment(settings: Settings, workers: int, cores: int) -> dict[str, str]:
    """What each worker process needs in its environment to build the same settings as this command: the
    database URL (``--db`` overrides the environment) and the intra-op threads (cores shared among workers,
    unless MEDKB_EMBEDDING_THREADS was set explicitly)."""
    env = {"MEDKB_DATABASE_URL": settings.database.url}
    if settings.embedding.threads <= 0:
        env["MEDKB_EMBEDDING_THREADS"] = str(max(1, cores // max(1, workers)))
    return env


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        ctx: typer.Context,
        host: Annotated[Optional[str], typer.Option(help="Interface to bind (default $MEDKB_API_HOST or 127.0.0.1).")] = None,
        port: Annotated[Optional[int], typer.Option(help="Port (default $MEDKB_API_PORT or 8000).")] = None,
        workers: Annotated[Optional[int], typer.Option(
            min=1, help="Worker processes (default $MEDKB_API_WORKERS or 1), each with its own models (about "
            "0.5 GB each with ONNX Runtime); one per core scales search with cores.")] = None,
    ) -> None:
        """Serve the clinician console at /, and /v1/chat, /v1/chat/completions, /v1/search, /v1/embeddings,
        documents, entities, patients, health and metrics.

        Example: medkb serve --host 127.0.0.1 --port 8000 --workers 2
        """
        import uvicorn

        c = get_ctx(ctx)
        settings = c.settings
        workers = workers or settings.api.workers
        common = dict(host=host or settings.api.host, port=port or settings.api.port, access_log=False,
                      log_level=settings.log_level.lower())
        typer.echo(f"medkb: clinician console at http://{common['host']}:{common['port']}/", err=True)
        # Access logs would carry patient ids in paths; the app logs route templates instead.
        if workers == 1:
            from medkb.api import create_app

            uvicorn.run(create_app(settings, c.store), **common)  # type: ignore[arg-type]
            return
        c.store  # noqa: B018  (fail here, once, if the database cannot be reached)
        from medkb.kb.onnx_embedder import default_threads  # the cores this process may run on

        os.environ.update(worker_environment(settings, workers, default_threads()))
        _prepare_models(settings)
        # A worker answers the parent's health pings only once it has imported medkb (seconds on a busy machine);
        # uvicorn's 5 s default kills and restarts such workers forever.
        config = uvicorn.Config("medkb.api.app:app_from_env", factory=True, workers=workers,
                                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S, **common)  # type: ignore[arg-type]
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[listening_socket(config)]).run()


def listening_socket(config: "uvicorn.Config") -> socket.socket:  # type: ignore[name-defined]  # noqa: F821
    """The socket N workers share, with TCP_NODELAY set on it: accepted connections inherit it (Linux). asyncio
    sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, which the parent-bound socket (proto 0) is not,
    so without this every response on a kept-alive connection waited for Nagle + delayed ACK (~40–60 ms)."""
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _prepare_models(settings: Settings) -> None:
    """Make the ONNX file once here, so N workers starting together do not all export it."""
    es = settings.embedding
    if es.model != "all-MiniLM-L6-v2" or es.backend == "torch" or es.device != "cpu":
        return
    try:
        from medkb.kb.onnx_embedder import ensure_onnx

        ensure_onnx(es.cache_dir)
    except Exception as exc:  # each worker reports it again and falls back (auto) or fails (onnx)
        log.warning("could not prepare the ONNX embedder: %s", exc)
