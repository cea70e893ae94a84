"""Helpers shared by the OMOP and cohort tests: the Eunomia ingest the session fixture runs once."""

from __future__ import annotations

from pathlib import Path

from medkb.ingest.omop import eunomia_file
from medkb.ingest.pipeline import IngestReport
from medkb.ingest.records import ingest_records
from medkb.kb.factory import init_store, open_store
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings

SECRET = "omop-test-secret"
TENANT = "research"


class NoEmbedder:
    """Rows-only ingests never embed; this only names the knowledge base's model (a test double, since no
    text is embedded on this path)."""

    name, dim = "all-MiniLM-L6-v2", 384

    def embed_passages(self, texts):  # type: ignore[no-untyped-def]
        raise AssertionError("a rows-only ingest must not embed")

    def embed_query(self, text):  # type: ignore[no-untyped-def]
        raise AssertionError("a rows-only ingest must not embed")


def ingest_eunomia_from(cdm: Path, url: str, tenant: str = TENANT) -> tuple[KnowledgeStore, IngestReport]:
    """An OMOP CDM ingested rows-only into a migrated store at ``url``."""
    store = open_store(DatabaseSettings(url=url))
    init_store(store)
    report = ingest_records(store, cdm, fmt="omop", tenant_id=tenant, secret=SECRET,
                            embedder=NoEmbedder(), notes=False)  # type: ignore[arg-type]
    return store, report


def ingest_eunomia(url: str, tenant: str = TENANT) -> tuple[KnowledgeStore, IngestReport]:
    return ingest_eunomia_from(eunomia_file(), url, tenant)
