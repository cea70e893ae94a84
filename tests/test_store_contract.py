"""The KnowledgeStore contract: every backend (SQLite always, TiDB when MEDKB_TEST_TIDB_URL is set)
must pass the same tests, on the real database."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from medkb.errors import Conflict, NotFound
from medkb.kb import models as m
from medkb.kb.factory import init_store
from medkb.kb.filters import SearchFilters
from medkb.kb.records import ChunkIn, DocumentIn
from medkb.kb.store import KnowledgeStore

DIM = 384


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def doc(tenant: str, ext: str, texts: list[str], rng: np.random.Generator, **kw) -> DocumentIn:
    vecs = unit(rng, len(texts))
    return DocumentIn(
        tenant_id=tenant, source=kw.pop("source", "guidelines"), external_id=ext, title=f"Doc {ext}",
        chunks=[ChunkIn(text=t, section="Body", embedding=v, token_count=len(t.split()))
                for t, v in zip(texts, vecs)],
        **kw,
    )


class TestKnowledgeStoreContract:
    def test_init_twice_is_a_noop(self, store: KnowledgeStore) -> None:
        before = store.stats()
        assert init_store(store) is False
        assert store.stats() == before

    def test_kb_id_made_by_two_writers_at_once_keeps_the_first(self, store: KnowledgeStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """Two ingests into a new knowledge base: the other writer commits its kb_id between our read and our
        insert (reproduced on a second real connection); ours must yield to it, not fail on the key."""
        import uuid

        from sqlalchemy import delete, insert

        from medkb.kb.store_meta import KB_ID_KEY

        with store.engine.begin() as c:
            c.execute(delete(m.Meta).where(m.Meta.key == KB_ID_KEY))
        real = uuid.uuid4

        def other_writer_first() -> uuid.UUID:
            with store.engine.begin() as c:
                c.execute(insert(m.Meta).values(key=KB_ID_KEY, value="the-other-writers-id"))
            monkeypatch.setattr(uuid, "uuid4", real)
            return real()

        monkeypatch.setattr(uuid, "uuid4", other_writer_first)
        assert store.kb_id() == "the-other-writers-id"
        assert store.kb_id() == "the-other-writers-id"

    def test_add_and_read_back(self, store: KnowledgeStore, tenant: str) -> None:
        rng = np.random.default_rng(1)
        r = store.add_document(doc(tenant, "d1", ["alpha beta", "gamma delta"], rng, version="1"))
        assert r.status == "added" and len(r.chunk_ids) == 2
        got = store.get_document(r.document_id)
        assert got["external_id"] == "d1" and got["chunks"] == 2 and got["superseded"] is False
        views = store.get_chunks(list(r.chunk_ids))
        assert [v.text for v in views] == ["alpha beta", "gamma delta"]
        assert views[0].source == "guidelines" and views[0].ordinal == 0
        assert store.find_by_hash(tenant, got["content_hash"]) == [r.document_id]
        with pytest.raises(NotFound):
            store.get_document(r.document_id + 10_000)

    def test_readd_unchanged_writes_nothing(self, store: KnowledgeStore, tenant: str) -> None:
        d = doc(tenant, "d1", ["same text"], np.random.default_rng(2))
        first = store.add_document(d)
        gen, counts = store.generation(), store.stats()
        again = store.add_document(d)
        assert again.status == "unchanged" and again.document_id == first.document_id
        assert store.generation() == gen and store.stats() == counts

    def test_changed_content_replaces_chunks(self, store: KnowledgeStore, tenant: str) -> None:
        rng = np.random.default_rng(3)
        first = store.add_document(doc(tenant, "d1", ["old one", "old two"], rng))
        second = store.add_document(doc(tenant, "d1", ["new text"], rng))
        assert second.status == "replaced" and second.document_id == first.document_id
        assert store.get_chunks(list(first.chunk_ids)) == []
        assert [c.text for c in store.get_chunks(list(second.chunk_ids))] == ["new text"]
        assert store.count("chunks") == 1

    def test_new_version_supersedes_old(self, store: KnowledgeStore, tenant: str) -> None:
        rng = np.random.default_rng(4)
        v2 = store.add_document(doc(tenant, "g", ["version two"], rng, version="2"))
        v10 = store.add_document(doc(tenant, "g", ["version ten"], rng, version="10"))
        v1 = store.add_document(doc(tenant, "g", ["version one"], rng, version="1"))
        assert [store.get_document(r.document_id)["superseded"] for r in (v2, v10, v1)] == [True, False, True]
        f = SearchFilters(tenant_id=tenant)
        assert list(store.allowed_chunk_ids(f)) == list(v10.chunk_ids)
        store.delete_document(v10.document_id)
        assert store.get_document(v2.document_id)["superseded"] is False

    def test_failure_mid_document_leaves_nothing(self, store: KnowledgeStore, tenant: str) -> None:
        rng = np.random.default_rng(5)
        store.add_document(doc(tenant, "ok", ["fine"], rng))
        counts = store.stats()
        bad = doc(tenant, "bad", ["one", "two", "three"], rng)
        bad.chunks[2].entity_ids = {987654321: 1}  # no such entity: the mention insert fails
        with pytest.raises(IntegrityError):
            store.add_document(bad)
        assert store.stats()["documents"] == counts["documents"]
        assert store.stats()["chunks"] == counts["chunks"]
        mixed = doc(tenant, "mixed", ["a", "b"], rng)
        mixed.chunks[1].embedding = np.ones(DIM // 2, dtype=np.float32)
        with pytest.raises(Conflict):
            store.add_document(mixed)
        assert store.stats()["chunks"] == counts["chunks"]

    def test_vector_search_equals_brute_force(self, store: KnowledgeStore, tenant: str) -> None:
        rng = np.random.default_rng(6)
        ids, vecs = [], []
        for i in range(12):
            d = doc(tenant, f"d{i}", [f"chunk {i}-{j}" for j in range(10)], rng)
            r = store.add_document(d)
            ids += r.chunk_ids
            vecs += [c.embedding for c in d.chunks]
        matrix = np.vstack(vecs)
        f = SearchFilters(tenant_id=tenant)
        for q in unit(rng, 5):
            ref = np.argsort(-(matrix @ q), kind="stable")[:10]
            hits = store.vector_search(q, 10, f)
            assert [h.chunk_id for h in hits] == [ids[i] for i in ref]
            assert np.allclose([h.score for h in hits], (matrix @ q)[ref], atol=1e-4)

    def test_filters_are_applied_inside_search(self, store: KnowledgeStore, tenant: str) -> None:
        rng = np.random.default_rng(7)
        other = tenant + "-other"
        q = unit(rng)[0]
        mine = store.add_document(doc(tenant, "g1", ["mine"], rng, doc_type="guideline"))
        lit = store.add_document(doc(tenant, "l1", ["lit"], rng, doc_type="literature"))
        # The other tenant's chunk is the exact query vector: it would win without the filter.
        theirs = doc(other, "x", ["theirs"], rng)
        theirs.chunks[0].embedding = q
        store.add_document(theirs)
        note = doc(tenant, "note-p1", ["patient note"], rng, doc_type="record_note", patient_id="p1",
                   source="records")
        note.chunks[0].embedding = q
        note_r = store.add_document(note)
        old = doc(tenant, "g1", ["old"], rng, doc_type="guideline", version="0")
        old.chunks[0].embedding = q
        store.add_document(old)
        found = {h.chunk_id for h in store.vector_search(q, 50, SearchFilters(tenant_id=tenant))}
        assert found == set(mine.chunk_ids) | set(lit.chunk_ids)
        g = store.vector_search(q, 50, SearchFilters(tenant_id=tenant, doc_types=("guideline",)))
        assert {h.chunk_id for h in g} == set(mine.chunk_ids)
        scoped = store.vector_search(q, 1, SearchFilters(tenant_id=tenant, patient_id="p1"))
        assert [h.chunk_id for h in scoped] == list(note_r.chunk_ids)
        # Another tenant naming the same patient id sees nothing of it.
        assert not store.vector_search(q, 50, SearchFilters(tenant_id=other, patient_id="p1")) or all(
            h.chunk_id not in note_r.chunk_ids
            for h in store.vector_search(q, 50, SearchFilters(tenant_id=other, patient_id="p1"))
        )
        public = store.add_document(doc(m.PUBLIC_TENANT, "pub", ["shared guideline"], rng))
        seen = {h.chunk_id for h in store.vector_search(q, 50, SearchFilters(tenant_id=other))}
        assert set(public.chunk_ids) <= seen

    def test_delete_source_removes_everything_derived(self, store: KnowledgeStore, tenant: str) -> None:
        rng = np.random.default_rng(8)
        keep = store.add_document(doc(tenant, "k", ["kept"], rng, source="keep"))
        src_id = store.ensure_source(tenant, "onto", kind="ontology", release="2025-01")
        with store.session() as s:
            a = m.Entity(type="disease", name="diabetes", tenant_id=m.PUBLIC_TENANT)
            b = m.Entity(type="drug", name="metformin", tenant_id=m.PUBLIC_TENANT)
            s.add_all([a, b])
            s.flush()
            s.add_all([
                m.EntityName(entity_id=a.id, norm="diabetes", source_id=src_id),
                m.EntityName(entity_id=b.id, norm="metformin", source_id=src_id),
                m.EntityCode(system="ICD10CM", code="E11", entity_id=a.id, source_id=src_id),
                m.Edge(source_entity_id=b.id, target_entity_id=a.id, relation="treats", source_id=src_id),
            ])
            ea, eb = a.id, b.id
        gone = doc(tenant, "g", ["goes", "away"], rng, source="drop")
        gone.chunks[0].entity_ids = {ea: 2}
        r = store.add_document(gone)
        with store.session() as s:
            s.add(m.Edge(source_entity_id=ea, target_entity_id=eb, relation="co_mention", curated=False,
                         chunk_id=r.chunk_ids[0], tenant_id=tenant))
        assert store.count("mentions") == 1 and store.count("edges") == 2
        info = store.delete_source(tenant, "drop")
        assert info.documents == 1 and info.chunks == 2
        assert store.count("mentions") == 0 and store.count("edges") == 1
        assert store.get_chunks(list(keep.chunk_ids))
        store.delete_source(tenant, "onto")
        assert store.count("edges") == 0 and store.count("entities") == 0
        assert store.count("entity_codes") == 0
        assert {s.name for s in store.list_sources(tenant, include_public=False)} == {"keep"}
        with pytest.raises(NotFound):
            store.delete_source(tenant, "drop")

    def test_embedding_model_is_recorded_and_enforced(self, store: KnowledgeStore) -> None:
        store.set_embedding_model("all-MiniLM-L6-v2", DIM)
        store.set_embedding_model("all-MiniLM-L6-v2", DIM)
        assert store.embedding_info() == ("all-MiniLM-L6-v2", DIM)
        with pytest.raises(Conflict):
            store.set_embedding_model("other-model", 768)
        with pytest.raises(Conflict):
            store.add_document(doc("t", "x", ["x"], np.random.default_rng(0)) if False else DocumentIn(
                tenant_id="t", source="s", external_id="x",
                chunks=[ChunkIn(text="x", embedding=np.ones(768, dtype=np.float32))]))

    def test_zero_vectors_score_zero(self, store: KnowledgeStore, tenant: str) -> None:
        """A zero-norm vector (stored or asked) scores 0 on every backend (TiDB's distance is NULL)."""
        r = store.add_document(DocumentIn(tenant_id=tenant, source="s", external_id="z", chunks=[
            ChunkIn(text="zero", embedding=np.zeros(DIM, dtype=np.float32)),
            ChunkIn(text="ones", embedding=np.ones(DIM, dtype=np.float32))]))
        f = SearchFilters(tenant_id=tenant)
        hits = store.vector_search(np.ones(DIM, dtype=np.float32), 5, f)
        assert [(h.chunk_id, round(h.score, 5)) for h in hits] == [(r.chunk_ids[1], 1.0), (r.chunk_ids[0], 0.0)]
        assert sorted(round(h.score, 5) for h in store.vector_search(np.zeros(DIM, dtype=np.float32), 5, f)) == [0, 0]


class TestFollowingWrites:
    """A store's vector search follows another store's writes and deletes (the matrix by the change log,
    not a re-read), and the change log is pruned only below the position asked for, keeping its newest row."""

    @staticmethod
    def _second(store: KnowledgeStore) -> KnowledgeStore:
        from medkb.kb.factory import open_store
        from medkb.settings import DatabaseSettings

        return open_store(DatabaseSettings(url=store.engine.url.render_as_string(hide_password=False)))

    def test_vector_search_follows_another_stores_writes_incrementally(self, store: KnowledgeStore,
                                                                        tenant: str) -> None:
        rng = np.random.default_rng(11)
        other = self._second(store)
        try:
            kept: dict[int, np.ndarray] = {}
            f = SearchFilters(tenant_id=tenant)

            def write(ext: str, n: int) -> list[int]:
                d = doc(tenant, ext, [f"{ext} chunk {j}" for j in range(n)], rng)
                r = other.add_document(d)
                kept.update(zip(r.chunk_ids, (c.embedding for c in d.chunks)))
                return list(r.chunk_ids)

            def check() -> None:
                ids = sorted(kept)
                matrix = np.vstack([kept[i] for i in ids])
                for q in unit(rng, 4):
                    ref = np.argsort(-(matrix @ q), kind="stable")[:10]
                    assert [h.chunk_id for h in store.vector_search(q, 10, f)] == [ids[i] for i in ref]

            for i in range(4):
                write(f"d{i}", 10)
            check()  # the first search reads the vectors whole
            stats = getattr(store, "matrix_stats", None)
            reads = stats["full_reads"] if stats else 0
            new = write("d9", 5)
            check()
            gone = other.find_document(tenant, "guidelines", "d1")[0]["id"]
            other.delete_document(gone)
            for cid in [c for c in list(kept) if c not in new][10:20]:
                kept.pop(cid)
            check()
            replaced = write("d2", 3)  # same key, new content: its old chunks go, the new ones come
            for cid in [c for c in list(kept) if c not in new and c not in replaced][10:20]:
                kept.pop(cid)
            check()
            if stats:  # backends that keep vectors in this process: caught up by the change log, never re-read
                assert stats["full_reads"] == reads and stats["catch_ups"] >= 3 and stats["masked"] >= 20
        finally:
            other.close()

    def test_change_log_prunes_below_a_position_and_keeps_the_newest_row(self, store: KnowledgeStore,
                                                                         tenant: str) -> None:
        from medkb.kb.store_changes import ChangeLogGap

        rng = np.random.default_rng(12)
        start = store.last_change_seq()
        for i in range(3):
            store.add_document(doc(tenant, f"p{i}", ["a", "b"], rng))
        seqs = [q for q, _ in store.chunk_changes_since(start)]  # positions need not start at start + 1
        last = store.last_change_seq()
        assert len(seqs) == 6 and seqs[-1] == last
        cut = seqs[1]
        assert store.prune_chunk_changes(cut) >= 2
        assert store.first_change_seq() == seqs[2]
        assert store.chunk_changes_since(cut) == store.chunk_changes_since(start)
        with pytest.raises(ChangeLogGap):  # an index at the old position cannot catch up across the gap
            store.changed_chunks(seqs[0] - 1, {})
        ids, pos = store.changed_chunks(cut, {})
        assert pos == last and len(ids) == 4
        store.prune_chunk_changes(last + 100)  # asked past the end: the newest row stays
        assert store.first_change_seq() == store.last_change_seq() == last

    def test_filter_sets_follow_writes_supersession_and_deletes(self, store: KnowledgeStore, tenant: str) -> None:
        """Each generation's allowed set equals a fresh computation (on SQLite it is derived from the previous
        one plus the change log: a new version flips the old one's chunks out without touching them)."""
        rng = np.random.default_rng(13)
        other = self._second(store)
        try:
            filters = [SearchFilters(tenant_id=tenant), SearchFilters(tenant_id=tenant, include_superseded=True),
                       SearchFilters(tenant_id=tenant, sources=("s2",)), SearchFilters()]

            def check() -> None:
                gen = store.read_generation()
                fresh = self._second(store)
                try:
                    for f in filters:
                        got = store.allowed_chunk_ids(f, generation=gen)
                        assert np.array_equal(got, fresh.allowed_chunk_ids(f)), f
                finally:
                    fresh.close()

            v1 = other.add_document(doc(tenant, "g", ["dose 1", "dose 2"], rng, version="1"))
            other.add_document(doc(tenant, "h", ["other"], rng, source="s2"))
            check()
            v2 = other.add_document(doc(tenant, "g", ["dose 3"], rng, version="2"))  # v1 superseded
            check()
            assert not set(v1.chunk_ids) & set(store.allowed_chunk_ids(filters[0], generation=store.read_generation()))
            other.delete_document(v2.document_id)  # v1 is the newest again
            check()
            assert set(v1.chunk_ids) <= set(store.allowed_chunk_ids(filters[0], generation=store.read_generation()))
            other.delete_source(tenant, "s2")
            check()
        finally:
            other.close()
