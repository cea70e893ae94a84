"""Citation check of generated text: each sentence must cite evidence that supports it, else it is flagged."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from medkb.text import content_terms, sentence_spans

NO_EVIDENCE_EN = "The knowledge base has no evidence for this question, so no answer is given."
NO_EVIDENCE_ZH = "知识库中没有与此问题相关的证据，因此不作回答。"
UNSUPPORTED_TAG = "[unsupported]"

_CITE = re.compile(r"\[(\d+(?:\s*[,;，、]\s*\d+)*)\]")


def no_evidence_message(lang: str) -> str:
    return NO_EVIDENCE_ZH if lang == "zh" else NO_EVIDENCE_EN


def abstention_reason(lang: str, passages: int, answer: float | None, threshold: float | None,
                      best_passage: float | None = None, passage_threshold: float | None = None) -> str:
    """Why the evidence gate let nothing through (its score against its threshold), in the question's language."""
    zh = lang == "zh"
    if not passages:
        return "（检索未找到任何段落。）" if zh else "(Retrieval found no passage.)"
    if answer is None or threshold is None:
        return ""
    if answer < threshold:
        return (f"（证据门控评分 {answer:.2f} 低于阈值 {threshold:.2f}。）" if zh else
                f"(Its evidence score {answer:.2f} is below the gate's threshold {threshold:.2f}.)")
    if best_passage is None or passage_threshold is None:
        return ""
    return (f"（最相关段落的评分 {best_passage:.2f} 低于段落阈值 {passage_threshold:.2f}。）" if zh else
            f"(The best passage scored {best_passage:.2f}, below the passage threshold {passage_threshold:.2f}.)")


_LEAD = re.compile(r"^\s*(?:\[\d+(?:\s*[,;，、]\s*\d+)*\]\s*)+")


def split_sentences(text: str) -> list[str]:
    """Sentences; a citation written after the full stop ("… risk. [2]") stays with its sentence."""
    out: list[str] = []
    for start, end in sentence_spans(text, line_breaks=True):
        part = text[start:end]
        lead = _LEAD.match(part)
        if lead and out:
            out[-1] += " " + lead.group(0).strip()
            part = part[lead.end() :].strip()
            if re.fullmatch(r"[.!?。！？]+", part):
                out[-1] += part
                continue
        if part:
            out.append(part)
    return out


def cited_numbers(sentence: str) -> list[int]:
    out: list[int] = []
    for group in _CITE.findall(sentence):
        for n in re.split(r"[,;，、\s]+", group):
            if n.isdigit() and int(n) not in out:
                out.append(int(n))
    return out


def strip_citations(sentence: str) -> str:
    return re.sub(r"\s+([.,;:!?。])", r"\1", _CITE.sub("", sentence)).strip()


def overlap(claim: str, evidence: str) -> float:
    """Share of the claim's content terms that the evidence contains (1.0 when the claim has none)."""
    terms = content_terms(strip_citations(claim))
    if not terms:
        return 0.0
    return len(terms & content_terms(evidence)) / len(terms)


@dataclass
class SentenceCheck:
    text: str
    citations: list[int]
    supported: bool
    score: float
    reason: str


@dataclass
class Verified:
    """The checked answer: supported sentences as written, unsupported ones flagged, and which [n] were used."""

    text: str
    sentences: list[SentenceCheck] = field(default_factory=list)
    used: list[int] = field(default_factory=list)

    @property
    def unsupported(self) -> list[str]:
        return [s.text for s in self.sentences if not s.supported]


class CitationChecker:
    """A sentence is supported when it cites at least one evidence item [n] that exists and either shares
    at least ``min_overlap`` of its content words or (with an embedder) is cosine-similar to it."""

    def __init__(
        self, evidence: Sequence[str], *, embed: Callable[[Sequence[str]], np.ndarray] | None = None,
        min_overlap: float = 0.5, min_cosine: float = 0.6,
    ) -> None:
        self.evidence = list(evidence)
        self.embed = embed
        self.min_overlap, self.min_cosine = min_overlap, min_cosine
        self._evec: np.ndarray | None = None

    def _cosine(self, sentence: str, idx: list[int]) -> float:
        if self.embed is None or not idx:
            return 0.0
        if self._evec is None:
            self._evec = self.embed(self.evidence)
        s = self.embed([strip_citations(sentence)])[0]
        return float(max(self._evec[i] @ s for i in idx))

    def check(self, sentence: str) -> SentenceCheck:
        nums = cited_numbers(sentence)
        valid = [n for n in nums if 1 <= n <= len(self.evidence)]
        if not nums:
            return SentenceCheck(sentence, [], False, 0.0, "cites no evidence")
        if not valid:
            return SentenceCheck(sentence, nums, False, 0.0, "cites evidence that does not exist")
        best = max(overlap(sentence, self.evidence[n - 1]) for n in valid)
        if best >= self.min_overlap:
            return SentenceCheck(sentence, valid, True, best, "lexical overlap")
        cos = self._cosine(sentence, [n - 1 for n in valid])
        if cos >= self.min_cosine:
            return SentenceCheck(sentence, valid, True, cos, "embedding similarity")
        return SentenceCheck(sentence, valid, False, max(best, cos), "cited evidence does not support it")

    @staticmethod
    def render(c: SentenceCheck) -> str:
        return c.text if c.supported else f"{UNSUPPORTED_TAG} {strip_citations(c.text)}"

    def verify(self, answer: str) -> Verified:
        checks = [self.check(s) for s in split_sentences(answer)]
        used: list[int] = []
        for c in checks:
            if c.supported:
                used.extend(n for n in c.citations if n not in used)
        return Verified(" ".join(self.render(c) for c in checks), checks, sorted(used))


class SentenceStream:
    """Feeds streamed tokens in, hands out whole checked sentences as soon as each one ends."""

    def __init__(self, checker: CitationChecker) -> None:
        self.checker = checker
        self.buf = ""
        self.checks: list[SentenceCheck] = []

    def feed(self, token: str) -> list[str]:
        self.buf += token
        for nxt, _ in reversed(sentence_spans(self.buf, line_breaks=True)[1:]):
            # A sentence is complete once what follows it is neither empty nor (part of) its citation markers.
            lead = _LEAD.match(self.buf[nxt:])
            cut = nxt + (lead.end() if lead else 0)
            rest = self.buf[cut:]
            if rest.strip() and not rest.lstrip().startswith("["):
                done, self.buf = self.buf[:cut], self.buf[cut:]
                return [self._emit(s) for s in split_sentences(done)]
        return []

    def close(self) -> list[str]:
        rest, self.buf = self.buf.strip(), ""
        return [self._emit(rest)] if rest else []

    def _emit(self, sentence: str) -> str:
        c = self.checker.check(sentence)
        self.checks.append(c)
        return self.checker.render(c)

    def result(self) -> Verified:
        used: list[int] = []
        for c in self.checks:
            if c.supported:
                used.extend(n for n in c.citations if n not in used)
        return Verified(" ".join(self.checker.render(c) for c in self.checks), list(self.checks), sorted(used))
