"""Generation through litellm: a prompt of numbered evidence asking for [n] citations, in the question's language."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from medkb.errors import UpstreamError
from medkb.settings import LLMSettings

log = logging.getLogger(__name__)

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


class Generator:
    """The configured LLM behind litellm (any provider, or a local OpenAI-compatible server via api_base)."""

    def __init__(self, settings: LLMSettings) -> None:
        if not settings.model:
            raise ValueError("no LLM model configured (evidence mode)")
        self.settings = settings
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        # litellm logs every call at INFO on its own stdout handler (model names, sometimes prompts): keep it quiet.
        logging.getLogger("LiteLLM").setLevel(logging.WARNING)

    @property
    def model(self) -> str:
        return str(self.settings.model)

    def _kwargs(self, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
        s = self.settings
        kw: dict[str, Any] = {
            "model": s.model, "messages": messages, "temperature": s.temperature, "max_tokens": s.max_tokens,
            "timeout": s.timeout_s, "stream": stream,
        }
        if s.api_base:
            kw["api_base"] = s.api_base
        if s.api_key is not None:
            kw["api_key"] = s.api_key.get_secret_value()
        return kw

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        """Answer tokens as they arrive. Failures become UpstreamError (no prompt text in the message)."""
        import litellm

        try:
            for chunk in litellm.completion(**self._kwargs(messages, stream=True)):
                delta = chunk.choices[0].delta if chunk.choices else None
                piece = getattr(delta, "content", None) if delta is not None else None
                if piece:
                    yield piece
        except UpstreamError:
            raise
        except Exception as exc:  # litellm wraps provider errors in many types
            log.warning("LLM call failed: %s", type(exc).__name__)
            raise UpstreamError(f"the language model failed: {type(exc).__name__}") from exc

    def complete(self, messages: list[dict[str, str]]) -> str:
        import litellm

        try:
            resp = litellm.completion(**self._kwargs(messages, stream=False))
        except Exception as exc:
            log.warning("LLM call failed: %s", type(exc).__name__)
            raise UpstreamError(f"the language model failed: {type(exc).__name__}") from exc
        return resp.choices[0].message.content or ""
