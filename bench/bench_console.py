"""Benchmark: the clinician console's first-load weight (bytes transferred, budget 300 KB) and its time to the first
streamed answer token, side by side with the same /v1/chat request made by curl (budget: console ≤ curl + 100 ms).

    python -m bench.bench_console [--db sqlite:///PATH --key mk_...] [--rounds 7]

Without --db it builds the console tests' small real knowledge base (tests/console_kb.py, ~1 min). It starts
`medkb serve` as a subprocess on a free loopback port, drives Debian's /usr/bin/chromium through Playwright (flags
as in the browser tests), alternates console and curl rounds so both see the same machine load, and writes
bench/out/bench_console.json. Both clocks start when the request is about to be sent: the page's clock just before
the form is submitted (performance.now), curl's just before the process is spawned (its start-up is inside it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Is multiple sclerosis associated with streptococcal infection?"

# Installed in the page: time from submit to the first token text reaching the answer's DOM.
TTFT_JS = """(q) => new Promise((resolve) => {
  // The "Answering…" placeholder of the new answer goes away when its first token is appended (evidence mode's
  // token and final may arrive in one read, so the streamed text itself can be replaced before an observer runs).
  const log = document.getElementById('log');
  const before = log.querySelectorAll('.msg.bot').length;
  const obs = new MutationObserver(() => {
    const bots = log.querySelectorAll('.msg.bot');
    if (bots.length > before && !bots[bots.length - 1].querySelector('.streaming')) {
      obs.disconnect();
      resolve(performance.now() - t0);
    }
  });
  obs.observe(log, {childList: true, subtree: true, characterData: true});
  setTimeout(() => { obs.disconnect(); resolve(NaN); }, 120000);
  document.getElementById('question').value = q;
  const t0 = performance.now();
  document.getElementById('askform').requestSubmit();
})"""


def curl_ttft(base: str, key: str, question: str) -> float:
    """Milliseconds from spawning curl to the first `event: token` line on its (unbuffered) output."""
    body = json.dumps({"messages": [{"role": "user", "content": question}], "stream": True})
    t0 = time.perf_counter()
    proc = subprocess.Popen(["curl", "-sN", "-X", "POST", f"{base}/v1/chat", "-H", f"Authorization: Bearer {key}",
                             "-H", "Content-Type: application/json", "--data-binary", body],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ms = float("nan")
    for line in proc.stdout:
        if line.startswith(b"event: token"):
            ms = (time.perf_counter() - t0) * 1000
            break
    proc.stdout.read()
    proc.wait()
    return ms


def first_load(ctx: Any, base: str) -> dict[str, Any]:
    """Bytes on the wire (CDP encodedDataLength: headers + bodies) for a cold load of / until the network is idle."""
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    sizes: dict[str, int] = {}
    urls: dict[str, str] = {}
    cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    cdp.on("Network.loadingFinished", lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    t0 = time.perf_counter()
    page.goto(base + "/", wait_until="networkidle")
    ms = (time.perf_counter() - t0) * 1000
    files = {urls.get(k, k).replace(base, ""): v for k, v in sizes.items()}
    page.close()
    return {"bytes": sum(files.values()), "requests": len(files), "files": files, "load_ms": round(ms, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="an existing knowledge base (needs --key); default: build the small test KB")
    ap.add_argument("--key", help="a clinician API key of that knowledge base")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench_console.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.db:
        if not args.key:
            raise SystemExit("--db needs --key")
        db, key = args.db, args.key
    else:
        from tests.console_kb import console_kb

        kb = console_kb()
        db, key = kb.settings.database.url, kb.keys["demo-clinician"]
    from playwright.sync_api import sync_playwright

    from tests.test_console_browser import FLAGS, serve

    result: dict[str, Any] = {"question": QUESTION, "rounds": args.rounds, "cpus": os.cpu_count(),
                              "load_1min": os.getloadavg()[0]}
    with serve(db) as base:
        curl_ttft(base, key, QUESTION)  # warm the retriever's first-query paths for both sides alike
        with tempfile.TemporaryDirectory(prefix="medkb-bench-chromium-") as profile, sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", headless=True,
                                                       args=FLAGS, viewport={"width": 1280, "height": 800})
            result["first_load"] = first_load(ctx, base)
            print(f"first load: {result['first_load']['bytes']} bytes", flush=True)
            page = ctx.new_page()
            page.goto(base + "/")
            page.evaluate("(k) => sessionStorage.setItem('medkb.key', k)", key)
            page.reload()
            page.wait_for_selector("#question", state="visible")
            console, curl = [], []
            for _ in range(args.rounds):
                console.append(float(page.evaluate(TTFT_JS, QUESTION)))
                page.wait_for_selector("#askbtn:not([disabled])")
                curl.append(curl_ttft(base, key, QUESTION))
                print(f"round {len(console)}: console {console[-1]:.1f} ms, curl {curl[-1]:.1f} ms", flush=True)
            ctx.close()
    mc, mu = statistics.median(console), statistics.median(curl)
    result["ttft_ms"] = {"console": [round(x, 1) for x in console], "curl": [round(x, 1) for x in curl],
                         "console_median": round(mc, 1), "curl_median": round(mu, 1),
                         "console_minus_curl_median": round(mc - mu, 1), "ratio": round(mc / mu, 3)}
    result["budget"] = {"first_load_bytes_ok": result["first_load"]["bytes"] < 300_000,
                        "ttft_within_100ms_of_curl": mc - mu <= 100}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    fl = result["first_load"]
    print(f"first load: {fl['bytes']} bytes in {fl['requests']} requests ({fl['bytes'] / 300_000:.1%} of 300 KB)")
    print(f"time to first token, median of {args.rounds}: console {mc:.1f} ms, curl {mu:.1f} ms, "
          f"difference {mc - mu:+.1f} ms (ratio {mc / mu:.2f}); load average {result['load_1min']:.1f}")
    print(f"written to {args.out}")
    return 0 if all(result["budget"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
