// The medkb clinician console: sign-in, streamed answers with citations, evidence traces, patient 360, graph.
// Plain DOM, no framework, nothing fetched from anywhere but this server. Text is always set as text, never HTML.
import { $, ApiError, KEY, api, dl, h, onUnauthorized, safetyList, sentences, showTab } from "./core.js";
import { renderGraph, renderWhy } from "./evidence.js";
import { browserLang, setLang, t, tv } from "./i18n.js";
import { clearPatient, initPatients, relabelPatients } from "./patients.js";

const state = { who: null, patient: null, answers: [] };

// ---- sign-in ------------------------------------------------------------------------------------

function showWho() {
  const who = $("who");
  who.textContent = t("whoami", { tenant: state.who.tenant, role: tv("role", state.who.role) });
  who.hidden = false;
}

function enter(who) {
  state.who = who;
  $("signin-view").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  showWho();
  const patientRole = ["clinician", "admin"].includes(who.role);
  $("patients").classList.toggle("no-patients", !patientRole);
  if (!patientRole) $("p-status").textContent = t("patientRole");
  updateScope();
  $("question").focus();
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  state.who = null;
  state.patient = null;
  $("app").hidden = true;
  $("signout").hidden = true;
  $("who").hidden = true;
  $("log").replaceChildren();
  clearPatient(false);
  $("signin-view").hidden = false;
  $("signin-error").textContent = message;
  $("key").value = "";
  $("key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  $("signin-error").textContent = "";
  try {
    const who = await api("/v1/me", { key });
    sessionStorage.setItem(KEY, key);
    $("key").value = "";
    enter(who);
  } catch (err) {
    $("signin-error").textContent = err.status === 401 ? t("badKey") : t("error", { msg: err.message });
    $("key").select();
  }
}

// ---- patient scope --------------------------------------------------------------------------------

function setPatient(p) {
  state.patient = p;
  updateScope();
}

function updateScope() {
  const scope = $("scope");
  scope.replaceChildren();
  if (state.patient) {
    scope.classList.add("scoped");
    scope.append(h("span", { text: t("scopePatient", { id: state.patient.id }) }), " ",
      h("button", { type: "button", class: "ghost small", text: t("clearPatient"), onclick: () => clearPatient(true) }));
  } else {
    scope.classList.remove("scoped");
    scope.textContent = t("scopeNone");
  }
}

// ---- the detail pane (source / why / graph) ------------------------------------------------------------

function tabKeys(event) {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  const i = tabs.indexOf(event.target);
  const step = { ArrowRight: 1, ArrowLeft: -1, Home: -i, End: tabs.length - 1 - i }[event.key];
  if (step === undefined) return;
  event.preventDefault();
  showTab(tabs[(i + step + tabs.length) % tabs.length].id.slice(4), true);
}

// ---- answers: SSE stream → rendered answer with citations ---------------------------------------------

const CITE = /\[(\d+(?:\s*[,;，、]\s*\d+)*)\]/g;
const UNSUPPORTED = "[unsupported]";

function citedNumbers(text) {
  return [...text.matchAll(CITE)].flatMap((m) => m[1].split(/[,;，、\s]+/).filter(Boolean).map(Number));
}

function sentenceEl(text, answer) {
  const unsupported = text.startsWith(UNSUPPORTED);
  const body = unsupported ? text.slice(UNSUPPORTED.length).trim() : text;
  const el = h("span", { class: unsupported ? "sent unsupported" : "sent", "data-cites": citedNumbers(body).join(" ") });
  if (unsupported) el.append(h("span", { class: "badge warn", title: t("unsupportedTitle"), text: t("unsupported") }), " ");
  let last = 0;
  for (const m of body.matchAll(CITE)) {
    el.append(body.slice(last, m.index));
    for (const n of m[1].split(/[,;，、\s]+/).filter(Boolean)) {
      el.append(h("button", { type: "button", class: "cite", "data-n": n, "aria-label": t("citeLabel", { n }),
        text: `[${n}]`, onclick: () => openCitation(answer, Number(n), el) }));
    }
    last = m.index + m[0].length;
  }
  el.append(body.slice(last), " ");
  return el;
}

// Lines of the answer; a quotation that spans lines (a record note's own line breaks) stays one paragraph.
function paragraphs(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const prev = out[out.length - 1];
    if (prev !== undefined && /^\[\d+\]/.test(prev) && (prev.match(/"/g) || []).length % 2 === 1) out[out.length - 1] += "\n" + line;
    else if (line.trim()) out.push(line);
  }
  return out;
}

const MODES = { evidence: "modeEvidence", no_evidence: "modeNoEvidence", llm: "modeLlm" };

function renderFinal(answer) {
  const { final, el } = answer;
  const body = h("div", { class: "answer-body", lang: final.language === "zh" ? "zh-CN" : "en" });
  for (const para of paragraphs(final.answer)) {
    const p = h("p", {});
    // An evidence-mode quotation ("[n] Title: "…"") is one citing unit, whatever its sentences.
    const units = /^\[\d+\]/.test(para) ? [para] : sentences(para);
    for (const s of units) p.append(sentenceEl(s, answer));
    body.append(p);
  }
  const mode = h("p", { class: `mode mode-${final.mode}`, "data-mode": final.mode, text: t(MODES[final.mode] || "modeLlm") });
  const parts = [mode, body];
  if (final.safety_notes?.length) {
    parts.push(h("details", { class: "answer-safety" }, h("summary", { text: `${t("safetyAnswer")} (${final.safety_notes.length})` }),
      safetyList(final.safety_notes)));
  }
  el.replaceChildren(...parts);
}

async function ask(event) {
  event.preventDefault();
  const q = $("question").value.trim();
  if (!q) return;
  const btn = $("askbtn");
  btn.disabled = true;
  const log = $("log");
  log.append(h("div", { class: "msg user" }, h("p", { class: "who-said", text: t("you") }), h("p", { text: q })));
  const el = h("div", { class: "msg bot", "aria-busy": "true" }, h("p", { class: "streaming muted", text: t("streaming") }));
  const stream = h("p", { class: "stream" });
  el.append(stream);
  log.append(h("div", { class: "turn" }, h("p", { class: "who-said", text: t("medkb") }), el));
  el.scrollIntoView({ block: "nearest" });
  const answer = { question: q, el, trace: null, final: null, patient: state.patient?.id || null };
  state.answers.push(answer);
  $("question").value = "";
  const body = { messages: [{ role: "user", content: q }], stream: true };
  if (answer.patient) body.patient_id = answer.patient;
  try {
    const resp = await api("/v1/chat", { method: "POST", body, raw: true });
    await readEvents(resp, (event, data) => {
      if (event === "trace") {
        answer.trace = data;
        renderWhy(answer);
      } else if (event === "token") {
        el.querySelector(".streaming")?.remove();
        stream.append(data.text);
      } else if (event === "final") {
        answer.final = data;
        renderFinal(answer);
      } else if (event === "error") {
        throw new ApiError(500, data?.error?.message || "error");
      }
    });
  } catch (err) {
    el.replaceChildren(h("p", { class: "error", role: "alert", text: t("stopped", { msg: err.message }) }));
  } finally {
    el.removeAttribute("aria-busy");
    btn.disabled = false;
  }
}

// Server-Sent Events over fetch (EventSource cannot POST or send the key in a header).
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    buf += decoder.decode(value || new Uint8Array(), { stream: !done });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
    if (done) return;
  }
}

// ---- a citation's source ---------------------------------------------------------------------------------

function words(text) {
  return new Set((text.toLowerCase().match(/[a-z0-9]{3,}|[\u4e00-\u9fff]/g) || []));
}

async function openCitation(answer, n, sentenceEl) {
  for (const s of answer.el.querySelectorAll(".sent.citing")) s.classList.remove("citing");
  sentenceEl.classList.add("citing");
  const cit = (answer.final?.citations || []).find((c) => c.n === n) || (answer.trace?.evidence || []).find((c) => c.n === n);
  const panel = $("panel-source");
  showTab("source");
  if (!cit) {
    panel.replaceChildren(h("p", { class: "error", text: t("notFound") }));
    return;
  }
  const citing = sentenceEl.textContent.replace(/\s+/g, " ").trim();
  const quote = h("figure", { class: "citing-quote" }, h("figcaption", { text: t("citedBy") }), h("blockquote", { text: citing }));
  if (cit.kind === "patient_fact" || !cit.chunk_id) {
    const f = cit.fact || {};
    panel.replaceChildren(h("h3", { text: `[${n}] ${cit.title}` }), h("p", { class: "muted", text: t("patientFact") }),
      dl([[t("source"), cit.source], ["kind", f.kind], [t("codes"), [f.code_system, f.code].filter(Boolean).join(" ")],
        [t("date"), [f.start, f.stop].filter(Boolean).join(" → ")], ["", f.description]]), quote);
    panel.focus();
    return;
  }
  panel.replaceChildren(h("p", { class: "muted", text: t("loading") }));
  try {
    const c = await api(`/v1/chunks/${encodeURIComponent(cit.chunk_id)}`);
    const cw = words(citing);
    const text = h("div", { class: "chunk-text", lang: c.language === "zh" ? "zh-CN" : null });
    for (const s of sentences(c.text)) {
      const sw = words(s);
      const shared = [...sw].filter((w) => cw.has(w)).length;
      text.append(sw.size && shared / sw.size >= 0.6 ? h("mark", { text: s }) : s, " ");
    }
    panel.replaceChildren(
      h("h3", { class: "source-title" }, `[${n}] `, h("span", { text: c.title || c.external_id || "" })),
      dl([[t("section"), c.section], [t("page"), c.page], [t("source"), c.source], [t("version"), c.version],
        [t("date"), c.effective_date], [t("docType"), c.doc_type], ["", c.superseded ? t("superseded") : null]]),
      quote, text);
    panel.querySelector("mark")?.scrollIntoView({ block: "nearest" });
    panel.focus();
  } catch (err) {
    panel.replaceChildren(h("p", { class: "error", role: "alert", text: t("error", { msg: err.message }) }));
  }
}

// ---- start ----------------------------------------------------------------------------------------------

function relabel() {
  if (state.who) showWho();
  updateScope();
  for (const a of state.answers) if (a.final) renderFinal(a);
  if (state.answers.length) renderWhy(state.answers[state.answers.length - 1]);
  renderGraph();
  relabelPatients();
}

async function start() {
  const chosen = localStorage.getItem("medkb.lang") || browserLang();
  $("lang").value = setLang(chosen);
  $("lang").addEventListener("change", (e) => {
    localStorage.setItem("medkb.lang", setLang(e.target.value));
    relabel();
  });
  $("signin").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("askform").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("askform").requestSubmit();
    }
  });
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => showTab(tab.id.slice(4)));
    tab.addEventListener("keydown", tabKeys);
  }
  $("detail-close").addEventListener("click", () => $("detail").classList.remove("open"));
  onUnauthorized(signOut);
  initPatients(setPatient);
  const key = sessionStorage.getItem(KEY);
  if (!key) return signOut();
  try {
    enter(await api("/v1/me", { key }));
  } catch (err) {
    signOut(err.status === 401 ? t("badKey") : t("error", { msg: err.message }));
  }
}

start();
