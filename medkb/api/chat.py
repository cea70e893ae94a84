"""POST /v1/chat: grounded answer with verified citations; SSE stream of trace → tokens → final."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from medkb.api import audit
from medkb.api.answer import AnswerEngine, Prepared
from medkb.api.app import error_body
from medkb.api.auth import PATIENT_ROLES, Principal
from medkb.api.deps import PrincipalDep, ServiceDep
from medkb.api.patients import check_patient
from medkb.api.schemas import ERRORS, ChatRequest, FiltersIn, Message, question_and_history
from medkb.api.service import Service
from medkb.errors import InvalidInput, MedkbError

router = APIRouter(prefix="/v1", tags=["chat"])

SSE_DOC = {200: {"content": {"application/json": {}, "text/event-stream": {}},
                 "description": "The answer (JSON), or with `stream: true` Server-Sent Events: "
                 "`trace`, then `token` events, then `final`."}}


def start(svc: Service, who: Principal, messages: list[Message], patient_id: str | None, filters: FiltersIn,
          endpoint: str) -> tuple[AnswerEngine, Prepared, list[dict[str, str]]]:
    """Shared by /v1/chat and /v1/chat/completions: checks, audit, retrieval."""
    try:
        question, history = question_and_history(messages)
    except ValueError as exc:
        raise InvalidInput(f"messages: {exc}") from None
    if patient_id:
        who.require(*PATIENT_ROLES)
        check_patient(svc.store, who.tenant_id, patient_id)
        audit.record(svc.store, who, "chat", endpoint=endpoint, patient_id=patient_id)
    engine = svc.engine()
    return engine, engine.prepare(question, filters.to_filters(who.tenant_id, patient_id)), history


def count(svc: Service, final: dict[str, Any]) -> None:
    svc.metrics.answers.labels(final.get("mode", "?")).inc()
    svc.metrics.unsupported.inc(len(final.get("unsupported_sentences") or []))


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


@router.post("/chat", responses={**ERRORS, **SSE_DOC})
def chat(body: ChatRequest, who: PrincipalDep, svc: ServiceDep, request: Request) -> Any:
    """Answer the last user message from the knowledge base (and the patient's record when `patient_id` is given).

    Every sentence of a generated answer cites evidence [n]; sentences the cited evidence does not support are
    flagged `[unsupported]`. Without an LLM the answer is the retrieved evidence, labelled as such.
    """
    engine, prepared, history = start(svc, who, body.messages, body.patient_id, body.filters, request.url.path)
    if not body.stream:
        result = engine.answer(prepared, history)
        count(svc, result)
        return result

    def events() -> Iterator[str]:
        try:
            for kind, payload in engine.events(prepared, history):
                if kind == "final":
                    count(svc, payload)
                yield sse(kind, payload)
        except MedkbError as exc:  # headers are gone: the failure travels as an event
            yield sse("error", error_body(type(exc).__name__, exc.message))

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
