"""Runs anyone can check: TREC run files (qid Q0 docid rank score tag) and per-query metric tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path



def run_lines(run: Mapping[str, Sequence[str]], tag: str) -> list[str]:
    """One ``qid Q0 docid rank score tag`` line per retrieved document. The score is rank-derived (strictly
    decreasing), so trec_eval, which re-sorts by score, scores exactly the ranking medkb was scored on."""
    lines = []
    for qid, docs in run.items():
        n = len(docs)
        lines.extend(f"{qid} Q0 {doc} {rank} {n - rank + 1} {tag}" for rank, doc in enumerate(docs, 1))
    return lines


def write_run(path: Path, run: Mapping[str, Sequence[str]], tag: str) -> Path:
    path.write_text("\n".join(run_lines(run, tag)) + "\n", encoding="utf-8")
    return path


def write_per_query(path: Path, per_query: Mapping[str, Mapping[str, float]]) -> Path:
    """A tab-separated table: one row per judged query (the ones medkb averages), one column per metric."""
    metrics = list(per_query)
    qids = list(per_query[metrics[0]]) if metrics else []
    rows = ["\t".join(["qid", *metrics])]
    rows += ["\t".join([q, *(f"{per_query[m][q]:.6f}" for m in metrics)]) for q in qids]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
