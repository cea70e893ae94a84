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
from medkb.retrieval.citations import (
    CitationChecker, SentenceStream, Verified, abstention_reason, no_evidence_message,
)
from medkb.text import detect_language

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
    gate: dict[str, Any] = field(default_factory=dict)

    @property
    def relevant(self) -> bool:
        return bool(self.evidence)

    def abstention(self) -> dict[str, Any]:
        """Why no answer is given: the gate's scores against its thresholds, in the question's language."""
        g = self.gate
        keys = ("answer_score", "threshold", "best_passage_score", "passage_threshold")
        return {**{k: g.get(k) for k in keys}, "passages": len(self.hits),
                "reason": abstention_reason(self.lang, len(self.hits), *(g.get(k) for k in keys))}

    def trace(self) -> dict[str, Any]:
        out = {"hits": self.hits, "linked_entities": self.linked_entities, "timings": self.timings,
               "gate": self.gate, "evidence": [e.citation() for e in self.evidence]}
        if not self.relevant:
            out["abstention"] = self.abstention()
        return out


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
        max_chunks: int = 5, max_facts: int = 12, prompt_chars: int = 700,
    ) -> None:
        self.store, self.retriever, self.embedder, self.generator = store, retriever, embedder, generator
        self.max_chunks, self.max_facts, self.prompt_chars = max_chunks, max_facts, prompt_chars

    # ---- retrieval and the evidence gate -------------------------------------------------------

    def prepare(self, question: str, filters: SearchFilters, k: int = 8, query: str | None = None) -> Prepared:
        """Retrieve for ``query`` (a follow-up question with its conversation; default the question)."""
        lang = detect_language(question)
        query = query or question
        t0 = time.perf_counter()
        result = self.retriever.search(query, filters, k=k, mode="hybrid")
        timings = {str(k2): float(v) for k2, v in (result.timings or {}).items()}
        hits = [hit_json(h) for h in result.hits]
        t1 = time.perf_counter()
        # The one gate (retrieval's): passages below it are never shown as evidence nor sent to an LLM.
        decision = self.retriever.gate.assess(query, result)
        timings["evidence_gate"] = (time.perf_counter() - t1) * 1000
        for i, hj in enumerate(hits):
            hj["gate"] = {"score": round(decision.scores[i], 4), "passed": decision.passed(i),
                          "features": decision.features[i]} if decision.enabled else {"passed": True}
            if decision.enabled:
                hj["relevance"] = hj["gate"]["score"]  # the console's per-hit figure
        evidence = [Evidence(n, h.chunk.text, float(h.score), chunk=h.chunk, trace=_plain(h.trace or {}))
                    for n, h in enumerate((result.hits[i] for i in decision.evidence(self.max_chunks)), 1)]
        facts = list(getattr(result, "patient_facts", None) or [])
        if filters.patient_id and not facts:
            from medkb.retrieval.patient import PatientGenerator

            facts = PatientGenerator(self.store).facts(filters)
        for f in facts[: self.max_facts]:
            evidence.append(Evidence(len(evidence) + 1, fact_text(f), 1.0, fact=_plain(f)))
        linked = [_plain(e) for e in (result.linked_entities or [])]
        timings["total_retrieval"] = (time.perf_counter() - t0) * 1000
        prepared = Prepared(question, lang, filters, evidence, hits, linked, timings, gate=decision.summary())
        prepared.safety_notes = self.safety_notes(filters, _entity_ids(linked) | _entity_ids(facts))
        return prepared

    def safety_notes(self, filters: SearchFilters, entity_ids: set[int]) -> list[dict[str, Any]]:
        """The graph's interaction / contraindication / adverse-reaction facts for the patient and entities."""
        if not filters.patient_id and not entity_ids:
            return []
        try:
            from medkb.kb.graph.safety import safety_notes
        except ImportError:  # the graph package is optional at this layer
            return []
        return safety_notes(self.store, filters.tenant_id, patient_id=filters.patient_id,
                            entity_ids=tuple(sorted(entity_ids)))

    def _answer_entities(self, text: str) -> set[int]:
        try:
            from medkb.kb.graph.linker import EntityLinker
        except ImportError:
            return set()
        if not hasattr(self, "_linker"):
            self._linker = EntityLinker.load(self.store)
        return {m.entity_id for m in self._linker.link(text)}

    # ---- answering ------------------------------------------------------------------------------

    def events(self, p: Prepared, history: Sequence[dict[str, str]] = (), *, temperature: float | None = None,
               max_tokens: int | None = None) -> Iterator[Event]:
        """('trace', …) first, then ('token', {'text'}) pieces, then ('final', …). ``temperature`` and
        ``max_tokens`` are the request's, held within the server's bounds by the LLM client."""
        yield "trace", p.trace()
        if not p.relevant:
            why = p.abstention()
            text = f"{no_evidence_message(p.lang)} {why['reason']}"
            yield "token", {"text": text}
            yield "final", {**self._final(p, text, "no_evidence", None), "abstention": why}
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
        llm = self.generator.stream(messages, temperature=temperature, max_tokens=max_tokens)
        for token in llm:
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
            # Recomputed over the wider context so that the whole list stays ordered most severe first.
            p.safety_notes = self.safety_notes(p.filters, ids | _entity_ids(p.linked_entities)
                                               | _note_entity_ids(p.safety_notes))
        final = self._final(p, verified.text, "llm", verified)
        final["usage"] = llm.usage.as_dict() if llm.usage else None  # the LLM's own count
        yield "final", final

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

    def answer(self, p: Prepared, history: Sequence[dict[str, str]] = (), **generation: Any) -> dict[str, Any]:
        final: dict[str, Any] = {}
        trace: dict[str, Any] = {}
        for kind, payload in self.events(p, history, **generation):
            if kind == "final":
                final = payload
            elif kind == "trace":
                trace = payload
        return {**final, "trace": trace}


def _note_entity_ids(notes: Sequence[dict[str, Any]]) -> set[int]:
    return {e["id"] for n in notes for e in n.get("entities", []) if isinstance(e.get("id"), int)}


def _entity_ids(items: Sequence[Any]) -> set[int]:
    out: set[int] = set()
    for it in items:
        d = it if isinstance(it, dict) else _plain(it)
        eid = d.get("entity_id", d.get("id")) if isinstance(d, dict) else None
        if isinstance(eid, int):
            out.add(eid)
    return out
