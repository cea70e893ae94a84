"""Document ingestion on real data with the real model: PubMedQA, a BEIR slice, bad inputs, versions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from medkb.cli.main import app
from medkb.errors import Conflict
from medkb.ingest.pipeline import ingest_documents
from medkb.kb import models as m
from medkb.kb.factory import init_store, open_store
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.settings import DatabaseSettings
from tests.conftest import shared_data


def visible_chunks(store: KnowledgeStore, filters: SearchFilters) -> list:  # type: ignore[type-arg]
    """Chunks the filters let a query see (ids as Python ints: SQLite cannot bind numpy integers)."""
    return store.get_chunks([int(i) for i in store.allowed_chunk_ids(filters)])


@pytest.fixture(scope="module")
def pubmedqa_store(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[tuple[KnowledgeStore, object]]:  # type: ignore[no-untyped-def]
    """All 1,000 PubMedQA abstracts ingested once for the module (the expensive part)."""
    path = shared_data("pubmedqa", "ori_pqal.json")
    store = open_store(DatabaseSettings(url=f"sqlite:///{tmp_path_factory.mktemp('pq') / 'kb.db'}"))
    init_store(store)
    report = ingest_documents(store, embedder, [path], source="pubmedqa", fmt="pubmedqa")
    yield store, report
    store.close()


@pytest.mark.slow
def test_pubmedqa_stores_every_abstract_with_embeddings(pubmedqa_store) -> None:  # type: ignore[no-untyped-def]
    store, report = pubmedqa_store
    assert report.failed == [] and report.added == 1000 and report.unchanged == 0
    assert store.count("documents") == 1000
    assert store.count("chunks") == report.chunks >= 1000
    with store.session() as s:
        missing = s.scalar(select(m.Chunk.id).where(m.Chunk.embedding.is_(None)).limit(1))
    assert missing is None
    assert store.embedding_info() == ("all-MiniLM-L6-v2", 384)


@pytest.mark.slow
def test_pubmedqa_documents_keep_sections_and_metadata_but_not_the_answer(pubmedqa_store) -> None:  # type: ignore[no-untyped-def]
    store, _ = pubmedqa_store
    data = json.loads(shared_data("pubmedqa", "ori_pqal.json").read_text())
    pmid = "21645374"
    rec = data[pmid]
    (doc,) = store.find_document("public", "pubmedqa", pmid)
    assert doc["metadata"]["mesh"] == rec["MESHES"] and doc["metadata"]["year"] == int(rec["YEAR"])
    with store.session() as s:
        rows = s.execute(select(m.Chunk.section, m.Chunk.text).where(m.Chunk.document_id == doc["id"])
                         .order_by(m.Chunk.ordinal)).all()
    assert {sec for sec, _ in rows} == {lbl.title() for lbl in rec["LABELS"]}
    assert rows[0][1].startswith(rec["CONTEXTS"][0][:60])
    # The benchmark's question and long answer must never be retrievable from the corpus.
    with store.session() as s:
        texts = "\n".join(s.scalars(select(m.Chunk.text)))
    for r in list(data.values())[:200]:
        assert r["QUESTION"] not in texts
        assert r["LONG_ANSWER"] not in texts


@pytest.mark.slow
def test_pubmedqa_rerun_is_unchanged_and_writes_nothing(pubmedqa_store, embedder) -> None:  # type: ignore[no-untyped-def]
    store, _ = pubmedqa_store
    gen, counts = store.generation(), store.stats()
    calls: list[int] = []

    class CountingEmbedder:  # the real model, counting how much it is asked to embed
        name, dim, max_tokens, token_count = embedder.name, embedder.dim, embedder.max_tokens, embedder.token_count

        def embed_passages(self, texts):  # type: ignore[no-untyped-def]
            calls.append(len(texts))
            return embedder.embed_passages(texts)

    again = ingest_documents(store, CountingEmbedder(), [shared_data("pubmedqa", "ori_pqal.json")],
                             source="pubmedqa", fmt="pubmedqa")
    assert (again.unchanged, again.added, again.replaced, again.failed) == (1000, 0, 0, [])
    assert calls == []  # unchanged documents are detected before any embedding
    assert store.generation() == gen and store.stats() == counts


@pytest.mark.slow
def test_dense_search_finds_an_abstract_from_its_own_sentence(pubmedqa_store, embedder) -> None:  # type: ignore[no-untyped-def]
    store, _ = pubmedqa_store
    data = json.loads(shared_data("pubmedqa", "ori_pqal.json").read_text())
    pmid, rec = list(data.items())[500]
    hits = store.vector_search(embedder.embed_query(rec["CONTEXTS"][0][:300]), 3, SearchFilters())
    top = store.get_chunks([hits[0].chunk_id])[0]
    assert top.external_id == pmid


def test_beir_slice_is_stored_with_embeddings(sqlite_store: KnowledgeStore, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corpus = shared_data("bioasq-dev", "corpus.jsonl")
    slice_dir = tmp_path / "bioasq-slice"
    slice_dir.mkdir()
    lines = corpus.read_text(encoding="utf-8").splitlines()[:50]
    (slice_dir / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (slice_dir / "queries.jsonl").write_text('{"_id": "q1", "text": "not a document"}\n', encoding="utf-8")
    report = ingest_documents(sqlite_store, embedder, [slice_dir], source="bioasq", fmt="auto")
    assert report.failed == [] and report.added == 50
    first = json.loads(lines[0])
    (doc,) = sqlite_store.find_document("public", "bioasq", first["_id"])
    assert doc["title"] == first["title"]
    with sqlite_store.session() as s:
        embs = s.scalars(select(m.Chunk.embedding).join(m.Document).where(m.Document.id == doc["id"])).all()
    assert embs and all(abs(float(np.linalg.norm(e)) - 1) < 1e-3 for e in embs)


def _bad_folder(tmp_path: Path) -> Path:
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "good.md").write_text("# Hypertension\n\n## Treatment\n\nStart an ACE inhibitor. Recheck in a month.\n")
    (d / "notes.txt").write_text("Metformin is first-line therapy for type 2 diabetes.\n")
    (d / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage without xref\n")
    (d / "empty.txt").write_text("")
    (d / "latin1.txt").write_bytes("Fi\xe8vre et toux.".encode("latin-1"))
    (d / "records.jsonl").write_text(
        '{"id": "a1", "title": "Asthma", "text": "Inhaled corticosteroids control asthma."}\n'
        '{"id": "a2", "title": "Broken", "text": "unterminated\n'
        '{"id": "a3", "title": "COPD", "text": "Bronchodilators relieve COPD symptoms."}\n'
        '{"title": "No id", "text": "orphan"}\n',
        encoding="utf-8",
    )
    return d


def test_cli_bad_files_are_named_and_skipped_and_exit_is_nonzero(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    d = _bad_folder(tmp_path)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(app, ["--db", db, "ingest", "docs", str(d), "--source", "mixed",
                                      "--doc-type", "guideline"])
    out = result.output
    assert result.exit_code == 1, out
    assert f"{d / 'broken.pdf'}" in out and "unreadable PDF" in out
    assert f"{d / 'records.jsonl'}:2" in out and "invalid JSON" in out
    assert f"{d / 'records.jsonl'}:4 [id]" in out
    assert f"{d / 'empty.txt'}: empty file" in out
    assert f"{d / 'latin1.txt'}:1" in out and "not UTF-8" in out
    store = open_store(DatabaseSettings(url=db))
    try:
        docs = {doc.external_id for doc in _documents(store)}
        assert docs == {"good.md", "notes.txt", "a1", "a3"}
        with store.session() as s:  # no partial document: every stored document has chunks
            for d_id in s.scalars(select(m.Document.id)):
                assert s.scalar(select(m.Chunk.id).where(m.Chunk.document_id == d_id).limit(1)) is not None
        (good,) = store.find_document("public", "mixed", "good.md")
        assert good["doc_type"] == "guideline" and good["title"] == "Hypertension"
        rerun = CliRunner().invoke(app, ["--db", db, "ingest", "docs", str(d / "good.md"), str(d / "notes.txt"),
                                         "--source", "mixed", "--doc-type", "guideline"])
        assert rerun.exit_code == 0, rerun.output
        assert store.count("documents") == 4
    finally:
        store.close()


def _documents(store: KnowledgeStore) -> list[m.Document]:
    with store.session() as s:
        return list(s.scalars(select(m.Document)))


def test_new_version_supersedes_and_a_change_replaces(sqlite_store: KnowledgeStore, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "htn.md"
    f.write_text("# HTN guideline\n\n## Targets\n\nAim for a blood pressure below 140/90 mmHg.\n")
    r1 = ingest_documents(sqlite_store, embedder, [f], source="who", doc_type="guideline", version="1")
    f.write_text("# HTN guideline\n\n## Targets\n\nAim for a blood pressure below 130/80 mmHg.\n")
    r2 = ingest_documents(sqlite_store, embedder, [f], source="who", doc_type="guideline", version="2")
    assert (r1.added, r2.added) == (1, 1)
    versions = {d["version"]: d for d in sqlite_store.find_document("public", "who", "htn.md")}
    assert versions["1"]["superseded"] is True and versions["2"]["superseded"] is False
    hits = sqlite_store.vector_search(embedder.embed_query("blood pressure target"), 5, SearchFilters())
    texts = [c.text for c in sqlite_store.get_chunks([h.chunk_id for h in hits])]
    assert texts and all("130/80" in t for t in texts)
    f.write_text("# HTN guideline\n\n## Targets\n\nAim for a blood pressure below 120/80 mmHg.\n")
    r3 = ingest_documents(sqlite_store, embedder, [f], source="who", doc_type="guideline", version="2")
    assert r3.replaced == 1 and sqlite_store.count("documents") == 2
    (v2,) = [d for d in sqlite_store.find_document("public", "who", "htn.md") if d["version"] == "2"]
    chunks = visible_chunks(sqlite_store, SearchFilters())
    assert [c.text for c in chunks if c.document_id == v2["id"]] == ["Aim for a blood pressure below 120/80 mmHg."]


def test_html_boilerplate_is_stripped_and_headings_become_sections(sqlite_store, embedder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "page.html"
    f.write_text("<html><head><title>Asthma care</title><script>var tracker=1;</script></head><body>"
                 "<nav>Home | About | Login</nav><header>Hospital portal</header><main>"
                 "<h2>Diagnosis</h2><p>Spirometry confirms <b>reversible</b> obstruction.</p>"
                 "<h2>Treatment</h2><ul><li>Inhaled corticosteroids.</li><li>Short-acting relievers.</li></ul>"
                 "</main><footer>Copyright 2024</footer></body></html>", encoding="utf-8")
    report = ingest_documents(sqlite_store, embedder, [f], source="web")
    assert report.added == 1
    chunks = visible_chunks(sqlite_store, SearchFilters())
    by_section = {c.section: c.text for c in chunks}
    assert by_section["Diagnosis"] == "Spirometry confirms reversible obstruction."
    assert "Inhaled corticosteroids." in by_section["Treatment"]
    every = " ".join(by_section.values())
    for junk in ("tracker", "Login", "Hospital portal", "Copyright"):
        assert junk not in every
    assert chunks[0].title == "Asthma care"


def test_pdf_keeps_page_numbers(sqlite_store, embedder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pdf = _two_page_pdf(tmp_path / "guide.pdf")
    report = ingest_documents(sqlite_store, embedder, [pdf], source="pdfs", doc_type="guideline")
    assert report.failed == [] and report.added == 1
    chunks = visible_chunks(sqlite_store, SearchFilters())
    pages = {c.page: c.text for c in chunks}
    assert "Warfarin" in pages[1] and "Heparin" in pages[2]


def test_a_different_embedding_model_is_refused(sqlite_store, embedder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sqlite_store.set_embedding_model("multilingual-e5-small", 384)
    f = tmp_path / "a.txt"
    f.write_text("Some text.")
    with pytest.raises(Conflict, match="multilingual-e5-small"):
        ingest_documents(sqlite_store, embedder, [f], source="x")
    assert sqlite_store.count("documents") == 0


def _two_page_pdf(path: Path) -> Path:
    """A minimal real PDF with a text layer on two pages, written by hand (no PDF writer dependency)."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 >>"]
    for i, text in enumerate((b"Warfarin needs INR monitoring.", b"Heparin is given by injection.")):
        page_no, content_no = 3 + 2 * i, 4 + 2 * i
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_no} 0 R "
                    f"/Resources << /Font << /F1 7 0 R >> >> >>".encode())
        stream = b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET"
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        assert page_no
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def test_cli_sources_list_show_delete(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 's.db'}"
    f = tmp_path / "copd.md"
    f.write_text("# COPD\n\nBronchodilators relieve breathlessness. Smoking cessation slows decline.\n")
    runner = CliRunner()
    added = runner.invoke(app, ["--db", db, "ingest", "docs", str(f), "--source", "gold", "--version", "2024"])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["--db", db, "sources", "list"])
    assert listed.exit_code == 0 and "gold" in listed.output
    shown = runner.invoke(app, ["--db", db, "sources", "show", "gold", "--json"])
    info = json.loads(shown.output)
    assert info["documents"] == 1 and info["versions"] == {"2024": 1} and info["recent"][0]["title"] == "COPD"
    refused = runner.invoke(app, ["--db", db, "sources", "delete", "gold"], input="n\n")
    assert refused.exit_code != 0
    deleted = runner.invoke(app, ["--db", db, "sources", "delete", "gold", "--yes"])
    assert deleted.exit_code == 0, deleted.output
    store = open_store(DatabaseSettings(url=db))
    try:
        assert store.count("documents") == store.count("chunks") == 0 and store.list_sources() == []
    finally:
        store.close()
