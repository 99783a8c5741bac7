"""The attribution-graph page: one static HTML file (inline SVG, a few lines of script, no server, no CDN).

Columns left to right follow the graph's order: pixel groups, then per block its features and its
error nodes, then the logit. Inside a column nodes are ordered by position (row-major), then
feature; a node's radius grows with its influence on the logit. Edges are drawn blue (positive) or
red (negative), the ``max_edges`` edges that carry the most influence on the logit, wider the more they carry. Every node is a
focusable button: Tab / arrow keys move between nodes, Enter, click or hover shows its card (values,
strongest inputs and outputs; with ``links`` from :func:`gallery_links` its visualization, top dataset
examples and a link to its gallery page).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .. import io as vio

__all__ = ["graph_page_html", "write_graph_page", "gallery_links"]

WIDTH, HEIGHT, PAD = 960, 620, 24


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
    import os

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
    """The graph drawn as one static SVG (columns by layer, edges by sign and the influence they carry);
    the page adds its cards and keyboard navigation, a notebook shows it as it is."""
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


def graph_page_html(doc: dict, *, links: dict[str, dict] | None = None, title: str = "", max_edges: int = 400) -> str:
    """The page for a graph document (:func:`vision_interp.features.tc_graph_io.graph_json` plus its header)."""
    links = links or {}
    nodes, edges = doc["nodes"], doc["edges"][:max_edges]
    svg = graph_svg(doc, max_edges=max_edges)
    data = [{"id": n["id"], "label": _label(n), "kind": n["kind"], "value": n.get("value"), "influence": n["influence"],
             "total_effect": n.get("total_effect"), "bias": n.get("bias"),
             "link": links.get(f"{n['layer']}:{n['feature']}") if n["kind"] == "feature" else None} for n in nodes]
    return PAGE.format(title=html.escape(title or f"Attribution graph: {doc.get('source', '')}"), head=graph_head(doc), svg=svg,
                       data=json.dumps(data).replace("</", "<\\/"), edges=json.dumps(edges).replace("</", "<\\/"))


def write_graph_page(doc: dict, out: str | Path, *, links: dict[str, dict] | None = None, title: str = "") -> Path:
    """Write ``out`` (an .html file) atomically."""
    return vio.atomic_write_text(Path(out), graph_page_html(doc, links=links, title=title))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; padding: 12px; box-sizing: border-box; max-width: 100%; }}
main {{ display: flex; flex-wrap: wrap; gap: 12px; }}
#graph {{ flex: 1 1 600px; min-width: 0; }}
svg {{ width: 100%; height: auto; display: block; border: 1px solid #ddd; }}
.col {{ font-size: 11px; fill: #333; }}
.node {{ cursor: pointer; stroke: #fff; stroke-width: 0.8; }}
.node:focus, .node.sel {{ stroke: #000; stroke-width: 2.5; outline: none; }}
.edge.dim {{ stroke-opacity: 0.03; }}
#card {{ flex: 0 1 300px; min-width: 0; border: 1px solid #ddd; padding: 8px; overflow-wrap: anywhere; }}
#card table {{ border-collapse: collapse; width: 100%; }} #card td {{ padding: 1px 4px; vertical-align: top; }}
</style></head>
<body>
<h1>{title}</h1>
<p id="summary">{head}</p>
<p>Red edges raise their target, blue edges lower it. Tab or arrow keys move between nodes; Enter, click or hover shows a node.</p>
<main><div id="graph">{svg}</div>
<aside id="card" aria-live="polite"><p>Select a node.</p></aside></main>
<script>
const NODES = {data};
const EDGES = {edges};
const byId = new Map(NODES.map(n => [n.id, n]));
const circles = Array.from(document.querySelectorAll('.node'));
function fmt(v) {{ return v === null || v === undefined ? '' : (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4)); }}
function esc(s) {{ return String(s).replace(/[&<>"]/g, c => ({{'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}})[c]); }}
function show(id) {{
  const n = byId.get(id);
  circles.forEach(c => c.classList.toggle('sel', +c.dataset.id === id));
  document.querySelectorAll('.edge').forEach(e => e.classList.toggle('dim', +e.dataset.s !== id && +e.dataset.t !== id));
  const ins = EDGES.filter(e => e.target === id).slice(0, 5), outs = EDGES.filter(e => e.source === id).slice(0, 5);
  const row = (e, other) => `<tr><td>${{esc(byId.get(other).label)}}</td><td>${{fmt(e.weight)}}</td></tr>`;
  let h = `<h2>${{esc(n.label)}}</h2><table><tr><td>kind</td><td>${{n.kind}}</td></tr><tr><td>value</td><td>${{fmt(n.value)}}</td></tr>` +
          `<tr><td>influence</td><td>${{fmt(n.influence)}}</td></tr><tr><td>total effect on logit</td><td>${{fmt(n.total_effect)}}</td></tr>` +
          (n.bias !== null && n.bias !== undefined ? `<tr><td>bias</td><td>${{fmt(n.bias)}}</td></tr>` : '') + `</table>`;
  if (ins.length) h += `<h3>strongest inputs</h3><table>${{ins.map(e => row(e, e.source)).join('')}}</table>`;
  if (outs.length) h += `<h3>strongest outputs</h3><table>${{outs.map(e => row(e, e.target)).join('')}}</table>`;
  if (n.link) {{
    if (n.link.image) h += `<p><img src="${{esc(n.link.image)}}" alt="feature visualization" width="112" height="112"></p>`;
    if (n.link.examples && n.link.examples.length) h += `<p>top dataset examples:<br>` +
      n.link.examples.map(e => `<img src="${{esc(e)}}" alt="dataset example" width="48" height="48">`).join(' ') + `</p>`;
    h += `<p><a href="${{esc(n.link.page)}}">gallery page of this feature</a></p>`;
  }}
  document.getElementById('card').innerHTML = h;
}}
circles.forEach((c, i) => {{
  c.addEventListener('click', () => show(+c.dataset.id));
  c.addEventListener('mouseenter', () => show(+c.dataset.id));
  c.addEventListener('focus', () => show(+c.dataset.id));
  c.addEventListener('keydown', ev => {{
    if (ev.key === 'Enter' || ev.key === ' ') {{ show(+c.dataset.id); ev.preventDefault(); }}
    const step = {{ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1}}[ev.key];
    if (step) {{ circles[(i + step + circles.length) % circles.length].focus(); ev.preventDefault(); }}
  }});
}});
</script>
</body></html>
"""
