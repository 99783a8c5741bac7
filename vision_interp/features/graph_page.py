"""The attribution-graph page: one static HTML file drawn by the vendored d3 (no server, no CDN, no network).

The page embeds the graph as JSON and loads ``d3.min.js`` (``vision_interp/assets``, copied next to
the page as ``static/d3.min.js`` and referenced relatively). d3 draws it: columns left to right follow
the graph's order (pixel groups, then per block its features and its error nodes, then the logit);
inside a column nodes are ordered by position (row-major), then feature; a node's radius grows with
its influence on the logit. Edges are the ``max_edges`` that carry the most influence ('flow'), red
when they raise their target and blue when they lower it (the package's sign colours), wider and
more opaque the more they carry. Every node is a focusable button: Tab moves through them in column
order, arrow keys move within a column (up/down) and across columns (left/right); Enter, click,
hover or focus shows its card (values, strongest inputs and outputs; with ``links`` from
:func:`gallery_links` its visualization, top dataset examples and a link to its gallery page) and
highlights its incoming and outgoing edges. Wheel / drag zooms and pans. A ``<noscript>`` fallback
holds the server-side drawing of :func:`graph_svg` (also what a notebook shows).
"""

from __future__ import annotations

import html
import importlib.resources
import json
import os
from pathlib import Path

from .. import io as vio

__all__ = ["graph_page_html", "write_graph_page", "gallery_links", "graph_svg", "graph_head", "d3_source", "write_d3"]

WIDTH, HEIGHT, PAD = 960, 620, 24
D3_FILE = "d3.min.js"


def d3_source() -> bytes:
    """The vendored d3 bundle (package data; version and sha256 in ``vision_interp/assets/README.md``)."""
    return (importlib.resources.files("vision_interp") / "assets" / D3_FILE).read_bytes()


def write_d3(static_dir: str | Path) -> Path:
    """``static_dir/d3.min.js``, written atomically unless an identical copy is already there."""
    path, data = Path(static_dir) / D3_FILE, d3_source()
    if path.is_file() and path.read_bytes() == data:
        return path
    return vio.atomic_write_bytes(path, data)


def _column(n: dict) -> str:
    return {"pixels": "pixels", "logit": "logit"}.get(n["kind"], f"{n['layer']} {n['kind']}s")


def _label(n: dict) -> str:
    if n["kind"] == "pixels":
        return f"pixels {n['box'][0]}..{n['box'][2] - 1}, {n['box'][1]}..{n['box'][3] - 1}"
    if n["kind"] == "feature":
        return f"{n['layer']}:{n['feature']}@{n['y']},{n['x']}"
    if n["kind"] == "error":
        return f"{n['layer']} error @{n['y']},{n['x']}"
    return f"logit {n['target']}"


def _layout(nodes: list[dict]) -> tuple[list[str], dict[int, tuple[float, float]]]:
    columns: list[str] = []
    for n in nodes:
        if _column(n) not in columns:
            columns.append(_column(n))
    pos = {}
    for ci, col in enumerate(columns):
        members = sorted((n for n in nodes if _column(n) == col), key=lambda n: (n.get("y", 0), n.get("x", 0), n.get("feature", 0)))
        x = PAD + (WIDTH - 2 * PAD) * (ci + 0.5) / len(columns)
        for k, n in enumerate(members):
            pos[n["id"]] = (x, PAD + 20 + (HEIGHT - 2 * PAD - 20) * (k + 0.5) / len(members))
    return columns, pos


def gallery_links(galleries: list[str | Path], page_dir: str | Path) -> dict[str, dict]:
    """``{unit: {"page", "image", "examples"}}`` from gallery manifests, as paths relative to ``page_dir``."""
    out: dict[str, dict] = {}
    for g in galleries:
        g = Path(g)
        manifest = vio.load_json(g / "manifest.json")
        rel = lambda f: Path(os.path.relpath(g / f, page_dir)).as_posix()  # noqa: E731
        for unit, u in manifest.get("units", {}).items():
            files = u.get("files") or {}
            if "page" in files:
                top = (u.get("examples") or {}).get("top") or []
                out[unit] = {"page": rel(files["page"]), "image": rel(files["main"]) if files.get("main") else None,
                             "examples": [rel(e["patch"]) for e in top[:4] if e.get("patch")]}
    return out


def graph_svg(doc: dict, *, max_edges: int = 400) -> str:
    """The graph drawn as one static SVG, no script (columns by layer, edges by sign and the influence they
    carry): what a notebook shows, and the page's ``<noscript>`` fallback (the page itself draws with d3)."""
    nodes, edges = doc["nodes"], doc["edges"][:max_edges]
    columns, pos = _layout(nodes)
    strength = lambda e: e.get("flow", abs(e["weight"]))  # noqa: E731 - influence carried (or |weight| for older files)
    wmax = max((strength(e) for e in edges), default=1.0) or 1.0
    imax = max((n["influence"] for n in nodes), default=1.0) or 1.0
    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="attribution graph">']
    for ci, col in enumerate(columns):
        x = PAD + (WIDTH - 2 * PAD) * (ci + 0.5) / len(columns)
        parts.append(f'<text class="col" x="{x:.1f}" y="{PAD}" text-anchor="middle">{html.escape(col)}</text>')
    for e in edges:
        (x1, y1), (x2, y2) = pos[e["source"]], pos[e["target"]]
        colour = "#b2182b" if e["weight"] > 0 else "#2166ac"  # red raises, blue lowers: the package's sign colours (images.py)
        parts.append(f'<line class="edge" data-s="{e["source"]}" data-t="{e["target"]}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" '
                     f'y2="{y2:.1f}" stroke="{colour}" stroke-width="{0.3 + 3 * (strength(e) / wmax) ** 0.5:.2f}" '
                     f'stroke-opacity="{0.15 + 0.7 * (strength(e) / wmax) ** 0.5:.2f}"/>')
    fills = {"pixels": "#999", "feature": "#4d9221", "error": "#e08214", "logit": "#542788"}
    for n in nodes:
        x, y = pos[n["id"]]
        r = 2.5 + 7 * (1.0 if n["kind"] == "logit" else (n["influence"] / imax) ** 0.5)
        parts.append(f'<circle class="node" id="n{n["id"]}" data-id="{n["id"]}" tabindex="0" role="button" '
                     f'aria-label="{html.escape(_label(n))}" cx="{x:.1f}" cy="{y:.1f}" r="{r:.2f}" fill="{fills[n["kind"]]}"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def graph_head(doc: dict) -> str:
    """One sentence of the graph's measured figures (escaped HTML)."""
    s = doc.get("summary", {})
    return (f"{html.escape(doc.get('source', ''))}, target logit {doc.get('target')} (value {s.get('logit')}): {s.get('nodes')} nodes, "
            f"{s.get('pruned_kept_nodes')} kept for {s.get('pruned_threshold', 0):.0%} of the influence; error nodes carry "
            f"{s.get('pruned_error_share', 0):.1%} of it. Sum rule residual {s.get('sum_rule_residual', 0):.1e}.")


def _node_data(n: dict, links: dict[str, dict]) -> dict:
    """What the page's script needs of a node: its column, grid position (for the order), label, figures, links."""
    unit = f"{n['layer']}:{n['feature']}" if n["kind"] == "feature" else None
    return {"id": n["id"], "col": _column(n), "label": _label(n), "kind": n["kind"], "y": n.get("y"), "x": n.get("x"),
            "feature": n.get("feature"), "value": n.get("value"), "influence": n["influence"],
            "total_effect": n.get("total_effect"), "bias": n.get("bias"), "link": links.get(unit) if unit else None}


def _json_script(obj) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj).replace("</", "<\\/")


def graph_page_html(doc: dict, *, links: dict[str, dict] | None = None, title: str = "", max_edges: int = 400,
                    d3_src: str = f"static/{D3_FILE}") -> str:
    """The page for a graph document (:func:`vision_interp.features.tc_graph_io.graph_json` plus its header);
    ``d3_src`` is the relative URL of the d3 copy (see :func:`write_graph_page`)."""
    links = links or {}
    edges = [{k: e[k] for k in ("source", "target", "weight", "flow") if k in e} for e in doc["edges"][:max_edges]]
    title = html.escape(title or f"Attribution graph: {doc.get('source', '')}")
    subs = {"%%TITLE%%": title, "%%HEAD%%": graph_head(doc), "%%D3%%": html.escape(d3_src),
            "%%FALLBACK%%": graph_svg(doc, max_edges=max_edges),
            "%%NODES%%": _json_script([_node_data(n, links) for n in doc["nodes"]]), "%%EDGES%%": _json_script(edges)}
    page = PAGE
    for key, value in subs.items():
        page = page.replace(key, value)
    return page


def write_graph_page(doc: dict, out: str | Path, *, links: dict[str, dict] | None = None, title: str = "",
                     static_dir: str | Path | None = None) -> Path:
    """Write ``out`` (an .html file) atomically, and the d3 copy it loads into ``static_dir``
    (default ``<out's folder>/static``; a set of pages can share one folder)."""
    out = Path(out)
    d3 = write_d3(static_dir if static_dir is not None else out.parent / "static")
    src = Path(os.path.relpath(d3, out.parent)).as_posix()
    return vio.atomic_write_text(out, graph_page_html(doc, links=links, title=title, d3_src=src))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; padding: 12px; box-sizing: border-box; max-width: 100%; }
main { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
#graph { flex: 1 1 600px; min-width: 0; }
#graph svg { width: 100%; height: auto; display: block; border: 1px solid #ddd; cursor: grab; }
.col { font-size: 11px; fill: #333; }
.node { cursor: pointer; stroke: #fff; stroke-width: 0.8; }
.node:focus, .node.sel { stroke: #000; stroke-width: 2.5; outline: none; }
.edge { fill: none; }
.edge, .node { vector-effect: non-scaling-stroke; }
.edge.dim { stroke-opacity: 0.04; }
.edge.in, .edge.out { stroke-opacity: 0.95; }
#tools { margin: 4px 0; } #tools button { font: inherit; }
.key { display: inline-block; width: 10px; height: 10px; border-radius: 50%; vertical-align: -1px; }
.line { display: inline-block; width: 18px; height: 3px; vertical-align: 3px; }
#card { flex: 0 1 300px; min-width: 0; border: 1px solid #ddd; padding: 8px; overflow-wrap: anywhere; }
#card table { border-collapse: collapse; width: 100%; } #card td { padding: 1px 4px; vertical-align: top; }
#card button.go { font: inherit; border: 0; background: none; padding: 0; color: #0645ad; text-decoration: underline;
  cursor: pointer; text-align: left; overflow-wrap: anywhere; }
</style></head>
<body>
<h1>%%TITLE%%</h1>
<p id="summary">%%HEAD%%</p>
<p><span class="line" style="background:#b2182b"></span> red edges raise their target,
<span class="line" style="background:#2166ac"></span> blue edges lower it (wider: more influence carried).
Nodes: <span class="key" style="background:#999"></span> pixel groups,
<span class="key" style="background:#4d9221"></span> transcoder features,
<span class="key" style="background:#e08214"></span> error nodes,
<span class="key" style="background:#542788"></span> the logit (larger: more influence on it).
Tab moves through the nodes, arrow keys move within (up/down) and across (left/right) columns; Enter, click or hover
shows a node. Drag pans; the buttons or Ctrl + wheel zoom.</p>
<div id="tools"><button type="button" id="zoom-in">zoom in</button> <button type="button" id="zoom-out">zoom out</button>
<button type="button" id="zoom-reset">reset view</button></div>
<main><div id="graph"><noscript id="fallback">%%FALLBACK%%</noscript></div>
<aside id="card" aria-live="polite"><p>Select a node.</p></aside></main>
<script src="%%D3%%"></script>
<script>
(function () {
"use strict";
const NODES = %%NODES%%;
const EDGES = %%EDGES%%;
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
</script>
</body></html>
"""
