"""Schema creation and upgrades through Alembic; ``medkb init`` calls ``upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as c:
        return MigrationContext.configure(c).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_config(engine)).get_current_head()


def recorded_dimension(engine: Engine) -> int | None:
    """The embedding dimension kb_meta holds, if the schema and the row exist."""
    with engine.connect() as c:
        if not inspect(c).has_table("kb_meta"):
            return None
        value = c.execute(text("SELECT value FROM kb_meta WHERE `key` = 'embedding_dim'")).scalar()
    return int(value) if value else None


def upgrade(engine: Engine, embedding_dim: int) -> bool:
    """Bring the schema to head; returns False when it already was (a second init is a no-op).
    Vector columns get the dimension kb_meta records, else ``embedding_dim``."""
    if current_revision(engine) == head_revision(engine):
        return False
    embedding_dim = recorded_dimension(engine) or embedding_dim
    cfg = _config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["embedding_dim"] = embedding_dim
        command.upgrade(cfg, "head")
    return True
