"""`python -m medkb.sample build`: init, ontologies, the sample abstracts (public), records (tenant demo), a demo key."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medkb.api.auth import create_key, list_keys
from medkb.kb.embeddings import embedder_for, model_dimension
from medkb.kb.factory import init_store, open_store
from medkb.kb.models import PUBLIC_TENANT
from medkb.kb.store import KnowledgeStore
from medkb.sample.slicer import DATA
from medkb.settings import Settings

log = logging.getLogger(__name__)

DEMO_TENANT = "demo"
DOCS_SOURCE = "pubmedqa-sample"
RECORDS_SOURCE = "synthea-sample"
KEY_FILE = Path(".medkb-demo-key")
ONTOLOGIES = ("diseases-basic", "drugs")


@dataclass
class SampleReport:
    ontologies: dict[str, str] = field(default_factory=dict)
    documents: str = ""
    records: str = ""
    key: str | None = None
    key_id: str | None = None
    seconds: float = 0.0


def _summary(report: object) -> str:
    names = ("added", "unchanged", "replaced", "chunks", "terms", "entities_added", "entities_merged",
             "edges_added")
    parts = [f"{name}={getattr(report, name)}" for name in names if hasattr(report, name)]
    failed = getattr(report, "failed", None)
    if failed:
        parts.append(f"failed={len(failed)}")
    return " ".join(parts) or str(report)


def _linker(store: KnowledgeStore) -> object | None:
    try:
        from medkb.kb.graph.linker import EntityLinker
    except ImportError:
        return None
    return EntityLinker.load(store)


def build_sample(
    settings: Settings, *, store: KnowledgeStore | None = None, ontologies: Sequence[str] = ONTOLOGIES,
    docs: Path | None = None, records: Path | None = None, key_file: Path | None = KEY_FILE,
    say: Callable[[str], None] = print, new_key: bool = False,
) -> SampleReport:
    """Build (or refresh — every step is idempotent) the sample knowledge base and return what was done.

    A demo clinician key for tenant ``demo`` is created the first time (or with ``new_key``); its full
    secret is printed once and written to ``key_file`` for `make run` users.
    """
    t0 = time.perf_counter()
    own = store is None
    store = store or open_store(settings.database)
    rep = SampleReport()
    try:
        init_store(store, model_dimension(settings.embedding.model))
        embedder = embedder_for(settings.embedding)
        from medkb.ingest.ontologies import load_ontology

        for name in ontologies:
            r = load_ontology(store, name)
            rep.ontologies[name] = _summary(r)
            say(f"ontology {name}: {rep.ontologies[name]}")
        linker = _linker(store)
        from medkb.ingest.pipeline import ingest_documents

        r = ingest_documents(store, embedder, [docs or DATA / "pubmedqa" / "pubmedqa_sample.json"],
                             tenant_id=PUBLIC_TENANT, source=DOCS_SOURCE, doc_type="literature", lang="en",
                             fmt="pubmedqa", linker=linker)  # type: ignore[arg-type]
        rep.documents = _summary(r)
        say(f"documents ({DOCS_SOURCE}, tenant {PUBLIC_TENANT}): {rep.documents}")
        from medkb.ingest.records import ingest_records

        r = ingest_records(store, records or DATA / "synthea", fmt="synthea-csv", tenant_id=DEMO_TENANT,
                           secret=settings.privacy.secret.get_secret_value(), embedder=embedder,
                           linker=linker, source=RECORDS_SOURCE)  # type: ignore[arg-type]
        rep.records = _summary(r)
        say(f"records ({RECORDS_SOURCE}, tenant {DEMO_TENANT}): {rep.records}")
        existing = [k for k in list_keys(store, DEMO_TENANT) if k.name == "demo" and k.revoked_at is None]
        if new_key or not existing or key_file is None or not key_file.exists():
            rep.key_id, rep.key = create_key(store, DEMO_TENANT, "clinician", name="demo")
            say(f"demo clinician key for tenant {DEMO_TENANT} (shown once): {rep.key}")
            if key_file is not None:
                key_file.write_text(rep.key + "\n")
                key_file.chmod(0o600)
                say(f"written to {key_file}")
        else:
            say(f"demo key exists ({existing[0].id}); it is in {key_file}")
    finally:
        if own:
            store.close()
    rep.seconds = time.perf_counter() - t0
    say(f"sample knowledge base ready in {rep.seconds:.1f}s")
    return rep
