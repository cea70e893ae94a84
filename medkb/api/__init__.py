"""The HTTP service: FastAPI app factory, routers per resource, auth, audit, grounded generation."""

from medkb.api.app import create_app

__all__ = ["create_app"]
