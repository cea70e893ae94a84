"""Multiple-choice QA evaluation (MIRAGE, PubMedQA-L): LLM answers with/without retrieval, citations, abstains;
retrieval-only gold-PMID recall when no LLM is configured. LLM calls are cached by prompt hash (resumable);
citation support is judged by the product's own CitationChecker."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkb.errors import ConfigError
from medkb.eval.datasets import BeirDataset, MCQuestion, load_beir, pubmedqa_corpus, write_beir
from medkb.eval.runner import RetrievalRun, run_retrieval
from medkb.kb.filters import SearchFilters
from medkb.llm import LLMClient
from medkb.retrieval.citations import CitationChecker, cited_numbers, split_sentences
from medkb.settings import LLMSettings, Settings

Progress = Callable[[str], None]

SYSTEM = (
    "You answer medical multiple-choice questions. When numbered evidence passages are given, base the "
    "explanation on them and put the passage number in brackets, like [2], after each sentence it supports. "
    "If the evidence and your knowledge are not enough to choose, reply with 'Answer: ABSTAIN'. "
    "End with one line 'Answer: <letter>'."
)


# --- the LLM with a prompt-hash cache -----------------------------------------------------------------


class CachedLLM:
    """The medkb LLM client behind a JSONL cache keyed by sha256(model, temperature, max_tokens, messages).

    A killed run loses nothing already answered: each response is appended and flushed as it arrives.
    """

    def __init__(self, llm: LLMSettings, cache_path: Path | None) -> None:
        if not llm.model:
            raise ConfigError("no LLM configured (MEDKB_LLM_MODEL); QA accuracy needs one")
        self.llm, self.cache_path = llm, cache_path
        self.client = LLMClient(llm)
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()
        self.hits = self.calls = 0
        if cache_path and cache_path.is_file():
            for line in cache_path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._cache[row["key"]] = row["response"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a half-written last line from a killed run

    def key(self, messages: list[dict[str, str]]) -> str:
        blob = json.dumps([self.llm.model, self.llm.temperature, self.llm.max_tokens, messages], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def __call__(self, messages: list[dict[str, str]]) -> str:
        k = self.key(messages)
        with self._lock:
            if k in self._cache:
                self.hits += 1
                return self._cache[k]
        text = self.client.complete(messages).text
        with self._lock:
            self.calls += 1
            self._cache[k] = text
            if self.cache_path:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with self.cache_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"key": k, "response": text}) + "\n")
        return text


# --- prompts and parsing ------------------------------------------------------------------------------


def build_messages(q: MCQuestion, passages: Sequence[str]) -> list[dict[str, str]]:
    opts = "\n".join(f"{k}. {v}" for k, v in sorted(q.options.items()))
    parts = []
    if passages:
        parts.append("Evidence:\n" + "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1)))
    parts.append(f"Question: {q.question}\nOptions:\n{opts}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:：]?\s*\**\(?\s*([A-Z]|ABSTAIN)\b", re.I)
_ABSTAIN = re.compile(r"\b(abstain|insufficient evidence|cannot (?:be )?determine|not enough (?:information|evidence))",
                      re.I)


def parse_answer(text: str, options: Sequence[str]) -> str | None:
    """The chosen option letter, 'ABSTAIN', or None when the reply names neither (counted wrong)."""
    found = [m.group(1).upper() for m in _ANSWER.finditer(text)]
    for letter in reversed(found):
        if letter == "ABSTAIN" or letter in options:
            return letter
    if _ABSTAIN.search(text):
        return "ABSTAIN"
    bare = re.fullmatch(r"\s*\(?([A-Z])[).:]?\s*", text)
    if bare and bare.group(1) in options:
        return bare.group(1)
    return None


def explanation(reply: str) -> str:
    """The reply without its final 'Answer: X' line (the part whose sentences cite passages)."""
    found = list(_ANSWER.finditer(reply))
    return reply[: found[-1].start()] if found else reply


def citation_support(reply: str, passages: Sequence[str], embed: Callable[[Sequence[str]], Any] | None = None
                     ) -> tuple[int, int]:
    """(sentences that cite a passage, those of them the product's CitationChecker finds supported)."""
    checker = CitationChecker(passages, embed=embed)
    checks = [checker.check(s) for s in split_sentences(explanation(reply)) if cited_numbers(s)]
    return len(checks), sum(c.supported for c in checks)


# --- the QA run ---------------------------------------------------------------------------------------


@dataclass
class QAResult:
    task: str
    retrieval: bool
    questions: int = 0
    correct: int = 0
    abstained: int = 0
    unparsed: int = 0
    citations: int = 0
    supported: int = 0
    seconds: float = 0.0
    predictions: dict[str, str | None] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        n = max(self.questions, 1)
        answered = self.questions - self.abstained
        return {
            "accuracy": round(self.correct / n, 4),
            "accuracy_answered": round(self.correct / answered, 4) if answered else 0.0,
            "abstain_rate": round(self.abstained / n, 4),
            "unparsed_rate": round(self.unparsed / n, 4),
            "citation_precision": round(self.supported / self.citations, 4) if self.citations else None,
            "citations": self.citations,
            "questions": self.questions,
            "seconds": round(self.seconds, 1),
        }


def answer_task(task: str, questions: Sequence[MCQuestion], llm: CachedLLM, *, retriever: Any = None,
                filters: SearchFilters | None = None, k: int = 5, mode: str = "hybrid", embedder: Any = None,
                progress: Progress | None = None) -> QAResult:
    """Ask every question (with the top-k passages when ``retriever`` is given) and score the replies."""
    res = QAResult(task, retriever is not None)
    t0 = time.perf_counter()
    embed = embedder.embed_passages if embedder is not None else None  # the chat API's checker uses the same
    for i, q in enumerate(questions, 1):
        passages = []
        if retriever is not None:
            hits = retriever.search(q.question, filters or SearchFilters(), k=k, mode=mode).hits
            passages = [h.chunk.text for h in hits]
        reply = llm(build_messages(q, passages))
        pred = parse_answer(reply, list(q.options))
        res.questions += 1
        res.predictions[q.id] = pred
        res.correct += pred == q.answer
        res.abstained += pred == "ABSTAIN"
        res.unparsed += pred is None
        citing, supported = citation_support(reply, passages, embed)
        res.citations += citing
        res.supported += supported
        if progress and i % 50 == 0:
            progress(f"{task} ({'retrieval' if retriever else 'no retrieval'}): {i}/{len(questions)}")
    res.seconds = time.perf_counter() - t0
    return res


def gold_pmid_dataset(questions: Sequence[MCQuestion], pubmedqa_root: Path, out: Path, name: str) -> BeirDataset:
    """A BEIR set whose corpus is the PubMedQA-L abstracts and whose qrels are each question's gold PMIDs."""
    corpus = pubmedqa_corpus(pubmedqa_root)
    ids = {r["_id"] for r in corpus}
    qs = {q.id: q.question for q in questions if any(p in ids for p in q.pmids)}
    qrels = {q.id: {p: 1 for p in q.pmids if p in ids} for q in questions if q.id in qs}
    write_beir(out, corpus, qs, qrels)
    ds = load_beir(out)
    ds.name = name
    return ds


def retrieval_only(questions: Sequence[MCQuestion], pubmedqa_root: Path, settings: Settings,
                   modes: Sequence[str], *, name: str = "pubmedqa-gold-pmid", k: int = 100,
                   db_url: str | None = None, progress: Progress | None = None) -> RetrievalRun:
    """Recall of each question's gold PMID in the top-k over a KB of the PubMedQA-L abstracts."""
    with tempfile.TemporaryDirectory(prefix="medkb-qa-") as tmp:
        ds = gold_pmid_dataset(questions, pubmedqa_root, Path(tmp) / name, name)
        return run_retrieval(ds, settings, modes, k=k, db_url=db_url, progress=progress)


def run_qa(tasks: dict[str, Sequence[MCQuestion]], settings: Settings, *, pubmedqa_root: Path,
           retrieval: Sequence[bool] = (False, True), k: int = 5, mode: str = "hybrid",
           db_url: str | None = None, cache_path: Path | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Accuracy, abstain rate and citation precision per task and retrieval setting, through the LLM.

    Retrieval searches ``db_url`` when given, else a throwaway KB of the PubMedQA-L abstracts.
    """
    from medkb.eval.runner import ingest_corpus, run_config
    from medkb.kb.embeddings import embedder_for, model_dimension
    from medkb.kb.factory import init_store, open_store
    from medkb.retrieval.retriever import build_retriever

    llm = CachedLLM(settings.llm, cache_path)
    out: dict[str, Any] = {"tasks": {}, "config": {}}
    with tempfile.TemporaryDirectory(prefix="medkb-qa-") as tmp:
        s = settings.with_database(db_url or f"sqlite:///{Path(tmp) / 'qa.db'}")
        store = open_store(s.database)
        try:
            init_store(store, model_dimension(s.embedding.model))
            retriever = embedder = None
            source = None
            if any(retrieval):
                if not db_url:
                    source = "pubmedqa-abstracts"
                    corpus = write_beir(Path(tmp) / source, pubmedqa_corpus(pubmedqa_root), {}, {})
                    ingest_corpus(store, s, corpus / "corpus.jsonl", source, progress)
                retriever = build_retriever(store, s)
                es = s.embedding
                embedder = embedder_for(es)
            filters = SearchFilters(sources=(source,) if source else None)
            for task, qs in tasks.items():
                for use in retrieval:
                    r = answer_task(task, qs, llm, retriever=retriever if use else None, filters=filters, k=k,
                                    mode=mode, embedder=embedder, progress=progress)
                    out["tasks"].setdefault(task, {})["retrieval" if use else "no_retrieval"] = r.metrics()
            out["config"] = run_config(store, s, k=k, reused_db=bool(db_url))
        finally:
            store.close()
    llm_cfg = settings.llm.model_dump(exclude={"api_key"})
    out["config"].update({"llm": llm_cfg, "mode": mode, "passages": k, "citation_support": "medkb CitationChecker",
                          "llm_calls": llm.calls, "llm_cache_hits": llm.hits})
    return out
