"""POST /v1/chat: grounded answer with verified citations; SSE stream of trace → tokens → final."""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from medkb.api import audit
from medkb.api.answer import AnswerEngine, Prepared
from medkb.api.app import error_body
from medkb.api.auth import PATIENT_ROLES, Principal
from medkb.api.deps import AnswersLimitedDep, ServiceDep
from medkb.api.patients import check_patient
from medkb.api.schemas import ERRORS, ChatRequest, FiltersIn, Message, question_and_history
from medkb.api.service import Service
from medkb.errors import InvalidInput, MedkbError

router = APIRouter(prefix="/v1", tags=["chat"])

SSE_DOC = {200: {"content": {"application/json": {}, "text/event-stream": {}},
                 "description": "The answer (JSON), or with `stream: true` Server-Sent Events: "
                 "`trace`, then `token` events, then `final`."}}


# A question that leans on the conversation: it opens with a connective or a pronoun, or is very short.
_FOLLOW_UP = re.compile(r"^\s*(?:and|or|but|also|what about|how about|then|so|in|for|during|with|without|is it|"
                        r"are they|does it|do they|can it|should it|what if|it|its|they|their|that|this|those|"
                        r"还有|那么|那|如果|它|它们|这|这个|那个|对于|在)\b", re.I)
FOLLOW_UP_WORDS = 6
FOLLOW_UP_TURNS = 2


def retrieval_query(question: str, history: list[dict[str, str]]) -> str:
    """What to search for: a follow-up ("and in pregnancy?") carries the earlier user turns it depends on
    (the last two), in order, before it; a self-contained question is searched alone."""
    earlier = [h["content"].strip() for h in history if h.get("role") == "user" and h.get("content", "").strip()]
    if not earlier:
        return question
    words = len(question.split()) if not re.search(r"[\u3400-\u9fff]", question) else len(question) // 3
    if not (_FOLLOW_UP.match(question) or words <= FOLLOW_UP_WORDS):
        return question
    return " ".join([*earlier[-FOLLOW_UP_TURNS:], question])


def with_keepalive(items: Iterator[str], every: float, comment: str = ": keep-alive\n\n") -> Iterator[str]:
    """``items`` as they come, plus an SSE comment line whenever none came for ``every`` seconds (a model
    thinking before its first token), so proxies and clients do not close an idle stream."""
    q: queue.Queue[Any] = queue.Queue()
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for it in items:
                q.put(it)
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        finally:
            q.put(done)

    threading.Thread(target=produce, name="medkb-sse", daemon=True).start()
    try:
        while True:
            try:
                it = q.get(timeout=every)
            except queue.Empty:
                yield comment
                continue
            if it is done:
                return
            if isinstance(it, BaseException):
                raise it
            yield it
    finally:
        stop.set()  # the client left: the producer stops after its current item


def start(svc: Service, who: Principal, messages: list[Message], patient_id: str | None, filters: FiltersIn,
          endpoint: str) -> tuple[AnswerEngine, Prepared, list[dict[str, str]]]:
    """Shared by /v1/chat and /v1/chat/completions: checks, audit, retrieval (with the conversation)."""
    try:
        question, history = question_and_history(messages)
    except ValueError as exc:
        raise InvalidInput(f"messages: {exc}") from None
    if patient_id:
        who.require(*PATIENT_ROLES)
        check_patient(svc.store, who.tenant_id, patient_id)
        audit.record(svc.store, who, "chat", endpoint=endpoint, patient_id=patient_id)
    engine = svc.engine()
    # Retrieval takes a search slot like /v1/search; the LLM call that follows waits on another process, not ours.
    with svc.search_slots:
        prepared = engine.prepare(question, filters.to_filters(who.tenant_id, patient_id),
                                  query=retrieval_query(question, history))
    return engine, prepared, history


def count(svc: Service, final: dict[str, Any]) -> None:
    svc.metrics.answers.labels(final.get("mode", "?")).inc()
    svc.metrics.unsupported.inc(len(final.get("unsupported_sentences") or []))


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


@router.post("/chat", responses={**ERRORS, **SSE_DOC})
def chat(body: ChatRequest, who: AnswersLimitedDep, svc: ServiceDep, request: Request) -> Any:
    """Answer the last user message from the knowledge base (and the patient's record when `patient_id` is given).

    Every sentence of a generated answer cites evidence [n]; sentences the cited evidence does not support are
    flagged `[unsupported]`. Without an LLM the answer is the retrieved evidence, labelled as such.
    """
    engine, prepared, history = start(svc, who, body.messages, body.patient_id, body.filters, request.url.path)
    generation = {"temperature": body.temperature, "max_tokens": body.max_tokens}
    if not body.stream:
        result = engine.answer(prepared, history, **generation)
        count(svc, result)
        return result

    def events() -> Iterator[str]:
        try:
            for kind, payload in engine.events(prepared, history, **generation):
                if kind == "final":
                    count(svc, payload)
                yield sse(kind, payload)
        except MedkbError as exc:  # headers are gone: the failure travels as an event
            yield sse("error", error_body(type(exc).__name__, exc.message))

    return StreamingResponse(with_keepalive(events(), svc.settings.api.sse_keepalive_s),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
