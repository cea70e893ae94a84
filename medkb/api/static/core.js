// Shared by the console's modules: DOM building, the API client, sentences, codes, safety notes, tabs.
import { t, tv } from "./i18n.js";

export const KEY = "medkb.key";
export const $ = (id) => document.getElementById(id);
let unauthorized = () => {};

export function onUnauthorized(fn) {
  unauthorized = fn;
}

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorOf(resp) {
  try {
    const body = await resp.json();
    return new ApiError(resp.status, body?.error?.message || resp.statusText);
  } catch {
    return new ApiError(resp.status, resp.statusText);
  }
}

// Every call carries the key in a header (never in a URL); a 401 means the key stopped working: sign out.
export async function api(path, { method = "GET", body, key, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${key || sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit" });
  } catch {
    throw new ApiError(0, t("noServer"));
  }
  if (!resp.ok) {
    const err = await errorOf(resp);
    if (resp.status === 401 && !key) unauthorized(t("badKey"));
    throw err;
  }
  return raw ? resp : resp.json();
}

export function showTab(name, focus = false) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.id === `tab-${name}`;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !on;
    if (on && focus) tab.focus();
  }
  $("detail").classList.add("open");
}

// Sentences of one paragraph; a citation written after the full stop stays with its sentence.
export function sentences(text) {
  const parts = text.split(/(?<=[.!?])\s+(?=\S)|(?<=[。！？])/).map((s) => s.trim()).filter(Boolean);
  const out = [];
  for (let p of parts) {
    const lead = p.match(/^(?:\[\d+(?:\s*[,;，、]\s*\d+)*\]\s*)+/);
    if (lead && out.length) {
      out[out.length - 1] += " " + lead[0].trim();
      p = p.slice(lead[0].length).trim();
    }
    if (p) out.push(p);
  }
  return out;
}

export function dl(rows) {
  const list = h("dl", { class: "meta" });
  for (const [k, v] of rows) if (v !== null && v !== undefined && v !== "") list.append(h("dt", { text: k }), h("dd", { text: String(v) }));
  return list;
}

// ---- safety notes (shared by answers and patient 360) ------------------------------------------------------

// The notes' own scale (contraindicated > avoid > precaution > consider), plus common synonyms from other sources.
const SEVERITY = { contraindicated: 0, critical: 0, avoid: 1, severe: 1, major: 1, high: 1, precaution: 2, moderate: 2,
  medium: 2, consider: 3, minor: 3, low: 3 };
const KIND = { interaction: 0, contraindication: 1, caution: 2, adverse_reaction: 3 };

// A note that states no severity ranks as its kind's default (the server's defaults for the same kinds).
const DEFAULT_SEVERITY = { interaction: "precaution", contraindication: "contraindicated", caution: "precaution",
  adverse_reaction: "consider" };

export function bySeverity(notes) {
  const rank = (n) => [SEVERITY[String(n.severity ?? DEFAULT_SEVERITY[n.kind] ?? "").toLowerCase()] ?? 5, KIND[n.kind] ?? 9];
  return [...notes].sort((a, b) => {
    const [x, y] = [rank(a), rank(b)];
    return x[0] - y[0] || x[1] - y[1];
  });
}

function sourceText(n) {
  const src = n.source;
  if (src && typeof src === "object") return [...new Set([src.name, src.origin, src.release, src.licence || src.license].filter(Boolean))].join(" · ");
  const parts = [src, n.release].filter(Boolean);
  // Ontology provenance is often just "source release" again; show it only when it says more.
  if (n.provenance && n.provenance !== parts.join(" ")) parts.push(n.provenance);
  return parts.join(" · ");
}

export function safetyList(notes) {
  const ul = h("ul", { class: "safety" });
  for (const n of bySeverity(notes)) {
    const ents = Array.isArray(n.entities) ? n.entities : [];
    const text = n.text || [n.subject, n.object].filter(Boolean).join(n.kind === "interaction" ? " ↔ " : " → ") + (n.via ? ` (${n.via})` : "");
    const sev = n.severity ? h("span", { class: `badge sev sev-${SEVERITY[String(n.severity).toLowerCase()] ?? 5}`, text: `${t("severity")}: ${tv("sev", n.severity)}` }) : null;
    ul.append(h("li", { class: `note kind-${n.kind || "note"}` },
      h("p", { class: "note-head" }, h("span", { class: "badge kind", text: tv("kind", n.kind).replace("_", " ") }), " ", sev),
      h("p", { class: "note-text", text }),
      ents.length ? h("p", { class: "chips" }, ents.map((e) => h("span", { class: "chip static",
        text: `${e.name || ""}${e.codes ? " · " + codesText(e.codes) : ""}` }))) : null,
      h("p", { class: "note-source muted", text: `${t("source")}: ${sourceText(n) || "—"}` })));
  }
  return ul;
}

export function codesText(codes) {
  if (!codes) return "";
  if (Array.isArray(codes)) return codes.map((c) => (typeof c === "object" ? `${c.system} ${c.code}` : c)).join(", ");
  return Object.entries(codes).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join("/") : v}`).join(", ");
}

