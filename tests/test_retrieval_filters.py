"""Filters are airtight in every mode: other tenants, superseded versions and other patients never leak."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.retrieval.retriever import build_retriever
from medkb.retrieval.types import MODES
from medkb.settings import DatabaseSettings, Settings

# Words Snowball leaves as they are, so the expected BM25 matches can be computed with a plain split.
VOCAB = ["insulin", "aspirin", "warfarin", "asthma", "fever", "migraine", "sepsis", "anemia"]
TENANTS = ["alpha", "beta", "public"]
PATIENTS = {"alpha": ["pa1", "pa2"], "beta": ["pb1"]}

doc_spec = st.fixed_dictionaries({
    "tenant": st.sampled_from(TENANTS),
    "words": st.lists(st.sampled_from(VOCAB), min_size=1, max_size=4),
    "versions": st.integers(1, 2),
    "note": st.booleans(),
    "patient_pick": st.integers(0, 1),
})


def build(specs: list[dict], root: Path, embedder) -> tuple[object, dict[int, dict]]:  # type: ignore[no-untyped-def]
    """Insert the drawn documents; return the store and, per chunk id, what it is (ground truth)."""
    store = open_store(DatabaseSettings(url=f"sqlite:///{root / 'kb.db'}"))
    init_store(store)
    truth: dict[int, dict] = {}
    for i, s in enumerate(specs):
        tenant = s["tenant"]
        patient = None
        doc_type = "literature"
        if s["note"] and tenant != "public":
            pats = PATIENTS[tenant]
            patient, doc_type = pats[s["patient_pick"] % len(pats)], "record_note"
        texts = [" ".join(s["words"]) + f" version{v} item{i}" for v in range(1, s["versions"] + 1)]
        for v, text, vec in zip(range(1, s["versions"] + 1), texts, embedder.embed_passages(texts)):
            r = store.add_document(DocumentIn(
                tenant_id=tenant, source="src", external_id=f"d{i}", title=f"doc {i}", version=str(v),
                doc_type=doc_type, patient_id=patient, chunks=[ChunkIn(text=text, embedding=vec)],
            ))
            for cid in r.chunk_ids:
                truth[cid] = {"tenant": tenant, "patient": patient, "version": v,
                              "latest": v == s["versions"], "words": set(text.split())}
    return store, truth


def visible(t: dict, f: SearchFilters) -> bool:
    if t["tenant"] not in (f.tenant_id, "public") or not t["latest"]:
        return False
    if t["patient"] is not None:
        return t["patient"] == f.patient_id and t["tenant"] == f.tenant_id
    return True


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(
    specs=st.lists(doc_spec, min_size=1, max_size=6),
    tenant=st.sampled_from(["alpha", "beta"]),
    patient=st.sampled_from([None, "pa1", "pa2", "pb1"]),
    words=st.lists(st.sampled_from(VOCAB), min_size=1, max_size=2),
)
def test_every_mode_sees_only_what_the_filters_allow(specs, tenant, patient, words, embedder) -> None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        store, truth = build(specs, Path(tmp), embedder)
        try:
            retriever = build_retriever(store, Settings(), embedder=embedder)
            f = SearchFilters(tenant_id=tenant, patient_id=patient)
            allowed = {cid for cid, t in truth.items() if visible(t, f)}
            query = " ".join(words)
            for mode in MODES:
                res = retriever.search(query, f, k=100, mode=mode)
                got = {h.chunk.id for h in res.hits}
                folded = {d for h in res.hits for d in h.trace["duplicates"]}
                assert got | folded <= allowed, (mode, got - allowed)
                for h in res.hits:
                    assert not h.chunk.superseded and h.chunk.tenant_id in (tenant, "public")
                    assert h.chunk.patient_id in (None, patient)
                if mode == "bm25":
                    # Filtering inside scoring: every allowed chunk with a query word, and nothing else.
                    expect = {c for c in allowed if truth[c]["words"] & set(words)}
                    assert got | folded == expect
                if mode == "dense":
                    assert got | folded == allowed  # k exceeds the corpus: the filtered set, entirely
                if mode == "hybrid":
                    assert {c for c in allowed if truth[c]["words"] & set(words)} <= got | folded
            retriever.close()
        finally:
            store.close()


def test_record_notes_of_the_patient_in_scope_come_from_the_patient_generator(sqlite_store, embedder) -> None:  # type: ignore[no-untyped-def]
    text = "patient reports migraine twice weekly"
    for pid in ("pa1", "pa2"):
        sqlite_store.add_document(DocumentIn(
            tenant_id="alpha", source="notes", external_id=f"n-{pid}", title="note", doc_type="record_note",
            patient_id=pid, chunks=[ChunkIn(text=f"{text} ({pid})", embedding=embedder.embed_passages([text])[0])],
        ))
    r = build_retriever(sqlite_store, Settings(), embedder=embedder)
    res = r.search("migraine", SearchFilters(tenant_id="alpha", patient_id="pa1"), k=10)
    assert [h.chunk.patient_id for h in res.hits] == ["pa1"]
    assert "patient" in res.hits[0].trace["generators"]
    assert re.search(r"\(pa1\)", res.hits[0].chunk.text)
    # Without a patient in scope no note is visible, in any mode.
    for mode in MODES:
        assert r.search("migraine", SearchFilters(tenant_id="alpha"), k=10, mode=mode).hits == []
    r.close()
