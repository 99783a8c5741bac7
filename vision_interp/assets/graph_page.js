// The attribution-graph page's drawing and interaction (vision_interp.features.graph_page), shared by every
// page: it reads the graph from the page's <script id="graph-data" type="application/json"> and draws it with d3.
(function () {
"use strict";
const DATA = JSON.parse(document.getElementById("graph-data").textContent);
const NODES = DATA.nodes, EDGES = DATA.edges;
const W = 960, H = 760, PAD = 24, TOP = 48;
const RED = "#b2182b", BLUE = "#2166ac";  // the package's sign colours: red raises the target, blue lowers it
const FILL = {pixels: "#999", feature: "#4d9221", error: "#e08214", logit: "#542788"};
const graph = document.getElementById("graph");
if (!window.d3) {  // the d3 copy is missing: show the static drawing instead of nothing
  graph.innerHTML = document.getElementById("fallback").textContent;
  return;
}
const byId = new Map(NODES.map(n => [n.id, n]));
// columns in the graph's order; inside a column by position (row-major), then feature
const columns = Array.from(new Set(NODES.map(n => n.col)));
const groups = d3.group(NODES, n => n.col);
const colX = d3.scalePoint().domain(columns).range([PAD, W - PAD]).padding(0.5);
const cols = columns.map((c, ci) => {
  const members = groups.get(c).slice().sort((a, b) => d3.ascending(a.y ?? 0, b.y ?? 0) || d3.ascending(a.x ?? 0, b.x ?? 0)
    || d3.ascending(a.feature ?? 0, b.feature ?? 0) || d3.ascending(a.id, b.id));
  const y = d3.scalePoint().domain(members.map(n => n.id)).range([TOP, H - PAD]).padding(0.5);
  members.forEach((n, k) => Object.assign(n, {cx: colX(c), cy: y(n.id), ci, k}));
  return members;
});
const imax = d3.max(NODES, n => n.kind === "logit" ? 0 : n.influence) || 1;
const radius = n => n.kind === "logit" ? 9.5 : 2.5 + 7 * Math.sqrt(Math.max(n.influence, 0) / imax);
const carried = e => e.flow ?? Math.abs(e.weight);  // influence the edge carries (|weight| for older files)
const fmax = d3.max(EDGES, carried) || 1;
const strength = e => Math.sqrt(carried(e) / fmax);
const link = d3.linkHorizontal().x(n => n.cx).y(n => n.cy);

const svg = d3.select(graph).append("svg").attr("viewBox", `0 0 ${W} ${H}`).attr("role", "group")
  .attr("aria-label", "attribution graph");
const view = svg.append("g").attr("class", "view");
const colSel = view.append("g").selectAll("text").data(columns).join("text").attr("class", "col").attr("x", c => colX(c)).attr("y", PAD)
  .attr("text-anchor", "middle").text(c => `${c} (${groups.get(c).length})`);
const edgeSel = view.append("g").selectAll("path").data(EDGES.slice().reverse()).join("path")  // strongest drawn last, on top
  .attr("class", "edge").attr("d", e => link({source: byId.get(e.source), target: byId.get(e.target)}))
  .attr("stroke", e => e.weight > 0 ? RED : BLUE).attr("stroke-width", e => (0.3 + 3 * strength(e)).toFixed(2))
  .attr("stroke-opacity", e => (0.15 + 0.7 * strength(e)).toFixed(2));
const nodeSel = view.append("g").selectAll("circle").data(cols.flat()).join("circle")  // DOM order = Tab order
  .attr("class", "node").attr("id", n => `n${n.id}`).attr("data-id", n => n.id).attr("tabindex", 0).attr("role", "button")
  .attr("aria-label", n => n.label).attr("cx", n => n.cx.toFixed(1)).attr("cy", n => n.cy.toFixed(1))
  .attr("r", n => radius(n).toFixed(2)).attr("fill", n => FILL[n.kind]);
nodeSel.append("title").text(n => n.label);

// zoom / pan: drag on the background pans, the buttons or Ctrl + wheel zoom (a plain wheel scrolls the page)
const zoom = d3.zoom().scaleExtent([1, 12]).translateExtent([[0, 0], [W, H]])
  .filter(ev => ev.type === "wheel" ? (ev.ctrlKey || ev.metaKey) : !ev.button && !ev.target.classList.contains("node"))
  .on("zoom", ev => {  // geometric zoom for positions; nodes, labels and strokes keep their size on screen
    const k = ev.transform.k;
    view.attr("transform", ev.transform);
    nodeSel.attr("r", n => (radius(n) / k).toFixed(2));
    colSel.style("font-size", `${11 / k}px`);
  });
svg.call(zoom).on("dblclick.zoom", null);
d3.select("#zoom-in").on("click", () => svg.call(zoom.scaleBy, 1.6));
d3.select("#zoom-out").on("click", () => svg.call(zoom.scaleBy, 1 / 1.6));
d3.select("#zoom-reset").on("click", () => svg.call(zoom.transform, d3.zoomIdentity));

const fmt = v => v === null || v === undefined ? "" : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4));
const esc = s => String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
const row = (e, other) => `<tr><td><button type="button" class="go" data-go="${other}">${esc(byId.get(other).label)}</button></td>` +
  `<td>${fmt(e.weight)}</td></tr>`;

function card(n) {
  const ins = EDGES.filter(e => e.target === n.id).slice(0, 5), outs = EDGES.filter(e => e.source === n.id).slice(0, 5);
  let h = `<h2>${esc(n.label)}</h2><table><tr><td>kind</td><td>${n.kind}</td></tr><tr><td>value</td><td>${fmt(n.value)}</td></tr>` +
    `<tr><td>influence</td><td>${fmt(n.influence)}</td></tr><tr><td>total effect on logit</td><td>${fmt(n.total_effect)}</td></tr>` +
    (n.bias !== null && n.bias !== undefined ? `<tr><td>bias</td><td>${fmt(n.bias)}</td></tr>` : "") + "</table>";
  if (ins.length) h += `<h3>strongest inputs</h3><table>${ins.map(e => row(e, e.source)).join("")}</table>`;
  if (outs.length) h += `<h3>strongest outputs</h3><table>${outs.map(e => row(e, e.target)).join("")}</table>`;
  if (n.link) {
    if (n.link.image) h += `<p><img src="${esc(n.link.image)}" alt="feature visualization" width="112" height="112"></p>`;
    if (n.link.examples && n.link.examples.length) h += "<p>top dataset examples:<br>" +
      n.link.examples.map(e => `<img src="${esc(e)}" alt="dataset example" width="48" height="48">`).join(" ") + "</p>";
    h += `<p><a href="${esc(n.link.page)}">gallery page of this feature</a></p>`;
  }
  return h;
}

function show(n) {  // the node's card, and its incoming / outgoing edges highlighted
  nodeSel.classed("sel", m => m === n);
  edgeSel.classed("in", e => e.target === n.id).classed("out", e => e.source === n.id)
    .classed("dim", e => e.target !== n.id && e.source !== n.id);
  const el = document.getElementById("card");
  el.innerHTML = card(n);
  d3.select(el).selectAll("button.go").on("click", function () { focusNode(byId.get(+this.dataset.go)); });
}

function focusNode(n) {  // keep the node in view when zoomed in
  if (d3.zoomTransform(svg.node()).k > 1) svg.call(zoom.translateTo, n.cx, n.cy);
  document.getElementById(`n${n.id}`).focus();
}

function neighbour(n, key) {  // up/down within the column, left/right to the nearest node of the next column
  const col = cols[n.ci];
  if (key === "ArrowDown") return col[Math.min(n.k + 1, col.length - 1)];
  if (key === "ArrowUp") return col[Math.max(n.k - 1, 0)];
  const other = cols[n.ci + ({ArrowRight: 1, ArrowLeft: -1}[key] || 0)];
  return key in {ArrowRight: 1, ArrowLeft: 1} && other ? d3.least(other, m => Math.abs(m.cy - n.cy)) : null;
}

nodeSel.on("click", (ev, n) => show(n)).on("mouseenter", (ev, n) => show(n)).on("focus", (ev, n) => show(n))
  .on("keydown", (ev, n) => {
    if (ev.key === "Enter" || ev.key === " ") { show(n); ev.preventDefault(); return; }
    const next = neighbour(n, ev.key);
    if (next) { focusNode(next); ev.preventDefault(); }
  });
})();
