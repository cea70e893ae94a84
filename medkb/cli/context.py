"""What every CLI command receives: the settings built at the edge and a lazily opened store."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from medkb.kb.factory import open_store
from medkb.kb.store import KnowledgeStore
from medkb.settings import Settings


@dataclass
class CLIContext:
    settings: Settings
    _store: KnowledgeStore | None = field(default=None, repr=False)

    @property
    def store(self) -> KnowledgeStore:
        if self._store is None:
            self._store = open_store(self.settings.database)
            self._store.ping()
        return self._store


def get_ctx(ctx: typer.Context) -> CLIContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, CLIContext)
    return obj
