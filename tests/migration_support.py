"""A test knowledge base moved to one Alembic revision, up or down, as the migration tests set up their cases."""

from __future__ import annotations

from alembic import command

from medkb.kb.migrate import _config
from medkb.kb.store import KnowledgeStore


def migrate(store: KnowledgeStore, revision: str, *, down: bool = False) -> None:
    """``store``'s schema upgraded (or, with ``down``, downgraded) to ``revision`` in one transaction."""
    cfg = _config(store.engine)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["embedding_dim"] = 384
        (command.downgrade if down else command.upgrade)(cfg, revision)
