"""The ONNX Runtime embedder against its torch reference: same vectors, export cached by checksum, no torch
at serving time, concurrent use without a lock, and refusal (not truncation) of over-long inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from medkb.errors import ConfigError, InvalidInput
from medkb.kb import onnx_export
from medkb.kb.embeddings import check_lengths, load_embedder
from medkb.kb.onnx_embedder import OnnxMiniLMEmbedder, ensure_onnx, onnx_dir, weights_sha256
from tests.conftest import ROOT, shared_data


@pytest.fixture(scope="module")
def torch_ref():  # type: ignore[no-untyped-def]
    return load_embedder("all-MiniLM-L6-v2", backend="torch")


@pytest.fixture(scope="module")
def onnx():  # type: ignore[no-untyped-def]
    return load_embedder("all-MiniLM-L6-v2", backend="onnx")


def _pubmedqa_texts(n: int) -> list[str]:
    data = json.loads(shared_data("pubmedqa", "ori_pqal.json").read_text())
    out: list[str] = []
    for rec in list(data.values())[:n]:
        out += [rec["QUESTION"], " ".join(rec["CONTEXTS"])]  # long contexts exercise the 256-token truncation
    return out


def test_onnx_is_the_default_and_matches_torch_on_shared_corpus(torch_ref, onnx) -> None:  # type: ignore[no-untyped-def]
    assert load_embedder("all-MiniLM-L6-v2").backend == "onnx"
    assert torch_ref.backend == "torch"
    texts = _pubmedqa_texts(24)
    a, b = onnx.embed_passages(texts), torch_ref.embed_passages(texts)
    assert a.shape == b.shape == (48, 384) and a.dtype == np.float32
    cos = (a * b).sum(1)
    assert cos.min() >= 0.9999, f"worst cosine {cos.min():.6f} on text {int(cos.argmin())}"
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    q = [onnx.embed_query(t) for t in texts[:6:2]]
    assert min(float(x @ y) for x, y in zip(q, b[:6:2])) >= 0.9999


def test_concurrent_queries_without_a_lock_give_the_sequential_answers(onnx) -> None:  # type: ignore[no-untyped-def]
    texts = [f"adverse effects of drug number {i} in renal impairment" for i in range(24)]
    sequential = np.stack([onnx.embed_query(t) for t in texts])
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = np.stack(list(pool.map(onnx.embed_query, texts)))
    np.testing.assert_allclose(concurrent, sequential, atol=1e-6)
    assert not hasattr(onnx, "_lock")


def test_export_is_verified_and_cached_by_weights_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh cache: an export that fails verification leaves nothing behind; one that passes is cached under
    the weights' checksum with its manifest, and the next load reuses it."""
    target = onnx_dir(tmp_path)
    assert weights_sha256()[:16] in target.name
    monkeypatch.setattr(onnx_export, "MIN_COSINE", 1.5)  # no export can reach it: verification must refuse
    with pytest.raises(ConfigError, match="does not reproduce torch"):
        ensure_onnx(tmp_path)
    assert not target.exists() and not any(p.name.startswith(".export-") for p in target.parent.iterdir())
    monkeypatch.undo()
    path = ensure_onnx(tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    assert path == target / "model.onnx" and manifest["weights_sha256"] == weights_sha256()
    assert manifest["min_cosine"] >= 0.9999
    stamp = path.stat().st_mtime_ns
    e = OnnxMiniLMEmbedder(cache_dir=tmp_path)
    assert e.path == path and path.stat().st_mtime_ns == stamp  # reused, not re-exported
    assert float(e.embed_query("metformin") @ e.embed_passages(["metformin"])[0]) > 0.9999


def _pubmedqa_chunks(n_docs: int) -> list[str]:
    """The chunk texts ingest makes of PubMedQA records (what embed_passages sees in production)."""
    from medkb.ingest.chunker import Budget
    from medkb.ingest.corpora import iter_pubmedqa
    from medkb.ingest.pipeline import to_document
    from medkb.kb.embeddings import token_counter

    budget = Budget.for_embedder(token_counter("all-MiniLM-L6-v2"))
    records = list(iter_pubmedqa(shared_data("pubmedqa", "ori_pqal.json")))[:n_docs]
    return [c.text for r in records if not isinstance(r, Exception)
            for c in to_document(r, tenant_id="public", source="t", doc_type="literature", lang="en",
                                 version="1", effective_date=None, budget=budget).chunks]


def test_passage_batches_are_grouped_by_tokens_not_characters(onnx, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Batches of 64 sorted by characters (sentence-transformers' way) are ~50 % padding on these chunks."""
    texts = _pubmedqa_chunks(150)
    real = sum(onnx.token_count(t) for t in texts)
    shapes: list[tuple[int, int]] = []
    run = onnx._session.run
    monkeypatch.setattr(onnx._session, "run", lambda out, feeds: shapes.append(feeds["input_ids"].shape)
                        or run(out, feeds))
    onnx.embed_passages(texts)
    assert sum(b for b, _ in shapes) == len(texts) and all(b <= onnx.batch_size for b, _ in shapes)
    padded = sum(b * w for b, w in shapes)
    assert padded / real <= 1.20, f"{padded} padded tokens for {real} real ones"


def test_a_text_gets_the_same_vector_alone_and_padded_in_a_batch(onnx) -> None:  # type: ignore[no-untyped-def]
    """The fused attention reads the mask as lengths: right padding must not leak into any vector."""
    texts = ["metformin", "BP 142/91 mmHg, HbA1c 7.9 %", "word " * 120, "高血压的一线治疗药物有哪些？", "?"]
    batch = OnnxMiniLMEmbedder(batch_size=len(texts)).embed_passages(texts)
    alone = np.stack([onnx.embed_query(t) for t in texts])
    np.testing.assert_allclose(batch, alone, atol=2e-5)


def test_cached_graph_is_fused_for_onnx_runtime(onnx) -> None:  # type: ignore[no-untyped-def]
    import onnx as onnx_lib

    ops = [n.op_type for n in onnx_lib.load(str(onnx.path), load_external_data=False).graph.node]
    assert ops.count("Attention") == 6 and ops.count("SkipLayerNormalization") == 12
    assert "Softmax" not in ops and "IsNaN" not in ops  # the traced unfused attention
    manifest = json.loads((onnx.path.parent / "manifest.json").read_text())
    assert manifest["fused"]["Attention"] == 6


def test_serving_process_never_imports_torch(onnx) -> None:  # type: ignore[no-untyped-def]
    code = ("import sys; from medkb.kb.embeddings import load_embedder; "
            "e = load_embedder('all-MiniLM-L6-v2', backend='onnx'); v = e.embed_query('metformin'); "
            "print(v.shape[0], 'torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["384", "False", "False"]


def test_auto_falls_back_to_torch_without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an install without onnxruntime looks like
    e = load_embedder("all-MiniLM-L6-v2", batch_size=17, backend="auto")  # its own cache key
    assert e.backend == "torch"
    with pytest.raises(ConfigError, match="onnxruntime"):
        load_embedder("all-MiniLM-L6-v2", batch_size=18, backend="onnx")


def test_over_long_input_is_refused_not_truncated(torch_ref, onnx) -> None:  # type: ignore[no-untyped-def]
    fits = "word " * 200
    too_long = "word " * 300
    for e in (onnx, torch_ref):
        assert e.max_tokens == 256
        assert e.token_count(fits) == 202 and e.token_count(too_long) == 302  # [CLS] … [SEP]
        check_lengths(e, ["short", fits])
        with pytest.raises(InvalidInput, match=r"input\[1\]: 302 tokens, over the 256-token limit"):
            check_lengths(e, ["short", too_long])


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        load_embedder("all-MiniLM-L6-v2", backend="cuda")
