"""Run reports: the JSON record, a Markdown summary and a self-contained HTML page with plots (base64 PNGs)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from medkb.eval.runner import HEADLINE, RetrievalRun
from medkb.eval.trec import write_per_query, write_run

COLORS = {"hybrid": "#4c72b0", "bm25": "#dd8452", "dense": "#55a868", "graph": "#c44e52"}


def write_all(run: RetrievalRun, json_path: str | Path) -> dict[str, Path]:
    """``OUT.json`` plus ``OUT.md`` and ``OUT.html`` beside it (same stem), and per mode a TREC run file
    ``OUT.MODE.run`` and a per-query table ``OUT.MODE.perquery.tsv`` (check them with trec_eval)."""
    p = Path(json_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(run.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    md, page = p.with_suffix(".md"), p.with_suffix(".html")
    md.write_text(markdown(run), encoding="utf-8")
    page.write_text(html_report(run), encoding="utf-8")
    out = {"json": p, "md": md, "html": page}
    for mode, r in run.modes.items():
        out[f"{mode}.run"] = write_run(p.with_suffix(f".{mode}.run"), r.run, f"medkb-{mode}")
        out[f"{mode}.perquery"] = write_per_query(p.with_suffix(f".{mode}.perquery.tsv"), r.per_query)
    return out


def _table_rows(run: RetrievalRun) -> list[list[str]]:
    rows = []
    for mode, r in run.modes.items():
        m = r.metrics
        rows.append([mode] + [f"{m[h]:.3f}" for h in HEADLINE]
                    + [f"{m['latency_ms_p50']:.1f}", f"{m['latency_ms_p95']:.1f}", str(m["queries"])])
    return rows


HEADER = ["mode", "nDCG@10", "Recall@10", "Recall@100", "MRR@10", "p50 ms", "p95 ms", "queries"]


def _setup_lines(run: RetrievalRun) -> list[str]:
    c = run.config
    mach = c.get("machine", {})
    w = c.get("fusion_weights", {})
    return [
        f"embedding model: {c.get('embedding_model')} (dim {c.get('embedding_dim')})",
        f"fusion: {c.get('fusion')}, weights " + ", ".join(f"{k} {v}" for k, v in w.items()),
        f"knowledge base: {c.get('kb', {}).get('documents')} documents, {c.get('kb', {}).get('chunks')} chunks "
        f"({c.get('database')}); depth k = {c.get('k')}, split {c.get('split')}",
        f"medkb {c.get('medkb_version')}, git {c.get('git_commit') or 'n/a'}",
        f"machine: {mach.get('cpu')}, {mach.get('cores')} cores, {mach.get('memory_gb')} GB, "
        f"Python {mach.get('python')}",
        f"time: ingest {c.get('ingest', {}).get('seconds', 'n/a')} s, total {c.get('seconds_total', 'n/a')} s",
    ]


def markdown(run: RetrievalRun) -> str:
    lines = [f"# Retrieval evaluation: {run.dataset}", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "---|" * len(HEADER))
    for row in _table_rows(run):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Recall@k:", "", "| mode | " + " | ".join(f"@{k}" for k in _curve_ks(run)) + " |",
              "|---|" + "---|" * len(_curve_ks(run))]
    for mode, r in run.modes.items():
        lines.append(f"| {mode} | " + " | ".join(f"{r.recall_curve[k]:.3f}" for k in _curve_ks(run)) + " |")
    lines += ["", "Setup:", ""] + [f"- {s}" for s in _setup_lines(run)] + [""]
    return "\n".join(lines)


def _curve_ks(run: RetrievalRun) -> list[int]:
    first = next(iter(run.modes.values()), None)
    return sorted(first.recall_curve) if first else []


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plots(run: RetrievalRun) -> dict[str, str]:
    """Three figures as PNG data URIs: metric bars per mode, Recall@k curves, latency distributions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    modes = list(run.modes)
    out: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / max(len(modes), 1)
    x = np.arange(len(HEADLINE))
    for i, mode in enumerate(modes):
        vals = [run.modes[mode].metrics[h] for h in HEADLINE]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=mode, color=COLORS.get(mode))
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, list(HEADLINE))
    ax.set_ylim(0, 1.25)  # headroom for the legend above the bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("score")
    ax.set_title("Quality per mode")
    ax.legend(fontsize=8, ncol=len(modes), loc="upper center", frameon=False)
    out["bars"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for mode in modes:
        curve = run.modes[mode].recall_curve
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", label=mode, color=COLORS.get(mode))
    ax.set_xscale("log")
    ks = _curve_ks(run)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (documents)")
    ax.set_ylabel("Recall@k")
    ax.set_title("Recall@k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out["recall"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    data = [run.modes[m].latencies_ms or [0.0] for m in modes]
    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (and deprecated the old name)
    horizontal = {"orientation": "horizontal"} if tuple(map(int, matplotlib.__version__.split(".")[:2])) >= (3, 10) \
        else {"vert": False}
    parts = ax.boxplot(data, showfliers=True, patch_artist=True, flierprops={"markersize": 2}, **horizontal)
    ax.set_yticks(range(1, len(modes) + 1), modes)
    for patch, mode in zip(parts["boxes"], modes):
        patch.set_facecolor(COLORS.get(mode, "#999999"))
        patch.set_alpha(0.6)
    ax.set_xscale("log")
    ax.set_xlabel("latency per query (ms, log scale)")
    ax.set_title("Latency distribution")
    ax.grid(alpha=0.3, axis="x")
    out["latency"] = _png(fig)
    return out


def html_report(run: RetrievalRun) -> str:
    esc = html.escape
    figs = plots(run)
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _table_rows(run))
    setup = "".join(f"<li>{esc(s)}</li>" for s in _setup_lines(run))
    cfg = esc(json.dumps(run.config, indent=2))
    imgs = "".join(f'<figure><img alt="{esc(name)}" src="{uri}"></figure>' for name, uri in figs.items())
    return page(f"medkb eval: {run.dataset}", f"""<h1>Retrieval evaluation: {esc(run.dataset)}</h1>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{setup}</ul>
{imgs}
<details><summary>Full configuration</summary><pre>{cfg}</pre></details>
""")


def page(title: str, body: str) -> str:
    """A self-contained report page (the style every eval report shares) around ``body``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: .3em .7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 80%; }}
</style></head><body>
{body}
</body></html>
"""
