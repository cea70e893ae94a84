"""Chunking: sentence-first packing, a token budget the model's window holds, spans, Chinese segmentation."""

from __future__ import annotations

import json

from medkb.ingest.chunker import Section, chunk_sections, estimate_tokens
from medkb.text import detect_language, sentence_spans
from medkb.ingest.documents import build_sections
from tests.conftest import shared_data

ZH = ("高血压是最常见的慢性病之一。成人高血压的诊断标准为收缩压≥140mmHg和（或）舒张压≥90mmHg！"
      "患者应该定期测量血压吗？建议每年至少测量一次。生活方式干预包括限盐、减重、戒烟和限制饮酒。")


def test_english_sentences_are_kept_whole_and_spans_index_the_text() -> None:
    text = ("Hypertension affects one adult in three. It is treated with ACE inhibitors (e.g. lisinopril). "
            "Thiazide diuretics are an alternative! Does salt restriction help? Yes, in most patients.\n\n"
            "A second paragraph starts here.")
    secs = build_sections([("Treatment", text, None)])
    pieces = chunk_sections(secs, max_tokens=20, overlap=0)
    doc_text = "".join(s.text for s in secs)
    assert len(pieces) >= 3
    for p in pieces:
        assert doc_text[p.start:p.end] == p.text
        assert p.section == "Treatment"
        assert p.text[-1] in ".!?" and p.tokens <= 20
    joined = " ".join(p.text for p in pieces)
    assert "Does salt restriction help?" in joined


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    sents = [f"Sentence number {i} talks about dose titration." for i in range(30)]
    pieces = chunk_sections([Section(" ".join(sents))], max_tokens=40, overlap=12)
    assert len(pieces) > 3
    for a, b in zip(pieces, pieces[1:]):
        assert b.start < a.end  # shared sentences
        assert b.start > a.start  # but always progress
    assert pieces[-1].text.endswith("number 29 talks about dose titration.")


def test_chinese_is_split_on_sentence_ends_and_never_mid_character() -> None:
    text = ZH * 6
    pieces = chunk_sections([Section(text, "诊断")], max_tokens=60, overlap=10)
    assert len(pieces) > 2
    for p in pieces:
        assert text[p.start:p.end] == p.text
        assert p.text[-1] in "。！？", p.text
        assert p.text[0] != "。"
        assert p.tokens <= 60
    # A sentence without any stop still splits between characters, never inside one.
    long = "高血压" * 200
    parts = chunk_sections([Section(long)], max_tokens=50, overlap=0)
    assert "".join(p.text for p in parts) == long
    assert all(len(p.text) <= 50 for p in parts)


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


def test_estimate_never_undercounts_real_word_pieces_by_much(embedder) -> None:  # type: ignore[no-untyped-def]
    """On real PubMedQA abstracts every chunk fits MiniLM's 256-piece window per the model's own tokenizer."""
    data = json.loads(shared_data("pubmedqa", "ori_pqal.json").read_text())
    tok = embedder._model.tokenizer
    worst = 0
    for rec in list(data.values())[:150]:
        secs = build_sections([(lbl, ctx, None) for lbl, ctx in zip(rec["LABELS"], rec["CONTEXTS"])])
        for p in chunk_sections(secs):
            real = len(tok(p.text, add_special_tokens=True)["input_ids"])
            worst = max(worst, real)
            assert real <= 256, (real, p.tokens, p.text[:80])
            assert estimate_tokens(p.text) == p.tokens
    assert worst > 100  # the budget is actually used, not chunks of a few words
