"""The answer pipeline shared by /v1/chat, /v1/chat/completions and `medkb ask`: retrieve → gate → generate → verify."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medkb.api.evidence import Evidence, fact_text, render
from medkb.api.generation import build_messages
from medkb.kb.filters import SearchFilters
from medkb.kb.store import KnowledgeStore
from medkb.llm import LLMClient
from medkb.retrieval.citations import CitationChecker, SentenceStream, Verified, no_evidence_message
from medkb.text import content_terms, detect_language

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]


@dataclass
class Prepared:
    question: str
    lang: str
    filters: SearchFilters
    evidence: list[Evidence]
    hits: list[dict[str, Any]]
    linked_entities: list[dict[str, Any]]
    timings: dict[str, float]
    safety_notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def relevant(self) -> bool:
        return bool(self.evidence)

    def trace(self) -> dict[str, Any]:
        return {"hits": self.hits, "linked_entities": self.linked_entities, "timings": self.timings,
                "evidence": [e.citation() for e in self.evidence]}


def _plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if hasattr(x, "isoformat"):
        return x.isoformat()
    return x


def hit_json(hit: Any) -> dict[str, Any]:
    c = hit.chunk
    return {
        "chunk_id": c.id, "document_id": c.document_id, "title": c.title, "section": c.section, "page": c.page,
        "source": c.source, "doc_type": c.doc_type, "language": c.language, "external_id": c.external_id,
        "text": c.text, "score": float(hit.score), "trace": _plain(hit.trace or {}),
    }


class AnswerEngine:
    """Builds grounded answers. Without an LLM (``generator is None``) it answers in evidence mode."""

    def __init__(
        self, store: KnowledgeStore, retriever: Any, *, embedder: Any = None, generator: LLMClient | None = None,
        max_chunks: int = 5, max_facts: int = 12, min_relevance: float = 0.35, prompt_chars: int = 700,
    ) -> None:
        self.store, self.retriever, self.embedder, self.generator = store, retriever, embedder, generator
        self.max_chunks, self.max_facts = max_chunks, max_facts
        self.min_relevance, self.prompt_chars = min_relevance, prompt_chars

    # ---- retrieval and the relevance gate -----------------------------------------------------

    def _relevance(self, question: str, texts: Sequence[str]) -> list[float]:
        """Per passage: the larger of query-word coverage and query–passage cosine (when an embedder exists)."""
        q = content_terms(question)
        lex = [len(q & content_terms(t)) / len(q) if q else 0.0 for t in texts]
        if self.embedder is None or not texts:
            return lex
        qv = self.embedder.embed_query(question)
        pv = self.embedder.embed_passages([t[:1500] for t in texts])
        return [max(a, float(b)) for a, b in zip(lex, pv @ qv)]

    def prepare(self, question: str, filters: SearchFilters, k: int = 8) -> Prepared:
        lang = detect_language(question)
        t0 = time.perf_counter()
        result = self.retriever.search(question, filters, k=k, mode="hybrid")
        timings = {str(k2): float(v) for k2, v in (result.timings or {}).items()}
        hits = [hit_json(h) for h in result.hits]
        t1 = time.perf_counter()
        rel = self._relevance(question, [h.chunk.text for h in result.hits])
        timings["relevance_gate"] = (time.perf_counter() - t1) * 1000
        evidence: list[Evidence] = []
        for h, r, hj in zip(result.hits, rel, hits):
            hj["relevance"] = round(r, 4)
            if r >= self.min_relevance and len(evidence) < self.max_chunks:
                evidence.append(Evidence(len(evidence) + 1, h.chunk.text, float(h.score), chunk=h.chunk,
                                         trace=_plain(h.trace or {})))
        facts = list(getattr(result, "patient_facts", None) or [])
        if filters.patient_id and not facts:
            from medkb.retrieval.patient import PatientGenerator

            facts = PatientGenerator(self.store).facts(filters)
        for f in facts[: self.max_facts]:
            evidence.append(Evidence(len(evidence) + 1, fact_text(f), 1.0, fact=_plain(f)))
        linked = [_plain(e) for e in (result.linked_entities or [])]
        timings["total_retrieval"] = (time.perf_counter() - t0) * 1000
        prepared = Prepared(question, lang, filters, evidence, hits, linked, timings)
        prepared.safety_notes = self.safety_notes(filters, _entity_ids(linked) | _entity_ids(facts))
        return prepared

    def safety_notes(self, filters: SearchFilters, entity_ids: set[int]) -> list[dict[str, Any]]:
        """The graph's interaction / contraindication / adverse-reaction facts for the patient and entities."""
        if not filters.patient_id and not entity_ids:
            return []
        try:
            from medkb.kb.graph.safety import safety_facts
        except ImportError:  # the graph package is optional at this layer
            return []
        facts = safety_facts(self.store, filters.tenant_id, patient_id=filters.patient_id,
                             entity_ids=tuple(sorted(entity_ids)))
        return [_plain(f) for f in facts]

    def _answer_entities(self, text: str) -> set[int]:
        try:
            from medkb.kb.graph.linker import EntityLinker
        except ImportError:
            return set()
        if not hasattr(self, "_linker"):
            self._linker = EntityLinker.load(self.store)
        return {m.entity_id for m in self._linker.link(text)}

    # ---- answering ------------------------------------------------------------------------------

    def events(self, p: Prepared, history: Sequence[dict[str, str]] = ()) -> Iterator[Event]:
        """('trace', …) first, then ('token', {'text'}) pieces, then ('final', …)."""
        yield "trace", p.trace()
        if not p.relevant:
            text = no_evidence_message(p.lang)
            yield "token", {"text": text}
            yield "final", self._final(p, text, "no_evidence", None)
            return
        if self.generator is None:
            text = render(p.question, p.evidence, p.lang)
            yield "token", {"text": text}
            yield "final", self._final(p, text, "evidence", None)
            return
        checker = CitationChecker([e.text for e in p.evidence],
                                  embed=self.embedder.embed_passages if self.embedder else None)
        messages = build_messages(p.question, [e.text[: self.prompt_chars] for e in p.evidence], p.lang, history)
        stream = SentenceStream(checker)
        first = True
        for token in self.generator.stream(messages):
            for sentence in stream.feed(token):
                yield "token", {"text": sentence if first else " " + sentence}
                first = False
        for sentence in stream.close():
            yield "token", {"text": sentence if first else " " + sentence}
            first = False
        verified = stream.result()
        if not verified.used:
            # Nothing the model wrote is backed by its citations: hand over the evidence itself, labelled.
            fallback = render(p.question, p.evidence, p.lang, fallback=True)
            yield "token", {"text": ("\n\n" if not first else "") + fallback}
            verified.text = (verified.text + "\n\n" if verified.text else "") + fallback
            verified.used = [e.n for e in p.evidence]
        ids = self._answer_entities(verified.text)
        if ids:
            extra = self.safety_notes(p.filters, ids | _entity_ids(p.linked_entities))
            seen = {repr(n) for n in p.safety_notes}
            p.safety_notes += [n for n in extra if repr(n) not in seen]
        yield "final", self._final(p, verified.text, "llm", verified)

    def _final(self, p: Prepared, text: str, mode: str, v: Verified | None) -> dict[str, Any]:
        if v is None:
            used = [e.n for e in p.evidence] if mode == "evidence" else []
        else:
            used = v.used
        by_n = {e.n: e for e in p.evidence}
        out: dict[str, Any] = {
            "answer": text, "mode": mode, "language": p.lang,
            "citations": [by_n[n].citation() for n in used if n in by_n],
            "safety_notes": p.safety_notes,
        }
        if v is not None:
            out["unsupported_sentences"] = v.unsupported
            out["sentences"] = [dataclasses.asdict(s) for s in v.sentences]
        return out

    def answer(self, p: Prepared, history: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
        final: dict[str, Any] = {}
        trace: dict[str, Any] = {}
        for kind, payload in self.events(p, history):
            if kind == "final":
                final = payload
            elif kind == "trace":
                trace = payload
        return {**final, "trace": trace}


def _entity_ids(items: Sequence[Any]) -> set[int]:
    out: set[int] = set()
    for it in items:
        d = it if isinstance(it, dict) else _plain(it)
        eid = d.get("entity_id", d.get("id")) if isinstance(d, dict) else None
        if isinstance(eid, int):
            out.add(eid)
    return out
