"""Full build of the lexical index: this tree against an earlier commit, side by side on one knowledge base.

    .venv/bin/python bench/bench_lexical_build.py --db /tmp/kb-100k.db --ref 235939a [--runs 2]

Each build runs in its own child process (``BM25Generator(store, index_path=None).index()``: read every chunk,
tokenise, build the postings; nothing is saved), alternating baseline and this tree, and reports wall seconds,
CPU seconds and peak RSS of that child. The baseline is the ``medkb`` package of ``--ref`` (``git archive``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
from medkb.kb.factory import open_store
from medkb.retrieval.bm25 import BM25Generator
from medkb.settings import DatabaseSettings
def medkb_path():
    import medkb
    return medkb.__file__
store = open_store(DatabaseSettings(url="sqlite:///" + sys.argv[1]))
t0, c0 = time.perf_counter(), time.process_time()
view = BM25Generator(store, index_path=None).index()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
print(json.dumps({"chunks": int(view.n_docs), "terms": len(view.vocab), "wall_s": round(wall, 1),
                  "cpu_s": round(cpu, 1), "peak_rss_gb": round(peak, 2)}))
"""


def run(pkg_root: Path, db: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pkg_root)}
    # cwd too: ``python -c`` puts the working directory first on sys.path
    out = subprocess.run([sys.executable, "-c", CHILD + f"\nassert medkb_path().startswith({str(pkg_root)!r})", db],
                         env=env, cwd=pkg_root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--ref", required=True, help="git commit of the baseline")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--skip-baseline", action="store_true", help="this tree only (the baseline is too slow)")
    args = ap.parse_args()
    load = lambda: " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: E731
    report: dict = {"db": args.db, "ref": args.ref, "load_start": load(), "baseline": [], "this_tree": []}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "medkb"], capture_output=True,
                                 check=True).stdout
        tarfile.open(fileobj=BytesIO(archive)).extractall(tmp, filter="data")
        for _ in range(args.runs):
            if not args.skip_baseline:
                report["baseline"].append(run(Path(tmp), args.db))
                print("baseline", report["baseline"][-1], flush=True)
            report["this_tree"].append(run(ROOT, args.db))
            print("this tree", report["this_tree"][-1], flush=True)
    report["load_end"] = load()
    if report["baseline"]:
        report["speedup_wall"] = round(min(r["wall_s"] for r in report["baseline"])
                                       / min(r["wall_s"] for r in report["this_tree"]), 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
