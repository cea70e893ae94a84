"""POST /v1/chat/completions (OpenAI-compatible, stream and not) and GET /v1/models, over the same answer pipeline."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from medkb.api.app import error_body
from medkb.api.chat import count, start, with_keepalive
from medkb.api.deps import AnswersLimitedDep, PrincipalDep, ServiceDep
from medkb.api.schemas import ERRORS, CompletionRequest
from medkb.errors import MedkbError

router = APIRouter(prefix="/v1", tags=["openai"])

STREAM_DOC = {200: {"content": {"application/json": {}, "text/event-stream": {}},
                    "description": "A chat.completion, or with `stream: true` chat.completion.chunk events "
                    "ending in `data: [DONE]`."}}


NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}  # evidence mode: no LLM ran


def _usage(final: dict[str, Any]) -> dict[str, int]:
    """The LLM's own token counts for this answer (medkb.llm), or zero when no LLM was asked."""
    return final.get("usage") or NO_USAGE


@router.get("/models")
def models(who: PrincipalDep, svc: ServiceDep) -> dict[str, Any]:
    """The models medkb serves: `medkb` (grounded answers over its knowledge base) for /v1/chat/completions and
    the knowledge base's embedding model for /v1/embeddings."""
    embedding = svc.store.embedding_info()[0] or svc.settings.embedding.model
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "medkb"}
                                       for name in ("medkb", embedding)]}


@router.post("/chat/completions", responses={**ERRORS, **STREAM_DOC})
def chat_completions(body: CompletionRequest, who: AnswersLimitedDep, svc: ServiceDep, request: Request) -> Any:
    """OpenAI chat.completions: citations are [n] in the text and listed in the extra `citations` field
    (plus `safety_notes` and `medkb_mode`). medkb extensions `patient_id` and `filters` go in the body."""
    engine, prepared, history = start(svc, who, body.messages, body.patient_id, body.filters, request.url.path)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    generation = {"temperature": body.temperature, "max_tokens": body.max_tokens}
    if not body.stream:
        final = engine.answer(prepared, history, **generation)
        count(svc, final)
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": final["answer"]},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(final),
            "citations": final["citations"], "safety_notes": final["safety_notes"], "medkb_mode": final["mode"],
        }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"

    def events() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            for kind, payload in engine.events(prepared, history, **generation):
                if kind == "token":
                    yield chunk({"content": payload["text"]})
                elif kind == "final":
                    count(svc, payload)
                    yield chunk({}, "stop", citations=payload["citations"], safety_notes=payload["safety_notes"],
                                medkb_mode=payload["mode"], usage=_usage(payload))
        except MedkbError as exc:
            yield f"data: {json.dumps(error_body(type(exc).__name__, exc.message))}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(with_keepalive(events(), svc.settings.api.sse_keepalive_s),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
