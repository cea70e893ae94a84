// "Why this evidence" (generators, ranks, graph path, fused score, linked entities) and the graph view.
import { $, api, codesText, h, showTab } from "./core.js";
import { t } from "./i18n.js";

const graph = { stack: [], data: null, error: null };
// Vocabularies made for fake data: their edges are shown flagged, never as clinical knowledge.
const SYNTHETIC = /faker|diseases-basic/i;

export function renderWhy(answer) {
  const tr = answer.trace;
  const panel = $("panel-why");
  if (!tr) return;
  const cited = new Map((tr.evidence || []).filter((e) => e.chunk_id).map((e) => [e.chunk_id, e.n]));
  const chips = h("p", { class: "chips" });
  for (const e of tr.linked_entities || []) {
    chips.append(h("button", { type: "button", class: "chip", "data-entity": e.entity_id,
      title: codesText(e.codes), text: `${e.name} · ${e.type}`, onclick: () => openEntity(e.entity_id, true) }));
  }
  if (!chips.childElementCount) chips.append(h("span", { class: "muted", text: t("noLinked") }));
  const list = h("ol", { class: "hits" });
  for (const hit of tr.hits || []) {
    const tr2 = hit.trace || {};
    const gens = h("table", { class: "gens" },
      h("caption", { text: t("generators") }),
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "" }), h("th", { scope: "col", text: t("rank") }),
        h("th", { scope: "col", text: t("score") }))),
      h("tbody", {}, Object.entries(tr2.generators || {}).map(([name, g]) =>
        h("tr", {}, h("th", { scope: "row", text: name }), h("td", { text: String(g.rank) }),
          h("td", { text: Number(g.score).toFixed(3) })))));
    const n = cited.get(hit.chunk_id);
    list.append(h("li", { class: n ? "hit cited" : "hit" },
      h("p", { class: "hit-title" }, h("strong", { text: hit.title || hit.external_id || `#${hit.chunk_id}` }),
        hit.section ? ` — ${hit.section}` : ""),
      h("p", { class: "hit-meta" },
        h("span", { class: n ? "badge ok" : "badge", text: n ? t("cited", { n }) : t(hit.gate?.passed === false ? "belowGate" : "notCited") }), " ",
        `${t("fused")} ${Number(tr2.fused_score ?? hit.score).toFixed(4)} · ${t("rank")} ${tr2.rank ?? "?"}`,
        hit.relevance !== undefined ? ` · ${t("relevance")} ${Number(hit.relevance).toFixed(2)}` : ""),
      gens,
      tr2.graph_path?.length ? h("p", { class: "path" }, `${t("graphPath")}: `, h("span", { text: tr2.graph_path.join(" → ") })) : null));
  }
  panel.replaceChildren(h("h3", { text: t("linked") }), chips, h("h3", { text: t("hits") }), list);
}

export async function openEntity(id, push = true) {
  if (push) graph.stack.push(id);
  showTab("graph");
  $("panel-graph").replaceChildren(h("p", { class: "muted", text: t("loading") }));
  try {
    graph.data = await api(`/v1/entities/${encodeURIComponent(id)}/neighbors?hops=1&limit=100`);
    graph.error = null;
  } catch (err) {
    graph.data = null;
    graph.error = err.message;
  }
  renderGraph(null);
  $("panel-graph").focus();
}

export function renderGraph() {
  const panel = $("panel-graph");
  if (graph.error) return panel.replaceChildren(h("p", { class: "error", role: "alert", text: t("error", { msg: graph.error }) }));
  if (!graph.data) return;
  const { entity, neighbors } = graph.data;
  const groups = new Map();
  for (const nb of neighbors) {
    const key = `${nb.direction === "in" ? "←" : "→"} ${nb.relation}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(nb);
  }
  const back = graph.stack.length > 1 ? h("button", { type: "button", class: "ghost small", text: `← ${t("back")}`,
    onclick: () => { graph.stack.pop(); openEntity(graph.stack[graph.stack.length - 1], false); } }) : null;
  const parts = [back, h("h3", { class: "entity-name" }, h("span", { text: entity.name }), " ", h("span", { class: "badge", text: entity.type })),
    h("p", { class: "codes" }, `${t("codes")}: `, h("span", { text: codesText(entity.codes) || "—" })),
    h("p", { class: "muted", text: t("neighbours", { n: neighbors.length }) })];
  if (!neighbors.length) parts.push(h("p", { class: "muted", text: t("noNeighbours") }));
  for (const [rel, items] of groups) {
    parts.push(h("h4", { class: "relation", text: rel }), h("ul", { class: "neighbours" }, items.map((nb) =>
      h("li", {}, h("button", { type: "button", class: "link", "data-entity": nb.id, text: nb.name, onclick: () => openEntity(nb.id) }),
        " ", h("span", { class: "badge", text: nb.type }),
        nb.codes && Object.keys(nb.codes).length ? h("span", { class: "codes", text: ` ${codesText(nb.codes)}` }) : null,
        h("span", { class: "prov muted", text: ` · ${t("provenance")}: ${nb.provenance || (nb.chunk_id ? `chunk ${nb.chunk_id}` : "—")}` }),
        SYNTHETIC.test(nb.provenance || "") ? h("span", { class: "badge warn", text: t("synthetic") }) : null))));
  }
  panel.replaceChildren(...parts.filter(Boolean));
}
