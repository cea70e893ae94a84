"""`medkb eval retrieval|qa|compare`: the offline evaluation harness from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from medkb.cli.context import get_ctx
from medkb.errors import InvalidInput

console = Console()
err = Console(stderr=True)

eval_app = typer.Typer(help="Offline evaluation: retrieval (BEIR), QA (MIRAGE / PubMedQA), abstention, run comparison.",
                       no_args_is_help=True)

DEFAULT_MIRAGE = Path("../shared/data/mirage/benchmark.json")
DEFAULT_PUBMEDQA = Path("../shared/data/pubmedqa")


def _progress(msg: str) -> None:
    err.print(f"[dim]{msg}[/dim]")


def _print_run(run: dict) -> None:
    t = Table("mode", "nDCG@10", "Recall@10", "Recall@100", "MRR@10", "p50 ms", "p95 ms", "queries",
              title=f"{run['dataset']}")
    for mode, m in run["modes"].items():
        t.add_row(mode, *(f"{m[k]:.3f}" for k in ("ndcg@10", "recall@10", "recall@100", "mrr@10")),
                  f"{m['latency_ms_p50']:.1f}", f"{m['latency_ms_p95']:.1f}", str(m["queries"]))
    console.print(t)
    c = run["config"]
    console.print(f"model {c.get('embedding_model')}, fusion {c.get('fusion')} {c.get('fusion_weights')}, "
                  f"{c.get('machine', {}).get('cpu')} x{c.get('machine', {}).get('cores')}, "
                  f"{c.get('seconds_total')} s")


@eval_app.command("retrieval")
def retrieval(
    ctx: typer.Context,
    dataset_dir: Annotated[Path, typer.Argument(help="A BEIR-format folder: corpus.jsonl, queries.jsonl, qrels/.")],
    mode: Annotated[Optional[list[str]], typer.Option("--mode", help="hybrid|bm25|dense|graph; repeat to compare "
                                                       "modes on the same KB (default hybrid).")] = None,
    k: Annotated[int, typer.Option("--k", help="Hits requested per query (retrieval depth; >= 100 for "
                                   "Recall@100).")] = 100,
    max_queries: Annotated[Optional[int], typer.Option("--max-queries", help="Only the first N judged "
                                                       "queries.")] = None,
    split: Annotated[str, typer.Option("--split", help="qrels/<split>.tsv to score against.")] = "test",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the run here; .md and .html "
                                                     "go beside it.")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Reuse this knowledge base (the corpus is ingested "
                                              "into it, idempotently) instead of a throwaway one.")] = None,
    ontology: Annotated[Optional[list[str]], typer.Option("--ontology", help="Load this ontology into the "
                                                          "throwaway KB first (gives graph mode entities).")] = None,
) -> None:
    """Score retrieval on a BEIR dataset: nDCG@10, Recall@10/100, MRR@10, latency p50/p95 per mode.

    Example: medkb eval retrieval ../shared/data/bioasq-dev --mode bm25 --mode dense --mode hybrid --json out.json
    """
    from medkb.eval.datasets import load_beir
    from medkb.eval.report import write_all
    from medkb.eval.runner import check_modes, run_retrieval

    modes = check_modes(mode or [])
    if max_queries is not None and max_queries < 1:
        raise InvalidInput(f"--max-queries must be >= 1 (got {max_queries})")
    ds = load_beir(dataset_dir, split).limit(max_queries)
    settings = get_ctx(ctx).settings
    run = run_retrieval(ds, settings, modes, k=k, db_url=db, ontologies=ontology or [], progress=_progress)
    _print_run(run.to_json())
    if json_out:
        paths = write_all(run, json_out)
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))


@eval_app.command("qa")
def qa(
    ctx: typer.Context,
    benchmark: Annotated[str, typer.Option("--benchmark", help="mirage or pubmedqa (PubMedQA-L).")] = "mirage",
    task: Annotated[Optional[list[str]], typer.Option("--task", help="MIRAGE task(s): medqa, medmcqa, pubmedqa, "
                                                      "mmlu (default pubmedqa).")] = None,
    retrieval: Annotated[str, typer.Option("--retrieval", help="on, off or both.")] = "both",
    mode: Annotated[str, typer.Option("--mode", help="Retrieval mode for the evidence.")] = "hybrid",
    k: Annotated[int, typer.Option("--k", help="Passages given to the LLM; in retrieval-only runs, the "
                                   "retrieval depth.")] = 5,
    max_questions: Annotated[Optional[int], typer.Option("--max-questions", help="Only the first N.")] = None,
    mirage: Annotated[Path, typer.Option("--mirage", help="MIRAGE benchmark.json.")] = DEFAULT_MIRAGE,
    pubmedqa: Annotated[Path, typer.Option("--pubmedqa", help="PubMedQA-L folder (ori_pqal.json); its "
                                           "abstracts form the retrieval KB.")] = DEFAULT_PUBMEDQA,
    cache: Annotated[Path, typer.Option("--cache", help="LLM response cache (JSONL, by prompt hash); makes "
                                        "runs resumable.")] = Path("eval-llm-cache.jsonl"),
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results here.")] = None,
    db: Annotated[Optional[str], typer.Option("--db", help="Retrieve from this KB instead of a throwaway "
                                              "KB of the PubMedQA-L abstracts.")] = None,
) -> None:
    """Multiple-choice accuracy, abstain rate and citation precision through the configured LLM; with no
    LLM configured, retrieval-only recall of the gold PMIDs (MIRAGE PubMedQA*, PubMedQA-L).

    Example: medkb eval qa --benchmark mirage --task pubmedqa --max-questions 100 --json qa.json
    """
    from medkb.eval.datasets import load_mirage, load_pubmedqa
    from medkb.eval.qa import retrieval_only, run_qa
    from medkb.eval.report import write_all

    settings = get_ctx(ctx).settings
    if retrieval not in ("on", "off", "both"):
        raise InvalidInput(f"--retrieval must be on, off or both (got {retrieval!r})")
    if benchmark == "mirage":
        tasks = {t: load_mirage(mirage, t) for t in (task or ["pubmedqa"])}
    elif benchmark == "pubmedqa":
        tasks = {"pubmedqa-l": load_pubmedqa(pubmedqa, "test")}
    else:
        raise InvalidInput(f"--benchmark must be mirage or pubmedqa (got {benchmark!r})")
    if max_questions:
        tasks = {t: qs[:max_questions] for t, qs in tasks.items()}
    if not settings.llm.model:
        gold = {t: qs for t, qs in tasks.items() if any(q.pmids for q in qs)}
        skipped = sorted(set(tasks) - set(gold))
        if skipped:
            err.print(f"no LLM configured (MEDKB_LLM_MODEL): skipping {', '.join(skipped)} (no gold PMIDs)")
        if not gold:
            raise InvalidInput("no LLM configured and no task with gold PMIDs: nothing to evaluate")
        for t, qs in gold.items():
            run = retrieval_only(qs, pubmedqa, settings, [mode], name=f"{t}-gold-pmid", k=max(k, 100),
                                 db_url=db, progress=_progress)
            _print_run(run.to_json())
            if json_out:
                out = json_out if len(gold) == 1 else json_out.with_name(f"{json_out.stem}-{t}.json")
                paths = write_all(run, out)
                console.print("wrote " + ", ".join(str(p) for p in paths.values()))
        return
    use = {"on": (True,), "off": (False,), "both": (False, True)}[retrieval]
    res = run_qa(tasks, settings, pubmedqa_root=pubmedqa, retrieval=use, k=k, mode=mode, db_url=db,
                 cache_path=cache, progress=_progress)
    t = Table("task", "retrieval", "accuracy", "abstain", "unparsed", "citation precision", "questions")
    for name, by in res["tasks"].items():
        for setting, m in by.items():
            cp = "-" if m["citation_precision"] is None else f"{m['citation_precision']:.3f}"
            t.add_row(name, setting, f"{m['accuracy']:.3f}", f"{m['abstain_rate']:.3f}",
                      f"{m['unparsed_rate']:.3f}", cp, str(m["questions"]))
    console.print(t)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}")


DEFAULT_BIOASQ = Path("../shared/data/bioasq-dev")
SPLIT_HELP = ("pubmedqa-sample (all 1,000 PubMedQA-L questions over the 200 sample abstracts), pubmedqa-dev "
              "(the other 800 questions over half their abstracts: the gate's development split) or bioasq "
              "(expert questions, half with their judged articles removed).")


@eval_app.command("abstain")
def abstain(
    ctx: typer.Context,
    split: Annotated[str, typer.Option("--split", help=SPLIT_HELP)] = "pubmedqa-sample",
    db: Annotated[Optional[str], typer.Option("--db", help="Ask the questions of this knowledge base as it is "
                                              "(e.g. the one `make run` builds) instead of a throwaway KB of the "
                                              "split's corpus.")] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the questions are asked as.")] = "public",
    max_questions: Annotated[Optional[int], typer.Option("--max-questions", help="Only the first N (hash "
                                                         "order).")] = None,
    pubmedqa: Annotated[Path, typer.Option("--pubmedqa", help="PubMedQA-L folder.")] = DEFAULT_PUBMEDQA,
    bioasq: Annotated[Path, typer.Option("--bioasq", help="bioasq-dev BEIR folder.")] = DEFAULT_BIOASQ,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the run here; .md and .html "
                                                     "(with the trade-off curve) go beside it.")] = None,
) -> None:
    """Abstention on unanswerable questions, gold-cited answers on answerable ones, the trade-off curve over
    the evidence gate's threshold and the AUROC of its answer score (settings MEDKB_GATE_* apply).

    Example: medkb eval abstain --split pubmedqa-sample --db sqlite:///./medkb.db --json abstain.json
    """
    from medkb.eval.abstain import load_split, run_abstain
    from medkb.eval.abstain_report import HEADER, row, write_all

    if max_questions is not None and max_questions < 1:
        raise InvalidInput(f"--max-questions must be >= 1 (got {max_questions})")
    sp = load_split(split, pubmedqa=pubmedqa, bioasq=bioasq, max_questions=max_questions)
    run = run_abstain(sp, get_ctx(ctx).settings, db_url=db, tenant=tenant, progress=_progress)
    t = Table(*HEADER, title=sp.description)
    t.add_row(*row(run))
    console.print(t)
    if json_out:
        paths = write_all(run, json_out)
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))


@eval_app.command("fit-gate")
def fit_gate_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Where to write the fitted model (JSON); point "
                                      "MEDKB_GATE_MODEL_PATH at it, or replace medkb/retrieval/gate_model.json "
                                      "to ship it.")],
    split: Annotated[str, typer.Option("--split", help="The development split to fit on.")] = "pubmedqa-dev",
    target_coverage: Annotated[float, typer.Option("--target-coverage", help="Share of answerable questions "
                                                   "whose gold passage must pass the default threshold.")] = 0.98,
    version: Annotated[str, typer.Option("--version", help="The model's version string.")] = "dev",
    pubmedqa: Annotated[Path, typer.Option("--pubmedqa", help="PubMedQA-L folder.")] = DEFAULT_PUBMEDQA,
    bioasq: Annotated[Path, typer.Option("--bioasq", help="bioasq-dev BEIR folder.")] = DEFAULT_BIOASQ,
) -> None:
    """Fit the evidence gate (logistic regression over retrieval's signals) on a development split and
    choose its threshold for a target answerable coverage.

    Example: medkb eval fit-gate --split pubmedqa-dev --target-coverage 0.98 --version 2 --out gate.json
    """
    from medkb.eval.abstain import ask_all, load_split, with_kb
    from medkb.eval.gatefit import fit_gate, save

    if not 0 < target_coverage <= 1:
        raise InvalidInput(f"--target-coverage must be in (0, 1] (got {target_coverage})")
    sp = load_split(split, pubmedqa=pubmedqa, bioasq=bioasq)
    settings = get_ctx(ctx).settings
    asked = with_kb(sp, settings, lambda store, s, f: ask_all(store, s, sp.questions, f, progress=_progress),
                    progress=_progress)
    model = fit_gate(asked, target_coverage=target_coverage, max_chunks=5, version=version,
                     training={"split": sp.name, "description": sp.description,
                               "embedding_model": settings.embedding.model})
    save(model, out)
    console.print(f"wrote {out}: answer threshold {model.threshold:.4f} for coverage {target_coverage}, passage "
                  f"threshold {model.passage_threshold:.4f}")


@eval_app.command("compare")
def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="The reference run (JSON from eval retrieval).")],
    run_b: Annotated[Path, typer.Argument(help="The candidate run.")],
    tolerance: Annotated[float, typer.Option("--tolerance", help="Allowed absolute drop of a quality "
                                             "metric before it counts as a regression.")] = 0.01,
    latency_tolerance: Annotated[Optional[float], typer.Option("--latency-tolerance", help="Allowed relative "
                                                               "latency increase (0.5 = 50 %); off by "
                                                               "default.")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Also test each mode for a significant "
                                                   "difference: paired t-test over per-query nDCG@10; exit 1 "
                                                   "when B is worse with p < alpha.")] = None,
) -> None:
    """Print B - A for every mode and metric; exit 1 when any quality metric regressed beyond the tolerance
    (or, with --alpha, when B is significantly worse by a paired test over the queries).

    Example: medkb eval compare baseline.json candidate.json --tolerance 0.01 --alpha 0.05
    """
    from medkb.eval.compare import comparable, compare, format_table, load_run, paired_test

    a, b = load_run(run_a), load_run(run_b)
    for w in comparable(a, b):
        err.print(f"warning: {w}")
    deltas = compare(a, b, tolerance=tolerance, latency_tolerance=latency_tolerance)
    t = Table("mode", "metric", "A", "B", "B - A", "")
    for row in format_table(deltas):
        t.add_row(*row, style="red" if row[-1] else None)
    console.print(t)
    bad = [d for d in deltas if d.regression]
    worse = []
    if alpha is not None:
        if not 0 < alpha < 1:
            raise InvalidInput(f"--alpha must be between 0 and 1 (got {alpha})")
        tests = paired_test(a, b)
        pt = Table("mode", "queries", "nDCG@10 A", "nDCG@10 B", "B - A", "p (paired t)", "")
        for r in tests:
            verdict = "significantly worse" if r.worse(alpha) else ("significantly better" if r.p_value < alpha
                                                                    else "")
            pt.add_row(r.mode, str(r.queries), f"{r.mean_a:.4f}", f"{r.mean_b:.4f}", f"{r.diff:+.4f}",
                       f"{r.p_value:.4g}", verdict, style="red" if r.worse(alpha) else None)
        console.print(pt)
        worse = [r for r in tests if r.worse(alpha)]
    if bad or worse:
        console.print(f"{len(bad)} regression(s) beyond tolerance {tolerance}"
                      + (f"; {len(worse)} mode(s) significantly worse at alpha {alpha}" if alpha is not None else ""))
        raise typer.Exit(1)
    console.print(f"no regression beyond tolerance {tolerance}"
                  + (f" and no mode significantly worse at alpha {alpha}" if alpha is not None else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
