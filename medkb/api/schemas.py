"""Request and response bodies of the HTTP API (pydantic), and their translation into SearchFilters."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medkb.kb.filters import SearchFilters

MAX_ID = 2**63 - 1
PatientId = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                  description="Pseudonymous patient id (needs the clinician or admin role; audited).")


class FiltersIn(BaseModel):
    """What a query may see, beyond the tenant (always the key's) and patient scope."""

    model_config = ConfigDict(extra="forbid")
    doc_types: list[Literal["guideline", "literature", "record_note"]] | None = Field(default=None, max_length=3)
    sources: list[str] | None = Field(default=None, max_length=50)
    languages: list[str] | None = Field(default=None, max_length=10)
    specialties: list[str] | None = Field(default=None, max_length=50)
    effective_from: dt.date | None = None
    effective_to: dt.date | None = None
    include_superseded: bool = False

    def to_filters(self, tenant_id: str, patient_id: str | None) -> SearchFilters:
        def tup(x: list[str] | None) -> tuple[str, ...] | None:
            return None if x is None else tuple(x)

        return SearchFilters(
            tenant_id=tenant_id, doc_types=tup(self.doc_types), sources=tup(self.sources),  # type: ignore[arg-type]
            languages=tup(self.languages), include_superseded=self.include_superseded,
            effective_from=self.effective_from, effective_to=self.effective_to, patient_id=patient_id,
            specialties=tup(self.specialties),
        )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=10, ge=1, le=100)
    mode: Literal["hybrid", "bm25", "dense", "graph"] = "hybrid"
    patient_id: str | None = PatientId
    filters: FiltersIn = Field(default_factory=FiltersIn)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be blank")
        return v


class ContentPart(BaseModel):
    type: str = "text"
    text: str | None = Field(default=None, max_length=20000)


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "\n".join(p.text or "" for p in self.content if p.type == "text")
        return ""


def question_and_history(messages: list[Message]) -> tuple[str, list[dict[str, str]]]:
    """The last user message is the question; earlier user/assistant turns are history."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None or not messages[last].text().strip():
        raise ValueError("messages must contain a non-empty user message")
    history = [{"role": m.role, "content": m.text()} for m in messages[:last] if m.role in ("user", "assistant")]
    return messages[last].text().strip(), history


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[Message] = Field(min_length=1, max_length=50)
    patient_id: str | None = PatientId
    filters: FiltersIn = Field(default_factory=FiltersIn)
    stream: bool = False
    # For the LLM; the server holds both within MEDKB_LLM_MAX_TEMPERATURE and MEDKB_LLM_MAX_TOKENS.
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)


class CompletionRequest(BaseModel):
    """OpenAI's chat.completions request; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(default="medkb", max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=50)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    user: str | None = Field(default=None, max_length=200)
    # medkb extensions (the openai SDK passes them through extra_body)
    patient_id: str | None = PatientId
    filters: FiltersIn = Field(default_factory=FiltersIn)


class ErrorBody(BaseModel):
    type: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 413, 422)
}
