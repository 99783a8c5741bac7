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
STATIC_FILES = (D3_FILE, "graph_page.js", "graph_page.css")  # what every page loads, one shared copy per folder


def _asset(name: str) -> bytes:
    return (importlib.resources.files("vision_interp") / "assets" / name).read_bytes()


def d3_source() -> bytes:
    """The vendored d3 bundle (package data; version and sha256 in ``vision_interp/assets/README.md``)."""
    return _asset(D3_FILE)


def write_static(static_dir: str | Path, name: str) -> Path:
    """``static_dir/name`` from the package's assets, written atomically unless an identical copy is there."""
    path, data = Path(static_dir) / name, _asset(name)
    if path.is_file() and path.read_bytes() == data:
        return path
    return vio.atomic_write_bytes(path, data)


def write_d3(static_dir: str | Path) -> Path:
    """``static_dir/d3.min.js``, written atomically unless an identical copy is already there."""
    return write_static(static_dir, D3_FILE)


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
                    static: str = "static") -> str:
    """The page for a graph document (:func:`vision_interp.features.tc_graph_io.graph_json` plus its header);
    ``static`` is the relative URL of the folder holding :data:`STATIC_FILES` (see :func:`write_graph_page`)."""
    links = links or {}
    edges = [{k: e[k] for k in ("source", "target", "weight", "flow") if k in e} for e in doc["edges"][:max_edges]]
    title = html.escape(title or f"Attribution graph: {doc.get('source', '')}")
    base = html.escape(static.rstrip("/"))
    subs = {"%%TITLE%%": title, "%%HEAD%%": graph_head(doc), "%%D3%%": f"{base}/{D3_FILE}", "%%JS%%": f"{base}/graph_page.js",
            "%%CSS%%": f"{base}/graph_page.css", "%%FALLBACK%%": graph_svg(doc, max_edges=max_edges),
            "%%DATA%%": _json_script({"nodes": [_node_data(n, links) for n in doc["nodes"]], "edges": edges})}
    page = PAGE
    for key, value in subs.items():
        page = page.replace(key, value)
    return page


def write_graph_page(doc: dict, out: str | Path, *, links: dict[str, dict] | None = None, title: str = "",
                     static_dir: str | Path | None = None) -> Path:
    """Write ``out`` (an .html file) atomically, and the d3 copy, script and style it loads into ``static_dir``
    (default ``<out's folder>/static``; a set of pages shares one folder)."""
    out = Path(out)
    folder = Path(static_dir) if static_dir is not None else out.parent / "static"
    for name in STATIC_FILES:
        write_static(folder, name)
    rel = Path(os.path.relpath(folder, out.parent)).as_posix()
    return vio.atomic_write_text(out, graph_page_html(doc, links=links, title=title, static=rel))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<link rel="stylesheet" href="%%CSS%%">
</head>
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
<script id="graph-data" type="application/json">%%DATA%%</script>
<script src="%%D3%%"></script>
<script src="%%JS%%"></script>
<script>if (!document.querySelector("#graph svg")) {  // a static file missing: the drawing without script instead of nothing
  document.getElementById("graph").innerHTML = document.getElementById("fallback").textContent; }</script>
</body></html>
"""
