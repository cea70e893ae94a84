"""The clinician console: its static page at `/` and assets under `/console/`, and GET /v1/me (who a key is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from medkb.api.deps import PrincipalDep
from medkb.api.schemas import ERRORS

STATIC = Path(__file__).with_name("static")
# Everything the page needs is served from here: no CDN, no inline script, no third-party connection.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache", "X-Frame-Options": "DENY",
}

router = APIRouter(tags=["console"])


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    """The console's single page (sign-in, ask, evidence, patient 360, graph)."""
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/v1/me", responses=ERRORS, tags=["auth"])
def me(who: PrincipalDep) -> dict[str, Any]:
    """The caller's key id, tenant and role (the console's sign-in check; never the secret)."""
    return {"key_id": who.key_id, "tenant": who.tenant_id, "role": who.role}


def assets() -> StaticFiles:
    """The page's scripts and styles, mounted at /console (files of this package only)."""
    return StaticFiles(directory=STATIC, check_dir=True)
