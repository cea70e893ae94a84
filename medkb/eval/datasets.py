"""Evaluation data loaders: BEIR retrieval sets, MIRAGE multiple-choice QA, PubMedQA-L; deterministic slices."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkb.errors import BadRecord, InvalidInput, NotFound


@dataclass
class BeirDataset:
    """A BEIR-format set: corpus.jsonl (read lazily), queries, graded qrels of one split."""

    name: str
    root: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    def corpus(self) -> Iterator[dict]:
        yield from iter_jsonl(self.corpus_path, required=("_id",))

    def corpus_size(self) -> int:
        with self.corpus_path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())

    def limit(self, max_queries: int | None) -> "BeirDataset":
        """The first ``max_queries`` judged queries in file order (same ones on every run)."""
        if not max_queries:
            return self
        keep = [q for q in self.queries if q in self.qrels][:max_queries]
        return BeirDataset(self.name, self.root, {q: self.queries[q] for q in keep},
                           {q: self.qrels[q] for q in keep}, self.split)


def iter_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadRecord(str(path), f"not JSON: {exc.msg}", line=n) from None
            if not isinstance(obj, dict):
                raise BadRecord(str(path), "expected a JSON object", line=n)
            for f in required:
                if f not in obj or obj[f] in (None, ""):
                    raise BadRecord(str(path), "missing", line=n, field=f)
            yield obj


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """qrels TSV (query-id, corpus-id, score) with an optional header line."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if n == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) < 3:
                raise BadRecord(str(path), f"expected 3 tab-separated columns, got {len(row)}", line=n)
            try:
                score = int(float(row[2]))
            except ValueError:
                raise BadRecord(str(path), f"relevance {row[2]!r} is not a number", line=n, field="score") from None
            qrels.setdefault(row[0].strip(), {})[row[1].strip()] = score
    return qrels


def load_beir(root: str | Path, split: str = "test") -> BeirDataset:
    """Read queries and the qrels of ``split``; the corpus is streamed later. Only judged queries are kept."""
    root = Path(root)
    for need in ("corpus.jsonl", "queries.jsonl"):
        if not (root / need).is_file():
            raise NotFound(f"{root} is not a BEIR dataset: {need} is missing")
    qpath = root / "qrels" / f"{split}.tsv"
    if not qpath.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise NotFound(f"no qrels for split {split!r} in {root}/qrels (have: {', '.join(have) or 'none'})")
    qrels = load_qrels(qpath)
    queries: dict[str, str] = {}
    for n, obj in enumerate(iter_jsonl(root / "queries.jsonl", required=("_id",)), 1):
        if not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise BadRecord(str(root / "queries.jsonl"), "query text missing", line=n, field="text")
        qid = str(obj["_id"])
        if qid in qrels:
            queries[qid] = obj["text"]
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise InvalidInput(f"{qpath}: {len(missing)} judged queries are not in queries.jsonl (e.g. {missing[0]!r})")
    return BeirDataset(root.name, root, queries, qrels, split)


# --- multiple-choice QA -------------------------------------------------------------------------------


@dataclass
class MCQuestion:
    id: str
    question: str
    options: dict[str, str]
    answer: str
    pmids: list[str] = field(default_factory=list)
    context: str | None = None  # PubMedQA-L ships the abstract; MIRAGE does not


MIRAGE_TASKS = ("medqa", "medmcqa", "pubmedqa", "mmlu")


def read_json(path: Path, what: str) -> Any:
    """A JSON file's content; a missing file is NotFound, bad JSON a BadRecord naming the line."""
    if not path.is_file():
        raise NotFound(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadRecord(str(path), f"not JSON: {exc.msg}", line=exc.lineno) from None


def load_mirage(path: str | Path, task: str) -> list[MCQuestion]:
    """One task of MIRAGE's benchmark.json ({task: {id: {question, options, answer, PMID?}}})."""
    path = Path(path)
    if task not in MIRAGE_TASKS:
        raise InvalidInput(f"unknown MIRAGE task {task!r}; choose one of {', '.join(MIRAGE_TASKS)}")
    data = read_json(path, "MIRAGE benchmark")
    if task not in data:
        raise InvalidInput(f"{path}: task {task!r} is absent (have: {', '.join(data)})")
    out: list[MCQuestion] = []
    for qid, item in data[task].items():
        for f in ("question", "options", "answer"):
            if f not in item:
                raise BadRecord(str(path), "missing", field=f"{task}.{qid}.{f}")
        if item["answer"] not in item["options"]:
            raise BadRecord(str(path), f"answer {item['answer']!r} is not an option", field=f"{task}.{qid}.answer")
        out.append(MCQuestion(str(qid), item["question"], dict(item["options"]), item["answer"],
                              [str(p) for p in item.get("PMID", [])]))
    return out


PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}


def load_pubmedqa(root: str | Path, split: str = "test") -> list[MCQuestion]:
    """PubMedQA-L (ori_pqal.json) as yes/no/maybe questions; ``split`` test = the 500 of test_ground_truth.json."""
    root = Path(root)
    src = root / "ori_pqal.json"
    if not src.is_file():
        raise NotFound(f"PubMedQA-L not found: {src}")
    data = json.loads(src.read_text(encoding="utf-8"))
    keep: set[str] | None = None
    if split == "test":
        gt = root / "test_ground_truth.json"
        if not gt.is_file():
            raise NotFound(f"{gt} is missing (needed for split 'test'; use split 'all')")
        keep = set(json.loads(gt.read_text(encoding="utf-8")))
    elif split != "all":
        raise InvalidInput(f"PubMedQA split must be 'test' or 'all' (got {split!r})")
    letter = {v: k for k, v in PUBMEDQA_OPTIONS.items()}
    out: list[MCQuestion] = []
    for pmid, item in data.items():
        if keep is not None and pmid not in keep:
            continue
        decision = item.get("final_decision")
        if decision not in letter:
            raise BadRecord(str(src), f"final_decision {decision!r} is not yes/no/maybe",
                            field=f"{pmid}.final_decision")
        out.append(MCQuestion(pmid, item["QUESTION"], dict(PUBMEDQA_OPTIONS), letter[decision], [pmid],
                              " ".join(item.get("CONTEXTS", []))))
    return out


def pubmedqa_corpus(root: str | Path) -> list[dict]:
    """The PubMedQA-L abstracts as BEIR corpus rows (_id = PMID, text = the abstract's sections)."""
    data = json.loads((Path(root) / "ori_pqal.json").read_text(encoding="utf-8"))
    return [{"_id": pmid, "title": "", "text": " ".join(item.get("CONTEXTS", []))} for pmid, item in data.items()]


# --- writing BEIR sets (slices, derived sets) ---------------------------------------------------------


def write_beir(root: Path, corpus: list[dict], queries: dict[str, str], qrels: dict[str, dict[str, int]],
               split: str = "test") -> Path:
    """Write a BEIR-format directory; returns ``root``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for row in corpus:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (root / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, rels in qrels.items():
            for doc, score in rels.items():
                fh.write(f"{qid}\t{doc}\t{score}\n")
    return root


def _rank_key(seed: str, ident: str) -> str:
    return hashlib.sha1(f"{seed}:{ident}".encode()).hexdigest()


def slice_beir(ds: BeirDataset, out: Path, *, queries: int, distractors: int, seed: str = "medkb") -> BeirDataset:
    """A deterministic sub-benchmark: ``queries`` judged queries (hash order), every document they judge,
    and ``distractors`` other documents (hash order). Same input + seed → byte-identical output."""
    picked = sorted(ds.qrels, key=lambda q: _rank_key(seed, q))[:queries]
    judged = {d for q in picked for d in ds.qrels[q]}
    rows = list(ds.corpus())
    others = sorted((r for r in rows if str(r["_id"]) not in judged), key=lambda r: _rank_key(seed, str(r["_id"])))
    keep_ids = judged | {str(r["_id"]) for r in others[:distractors]}
    corpus = [r for r in rows if str(r["_id"]) in keep_ids]
    picked_set = set(picked)
    qs = {q: t for q, t in ds.queries.items() if q in picked_set}
    write_beir(out, corpus, qs, {q: ds.qrels[q] for q in qs}, ds.split)
    sliced = load_beir(out, ds.split)
    sliced.name = f"{ds.name}-slice"
    return sliced
