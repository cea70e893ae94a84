"""POST /v1/embeddings on the sample knowledge base: the official `openai` client against a real uvicorn server,
the same vectors as medkb's own query embedding, 401 without a key, and a 4xx for every malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medkb.api import create_app
from tests.conftest import live_server
from tests.test_api_kb import KB, auth

MODEL = "all-MiniLM-L6-v2"


def test_openai_client_gets_the_vectors_medkb_searches_with(kb: KB, client: TestClient) -> None:
    from openai import AuthenticationError, OpenAI

    with live_server(create_app(kb.settings, kb.store)) as base:
        sdk = OpenAI(base_url=base, api_key=kb.keys["demo-clinician"], max_retries=0)
        texts = ["metformin and lactic acidosis", "Is multiple sclerosis associated with streptococcal infection?"]
        resp = sdk.embeddings.create(model=MODEL, input=texts)  # the SDK asks for base64 and decodes it
        assert resp.object == "list" and resp.model == MODEL and [d.index for d in resp.data] == [0, 1]
        got = np.array([d.embedding for d in resp.data], dtype=np.float32)
        embedder = client.app.state.service.retriever.embedder  # type: ignore[attr-defined]
        want = np.stack([embedder.embed_query(t) for t in texts])
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert resp.usage.prompt_tokens == resp.usage.total_tokens == sum(embedder.token_count(t) for t in texts)
        one = sdk.embeddings.create(model="medkb", input=texts[0], encoding_format="float")
        np.testing.assert_allclose(one.data[0].embedding, want[0], atol=1e-6)
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=base, api_key="mk_x_y", max_retries=0).embeddings.create(model=MODEL, input="x")


def test_needs_a_key(client: TestClient) -> None:
    r = client.post("/v1/embeddings", json={"model": MODEL, "input": "metformin"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("payload", "status", "message"), [
    ({"model": MODEL, "input": []}, 422, "must not be an empty list"),
    ({"model": MODEL, "input": ["ok", 7]}, 422, "input[1] must be a string, got int"),
    ({"model": MODEL, "input": [[101, 2023]]}, 422, "input[0] must be a string, got list"),
    ({"model": MODEL, "input": ["ok", "   "]}, 422, "input[1] must not be empty"),
    ({"model": MODEL, "input": ["short", "word " * 300]}, 422,
     "input[1]: 302 tokens, over the 256-token limit of all-MiniLM-L6-v2"),
    ({"model": "text-embedding-3-small", "input": "x"}, 422, "this knowledge base embeds with 'all-MiniLM-L6-v2'"),
    ({"model": MODEL, "input": "x", "dimensions": 1536}, 422, "has 384 dimensions, not 1536"),
    ({"model": MODEL}, 422, "input"),
])
def test_bad_input_is_a_clear_4xx(kb: KB, client: TestClient, payload: dict, status: int, message: str) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/embeddings", json=payload, headers=auth(kb.keys["demo-clinician"]))
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_passages_and_float_format(kb: KB, client: TestClient) -> None:
    texts = ["Metformin is first-line therapy.", "Vancomycin troughs guide dosing."]
    r = client.post("/v1/embeddings", json={"input": texts, "input_type": "passage"},
                    headers=auth(kb.keys["demo-curator"]))
    assert r.status_code == 200, r.text
    vecs = np.array([d["embedding"] for d in r.json()["data"]])
    assert vecs.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    models = client.get("/v1/models", headers=auth(kb.keys["demo-clinician"])).json()
    assert {m["id"] for m in models["data"]} == {"medkb", MODEL}
