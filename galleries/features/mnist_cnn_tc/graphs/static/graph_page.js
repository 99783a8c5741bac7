// The attribution-graph page's drawing and interaction (vision_interp.features.graph_page), shared by every
// page: it reads the graph from the page's <script id="graph-data" type="application/json"> and draws it with d3.
//
// Layout: every layer is drawn as its spatial map, left to right in the graph's order (the input image under the
// pixel groups, then each block's feature map); a node sits at its (y, x) cell, several nodes of one position
// share the cell in a small grid; the target logit and the other top logits are at the top. The sliders prune
// in the page (nodes by their share of influence on the logit, edges by the flow they carry), nodes can be pinned
// into a subgraph (exported as JSON), grouped into supernodes (one feature across positions, or one label), and
// intervened on: the frozen linear model's prediction beside the real network's change (from `vision-interp
// serve` when the page is served by it, else the changes precomputed when the page was built).
(function () {
"use strict";
const DATA = JSON.parse(document.getElementById("graph-data").textContent);
const graph = document.getElementById("graph");
if (!window.d3) {  // the d3 copy is missing: show the static drawing instead of nothing
  graph.innerHTML = document.getElementById("fallback").textContent;
  return;
}
const RED = "#b2182b", BLUE = "#2166ac";  // the package's sign colours: red raises the target, blue lowers it
const FILL = {pixels: "#999", activation: "#999", feature: "#4d9221", error: "#e08214", logit: "#542788", group: "#1b7837"};
const W = 1200, PAD = 24, GAP = 36, LOGIT_H = 64, TITLE_H = 30;
const NODES = DATA.nodes, byId = new Map(NODES.map(n => [n.id, n]));
const EDGES = DATA.edges.map(([s, t, w, f]) => ({source: s, target: t, weight: w, flow: f}))
  .filter(e => byId.has(e.source) && byId.has(e.target));
const LAYERS = DATA.layers.length ? DATA.layers : [{name: "input", kind: "pixels", h: 1, w: 1}];
const layerIndex = new Map(LAYERS.map((l, i) => [l.name, i]));
const logitNode = NODES.find(n => n.kind === "logit");
const fmt = v => v === null || v === undefined ? "" : (Math.abs(v) >= 100 ? v.toFixed(1) : Math.abs(v) >= 0.01 || v === 0 ? v.toFixed(4) : v.toExponential(2));
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);

// ---------------------------------------------------------------- geometry: one square panel per layer
const nL = LAYERS.length;
const S = Math.min(300, (W - 2 * PAD - (nL - 1) * GAP) / nL);
const left0 = (W - (nL * S + (nL - 1) * GAP)) / 2;
const TOP = PAD + LOGIT_H + TITLE_H;
const H = TOP + S + PAD + 8;
const panels = LAYERS.map((l, i) => {
  const g = Math.max(l.h, l.w, 1), c = S / g;
  return Object.assign({}, l, {i, x0: left0 + i * (S + GAP), y0: TOP + (S - l.h * c) / 2, c, pw: l.w * c, ph: l.h * c});
});
function layerOf(n) {
  if (n.kind === "pixels" || n.kind === "activation") return 0;  // the leaf layer
  return layerIndex.has(n.layer) ? layerIndex.get(n.layer) : Math.min(nL - 1, 1 + (n.block ?? 0));
}
// the nodes of each cell, strongest first, laid out in a small grid inside the cell
const cells = d3.group(NODES.filter(n => n.kind !== "logit"), n => `${layerOf(n)}|${n.y}|${n.x}`);
for (const members of cells.values()) {
  members.sort((a, b) => (a.kind === "error") - (b.kind === "error") || b.influence - a.influence || a.id - b.id);
  const m = Math.ceil(Math.sqrt(members.length)), p = panels[layerOf(members[0])], slot = p.c / m;
  members.forEach((n, k) => Object.assign(n, {
    li: p.i, slot, cx: p.x0 + (n.x ?? 0) * p.c + (k % m + 0.5) * slot, cy: p.y0 + (n.y ?? 0) * p.c + (Math.floor(k / m) + 0.5) * slot}));
}
const logitItems = (DATA.logits.length ? DATA.logits : [{index: DATA.target, value: DATA.logit}]);
const LW = Math.min(150, (W - 2 * PAD) / Math.max(logitItems.length, 1));
logitItems.forEach((l, k) => Object.assign(l, {lx: W / 2 + (k - (logitItems.length - 1) / 2) * LW}));
if (logitNode) {
  const t = logitItems.find(l => l.index === DATA.target) || logitItems[0];
  Object.assign(logitNode, {li: nL, cx: t.lx, cy: PAD + LOGIT_H - 14, slot: 20});
}
const imax = d3.max(NODES, n => n.kind === "logit" ? 0 : n.influence) || 1;
const baseRadius = n => n.kind === "logit" ? 9.5 : Math.min(0.46 * n.slot, 1.6 + 7 * Math.sqrt(Math.max(n.influence, 0) / imax));

// ---------------------------------------------------------------- state
const state = {node: DATA.thresholds.node, edge: DATA.thresholds.edge, groupFeature: false, groupLabel: false,
  pinnedOnly: false, pinned: new Set(), selected: null, k: 1};
const infoOrder = NODES.filter(n => n.kind !== "logit").slice().sort((a, b) => b.influence - a.influence || a.id - b.id);
const totalInfluence = d3.sum(infoOrder, n => n.influence) || 1;

function keptNodes() {  // the smallest set of nodes carrying `state.node` of the influence (graph.prune's rule), + the logit
  let cum = 0, n = 0;
  for (const m of infoOrder) { if (cum / totalInfluence >= state.node && n > 0) break; cum += m.influence; n += 1; }
  const keep = new Set(infoOrder.slice(0, n).map(m => m.id));
  if (logitNode) keep.add(logitNode.id);
  return keep;
}
function keptEdges(keep) {  // among edges between kept nodes, the strongest carrying `state.edge` of their flow
  const cand = EDGES.filter(e => keep.has(e.source) && keep.has(e.target)).sort((a, b) => b.flow - a.flow);
  const total = d3.sum(cand, e => e.flow) || 1;
  let cum = 0;
  const out = [];
  for (const e of cand) { if (out.length && cum / total >= state.edge) break; cum += e.flow; out.push(e); }
  return out;
}
function groupKey(n) {
  if (n.kind !== "feature") return `n${n.id}`;
  if (state.groupLabel && n.name) return `label|${n.layer}|${n.name}`;
  if (state.groupFeature) return `feature|${n.layer}|${n.feature}`;
  return `n${n.id}`;
}
function display() {  // what is drawn now: display nodes (single nodes or supernodes) and aggregated edges
  let keep = keptNodes();
  if (state.pinnedOnly && state.pinned.size) keep = new Set([...state.pinned, ...(logitNode ? [logitNode.id] : [])]);
  const groups = new Map();
  for (const n of NODES) {
    if (!keep.has(n.id)) continue;
    const key = groupKey(n);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(n);
  }
  const dnodes = [];
  const of = new Map();
  for (const [key, members] of groups) {
    let d;
    if (members.length === 1) d = Object.assign(Object.create(members[0]), {key, members, single: true, r: baseRadius(members[0])});
    else {
      const first = members[0], infl = d3.sum(members, m => m.influence);
      const label = key.startsWith("label|") ? `${first.layer}: ${first.name} (${members.length} nodes)`
        : `${first.layer}:${first.feature} (${members.length} positions)`;
      d = {key, members, single: false, kind: "group", id: first.id, li: first.li, layer: first.layer, feature: first.feature,
        cx: d3.mean(members, m => m.cx), cy: d3.mean(members, m => m.cy), influence: infl, label, name: first.name,
        total_effect: d3.sum(members, m => m.total_effect || 0), value: d3.sum(members, m => m.value || 0),
        r: Math.min(14, 2.5 + 7 * Math.sqrt(infl / imax))};
    }
    members.forEach(m => of.set(m.id, d));
    dnodes.push(d);
  }
  const agg = new Map();
  for (const e of keptEdges(keep)) {
    const s = of.get(e.source), t = of.get(e.target);
    if (!s || !t || s === t) continue;
    const key = `${s.key}>${t.key}`;
    const a = agg.get(key) || {source: s, target: t, weight: 0, flow: 0, n: 0};
    a.weight += e.weight; a.flow += e.flow; a.n += 1;
    agg.set(key, a);
  }
  dnodes.sort((a, b) => a.li - b.li || (a.y ?? 0) - (b.y ?? 0) || (a.x ?? 0) - (b.x ?? 0) || a.cy - b.cy || a.cx - b.cx);
  return {keep, nodes: dnodes, edges: Array.from(agg.values()).sort((a, b) => a.flow - b.flow), of};
}

// ---------------------------------------------------------------- drawing
const svg = d3.select(graph).append("svg").attr("viewBox", `0 0 ${W} ${H}`).attr("role", "group")
  .attr("aria-label", "attribution graph");
const view = svg.append("g").attr("class", "view");
const back = view.append("g").attr("class", "panels");
for (const p of panels) {
  const g = back.append("g").attr("class", "panel").attr("data-layer", p.name);
  g.append("rect").attr("class", "panel-bg").attr("x", p.x0).attr("y", p.y0).attr("width", p.pw).attr("height", p.ph);
  if (p.kind === "pixels" && DATA.image) {  // the input image under the pixel groups
    g.append("image").attr("class", "input-image").attr("href", DATA.image).attr("x", p.x0).attr("y", p.y0)
      .attr("width", p.pw).attr("height", p.ph).attr("preserveAspectRatio", "none").attr("opacity", 0.75);
  } else if (p.i === 0 && DATA.image) {  // a chain from a hidden layer: the input it was computed from, beside the logits
    const side = LOGIT_H - 8;
    g.append("image").attr("class", "input-image").attr("href", DATA.image).attr("x", PAD).attr("y", PAD)
      .attr("width", side).attr("height", side).attr("preserveAspectRatio", "xMidYMid meet");
    g.append("text").attr("class", "input-caption").attr("x", PAD + side + 6).attr("y", PAD + 12).text("input");
  }
  const lines = [];
  for (let k = 1; k < p.h; k++) lines.push([p.x0, p.y0 + k * p.c, p.x0 + p.pw, p.y0 + k * p.c]);
  for (let k = 1; k < p.w; k++) lines.push([p.x0 + k * p.c, p.y0, p.x0 + k * p.c, p.y0 + p.ph]);
  g.selectAll("line").data(lines).join("line").attr("class", "grid").attr("x1", d => d[0]).attr("y1", d => d[1])
    .attr("x2", d => d[2]).attr("y2", d => d[3]);
  g.on("dblclick", ev => {  // zoom into a position
    const [mx, my] = d3.pointer(ev, view.node());
    svg.transition().duration(0).call(zoom.transform, d3.zoomIdentity.translate(W / 2, H / 2).scale(4).translate(-mx, -my));
  });
}
const titles = view.append("g").attr("class", "titles");
const logitG = view.append("g").attr("class", "logits");
logitG.selectAll("text").data(logitItems).join("text").attr("class", l => "logit-label" + (l.index === DATA.target ? " target" : ""))
  .attr("x", l => l.lx).attr("y", PAD + 10).attr("text-anchor", "middle")
  .text(l => `logit ${l.index}: ${fmt(l.value)}${l.index === DATA.target ? " (target)" : ""}`);
const edgeG = view.append("g").attr("class", "edges"), nodeG = view.append("g").attr("class", "nodes");
titles.raise(); logitG.raise();  // labels above the edges that pass them
let current = null, edgeSel = null, nodeSel = null;
const fmaxOf = edges => d3.max(edges, e => e.flow) || 1;

function path(e) {
  const s = e.source, t = e.target;
  if (t.kind === "logit") return `M${s.cx},${s.cy} C${s.cx},${(s.cy + t.cy) / 2} ${t.cx},${(s.cy + t.cy) / 2} ${t.cx},${t.cy}`;
  const mx = (s.cx + t.cx) / 2;
  return `M${s.cx},${s.cy} C${mx},${s.cy} ${mx},${t.cy} ${t.cx},${t.cy}`;
}
function fitText(sel, width) {  // shorten a label until it fits its panel (no overlap with the next one)
  sel.each(function () {
    const el = this;
    let s = el.textContent;
    while (el.getComputedTextLength() > width && s.length > 3) { s = s.slice(0, -2); el.textContent = s + "\u2026"; }
  });
}
function render() {
  current = display();
  const {nodes, edges} = current, fmax = fmaxOf(edges);
  const strength = e => Math.sqrt(e.flow / fmax);
  edgeSel = edgeG.selectAll("path").data(edges, e => `${e.source.key}>${e.target.key}`).join("path")
    .attr("class", "edge").attr("d", path).attr("stroke", e => e.weight > 0 ? RED : BLUE)
    .attr("stroke-width", e => (0.3 + 3 * strength(e)).toFixed(2)).attr("stroke-opacity", e => (0.12 + 0.7 * strength(e)).toFixed(2));
  nodeSel = nodeG.selectAll("circle").data(nodes, d => d.key).join(enter => {
    const c = enter.append("circle").attr("tabindex", 0).attr("role", "button");
    c.append("title");
    return c;
  }).attr("class", d => `node kind-${d.kind}` + (d.members.some(m => state.pinned.has(m.id)) ? " pinned" : ""))
    .attr("id", d => d.single ? `n${d.id}` : `g${d.id}`).attr("data-id", d => d.id).attr("data-key", d => d.key)
    .attr("aria-label", d => nodeLabel(d)).attr("cx", d => d.cx.toFixed(1)).attr("cy", d => d.cy.toFixed(1))
    .attr("r", d => (d.r / state.k).toFixed(2)).attr("fill", d => FILL[d.kind]);
  nodeSel.select("title").text(d => nodeLabel(d));
  nodeSel.order();  // DOM order = Tab order: layer by layer, row-major
  nodeSel.on("click", (ev, d) => select(d)).on("mouseenter", (ev, d) => select(d)).on("focus", (ev, d) => select(d))
    .on("keydown", keydown);
  const per = d3.rollup(nodes.filter(d => d.kind !== "logit"), v => d3.sum(v, d => d.members.length), d => d.li);
  titles.selectAll("text").data(panels).join("text").attr("class", "col").attr("x", p => p.x0 + p.pw / 2)
    .attr("y", p => p.y0 - 8).attr("text-anchor", "middle")
    .text(p => `${p.name} ${p.h}\u00d7${p.w} (${per.get(p.i) || 0})`).call(fitText, S);
  const shown = d3.sum(nodes, d => d.members.length);
  document.getElementById("counts").textContent = `${shown} nodes (${nodes.length} drawn), ${edges.length} edges` +
    (DATA.complete ? ` of the ${EDGES.length} strongest (${DATA.edges_total} in the graph)` : " (this file holds the pruned graph only)");
  document.getElementById("node-threshold-value").textContent = `${Math.round(state.node * 100)}%`;
  document.getElementById("edge-threshold-value").textContent = `${Math.round(state.edge * 100)}%`;
  if (state.selected) {
    const again = nodes.find(d => d.members.some(m => m.id === state.selected.members[0].id));
    if (again) highlight(again); else { state.selected = null; highlight(null); }
  }
  pinList();
}
function nodeLabel(d) {
  const base = d.label;
  return d.single && d.name ? `${base}: ${d.name}` : base;
}

// zoom / pan: drag on the background pans, the buttons or Ctrl + wheel zoom (a plain wheel scrolls the page)
const zoom = d3.zoom().scaleExtent([1, 16]).translateExtent([[0, 0], [W, H]])
  .filter(ev => ev.type === "wheel" ? (ev.ctrlKey || ev.metaKey) : !ev.button && !ev.target.classList.contains("node"))
  .on("zoom", ev => {  // geometric zoom for positions; nodes, labels and strokes keep their size on screen
    state.k = ev.transform.k;
    view.attr("transform", ev.transform);
    nodeSel.attr("r", d => (d.r / state.k).toFixed(2));
    view.selectAll(".col, .logit-label").style("font-size", `${11 / state.k}px`);
  });
svg.call(zoom).on("dblclick.zoom", null);
d3.select("#zoom-in").on("click", () => svg.call(zoom.scaleBy, 1.6));
d3.select("#zoom-out").on("click", () => svg.call(zoom.scaleBy, 1 / 1.6));
d3.select("#zoom-reset").on("click", () => svg.call(zoom.transform, d3.zoomIdentity));

// ---------------------------------------------------------------- cards
const edgeRow = (e, other) => `<tr><td><button type="button" class="go" data-go="${other.key}">${esc(nodeLabel(other))}</button></td>` +
  `<td>${fmt(e.weight)}</td></tr>`;
function bars(values, names) {  // a small signed bar chart (red positive, blue negative)
  const m = d3.max(values, v => Math.abs(v)) || 1;
  return `<svg class="bars" viewBox="0 0 ${values.length * 14} 44" width="${Math.min(280, values.length * 14)}" height="44" role="img" aria-label="${esc(names)}">` +
    values.map((v, i) => { const h = 20 * Math.abs(v) / m; return `<rect x="${i * 14 + 2}" y="${v > 0 ? 22 - h : 22}" width="10" height="${Math.max(h, 0.5)}" fill="${v > 0 ? RED : BLUE}"><title>${i}: ${fmt(v)}</title></rect>`; }).join("") +
    values.map((v, i) => `<text x="${i * 14 + 7}" y="42" text-anchor="middle">${i}</text>`).join("") + "</svg>";
}
function activationMap(n) {  // this feature's activation at every position of this input (nodes of the whole graph)
  const p = panels[n.li], same = NODES.filter(m => m.kind === "feature" && m.layer === n.layer && m.feature === n.feature);
  const vmax = d3.max(same, m => m.value) || 1, c = 84 / Math.max(p.h, p.w);
  return `<svg class="actmap" viewBox="0 0 ${p.w * c} ${p.h * c}" width="${p.w * c}" height="${p.h * c}" role="img" ` +
    `aria-label="activation map: ${same.length} active positions"><rect width="${p.w * c}" height="${p.h * c}" fill="#f4f4f4"/>` +
    same.map(m => `<rect x="${m.x * c}" y="${m.y * c}" width="${c}" height="${c}" fill="${RED}" fill-opacity="${(0.15 + 0.85 * m.value / vmax).toFixed(2)}"` +
      `${m.id === n.id ? ' stroke="#000" stroke-width="1"' : ""}><title>@${m.y},${m.x}: ${fmt(m.value)}</title></rect>`).join("") + "</svg>";
}
function card(d) {
  const n = d.single ? d.members[0] : d;
  let h = `<h2>${esc(d.label)}</h2>`;
  if (n.name) h += `<p class="flabel">label: <b>${esc(n.name)}</b>` + (n.score !== undefined && n.score !== null ? ` (simulation score ${fmt(n.score)})` : "") + "</p>";
  h += `<table><tr><td>kind</td><td>${d.single ? n.kind : "supernode"}</td></tr><tr><td>${d.single ? "value" : "summed value"}</td><td>${fmt(d.value)}</td></tr>` +
    `<tr><td>influence</td><td>${fmt(d.influence)}</td></tr><tr><td>total effect on logit</td><td>${fmt(d.total_effect)}</td></tr>` +
    (d.single && n.bias !== null && n.bias !== undefined ? `<tr><td>bias</td><td>${fmt(n.bias)}</td></tr>` : "") + "</table>";
  h += `<p><button type="button" id="pin-this">${d.members.every(m => state.pinned.has(m.id)) ? "unpin" : "pin"} (key P)</button></p>`;
  if (!d.single) h += `<p>members: ${d.members.slice(0, 12).map(m => esc(m.label)).join(", ")}${d.members.length > 12 ? ", \u2026" : ""}</p>`;
  if (n.kind === "feature" || d.kind === "group") {
    h += `<h3>activation map on this input</h3>${activationMap(d.members[0])}`;
    const dec = (DATA.decoders[n.layer] || {})[String(n.feature)];
    if (dec) h += `<h3>decoder weights onto the block's ${dec.length} channels</h3>${bars(dec, "decoder weights")}`;
    if (d.single && n.logits) h += `<h3>direct effect on each logit</h3>${bars(n.logits, "direct logit effects")}`;
  }
  const ins = current.edges.filter(e => e.target === d).sort((a, b) => b.flow - a.flow).slice(0, 5);
  const outs = current.edges.filter(e => e.source === d).sort((a, b) => b.flow - a.flow).slice(0, 5);
  if (ins.length) h += `<h3>strongest inputs</h3><table>${ins.map(e => edgeRow(e, e.source)).join("")}</table>`;
  if (outs.length) h += `<h3>strongest outputs</h3><table>${outs.map(e => edgeRow(e, e.target)).join("")}</table>`;
  const link = n.unit && DATA.links ? DATA.links[n.unit] : n.link;  // one entry per feature (older pages: per node)
  if (link) {
    if (link.image) h += `<p><img src="${esc(link.image)}" alt="feature visualization" width="112" height="112"></p>`;
    if (link.examples && link.examples.length) h += "<p>top dataset examples (receptive fields):<br>" +
      link.examples.map(e => `<img src="${esc(e)}" alt="dataset example" width="48" height="48">`).join(" ") + "</p>";
    h += `<p><a href="${esc(link.page)}">gallery page of this feature</a></p>`;
  }
  return h;
}
function highlight(d) {
  nodeSel.classed("sel", m => m === d);
  edgeSel.classed("in", e => e.target === d).classed("out", e => e.source === d)
    .classed("dim", e => d !== null && e.target !== d && e.source !== d);
}
function select(d) {  // the node's card, and its incoming / outgoing edges highlighted
  state.selected = d;
  highlight(d);
  const el = document.getElementById("card");
  el.innerHTML = card(d);
  d3.select(el).selectAll("button.go").on("click", function () {
    const t = current.nodes.find(m => m.key === this.dataset.go);
    if (t) focusNode(t);
  });
  d3.select("#pin-this").on("click", () => togglePin(d));
}
function focusNode(d) {  // keep the node in view when zoomed in
  if (d3.zoomTransform(svg.node()).k > 1) svg.call(zoom.translateTo, d.cx, d.cy);
  const el = nodeSel.filter(m => m === d).node();
  if (el) el.focus();
}
function neighbour(d, key) {  // the nearest drawn node in the arrow's direction (across panels too)
  const dir = {ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowDown: [0, 1], ArrowUp: [0, -1]}[key];
  if (!dir) return null;
  let best = null, bestScore = Infinity;
  for (const m of current.nodes) {
    if (m === d) continue;
    const dx = m.cx - d.cx, dy = m.cy - d.cy, along = dx * dir[0] + dy * dir[1];
    if (along <= 0.01) continue;
    const across = Math.abs(dx * dir[1] - dy * dir[0]), score = along + 2 * across;
    if (score < bestScore) { bestScore = score; best = m; }
  }
  return best;
}
function keydown(ev, d) {
  if (ev.key === "Enter" || ev.key === " ") { select(d); ev.preventDefault(); return; }
  if (ev.key === "p" || ev.key === "P") { togglePin(d); ev.preventDefault(); return; }
  const next = neighbour(d, ev.key);
  if (next) { focusNode(next); ev.preventDefault(); }
}

// ---------------------------------------------------------------- pins, subgraph export
function togglePin(d) {
  const all = d.members.every(m => state.pinned.has(m.id));
  d.members.forEach(m => all ? state.pinned.delete(m.id) : state.pinned.add(m.id));
  render();
  const again = current.nodes.find(m => m.key === d.key) || current.nodes.find(m => m.members.includes(d.members[0]));
  if (again) select(again);
}
function pinList() {
  const ul = document.getElementById("pin-list"), ids = Array.from(state.pinned);
  ul.innerHTML = ids.length ? ids.map(id => `<li>${esc(byId.get(id).label)}${byId.get(id).name ? ": " + esc(byId.get(id).name) : ""}</li>`).join("")
    : "<li>none: select a node and press P or its pin button</li>";
  document.getElementById("pin-count").textContent = String(ids.length);
}
function subgraph() {
  const ids = new Set(state.pinned);
  const pick = n => { const o = {}; for (const k of ["id", "kind", "layer", "block", "feature", "y", "x", "value", "influence", "total_effect", "name", "score"]) if (n[k] !== undefined) o[k] = n[k]; return o; };
  const groups = {};
  for (const id of ids) { const n = byId.get(id), key = groupKey(n); (groups[key] = groups[key] || []).push(id); }
  return {format: "vision_interp.subgraph/1", source: DATA.source, target: DATA.target, title: DATA.title,
    thresholds: {node: state.node, edge: state.edge}, nodes: Array.from(ids).map(id => pick(byId.get(id))),
    edges: EDGES.filter(e => ids.has(e.source) && ids.has(e.target)).map(e => ({source: e.source, target: e.target, weight: e.weight, flow: e.flow})),
    supernodes: Object.entries(groups).filter(([, v]) => v.length > 1).map(([k, v]) => ({key: k, members: v}))};
}
d3.select("#export").on("click", () => {
  const text = JSON.stringify(subgraph(), null, 1), out = document.getElementById("export-out");
  out.hidden = false;
  out.value = text;
  const url = URL.createObjectURL(new Blob([text], {type: "application/json"}));
  const a = Object.assign(document.createElement("a"), {href: url, download: "subgraph.json"});
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});
d3.select("#clear-pins").on("click", () => { state.pinned.clear(); render(); });

// ---------------------------------------------------------------- interventions
const sameSet = (a, b) => a.length === b.length && a.every(v => b.includes(v));
let server = null;  // set when the page is served by `vision-interp serve` (it announces itself in Server-Timing)
function servedByUs() {
  if (!/^https?:$/.test(location.protocol)) return false;
  const nav = performance.getEntriesByType("navigation")[0];
  return !!(nav && nav.serverTiming && nav.serverTiming.some(t => t.name === "vision-interp-serve"));
}
if (servedByUs()) {
  fetch("/api/info").then(r => r.ok ? r.json() : null).then(j => { server = j; interventionNote(); }).catch(() => {});
}
function interventionNote() {
  document.getElementById("real-source").textContent = server ? "the real network's change comes from vision-interp serve (live)"
    : DATA.interventions.length ? "the real network's change comes from changes precomputed when this page was built (" +
      DATA.interventions.length + " choices: the strongest feature nodes one by one and together, zeroed); run `vision-interp serve` " +
      "on this folder for any choice" : "no real-network changes were precomputed in this file; run `vision-interp serve` on this folder for them";
}
interventionNote();
function chosen() {
  const ids = Array.from(state.pinned).filter(id => byId.get(id).kind === "feature");
  if (!ids.length && state.selected) return state.selected.members.filter(m => m.kind === "feature").map(m => m.id);
  return ids;
}
async function runIntervention(scale) {
  const out = document.getElementById("intervention-result"), ids = chosen();
  if (!ids.length) { out.innerHTML = "<p>Pin (or select) feature nodes first.</p>"; return; }
  if (!Number.isFinite(scale)) { out.innerHTML = "<p>The scale must be a finite number.</p>"; return; }
  const predicted = d3.sum(ids, id => (scale - 1) * (byId.get(id).total_effect || 0));  // the frozen linear model: exact sum
  let real = null, source = "";
  if (server) {
    const graphDir = decodeURIComponent(location.pathname).replace(/^\//, "").replace(/\/?(index\.html)?$/, "");
    try {
      const r = await fetch("/api/intervene", {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({graph: graphDir, nodes: ids, scale})});
      const j = await r.json();
      if (r.ok) { real = j.measured; source = "vision-interp serve (live)"; } else source = `server refused: ${j.error}`;
    } catch (e) { source = `server unreachable: ${e}`; }
  } else {
    const hit = DATA.interventions.find(p => p.scale === scale && sameSet(p.nodes, ids));
    if (hit) { real = hit.measured; source = "precomputed when the page was built"; }
    else source = "not precomputed for this choice; run `vision-interp serve` on this folder";
  }
  out.innerHTML = `<table><tr><td>nodes</td><td>${ids.length} feature node${ids.length > 1 ? "s" : ""}, scale ${scale}</td></tr>` +
    `<tr><td>predicted change of logit ${DATA.target} (frozen linear model, from the graph)</td><td id="predicted">${fmt(predicted)}</td></tr>` +
    `<tr><td>real network's change (${esc(source)})</td><td id="measured">${real === null ? "\u2014" : fmt(real)}</td></tr></table>`;
}
d3.select("#run-zero").on("click", () => runIntervention(0));
d3.select("#run-scale").on("click", () => runIntervention(parseFloat(document.getElementById("scale").value)));

// ---------------------------------------------------------------- controls
const nodeSlider = document.getElementById("node-threshold"), edgeSlider = document.getElementById("edge-threshold");
nodeSlider.value = state.node; edgeSlider.value = state.edge;
nodeSlider.addEventListener("input", () => { state.node = +nodeSlider.value; render(); });
edgeSlider.addEventListener("input", () => { state.edge = +edgeSlider.value; render(); });
for (const [id, key] of [["group-feature", "groupFeature"], ["group-label", "groupLabel"], ["pinned-only", "pinnedOnly"]]) {
  const el = document.getElementById(id);
  el.checked = false;
  el.addEventListener("change", () => { state[key] = el.checked; render(); });
}
document.getElementById("group-label").disabled = !NODES.some(n => n.name);
document.getElementById("controls").hidden = false;
render();
})();
