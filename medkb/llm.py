"""The one litellm client: bounded time and retries, request settings within server bounds, the LLM's own usage."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from medkb.errors import ConfigError, UpstreamError
from medkb.settings import LLMSettings

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


@dataclass
class Usage:
    """Token counts as the LLM reported them (``counted`` when it did not and its tokenizer counted instead)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    counted: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}


@dataclass
class Reply:
    text: str
    usage: Usage | None


def _usage(obj: Any) -> Usage | None:
    u = getattr(obj, "usage", None)
    if u is None or getattr(u, "prompt_tokens", None) is None:
        return None
    return Usage(int(u.prompt_tokens or 0), int(getattr(u, "completion_tokens", 0) or 0))


def _counted(model: str, messages: Messages, text: str) -> Usage | None:
    """Usage by litellm's tokenizer for ``model``, for servers that report none."""
    import litellm

    try:
        return Usage(int(litellm.token_counter(model=model, messages=messages)),
                     int(litellm.token_counter(model=model, text=text)), counted=True)
    except Exception:  # no tokenizer for this model: no usage rather than a guess
        return None


class Stream:
    """Answer tokens as they arrive; ``usage`` is the LLM's count once the stream is exhausted."""

    def __init__(self, client: LLMClient, kwargs: dict[str, Any]) -> None:
        self._client, self._kwargs = client, kwargs
        self.usage: Usage | None = None

    def __iter__(self) -> Iterator[str]:
        import litellm

        pieces: list[str] = []
        try:
            for chunk in litellm.completion(**self._kwargs):
                self.usage = _usage(chunk) or self.usage
                delta = chunk.choices[0].delta if chunk.choices else None
                piece = getattr(delta, "content", None) if delta is not None else None
                if piece:
                    pieces.append(piece)
                    yield piece
        except Exception as exc:  # litellm wraps provider errors in many types
            raise self._client.failure(exc) from exc
        if self.usage is None:
            self.usage = _counted(self._client.model, self._kwargs["messages"], "".join(pieces))


class LLMClient:
    """The configured LLM behind litellm (any provider, or a local OpenAI-compatible server via api_base).

    Every call is bounded: ``timeout_s`` per attempt and litellm's own ``num_retries`` = ``max_retries`` on
    connection errors, timeouts, 429 and 5xx. litellm spends them twice, in the provider SDK and then in its
    own retry loop, so a call makes at most ``2 * max_retries + 1`` attempts.
    A request may lower ``max_tokens`` and choose a ``temperature``, never beyond the server's bounds.
    """

    def __init__(self, settings: LLMSettings) -> None:
        if not settings.model:
            raise ConfigError("no LLM configured (MEDKB_LLM_MODEL)")
        self.settings = settings
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map fetch offline
        # litellm logs every call at INFO on its own handler (model names, sometimes prompts): keep it quiet.
        logging.getLogger("LiteLLM").setLevel(logging.WARNING)
        import litellm

        litellm.suppress_debug_info = True  # else every failure prints a "get help" banner on stdout

    @property
    def model(self) -> str:
        return str(self.settings.model)

    def bounded(self, temperature: float | None, max_tokens: int | None) -> tuple[float, int]:
        """The request's temperature and max_tokens clamped to the server's bounds (defaults when unset)."""
        s = self.settings
        t = s.temperature if temperature is None else min(max(float(temperature), 0.0), s.max_temperature)
        n = s.max_tokens if max_tokens is None else min(max(int(max_tokens), 1), s.max_tokens)
        return t, n

    def _kwargs(self, messages: Messages, stream: bool, temperature: float | None,
                max_tokens: int | None) -> dict[str, Any]:
        s = self.settings
        t, n = self.bounded(temperature, max_tokens)
        kw: dict[str, Any] = {
            "model": s.model, "messages": messages, "temperature": t, "max_tokens": n,
            "timeout": s.timeout_s, "num_retries": s.max_retries, "stream": stream,
        }
        if stream:
            kw["stream_options"] = {"include_usage": True}
        if s.api_base:
            kw["api_base"] = s.api_base
        if s.api_key is not None:
            kw["api_key"] = s.api_key.get_secret_value()
        return kw

    def failure(self, exc: BaseException) -> UpstreamError:
        """A provider error as an UpstreamError whose message carries no prompt text."""
        if isinstance(exc, UpstreamError):
            return exc
        log.warning("LLM call failed: %s", type(exc).__name__)
        return UpstreamError(f"the language model {self.model} failed: {type(exc).__name__}")

    def complete(self, messages: Messages, *, temperature: float | None = None,
                 max_tokens: int | None = None) -> Reply:
        import litellm

        try:
            resp = litellm.completion(**self._kwargs(messages, False, temperature, max_tokens))
        except Exception as exc:
            raise self.failure(exc) from exc
        text = resp.choices[0].message.content or ""
        return Reply(text, _usage(resp) or _counted(self.model, messages, text))

    def stream(self, messages: Messages, *, temperature: float | None = None,
               max_tokens: int | None = None) -> Stream:
        return Stream(self, self._kwargs(messages, True, temperature, max_tokens))
