"""The sample knowledge base (`make run`'s data) built small from the committed slice, shared by the API tests,
and the make-run flow itself: demo key → /v1/chat in evidence mode → citations resolve via /v1/chunks/{id}."""

from __future__ import annotations

import csv
import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from medkb.api import create_app
from medkb.api.auth import create_key, revoke_key
from medkb.kb import models as m
from medkb.kb.embeddings import load_embedder
from medkb.kb.factory import open_store
from medkb.kb.store import KnowledgeStore
from medkb.sample.build import DEMO_TENANT, build_sample
from medkb.sample.slicer import DATA
from medkb.settings import DatabaseSettings, Settings

OTHER = "hospital-b"
OTHER_GUIDELINE = (
    "# Zorblax renal protocol\n\nHospital B internal guideline. In renal failure, vancomycin dosing follows the "
    "Zorblax protocol: measure trough levels before the fourth dose and extend the dosing interval.\n"
)


@dataclass
class KB:
    """A real SQLite knowledge base: public abstracts, tenant demo's and tenant hospital-b's patients."""

    settings: Settings
    store: KnowledgeStore
    keys: dict[str, str]  # label -> full key
    key_ids: dict[str, str]
    demo_patients: list[str]
    other_patients: list[str]
    other_doc: int
    other_chunk: int
    other_note_chunk: int
    demo_note_chunk: int
    public_doc: int
    public_chunk: int
    other_entity: int
    public_entity: int

    def client(self) -> TestClient:
        return TestClient(create_app(self.settings, self.store))


def _subset_records(dst: Path, start: int, n: int) -> None:
    """Rows of ``n`` patients (from position ``start``) of the committed Synthea slice."""
    src = DATA / "synthea"
    dst.mkdir(parents=True)
    with (src / "patients.csv").open(newline="") as f:
        ids = {r["Id"] for r in list(csv.DictReader(f))[start : start + n]}
    for name, key in (("patients", "Id"), ("conditions", "PATIENT"), ("medications", "PATIENT")):
        with (src / f"{name}.csv").open(newline="") as f, (dst / f"{name}.csv").open("w", newline="") as g:
            r = csv.DictReader(f)
            w = csv.DictWriter(g, fieldnames=r.fieldnames or [], lineterminator="\n")
            w.writeheader()
            w.writerows(row for row in r if row[key] in ids)


def sample_slice(prefix: str, demo: int, other: int) -> tuple[Path, Settings, KnowledgeStore, str]:
    """A fresh SQLite knowledge base in a temporary folder: 15 public abstracts, diseases-basic, the first ``demo``
    sample patients in tenant demo (with a demo key, returned), and the next ``other`` patients' CSVs written to
    root/"other" for the caller to ingest."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    settings = Settings().with_database(f"sqlite:///{root / 'kb.db'}")
    store = open_store(DatabaseSettings(url=settings.database.url))
    data = json.loads((DATA / "pubmedqa" / "pubmedqa_sample.json").read_text())
    docs = root / "docs.json"
    docs.write_text(json.dumps(dict(list(data.items())[:15])))
    _subset_records(root / "demo", 0, demo)
    _subset_records(root / "other", demo, other)
    build_sample(settings, store=store, ontologies=("diseases-basic",), docs=docs, records=root / "demo",
                 key_file=root / "demo-key", say=lambda _: None)
    return root, settings, store, (root / "demo-key").read_text().strip()


@functools.cache
def build_kb() -> KB:
    """Built once per test session (cache): 15 abstracts, 4 + 3 patients, one ontology, keys."""
    root, settings, store, demo_key = sample_slice("medkb-api-", 4, 3)

    from medkb.ingest.pipeline import ingest_documents
    from medkb.ingest.records import ingest_records

    emb = load_embedder(settings.embedding.model)
    ingest_records(store, root / "other", fmt="synthea-csv", tenant_id=OTHER, secret="other-secret", embedder=emb)
    (root / "guide").mkdir()
    (root / "guide" / "zorblax.md").write_text(OTHER_GUIDELINE)
    ingest_documents(store, emb, [root / "guide"], tenant_id=OTHER, source="b-guidelines", doc_type="guideline",
                     lang="en")
    keys, ids = {"demo-clinician": demo_key}, {"demo-clinician": demo_key.split("_")[1]}
    for label, tenant, role in (("demo-curator", DEMO_TENANT, "curator"), ("demo-admin", DEMO_TENANT, "admin"),
                                ("other-clinician", OTHER, "clinician"), ("revoked", DEMO_TENANT, "clinician")):
        ids[label], keys[label] = create_key(store, tenant, role, label)
    revoke_key(store, ids["revoked"])
    with store.session() as s:
        ent = m.Entity(tenant_id=OTHER, type="drug", name="Zorblaxamine", codes={}, synonyms={})
        s.add(ent)
        s.flush()
        other_entity = ent.id
        public_entity = s.query(m.Entity.id).filter(m.Entity.tenant_id == m.PUBLIC_TENANT).order_by(m.Entity.id).first()[0]
        pats = {t: [p for (p,) in s.query(m.Patient.id).filter(m.Patient.tenant_id == t).order_by(m.Patient.id)]
                for t in (DEMO_TENANT, OTHER)}
        other_doc = s.query(m.Document.id).filter(m.Document.tenant_id == OTHER, m.Document.patient_id.is_(None)).one()[0]
        other_chunk = s.query(m.Chunk.id).filter(m.Chunk.document_id == other_doc).first()[0]

        def note_chunk(tenant: str) -> int:
            return s.query(m.Chunk.id).join(m.Document, m.Document.id == m.Chunk.document_id).filter(
                m.Document.tenant_id == tenant, m.Document.patient_id.is_not(None)).first()[0]

        public_doc, public_chunk = s.query(m.Chunk.document_id, m.Chunk.id).filter(
            m.Chunk.tenant_id == m.PUBLIC_TENANT).first()
        demo_note, other_note = note_chunk(DEMO_TENANT), note_chunk(OTHER)
    return KB(settings, store, keys, ids, pats[DEMO_TENANT], pats[OTHER], other_doc, other_chunk, other_note,
              demo_note, public_doc, public_chunk, other_entity, public_entity)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_make_run_flow_evidence_answer_with_resolvable_citations() -> None:
    """What `make run` promises: the demo key, no LLM, /v1/chat → labelled evidence whose citations resolve."""
    kb = build_kb()
    settings = kb.settings.model_copy(update={"llm": kb.settings.llm.model_copy(update={"model": None})})
    with TestClient(create_app(settings, kb.store)) as c:
        r = c.post("/v1/chat", headers=auth(kb.keys["demo-clinician"]),
                   json={"messages": [{"role": "user", "content": "Is multiple sclerosis associated with "
                                       "streptococcal infection?"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mode"] == "evidence"
        assert body["answer"].startswith("Retrieved evidence")
        assert body["citations"], body
        for cit in body["citations"]:
            assert f"[{cit['n']}]" in body["answer"]
            chunk = c.get(f"/v1/chunks/{cit['chunk_id']}", headers=auth(kb.keys["demo-clinician"]))
            assert chunk.status_code == 200
            assert chunk.json()["document_id"] == cit["document_id"]
            # The quoted passage is the chunk's own text, never a paraphrase.
            quoted = body["answer"].split(f"[{cit['n']}] ", 1)[1].split('"')[1].rstrip(" …")
            assert quoted[:60] in chunk.json()["text"]
