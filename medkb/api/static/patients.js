// Patient 360: search the tenant's patients, then demographics, safety notes (most severe first) and timeline.
import { $, api, dl, h, safetyList } from "./core.js";
import { t, tv } from "./i18n.js";

let onSelect = () => {};
const view = { selected: null, summary: null, timeline: null, kind: "" };

export function initPatients(select) {
  onSelect = select;
  $("psearch").addEventListener("submit", search);
}

export function clearPatient(notify) {
  view.selected = view.summary = view.timeline = null;
  $("p360").hidden = true;
  $("p360").replaceChildren();
  for (const b of $("p-results").querySelectorAll("[aria-pressed=true]")) b.setAttribute("aria-pressed", "false");
  if (notify) onSelect(null);
}

async function search(event) {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("psearch"))) if (String(v).trim()) params.set(k, String(v).trim());
  const status = $("p-status");
  status.textContent = t("searching");
  $("p-results").replaceChildren();
  try {
    const res = await api(`/v1/patients?${params}`);
    status.textContent = res.patients.length ? t(res.more ? "foundMore" : "found", { n: res.patients.length }) : t("noPatients");
    $("p-results").replaceChildren(...res.patients.map((p) => h("li", {}, h("button", {
      type: "button", class: "patient", "data-patient": p.id, "aria-pressed": String(view.selected === p.id),
      onclick: (e) => select(p, e.currentTarget) },
    h("span", { class: "pid", text: p.id }),
    h("span", { class: "muted", text: ` ${tv("sex", p.sex) || "?"} · ${t("born", { year: p.birth_year ?? "?" })}${p.deceased ? " · " + t("deceased") : ""}` })))));
  } catch (err) {
    status.textContent = t("error", { msg: err.message });
  }
}

async function select(p, button) {
  for (const b of $("p-results").querySelectorAll("[aria-pressed=true]")) b.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  view.selected = p.id;
  onSelect(p);
  const box = $("p360");
  box.hidden = false;
  box.replaceChildren(h("p", { class: "muted", text: t("loading") }));
  try {
    const id = encodeURIComponent(p.id);
    [view.summary, view.timeline] = await Promise.all([api(`/v1/patients/${id}/summary`), api(`/v1/patients/${id}/timeline`)]);
    render360();
    box.focus();
  } catch (err) {
    box.replaceChildren(h("p", { class: "error", role: "alert", text: t("error", { msg: err.message }) }));
  }
}

const KINDS = ["encounter", "condition", "medication", "procedure", "observation", "allergy"];
const kindLabel = (k) => t(k === "condition" ? "condition_k" : k);

function timelineList() {
  const events = (view.timeline?.events || []).filter((e) => !view.kind || e.kind === view.kind);
  if (!events.length) return h("p", { class: "muted", text: t("noEvents") });
  return h("ol", { class: "timeline" }, events.map((e) => {
    const code = [e.code_system, e.code].filter(Boolean).join(" ");
    const value = e.value ? ` = ${e.value}${e.units ? " " + e.units : ""}` : "";
    const span = e.end ? t("until", { d: e.end }) : ["condition", "medication"].includes(e.kind) ? t("ongoing") : "";
    return h("li", { class: `event ev-${e.kind}` },
      h("time", { datetime: e.date || "", text: e.date || "?" }), " ",
      h("span", { class: `badge k-${e.kind}`, text: kindLabel(e.kind) }), " ",
      h("span", { class: "ev-text", text: `${e.description || e.encounter_class || ""}${value}` }),
      code ? h("span", { class: "codes muted", text: ` ${code}` }) : null,
      span ? h("span", { class: "muted", text: ` · ${span}` }) : null);
  }));
}

function render360() {
  const s = view.summary;
  if (!s) return;
  const p = s.patient;
  const filter = h("select", { id: "tl-kind", onchange: (e) => { view.kind = e.target.value; $("tl-list").replaceChildren(timelineList()); } },
    h("option", { value: "", text: t("allKinds") }), KINDS.map((k) => h("option", { value: k, text: kindLabel(k), selected: view.kind === k })));
  $("p360").replaceChildren(
    h("h3", { class: "p-title" }, h("span", { text: p.id }), p.deceased ? h("span", { class: "badge", text: t("deceased") }) : null),
    h("h4", { text: t("demographics") }),
    dl([[t("birthYear"), p.birth_year], [t("sexLabel"), tv("sex", p.sex)],
      ["", `${t("conditionsN", { n: (s.conditions || []).length })} · ${t("medicationsN", { n: (s.medications || []).length })}`]]),
    h("h4", { text: t("safety") }),
    (s.safety_notes || []).length ? safetyList(s.safety_notes) : h("p", { class: "muted", text: t("noSafety") }),
    h("h4", { text: t("timeline") }),
    h("p", { class: "tl-filter" }, h("label", { for: "tl-kind", text: t("kindFilter") }), " ", filter),
    h("div", { id: "tl-list" }, timelineList()));
}

export function relabelPatients() {
  render360();
}
