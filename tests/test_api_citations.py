"""Citation verification, sentence streaming and evidence rendering, on real passages of the committed sample."""

from __future__ import annotations

import json

import pytest

from medkb.api.evidence import best_snippet
from medkb.retrieval.citations import (
    UNSUPPORTED_TAG, CitationChecker, SentenceStream, cited_numbers, split_sentences,
)
from medkb.text import detect_language
from medkb.sample.slicer import DATA


@pytest.fixture(scope="module")
def passages() -> list[str]:
    data = json.loads((DATA / "pubmedqa" / "pubmedqa_sample.json").read_text())
    return [" ".join(v["CONTEXTS"]) for v in list(data.values())[:3]]


def test_sentence_splitting_and_citation_parsing() -> None:
    assert split_sentences("First claim [1]. Second one [2][3]! 第三句[1]。第四句[2]") == [
        "First claim [1].", "Second one [2][3]!", "第三句[1]。", "第四句[2]"]
    assert split_sentences("Claim one. [1] Claim two. [2][3]") == ["Claim one. [1]", "Claim two. [2][3]"]
    assert cited_numbers("a [2][3] b [1, 4] c [2]") == [2, 3, 1, 4]
    assert detect_language("二甲双胍的副作用是什么？") == "zh" and detect_language("metformin?") == "en"


def test_supported_unsupported_and_bogus_citations(passages: list[str], embedder) -> None:
    checker = CitationChecker(passages, embed=embedder.embed_passages)
    first_sentence = split_sentences(passages[0])[0]
    supported = checker.check(first_sentence + " [1]")
    assert supported.supported and supported.citations == [1]
    # The same true sentence cited against the wrong passage is not supported by it.
    wrong = checker.check(first_sentence + " [2]")
    assert not wrong.supported
    assert not checker.check(first_sentence).supported  # no citation at all
    assert not checker.check(first_sentence + " [9]").supported  # evidence that does not exist
    invented = checker.check("Aspirin cures every cancer within two days [1].")
    assert not invented.supported
    v = checker.verify(f"{first_sentence} [1]. Aspirin cures every cancer within two days [1].")
    assert v.used == [1] and v.unsupported == ["Aspirin cures every cancer within two days [1]."]
    assert v.text.count(UNSUPPORTED_TAG) == 1 and v.text.startswith(first_sentence)


def test_streamed_sentences_match_whole_verification(passages: list[str]) -> None:
    s1, s2 = split_sentences(passages[1])[:2]
    answer = f"{s1} [2] Made-up claim about zebras [1]. {s2} [2]"
    stream = SentenceStream(CitationChecker(passages))
    out: list[str] = []
    for i in range(0, len(answer), 3):  # tokens of 3 characters, cutting words and markers
        out += stream.feed(answer[i : i + 3])
    out += stream.close()
    whole = CitationChecker(passages).verify(answer)
    assert " ".join(out) == whole.text == stream.result().text
    assert [c.supported for c in stream.checks] == [True, False, True]


def test_best_snippet_is_verbatim(passages: list[str]) -> None:
    sentences = split_sentences(passages[0])
    target = sentences[-1]
    snip = best_snippet(passages[0], target, limit=200)
    for sentence in split_sentences(snip.rstrip(" …")):
        assert sentence.rstrip(" …") in passages[0]
    assert target[:40] in snip  # the sentence sharing most words with the query is the one kept
