"""Migration 0005_issue11 on a knowledge base that already holds data: nothing is lost (SQLite and MariaDB)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from medkb.kb.factory import init_store, open_store
from medkb.settings import DatabaseSettings
from tests.migration_support import migrate


def test_upgrade_from_previous_head_keeps_documents_edges_and_names(tmp_path: Path) -> None:
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path / 'kb.db'}"))
    migrate(store, "0004_issue20")
    with store.engine.begin() as c:
        c.execute(text("PRAGMA foreign_keys=ON"))
        c.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('public', 'public', '2026-01-01')"))
        c.execute(text("INSERT INTO sources (id, tenant_id, name, kind, created_at, updated_at) "
                       "VALUES (1, 'public', 'lit', 'docs', '2026-01-01', '2026-01-01')"))
        c.execute(text("INSERT INTO documents (id, tenant_id, source_id, external_id, title, doc_type, language, "
                       "version, superseded, metadata, content_hash, created_at) VALUES (1, 'public', 1, 'd', '', "
                       "'literature', 'en', '1', 0, '{}', 'h', '2026-01-01')"))
        c.execute(text("INSERT INTO entities (id, tenant_id, type, name, codes, synonyms) "
                       "VALUES (1, 'public', 'drug', 'x', '{}', '{}'), (2, 'public', 'drug', 'y', '{}', '{}')"))
        c.execute(text("INSERT INTO edges (tenant_id, source_entity_id, target_entity_id, relation, weight, curated, "
                       "source_id) VALUES ('public', 1, 2, 'interacts_with', 1, 1, 1)"))
    init_store(store)  # upgrades to head
    with store.engine.connect() as c:
        counts = [c.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in ("sources", "documents", "edges")]
        fake = c.execute(text("SELECT fake_data FROM sources")).scalar()
    assert counts == [1, 1, 1] and fake in (0, False)
