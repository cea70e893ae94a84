"""Evaluation data loaders: BEIR parsing and errors, deterministic slices, MIRAGE and PubMedQA-L on the real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkb.errors import BadRecord, InvalidInput, NotFound
from medkb.eval.datasets import (
    load_beir,
    load_mirage,
    load_pubmedqa,
    load_qrels,
    pubmedqa_corpus,
    slice_beir,
    write_beir,
)
from tests.conftest import shared_data


def _tiny(root: Path) -> Path:
    corpus = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(5)]
    return write_beir(root, corpus, {"q1": "first", "q2": "second", "q3": "unjudged"},
                      {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}})


def test_load_beir_keeps_judged_queries_and_graded_qrels(tmp_path: Path) -> None:
    ds = load_beir(_tiny(tmp_path / "tiny"))
    assert ds.name == "tiny" and ds.split == "test"
    assert ds.queries == {"q1": "first", "q2": "second"}
    assert ds.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert ds.corpus_size() == 5 and [r["_id"] for r in ds.corpus()][:2] == ["d0", "d1"]
    assert list(ds.limit(1).queries) == ["q1"]


def test_bad_files_name_file_line_and_field(tmp_path: Path) -> None:
    root = _tiny(tmp_path / "tiny")
    with pytest.raises(NotFound, match="split 'dev'.*have: test"):
        load_beir(root, "dev")
    (root / "qrels" / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(BadRecord, match=r"bad.tsv:2 \[score\]"):
        load_qrels(root / "qrels" / "bad.tsv")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2"}\n')
    with pytest.raises(BadRecord, match=r"queries.jsonl:2 \[text\]"):
        load_beir(root)
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\nnot json\n')
    with pytest.raises(BadRecord, match=r"queries.jsonl:2"):
        load_beir(root)
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n')
    with pytest.raises(InvalidInput, match="not in queries.jsonl"):
        load_beir(root)
    with pytest.raises(NotFound, match="not a BEIR dataset"):
        load_beir(tmp_path)


def test_slice_is_deterministic_and_keeps_every_judged_doc(tmp_path: Path) -> None:
    ds = load_beir(shared_data("bioasq-dev"))
    a = slice_beir(ds, tmp_path / "a", queries=20, distractors=50, seed="s")
    b = slice_beir(ds, tmp_path / "b", queries=20, distractors=50, seed="s")
    c = slice_beir(ds, tmp_path / "c", queries=20, distractors=50, seed="other")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert set(a.queries) != set(c.queries)
    ids = {r["_id"] for r in a.corpus()}
    judged = {d for rels in a.qrels.values() for d in rels}
    assert len(a.queries) == 20 and judged <= ids
    assert len(ids) == len(judged) + 50
    assert all(ds.qrels[q] == a.qrels[q] for q in a.queries)


def test_mirage_real_benchmark() -> None:
    path = shared_data("mirage", "benchmark.json")
    pqa = load_mirage(path, "pubmedqa")
    assert len(pqa) == 500
    assert all(q.answer in q.options and q.pmids for q in pqa)
    mmlu = load_mirage(path, "mmlu")
    assert len(mmlu) == 1089 and set(mmlu[0].options) == {"A", "B", "C", "D"}
    with pytest.raises(InvalidInput, match="unknown MIRAGE task"):
        load_mirage(path, "bioasq")


def test_mirage_bad_answer_names_the_field(tmp_path: Path) -> None:
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"medqa": {"x1": {"question": "q", "options": {"A": "a"}, "answer": "E"}}}))
    with pytest.raises(BadRecord, match=r"\[medqa.x1.answer\]"):
        load_mirage(p, "medqa")


def test_pubmedqa_l_test_split_and_corpus() -> None:
    root = shared_data("pubmedqa")
    qs = load_pubmedqa(root, "test")
    assert len(qs) == 500
    gt = json.loads((root / "test_ground_truth.json").read_text())
    for q in qs[:50]:
        assert q.options[q.answer] == gt[q.id] and q.pmids == [q.id] and q.context
    assert len(load_pubmedqa(root, "all")) == 1000
    corpus = pubmedqa_corpus(root)
    assert len(corpus) == 1000 and all(r["text"] for r in corpus)
    mirage_ids = {p for q in load_mirage(shared_data("mirage", "benchmark.json"), "pubmedqa") for p in q.pmids}
    assert mirage_ids <= {r["_id"] for r in corpus}  # MIRAGE's PubMedQA* gold PMIDs are all in the KB
