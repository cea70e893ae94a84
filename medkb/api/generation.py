"""The generation prompt: numbered evidence asking for [n] citations, in the question's language (sent by medkb.llm)."""

from __future__ import annotations

from collections.abc import Sequence

SYSTEM_EN = (
    "You are a clinical decision-support assistant. Answer ONLY from the numbered evidence below. "
    "End every sentence with the number of the evidence that supports it in square brackets, e.g. [1] or [2][3]. "
    "Do not use outside knowledge. If the evidence does not answer the question, say so. Be brief. "
    "Answer in English."
)
SYSTEM_ZH = (
    "你是临床决策支持助手。只能根据下面编号的证据回答。每一句话的末尾都要用方括号标注支持它的证据编号，"
    "例如 [1] 或 [2][3]。不要使用证据以外的知识。如果证据不能回答问题，请直接说明。回答要简洁。请用中文回答。"
)


def build_messages(
    question: str, evidence: Sequence[str], lang: str, history: Sequence[dict[str, str]] = (),
) -> list[dict[str, str]]:
    """System prompt + numbered evidence, then the earlier turns (bounded), then the question."""
    numbered = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(evidence, 1))
    system = (SYSTEM_ZH if lang == "zh" else SYSTEM_EN) + "\n\nEvidence:\n" + numbered
    turns = [{"role": h["role"], "content": h["content"][:2000]} for h in list(history)[-6:]
             if h.get("role") in ("user", "assistant")]
    return [{"role": "system", "content": system}, *turns, {"role": "user", "content": question}]
