"""The clinician console in a real browser (Debian's chromium driven by Playwright) against a real `medkb serve`
subprocess on a small real knowledge base (tests/console_kb.py): sign-in, streamed cited answers, a citation's
source, Chinese, patient 360 with the timeline and a safety note, tenant isolation. Screenshots are written to
test-artifacts/console/ (gitignored). Without chromium these tests skip; with CI=true they fail instead."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console_kb import FIXTURE_SOURCE, ConsoleKB, console_kb

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "console"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTION = "Is multiple sclerosis associated with streptococcal infection?"


def _need_browser() -> Any:
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "the playwright package is not installed (pip install -e '.[test]')"
    if why is None and not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing (scripts/install_chromium.sh installs Debian's chromium)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {why}")
        pytest.skip(why)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kb() -> ConsoleKB:
    _need_browser()
    return console_kb()


@contextlib.contextmanager
def serve(db_url: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real `medkb serve` process on ``db_url`` and a free port (environment ``env`` added), stopped at the end."""
    port = _free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "medkb.cli.main", "--db", db_url, "serve",
                             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"medkb serve did not become ready: {log.read().decode()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(kb: ConsoleKB) -> Iterator[str]:
    with serve(kb.settings.database.url) as url:
        yield url


@pytest.fixture(scope="module")
def browser_context(kb: ConsoleKB) -> Iterator[Any]:
    sync_playwright = _need_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medkb-chromium-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS, locale="en-US",
            viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(30_000)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    pg = browser_context.new_page()
    try:
        yield pg
    finally:
        pg.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


# WCAG 2 contrast of every visible text run against the first opaque background behind it (AA: 4.5, large 3).
CONTRAST_JS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || c[3] === 1) return c.slice(0, 3); } return [255, 255, 255]; };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walker.nextNode());) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el.checkVisibility() || el.closest('option')) continue;
    const st = getComputedStyle(el);
    const a = lum(rgb(st.color)), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize), bold = Number(st.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) bad.push(`${ratio.toFixed(2)} ${el.tagName}.${el.className}: ${n.textContent.trim().slice(0, 40)}`);
  }
  return bad;
}"""


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_ask_cite_and_switch_to_chinese(page: Any, server: str, kb: ConsoleKB) -> None:
    from playwright.sync_api import expect

    sign_in(page, server, kb.keys["demo-clinician"] + "wrong")
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    shot(page, "01-wrong-key")
    assert page.evaluate("sessionStorage.getItem('medkb.key')") is None

    page.get_by_label("API key").fill(kb.keys["demo-clinician"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text("Tenant demo · role clinician")
    assert page.evaluate("sessionStorage.getItem('medkb.key')") == kb.keys["demo-clinician"]
    assert kb.keys["demo-clinician"] not in page.url

    page.get_by_label("Question").fill(QUESTION)
    page.get_by_label("Question").press("Enter")
    answer = page.locator(".msg.bot").last
    expect(answer.locator(".mode")).to_have_attribute("data-mode", "evidence", timeout=60_000)
    expect(answer.locator(".mode")).to_contain_text("Evidence mode")
    cites = answer.locator("button.cite")
    assert cites.count() >= 1
    shot(page, "02-answer-1280")

    first = cites.first
    n = first.get_attribute("data-n")
    first.click()
    source = page.locator("#panel-source")
    expect(source.locator("h3")).to_contain_text(f"[{n}]")
    expect(source.locator(".meta")).to_contain_text("pubmedqa-sample")  # the source name
    expect(source.locator("mark").first).to_be_visible()  # the quoted sentence, highlighted in the chunk
    expect(answer.locator(".sent.citing")).to_have_count(1)
    quoted = answer.locator(".sent.citing").inner_text()
    assert source.locator("mark").first.inner_text()[:40] in quoted
    shot(page, "03-citation-source")

    page.get_by_role("tab", name="Why this evidence").click()
    why = page.locator("#panel-why")
    expect(why.locator(".hit").first).to_contain_text("fused score")
    expect(why.locator(".gens").first).to_contain_text("bm25")
    shot(page, "04-why-evidence")

    # A linked entity's chip opens its graph neighbourhood: neighbours by relation, codes, provenance, navigable.
    chip = why.locator("button.chip").first
    name = chip.inner_text().split(" · ")[0]
    chip.click()
    graph = page.locator("#panel-graph")
    expect(graph.locator(".entity-name")).to_contain_text(name)
    expect(graph.locator(".codes").first).to_contain_text("ICD10CM")
    expect(graph.locator(".relation").first).to_be_visible()
    expect(graph.locator(".prov").first).to_contain_text("provenance")
    # diseases-basic is made for fake data: its edges are flagged, never passed off as clinical knowledge.
    expect(graph.locator(".badge.warn").first).to_contain_text("not clinical knowledge")
    shot(page, "04b-graph")
    neighbour = graph.locator("button.link").first
    target = neighbour.inner_text()
    neighbour.focus()
    page.keyboard.press("Enter")  # keyboard-operable
    expect(graph.locator(".entity-name")).to_contain_text(target)
    graph.get_by_role("button", name="Back").click()
    expect(graph.locator(".entity-name")).to_contain_text(name)
    # Tabs follow the ARIA pattern: arrow keys move between them.
    page.get_by_role("tab", name="Graph").focus()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("tab", name="Why this evidence")).to_have_attribute("aria-selected", "true")
    # Every visible form control has a label (or an aria-label, or text of its own).
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select, textarea, button')]
        .filter(e => e.offsetParent !== null && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                && !e.textContent.trim()).map(e => e.outerHTML)""")
    assert unlabelled == []
    assert page.evaluate(CONTRAST_JS) == []

    page.get_by_label("Language").select_option("zh")
    expect(page.locator("#who")).to_have_text("租户 demo · 角色 临床医生")
    expect(page.get_by_role("heading", name="患者全息视图")).to_be_visible()
    expect(answer.locator(".mode")).to_contain_text("证据模式")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    shot(page, "05-chinese")
    page.get_by_label("语言").select_option("en")

    # Nothing relevant: labelled "No evidence", no citation, never dressed up as an answer.
    page.get_by_label("Question").fill("Which cryptocurrency wallet supports lightning payments?")
    page.get_by_label("Question").press("Enter")
    none = page.locator(".msg.bot").last
    expect(none.locator(".mode")).to_have_attribute("data-mode", "no_evidence", timeout=60_000)
    expect(none.locator(".mode")).to_contain_text("No evidence")
    expect(none.locator("button.cite")).to_have_count(0)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('medkb.key')") is None


def test_patient_360_timeline_safety_and_tenant_isolation(page: Any, server: str, kb: ConsoleKB) -> None:
    from playwright.sync_api import expect

    sign_in(page, server, kb.keys["demo-clinician"])
    expect(page.locator("#who")).to_contain_text("demo")
    # Another tenant's patient: not listed, not found by its id, not reachable with this key.
    page.get_by_role("button", name="Search").click()
    results = page.locator("#p-results button.patient")
    expect(results).to_have_count(len(kb.demo_patients))
    listed = {results.nth(i).get_attribute("data-patient") for i in range(results.count())}
    assert listed == set(kb.demo_patients) and kb.other_fixture_patient not in listed
    page.get_by_label("Pseudonymous id").fill(kb.other_fixture_patient)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#p-status")).to_have_text("No patient of your tenant matches.")
    status = page.evaluate("""async (pid) => (await fetch(`/v1/patients/${pid}/summary`,
        {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('medkb.key')}})).status""",
                           kb.other_fixture_patient)
    assert status == 404

    page.get_by_label("Pseudonymous id").fill("")
    page.get_by_label("Condition (code or words)").fill("fibrillation")
    page.get_by_role("button", name="Search").click()
    expect(results).to_have_count(1)
    results.first.click()
    p360 = page.locator("#p360")
    expect(p360.locator(".p-title")).to_contain_text(kb.fixture_patient)
    expect(p360.locator(".meta")).to_contain_text("1948")
    # Most severe first: the contraindication (aspirin in peptic ulcer) above the interaction, each with its source.
    notes = p360.locator(".safety .note")
    expect(notes).to_have_count(2)
    expect(notes.nth(0)).to_contain_text("contraindication")
    expect(notes.nth(0)).to_contain_text("peptic ulcer")
    expect(notes.nth(1)).to_contain_text("interaction")
    expect(notes.nth(1)).to_contain_text("warfarin")
    for i in range(2):
        expect(notes.nth(i).locator(".note-source")).to_contain_text(FIXTURE_SOURCE)
    timeline = p360.locator(".timeline .event")
    expect(timeline.filter(has_text="Warfarin")).to_have_count(1)
    for kind in ("encounter", "condition", "medication", "procedure", "observation"):
        expect(p360.locator(f".timeline .ev-{kind}").first).to_be_visible()
    expect(page.locator("#scope")).to_contain_text(kb.fixture_patient)
    shot(page, "06-patient-360-1280")
    assert page.evaluate(CONTRAST_JS) == []

    # Asking now is scoped to the patient: their own record facts are among the citations.
    page.get_by_label("Question").fill("Does the patient take warfarin?")
    page.get_by_role("button", name="Ask", exact=True).click()
    answer = page.locator(".msg.bot").last
    expect(answer.locator(".mode")).to_be_visible(timeout=60_000)
    expect(answer).to_contain_text("Warfarin")

    page.set_viewport_size({"width": 768, "height": 1024})
    expect(page.locator("#detail")).to_be_hidden()  # a drawer at tablet width, until something opens it
    answer.locator("button.cite").last.click()
    expect(page.locator("#detail")).to_be_visible()
    shot(page, "07-tablet-768")
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#detail")).to_be_hidden()
    shot(page, "08-tablet-768-patient")


def test_language_follows_the_browser_until_chosen(browser_context: Any, server: str) -> None:
    from playwright.sync_api import expect

    page = browser_context.new_page()
    try:
        page.add_init_script("Object.defineProperty(navigator, 'languages', {get: () => ['zh-CN', 'en']});"
                             "localStorage.removeItem('medkb.lang');")
        page.goto(server + "/")
        expect(page.get_by_role("heading", name="登录")).to_be_visible()
        expect(page.get_by_label("语言")).to_have_value("zh")
        page.get_by_label("API 密钥").fill("mk_nope_nope")
        page.get_by_role("button", name="登录").click()
        expect(page.get_by_role("alert")).to_contain_text("未被接受")
    finally:
        page.close()


def _llm_launcher() -> Any:
    spec = importlib.util.spec_from_file_location("llama_server", ROOT / "scripts" / "llama_server.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.llm
def test_generated_answer_marks_unsupported_sentences(browser_context: Any, kb: ConsoleKB) -> None:
    """A real local LLM (SmolLM2-135M under llama-cpp's server, as in test_llm_local.py): the console shows a
    generated answer labelled as such, and marks exactly the sentences the server flagged unsupported."""
    from playwright.sync_api import expect

    ls = _llm_launcher()
    reason = ls.server_available()
    if reason:
        pytest.skip(f"local LLM server unavailable: {reason}")
    proc, base = ls.start_server()
    env = {"MEDKB_LLM_MODEL": "openai/smollm2", "MEDKB_LLM_API_BASE": base, "MEDKB_LLM_API_KEY": "x",
           "MEDKB_LLM_MAX_TOKENS": "48", "MEDKB_LLM_TIMEOUT_S": "120"}
    page = browser_context.new_page()
    try:
        with serve(kb.settings.database.url, env) as url:
            sign_in(page, url, kb.keys["demo-clinician"])
            page.get_by_label("Question").fill(QUESTION)
            with page.expect_response(f"{url}/v1/chat") as resp:
                page.get_by_label("Question").press("Enter")
            answer = page.locator(".msg.bot").last
            expect(answer.locator(".mode")).to_be_visible(timeout=90_000)
            events = resp.value.text().split("\n\n")
            final = json.loads(next(e for e in events if e.startswith("event: final")).split("data: ", 1)[1])
            assert final["mode"] == "llm"
            expect(answer.locator(".mode")).to_contain_text("Generated answer")
            flagged = final.get("unsupported_sentences") or []
            expect(answer.locator(".sent.unsupported")).to_have_count(len(flagged))
            if flagged:
                expect(answer.locator(".sent.unsupported .badge").first).to_have_text("unsupported")
            shot(page, "09-generated-answer")
    finally:
        page.close()
        proc.terminate()
        proc.wait(10)
