"""Abstention reports: the JSON record, a Markdown summary and an HTML page with the trade-off curve and histograms."""

from __future__ import annotations

import html
import json
from pathlib import Path

from medkb.eval.abstain import AbstainRun
from medkb.eval.report import _png, page

HEADER = ["split", "abstain (unanswerable)", "gold cited (answerable)", "answered (answerable)", "AUROC",
          "threshold", "answerable", "unanswerable", "p50 ms"]


def write_all(run: AbstainRun, json_path: str | Path) -> dict[str, Path]:
    """``OUT.json`` plus ``OUT.md`` and ``OUT.html`` beside it (same stem)."""
    p = Path(json_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(run.to_json(), indent=1) + "\n", encoding="utf-8")
    md, page = p.with_suffix(".md"), p.with_suffix(".html")
    md.write_text(markdown(run), encoding="utf-8")
    page.write_text(html_report(run), encoding="utf-8")
    return {"json": p, "md": md, "html": page}


def row(run: AbstainRun) -> list[str]:
    m = run.metrics
    return [run.split, f"{m['abstention_unanswerable']:.3f}", f"{m['gold_cited_answerable']:.3f}",
            f"{m['answered_answerable']:.3f}", f"{m['auroc']:.3f}", f"{m['threshold']:.4f}", str(m["answerable"]),
            str(m["unanswerable"]), f"{m['latency_ms_p50']:.1f}"]


def _setup(run: AbstainRun) -> list[str]:
    c, off = run.config, run.metrics["gate_off"]
    return [
        run.description,
        f"gate model {c.get('gate_model')}, threshold {c.get('threshold'):.4f}, evidence = the first "
        f"{c.get('max_chunks')} passing hits of {c.get('k')}",
        f"gate off (every hit shown): abstain {off['abstention_unanswerable']:.3f}, gold cited "
        f"{off['gold_cited_answerable']:.3f}; gold retrieved at all: {run.metrics['gold_retrieved_answerable']:.3f}",
        f"knowledge base: {c.get('kb', {}).get('documents')} documents, {c.get('kb', {}).get('chunks')} chunks "
        f"({c.get('database')}), tenant {c.get('tenant')}; embedding {c.get('embedding_model')}",
        f"medkb {c.get('medkb_version')}, git {c.get('git_commit') or 'n/a'}, {c.get('seconds_total')} s",
    ]


def _curve_rows(run: AbstainRun, n: int = 12) -> list[dict[str, float]]:
    step = max(1, len(run.curve) // n)
    return run.curve[::step] + ([run.curve[-1]] if (len(run.curve) - 1) % step else [])


def markdown(run: AbstainRun) -> str:
    lines = [f"# Abstention evaluation: {run.split}", "", "| " + " | ".join(HEADER) + " |",
             "|" + "---|" * len(HEADER), "| " + " | ".join(row(run)) + " |", "", "Trade-off (threshold sweep):", "",
             "| threshold | abstain (unanswerable) | gold cited (answerable) |", "|---|---|---|"]
    for p in _curve_rows(run):
        lines.append(f"| {p['threshold']:.4f} | {p['abstention_unanswerable']:.3f} | "
                     f"{p['gold_cited_answerable']:.3f} |")
    lines += ["", "Setup:", ""] + [f"- {s}" for s in _setup(run)] + [""]
    return "\n".join(lines)


def plots(run: AbstainRun) -> dict[str, str]:
    """The trade-off curve with the operating point, and the answer-score distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([p["abstention_unanswerable"] for p in run.curve], [p["gold_cited_answerable"] for p in run.curve],
            color="#4c72b0", label="threshold sweep")
    m = run.metrics
    ax.plot([m["abstention_unanswerable"]], [m["gold_cited_answerable"]], "o", color="#c44e52",
            label=f"operating point (threshold {m['threshold']:.3f})")
    ax.set_xlabel("abstention on unanswerable questions")
    ax.set_ylabel("gold document cited on answerable questions")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"Trade-off: {run.split} (AUROC {m['auroc']:.3f})")
    out["tradeoff"] = _png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = [i / 40 for i in range(41)]
    ax.hist(run.scores["answerable"], bins=bins, alpha=0.6, color="#55a868", label="answerable")
    ax.hist(run.scores["unanswerable"], bins=bins, alpha=0.6, color="#c44e52", label="unanswerable")
    ax.axvline(m["threshold"], color="#222222", linestyle="--", label="threshold")
    ax.set_xlabel("answer score (best passage's gate score)")
    ax.set_ylabel("questions")
    ax.legend(fontsize=8)
    out["scores"] = _png(fig)
    return out


def html_report(run: AbstainRun) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row(run)) + "</tr>"
    sweep = "".join(f"<tr><td>{p['threshold']:.4f}</td><td>{p['abstention_unanswerable']:.3f}</td>"
                    f"<td>{p['gold_cited_answerable']:.3f}</td></tr>" for p in _curve_rows(run))
    setup = "".join(f"<li>{esc(s)}</li>" for s in _setup(run))
    imgs = "".join(f'<figure><img alt="{esc(n)}" src="{u}"></figure>' for n, u in plots(run).items())
    cfg = esc(json.dumps(run.config, indent=2))
    return page(f"medkb abstention: {run.split}", f"""<h1>Abstention evaluation: {esc(run.split)}</h1>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{setup}</ul>
{imgs}
<h2>Threshold sweep</h2>
<table><thead><tr><th>threshold</th><th>abstain (unanswerable)</th><th>gold cited (answerable)</th></tr></thead>
<tbody>{sweep}</tbody></table>
<details><summary>Full configuration</summary><pre>{cfg}</pre></details>
""")

