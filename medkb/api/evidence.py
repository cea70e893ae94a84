"""Evidence mode (no LLM): the best passages and patient facts, quoted with citations and labelled as such."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medkb.kb.records import ChunkView
from medkb.retrieval.citations import split_sentences
from medkb.text import content_terms

LABEL_EN = ("Retrieved evidence — no answer was generated (no language model is configured). "
            "These are quotations from the knowledge base; read the cited sources.")
LABEL_ZH = "检索到的证据——未生成回答（未配置语言模型）。以下为知识库原文摘录，请查阅所引来源。"
FALLBACK_EN = ("Retrieved evidence — the generated text above is not supported by its citations; "
               "these are quotations from the knowledge base.")
FALLBACK_ZH = "检索到的证据——上面生成的文字没有得到其引用的支持；以下为知识库原文摘录。"
FACTS_EN = "Facts from the patient's record:"
FACTS_ZH = "患者记录中的事实："


@dataclass
class Evidence:
    """One numbered item the answer may cite: a retrieved chunk or a fact from the patient's record."""

    n: int
    text: str
    score: float
    chunk: ChunkView | None = None
    fact: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None

    def citation(self) -> dict[str, Any]:
        if self.chunk is not None:
            c = self.chunk
            return {
                "n": self.n, "kind": "chunk", "chunk_id": c.id, "document_id": c.document_id, "title": c.title,
                "section": c.section, "page": c.page, "source": c.source, "doc_type": c.doc_type,
                "external_id": c.external_id, "version": c.version,
            }
        f = self.fact or {}
        return {
            "n": self.n, "kind": "patient_fact", "chunk_id": None, "document_id": None,
            "title": f"patient record: {f.get('kind', 'fact')}", "section": None, "page": None,
            "source": "patient_record", "fact": f,
        }


def fact_text(f: dict[str, Any]) -> str:
    code = f"{f.get('code_system') or ''} {f.get('code') or ''}".strip()
    when = f" since {f['start']}" if f.get("start") else ""
    until = f" until {f['stop']}" if f.get("stop") else ""
    return f"Patient record, {f.get('kind', 'fact')}: {f.get('description') or '?'}" + (
        f" ({code})" if code else "") + when + until


def best_snippet(text: str, query: str, limit: int = 420) -> str:
    """The chunk's sentences that share most words with the query, in their original order, verbatim."""
    sents = split_sentences(text)
    if len(text) <= limit or len(sents) <= 1:
        return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"
    q = content_terms(query)
    ranked = sorted(range(len(sents)), key=lambda i: (-len(q & content_terms(sents[i])), i))
    keep: list[int] = []
    size = 0
    for i in ranked:
        if size + len(sents[i]) > limit and keep:
            continue
        keep.append(i)
        size += len(sents[i]) + 1
    out = " ".join(sents[i] for i in sorted(keep))
    return out if len(out) <= limit + 200 else out[:limit].rsplit(" ", 1)[0] + " …"


def render(query: str, evidence: Sequence[Evidence], lang: str, fallback: bool = False) -> str:
    """The evidence-mode answer: a label, then each passage quoted with its [n], then patient facts.
    ``fallback``: shown after a generated answer none of whose sentences its citations support."""
    label = (FALLBACK_ZH if lang == "zh" else FALLBACK_EN) if fallback else (LABEL_ZH if lang == "zh" else LABEL_EN)
    lines = [label, ""]
    for e in evidence:
        if e.chunk is None:
            continue
        where = e.chunk.title or e.chunk.external_id
        if e.chunk.section:
            where += f" — {e.chunk.section}"
        lines.append(f"[{e.n}] {where}: \"{best_snippet(e.chunk.text, query)}\"")
    facts = [e for e in evidence if e.fact is not None]
    if facts:
        lines += ["", FACTS_ZH if lang == "zh" else FACTS_EN]
        lines += [f"[{e.n}] {e.text}" for e in facts]
    return "\n".join(lines).strip()
