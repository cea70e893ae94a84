"""The app factory: settings in, FastAPI app out; errors mapped once, body limit, metrics, PHI-free logs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medkb import __version__
from medkb.api.service import Service
from medkb.errors import MedkbError, RateLimited
from medkb.kb.sqlite_threads import statistics_off_at_start
from medkb.kb.store import KnowledgeStore
from medkb.settings import Settings

log = logging.getLogger("medkb.api")


def error_body(kind: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


class LimitsAndMetrics:
    """Pure ASGI (streaming-safe): refuses bodies over the limit with 413, counts and times every request by
    route template, and logs one line per request with no path parameters, query string or body."""

    def __init__(self, app: ASGIApp, service: Service, max_body: int, routes: Any) -> None:
        self.app, self.service, self.max_body, self.routes = app, service, max_body, routes

    def _template(self, scope: Scope) -> str:
        for r in self.routes():
            match, _ = r.matches(scope)
            if match == Match.FULL:
                return getattr(r, "path", "?")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        route = self._template(scope)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            length = next((int(v) for k, v in scope.get("headers", []) if k == b"content-length"), None)
        except ValueError:
            length = None
        if length is not None and length > self.max_body:
            await self._too_large(send_wrapper)
        else:
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise _BodyTooLarge()
                return message

            try:
                await self.app(scope, limited_receive, send_wrapper)
            except _BodyTooLarge:
                await self._too_large(send_wrapper)
        elapsed = time.perf_counter() - start
        m = self.service.metrics
        m.requests.labels(scope["method"], route, str(status["code"])).inc()
        m.latency.labels(scope["method"], route).observe(elapsed)
        log.info("%s %s %d %.1fms", scope["method"], route, status["code"], elapsed * 1000)

    async def _too_large(self, send: Send) -> None:
        resp = JSONResponse(error_body("PayloadTooLarge", f"request body exceeds {self.max_body} bytes"),
                            status_code=413)
        await resp({"type": "http"}, _empty_receive, send)


class _BodyTooLarge(HTTPException):
    """Raised from inside the app's body read (chunked uploads without Content-Length); FastAPI re-raises
    HTTPExceptions from body parsing, so it reaches the handler as a 413."""

    def __init__(self) -> None:
        super().__init__(413, "request body too large")


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: Settings, store: KnowledgeStore | None = None) -> FastAPI:
    """A medkb API over ``store`` (opened from ``settings.database`` when not given)."""
    if store is None:
        from medkb.kb.factory import open_store

        store = open_store(settings.database)
    service = Service(settings, store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=service.warm_up, name="medkb-warmup", daemon=True).start()
        yield
        service.shutdown()

    app = FastAPI(
        title="medkb", version=__version__, lifespan=lifespan,
        description="Grounded clinical answers with verified citations over one knowledge base "
        "(documents, graph, vectors, de-identified records). Authenticate with `Authorization: Bearer <key>`.",
    )
    app.state.service = service

    @app.exception_handler(MedkbError)
    async def _medkb_error(_: Request, exc: MedkbError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(error_body(type(exc).__name__, exc.message), status_code=exc.http_status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                   for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"])
        return JSONResponse(jsonable_encoder(error_body("InvalidInput", f"{where}: {first['msg']}", details)),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "PayloadTooLarge" if exc.status_code == 413 else "HTTPError"
        return JSONResponse(error_body(kind, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The type only: messages of unexpected errors may quote patient data or SQL parameters.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.scope.get("route"))
        return JSONResponse(error_body("InternalError", "internal error"), status_code=500)

    from medkb.api import (chat, cohorts, completions, console, documents, embeddings, entities, health, patients,
                           search)

    ours: list[Any] = []
    for module in (health, search, documents, entities, patients, chat, completions, embeddings, cohorts, console):
        app.include_router(module.router)
        ours.extend(module.router.routes)  # the route templates metrics and logs are labelled with
    app.mount("/console", console.assets(), name="console")
    ours.append(app.routes[-1])
    app.add_middleware(LimitsAndMetrics, service=service, max_body=settings.api.max_body_bytes,
                       routes=lambda: ours)
    return app


def app_from_env() -> FastAPI:
    """The app factory ``medkb serve --workers N`` hands uvicorn (``medkb.api.app:app_from_env``): each worker
    process builds its settings from the MEDKB_* environment the parent set, and opens its own store and models."""
    statistics_off_at_start()  # a fresh process, no SQLite connection yet (see medkb.kb.sqlite_threads)
    return create_app(Settings())
