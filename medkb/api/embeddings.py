"""POST /v1/embeddings (OpenAI-compatible): the knowledge base's own model, so other tools embed as medkb does."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medkb.api.deps import PrincipalDep, ServiceDep
from medkb.api.schemas import ERRORS
from medkb.errors import InvalidInput
from medkb.kb.embeddings import check_lengths

router = APIRouter(prefix="/v1", tags=["openai"])

MAX_INPUTS = 2048  # OpenAI's own cap per request
ALIAS = "medkb"  # accepted in place of the model's name


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request. Token-id inputs are refused: medkb embeds text with its own tokenizer."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(default=ALIAS, max_length=200,
                       description="The knowledge base's embedding model (see GET /v1/models) or `medkb`.")
    input: str | list[str] = Field(description="A text or a list of texts; each within the model's token limit.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=200)
    # medkb extension: e5 models embed queries and passages differently (all-MiniLM-L6-v2 does not).
    input_type: Literal["query", "passage"] = "query"

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list):
            raise ValueError("must be a string or a list of strings")
        if not items:
            raise ValueError("must not be an empty list")
        if len(items) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} texts per request, got {len(items)}")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ValueError(f"input[{i}] must be a string, got {type(item).__name__} "
                                 "(token-id inputs are not accepted)")
            if not item.strip():
                raise ValueError(f"input[{i}] must not be empty")
        return v


def _encode(vec: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # little-endian float32, as the openai SDK decodes it
        return base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vec]


@router.post("/embeddings", responses=ERRORS)
def embeddings(body: EmbeddingRequest, who: PrincipalDep, svc: ServiceDep) -> dict[str, Any]:
    """Vectors from the model the knowledge base was built with (L2-normalised, as medkb searches with them).

    Texts over the model's token limit are refused with 422, never silently truncated.

    Example: `{"model": "all-MiniLM-L6-v2", "input": ["metformin in renal impairment"]}`
    """
    embedder = svc.retriever.embedder  # the knowledge base's own model, shared with search
    if body.model not in (embedder.name, ALIAS):
        raise InvalidInput(f"model: this knowledge base embeds with {embedder.name!r}; ask for that (or "
                           f"{ALIAS!r}), not {body.model!r}")
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise InvalidInput(f"dimensions: {embedder.name} has {embedder.dim} dimensions, not {body.dimensions}")
    texts = [body.input] if isinstance(body.input, str) else body.input
    tokens = sum(check_lengths(embedder, texts))
    if body.input_type == "passage":
        vectors = embedder.embed_passages(texts)
    else:
        vectors = np.stack([embedder.embed_query(t) for t in texts])
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                 for i, v in enumerate(vectors)],
        "model": embedder.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
