"""A small real knowledge base for the console tests: 15 public abstracts, tenant demo's sample patients plus a
made-up fixture patient with an interacting pair and a contraindication, the same fixture patient in tenant hospital-b, and keys."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from medkb.api.auth import create_key
from medkb.kb import models as m
from medkb.kb.codes import canonical_system
from medkb.kb.models import PUBLIC_TENANT
from medkb.kb.store import KnowledgeStore
from medkb.sample.build import DEMO_TENANT
from medkb.settings import Settings
from tests.test_api_kb import sample_slice

FIXTURE = Path(__file__).with_name("fixtures") / "console_patient"
OTHER = "hospital-b"
FIXTURE_SOURCE = "console-test-fixture"


@dataclass
class ConsoleKB:
    settings: Settings
    store: KnowledgeStore
    keys: dict[str, str]
    demo_patients: list[str]
    other_patients: list[str]
    fixture_patient: str  # tenant demo's pseudonym of the fixture patient
    other_fixture_patient: str  # tenant hospital-b's pseudonym of the same person


def _safety_fixture(store: KnowledgeStore) -> None:
    """Warfarin, aspirin and peptic ulcer (by their codes) with two safety edges whose source says it is a
    fixture: warfarin interacts with aspirin; aspirin is contraindicated in peptic ulcer."""
    store.ensure_tenant(PUBLIC_TENANT)
    with store.session() as s:
        src = m.Source(tenant_id=PUBLIC_TENANT, name=FIXTURE_SOURCE, kind="ontology", release="tests",
                       description="made up for medkb's console tests; not clinical knowledge")
        s.add(src)
        s.flush()
        ids = {}
        for name, typ, system, code in (("warfarin", "drug", "RxNorm", "11289"), ("aspirin", "drug", "RxNorm", "1191"),
                                        ("peptic ulcer", "disease", "SNOMEDCT", "13200003")):
            system = canonical_system(system) or system
            e = m.Entity(tenant_id=PUBLIC_TENANT, type=typ, name=name, codes={system: [code]}, synonyms={})
            s.add(e)
            s.flush()
            s.add(m.EntityCode(system=system, code=code, entity_id=e.id, source_id=src.id))
            ids[name] = e.id
        for a, rel, b in (("warfarin", "interacts_with", "aspirin"), ("aspirin", "contraindicated_in", "peptic ulcer")):
            s.add(m.Edge(tenant_id=PUBLIC_TENANT, source_entity_id=ids[a], target_entity_id=ids[b], relation=rel,
                         weight=1.0, curated=True, source_id=src.id, provenance=f"{FIXTURE_SOURCE} tests"))


@functools.cache
def console_kb() -> ConsoleKB:
    """Built once per test session (about 20 s: the abstracts and record notes are embedded for real)."""
    root, settings, store, demo_key = sample_slice("medkb-console-", 3, 2)
    _safety_fixture(store)
    from medkb.ingest.records import ingest_records
    from medkb.kb.embeddings import load_embedder

    emb = load_embedder(settings.embedding.model)
    secret = settings.privacy.secret.get_secret_value()
    ingest_records(store, FIXTURE, fmt="synthea-csv", tenant_id=DEMO_TENANT, secret=secret, embedder=emb)
    ingest_records(store, root / "other", fmt="synthea-csv", tenant_id=OTHER, secret="other-secret", embedder=emb)
    ingest_records(store, FIXTURE, fmt="synthea-csv", tenant_id=OTHER, secret="other-secret", embedder=emb)
    keys = {"demo-clinician": demo_key}
    for label, tenant, role in (("demo-curator", DEMO_TENANT, "curator"), ("other-clinician", OTHER, "clinician")):
        keys[label] = create_key(store, tenant, role, label)[1]
    P, C = m.Patient.__table__, m.Condition.__table__
    with store.engine.connect() as c:
        pats = {t: [r[0] for r in c.execute(select(P.c.id).where(P.c.tenant_id == t).order_by(P.c.id))]
                for t in (DEMO_TENANT, OTHER)}
        fixture = {t: c.execute(select(C.c.patient_id).where(C.c.tenant_id == t, C.c.code == "49436004")).scalar_one()
                   for t in (DEMO_TENANT, OTHER)}
    return ConsoleKB(settings, store, keys, pats[DEMO_TENANT], pats[OTHER], fixture[DEMO_TENANT], fixture[OTHER])
