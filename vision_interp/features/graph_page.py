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
from .graph_files import KINDS, _pack, _r, _unpack, page_edges, page_nodes  # noqa: F401 - the packed page columns

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
    return {"pixels": "pixels", "activation": f"{n['layer']} (leaves)", "logit": "logit"}.get(n["kind"], f"{n['layer']} {n['kind']}s")


def _label(n: dict) -> str:
    if n["kind"] == "pixels":
        return f"pixels {n['box'][0]}..{n['box'][2] - 1}, {n['box'][1]}..{n['box'][3] - 1}"
    if n["kind"] == "activation":  # a group of a hidden layer's positions (all channels): a chain from that layer
        return f"{n['layer']} {n['box'][0]}..{n['box'][2] - 1}, {n['box'][1]}..{n['box'][3] - 1}"
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
    fills = {"pixels": "#999", "activation": "#999", "feature": "#4d9221", "error": "#e08214", "logit": "#542788"}
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


PAGE_FORMAT = "vision_interp.graph_page/3"
MAX_PAGE_EDGES = 4000  # edges the page can show (strongest by flow); the sliders choose among them


def _node_data(n: dict, links: dict[str, dict], labels: dict) -> dict:
    """What the page's script needs of a node: kind, layer, grid position, figures, label and links."""
    unit = f"{n['layer']}:{n['feature']}" if n["kind"] == "feature" else None
    lab = (labels.get(n["layer"]) or {}).get(str(n.get("feature"))) if unit else None
    out = {"id": n["id"], "col": _column(n), "label": _label(n), "kind": n["kind"], "layer": n.get("layer"),
           "block": n.get("block"), "y": n.get("y"), "x": n.get("x"), "feature": n.get("feature"), "value": n.get("value"),
           "influence": n["influence"], "total_effect": None if n.get("total_effect") is None else _r(n["total_effect"], 9),
           "bias": n.get("bias")}
    if unit and unit in links:
        out["unit"] = unit  # its gallery links sit once per feature in the data's "links" (not once per position)
    if lab:
        out["name"], out["score"] = lab.get("label"), lab.get("score")
    if n.get("logits") is not None:
        out["logits"] = n["logits"]
    if n["kind"] in ("pixels", "activation"):
        out["box"] = n.get("box")
    return out


def page_extras(builder, graph, image, *, labels: dict | None = None, top_logits: int = 5, max_edges: int = MAX_PAGE_EDGES,
                precompute: int = 8) -> dict:
    """``{"page": ...}``: what the page needs beyond the pruned graph (:func:`tc_graph_io.graph_json`), so that it
    can prune, group and intervene by itself: every node of the whole graph with its influence and total effect,
    the ``max_edges`` edges carrying the most flow (and the share of all flow they carry), the input image (a PNG
    data URI for the page, an exact float32 copy for ``vision-interp serve``), the top logits, each shown feature's
    decoder weights onto the block's channels, the direct logit effects of the last block's nodes, labels, and the
    real network's change for the ``precompute`` feature nodes of largest |total effect| (one by one, then all
    together), each zeroed. Node and edge columns are packed (base64 little-endian), see ``docs/graph_schema.md``.
    ``builder`` is the :class:`GraphBuilder` that built ``graph`` (its float64 model copy runs; the user's model
    is not touched)."""
    import base64

    import torch

    from ..checks import InputTypeError, check_instance, check_int
    from ..images import png_bytes
    from ..serve import intervene
    from .graph import AttributionGraph, GraphBuilder, _as_batch

    check_instance(builder, GraphBuilder, "builder")
    check_instance(graph, AttributionGraph, "graph")
    top_logits = check_int(top_logits, "top_logits", minimum=1)
    max_edges = check_int(max_edges, "max_edges", minimum=0)
    precompute = check_int(precompute, "precompute", minimum=0)
    if labels is not None and (not isinstance(labels, dict) or not all(isinstance(k, str) for k in labels)):
        raise InputTypeError(f"labels: expected None or {{feature_layer: feature_labels(...)}}, got {type(labels).__name__}")
    x = _as_batch(image, builder.input_shape)
    if graph.meta.get("feature_layers") != builder.names or list(graph.meta.get("input_shape", [])) != list(x.shape[1:]):
        raise ValueError(f"graph: built for {graph.meta.get('feature_layers')} on inputs {graph.meta.get('input_shape')}, "
                         f"not for this builder's {builder.names} on {list(x.shape[1:])}")
    infl, te = graph.influence(), graph.total_effects()
    ins, outs, logits = builder.activations(x)
    if abs(float(logits[0, graph.target]) - graph.logit) > 1e-6 * max(1.0, abs(graph.logit)):
        raise ValueError(f"image: the graph's logit is {graph.logit:.6g}, this image gives {float(logits[0, graph.target]):.6g}; "
                         "give the image the graph was built for")
    nn_ = graph.nodes
    cols = {"kind": [KINDS.index(n["kind"]) for n in nn_], "block": [n.get("block", -1) for n in nn_],
            "feature": [n.get("feature", -1) for n in nn_], "y": [n.get("y", -1) for n in nn_], "x": [n.get("x", -1) for n in nn_]}
    nodes = {k: _pack(v, "int32") for k, v in cols.items()}
    nodes.update({"value": _pack([n["value"] for n in nn_], "float64"), "influence": _pack(infl.tolist(), "float64"),
                  "total_effect": _pack(te.tolist(), "float64"),
                  "bias": _pack([n.get("bias", float("nan")) for n in nn_], "float64")})
    a = graph.edges.abs()
    inf_t = infl.clone()
    inf_t[graph.logit_index] = 1.0
    flow = a / a.sum(1, keepdim=True).clamp_min(1e-30) * inf_t[:, None]  # graph_json's flow, over the whole graph
    t_idx, s_idx = graph.edges.nonzero(as_tuple=True)
    f = flow[t_idx, s_idx]
    order = torch.argsort(f, descending=True)[:max_edges]
    edges = {"source": _pack(s_idx[order].tolist(), "int32"), "target": _pack(t_idx[order].tolist(), "int32"),
             "weight": _pack(graph.edges[t_idx[order], s_idx[order]].tolist(), "float64"), "flow": _pack(f[order].tolist(), "float32")}
    # each last-block node's direct effect on every logit: the frozen head's Jacobian at this input
    a_last = outs[-1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        head = builder._head(a_last)[0]
        jac = torch.stack([torch.autograd.grad(head[j], a_last, retain_graph=True)[0][0] for j in range(head.shape[0])])
    last = len(builder.tcs) - 1
    d_last = builder.tcs[last].module.directions.detach().cpu().double()
    last_ids = [i for i, n in enumerate(nn_) if n["kind"] == "feature" and n["block"] == last]
    effects = [((jac[:, :, nn_[i]["y"], nn_[i]["x"]] @ d_last[nn_[i]["feature"]]) * nn_[i]["value"]).tolist() for i in last_ids]
    lv = logits[0].tolist()
    top = sorted(range(len(lv)), key=lambda j: -lv[j])[:top_logits]
    if graph.target not in top:
        top.append(graph.target)
    decoders: dict[str, dict[str, list]] = {}
    for n in nn_:
        if n["kind"] == "feature":
            dirs = builder.tcs[n["block"]].module.directions
            decoders.setdefault(n["layer"], {}).setdefault(str(n["feature"]), [_r(v, 4) for v in dirs[n["feature"]].tolist()])
    feats = sorted((i for i, n in enumerate(nn_) if n["kind"] == "feature"), key=lambda i: -abs(float(te[i])))[:precompute]
    pre = []
    for ids in [[i] for i in feats] + ([feats] if len(feats) > 1 else []):
        got = intervene(builder, x[0], [nn_[i] for i in ids], 0.0)
        pre.append({"nodes": ids, "scale": 0.0, "measured": _r(got["change"][graph.target], 9),
                    "predicted": _r(-sum(float(te[i]) for i in ids), 9)})
    img = x[0].float()
    shapes = [list(sh) for sh in graph.meta["feature_shapes"]]
    g = graph.meta["pixel_group"]
    leaves = [n for n in nn_ if n["kind"] in ("pixels", "activation")]  # the first layer: the input, or a hidden layer
    layers = [{"name": leaves[0]["layer"], "kind": leaves[0]["kind"], "h": 1 + max(n["y"] for n in leaves),
               "w": 1 + max(n["x"] for n in leaves), "cell": g}]
    layers += [{"name": name, "kind": "feature", "n_features": sh[0], "h": sh[1], "w": sh[2]} for name, sh in zip(builder.names, shapes)]
    page = {"format": PAGE_FORMAT, "n_nodes": len(nn_), "nodes": nodes, "edges": edges, "edges_total": int(len(f)),
            "edges_shipped": int(len(order)), "edges_flow_share": _r(float(f[order].sum()) / (float(f.sum()) or 1.0), 4),
            "layers": layers, "logits": [{"index": j, "value": _r(lv[j])} for j in top],
            "logit_effects": {"nodes": last_ids, "values": _pack(effects, "float32"), "n_logits": len(lv)},
            "image": "data:image/png;base64," + base64.b64encode(png_bytes(img.clamp(0, 1))).decode(),
            "image_f32": base64.b64encode(img.contiguous().numpy().tobytes()).decode(), "image_shape": list(img.shape),
            "decoders": decoders, "interventions": pre}
    if labels:
        page["labels"] = {k: v for k, v in _compact_labels(labels).items() if k in builder.names}
    return {"page": page}


def _compact_labels(labels: dict | None) -> dict:
    """``{layer: {feature: {label, score}}}`` from :func:`vision_interp.features.labels.feature_labels` results
    (or that mapping already)."""
    out: dict = {}
    for layer, feats in (labels or {}).items():
        feats = feats.get("features", feats) if isinstance(feats, dict) else feats
        if isinstance(feats, list):
            feats = {str(f["feature"]): f for f in feats}
        out[layer] = {str(k): {"label": v.get("label"), "score": v.get("score")} for k, v in feats.items()}
    return out


def page_data(doc: dict, *, links: dict[str, dict] | None = None, labels: dict | None = None, title: str = "",
              max_edges: int = 400) -> dict:
    """The JSON the page's script reads. With the page extras (:func:`page_extras`) it holds the whole graph, so
    the page prunes by itself; an older document holds the pruned graph only (the sliders then act within it)."""
    links = links or {}
    page = doc.get("page")
    labels = _compact_labels(labels or (page or {}).get("labels"))
    summary = doc.get("summary", {})
    if page:
        nodes, edges = page_nodes(page), page_edges(page)
        for n in nodes:
            if n["kind"] == "logit":
                n["target"] = doc.get("target")
        layers, complete = page["layers"], True
    else:
        nodes = doc["nodes"]
        edges = [[e["source"], e["target"], e["weight"], e.get("flow", abs(e["weight"]))] for e in doc["edges"][:max_edges]]
        meta = doc.get("meta") or {}
        g, shape = meta.get("pixel_group", 4), meta.get("input_shape")
        leaf = next((n for n in nodes if n["kind"] in ("pixels", "activation")), {"kind": "pixels", "layer": "input"})
        if shape and leaf["kind"] == "pixels":
            hw = (-(-shape[1] // g), -(-shape[2] // g))
        else:  # a hidden layer's grid (or no shape recorded): from the leaves the file holds
            hw = (max([n["y"] for n in nodes if n["kind"] == leaf["kind"]], default=0) + 1,
                  max([n["x"] for n in nodes if n["kind"] == leaf["kind"]], default=0) + 1)
        layers = [{"name": leaf.get("layer", "input"), "kind": leaf["kind"], "h": hw[0], "w": hw[1], "cell": g}]
        for name, s in zip(meta.get("feature_layers", []), meta.get("feature_shapes", [])):
            layers.append({"name": name, "kind": "feature", "n_features": s[0], "h": s[1], "w": s[2]})
        complete = False
    node_data = [_node_data(n, links, labels) for n in nodes]
    data = {"format": PAGE_FORMAT, "title": title, "source": doc.get("source", ""), "target": doc.get("target"),
            "complete": complete, "layers": layers, "nodes": node_data, "edges": edges,
            "links": {u: links[u] for u in sorted({n["unit"] for n in node_data if "unit" in n})},
            "edges_total": (page or doc).get("edges_total", len(edges)),
            "edges_flow_share": (page or {}).get("edges_flow_share"),
            # a pruned file starts with all it holds: pruning it again at its own threshold would drop more
            "thresholds": {"node": summary.get("pruned_threshold", 0.8) if complete else 1.0, "edge": 0.95},
            "logit": summary.get("logit"), "logits": (page or {}).get("logits") or [],
            "image": (page or {}).get("image") or _rows_png(doc), "decoders": (page or {}).get("decoders") or {},
            "interventions": (page or {}).get("interventions") or []}
    return data


def _rows_png(doc: dict) -> str | None:
    """The input image of an older graph file (rows rounded to 4 digits) as a PNG data URI, for the page."""
    import base64

    import torch

    from ..images import png_bytes

    rows, shape = doc.get("image"), (doc.get("meta") or {}).get("input_shape")
    if not rows or not shape:
        return None
    t = torch.tensor(rows, dtype=torch.float32)
    if t.numel() != shape[0] * shape[1] * shape[2]:
        return None
    return "data:image/png;base64," + base64.b64encode(png_bytes(t.reshape(shape).clamp(0, 1))).decode()


def _json_script(obj) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def _title(doc: dict, title: str) -> str:
    if title:
        return title
    source = doc.get("source") or ""
    return f"Attribution graph: {source}, logit {doc.get('target')}" if source else f"Attribution graph: logit {doc.get('target')}"


def graph_page_html(doc: dict, *, links: dict[str, dict] | None = None, title: str = "", max_edges: int = 400,
                    static: str = "static", labels: dict | None = None) -> str:
    """The page for a graph document (:func:`vision_interp.features.tc_graph_io.graph_json` plus its header,
    and :func:`page_extras` when there); ``static`` is the relative URL of the folder holding :data:`STATIC_FILES`
    (see :func:`write_graph_page`); ``labels``: measured feature labels (:mod:`vision_interp.features.labels`)."""
    title = _title(doc, title)
    base = html.escape(static.rstrip("/"))
    data = page_data(doc, links=links, labels=labels, title=title, max_edges=max_edges)
    subs = {"%%TITLE%%": html.escape(title), "%%HEAD%%": graph_head(doc), "%%D3%%": f"{base}/{D3_FILE}",
            "%%JS%%": f"{base}/graph_page.js", "%%CSS%%": f"{base}/graph_page.css",
            "%%FALLBACK%%": graph_svg(doc, max_edges=max_edges), "%%DATA%%": _json_script(data)}
    page = PAGE
    for key, value in subs.items():
        page = page.replace(key, value)
    return page


def write_graph_page(doc: dict, out: str | Path, *, links: dict[str, dict] | None = None, title: str = "",
                     static_dir: str | Path | None = None, labels: dict | None = None) -> Path:
    """Write ``out`` (an .html file) atomically, and the d3 copy, script and style it loads into ``static_dir``
    (default ``<out's folder>/static``; a set of pages shares one folder)."""
    out = Path(out)
    folder = Path(static_dir) if static_dir is not None else out.parent / "static"
    for name in STATIC_FILES:
        write_static(folder, name)
    rel = Path(os.path.relpath(folder, out.parent)).as_posix()
    return vio.atomic_write_text(out, graph_page_html(doc, links=links, title=title, static=rel, labels=labels))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<link rel="stylesheet" href="%%CSS%%">
</head>
<body>
<h1>%%TITLE%%</h1>
<p id="summary">%%HEAD%%</p>
<p class="legend">Each layer is drawn as its spatial map (the input image under the pixel groups, then each block's
features at their (y, x); the nodes of one position share its cell), the target and the other top logits at the top.
<span class="line" style="background:#b2182b"></span> red edges raise their target,
<span class="line" style="background:#2166ac"></span> blue edges lower it (wider: more influence carried).
Nodes: <span class="key" style="background:#999"></span> input groups (pixels, or a hidden layer's positions),
<span class="key" style="background:#4d9221"></span> transcoder features,
<span class="key" style="background:#e08214"></span> error nodes,
<span class="key" style="background:#1b7837"></span> supernodes,
<span class="key" style="background:#542788"></span> the logit (larger: more influence on it).
Tab moves through the nodes, arrow keys move to the nearest node in that direction, Enter shows a node, P pins it.
Drag pans; the buttons or Ctrl + wheel zoom; double-click a map zooms into that position.</p>
<div id="controls" hidden>
<div class="row"><label for="node-threshold">nodes: keep <output id="node-threshold-value"></output> of the influence</label>
<input type="range" id="node-threshold" min="0.3" max="1" step="0.01">
<label for="edge-threshold">edges: keep <output id="edge-threshold-value"></output> of the flow</label>
<input type="range" id="edge-threshold" min="0.3" max="1" step="0.01">
<span id="counts" aria-live="polite"></span></div>
<div class="row"><label><input type="checkbox" id="group-feature"> supernodes: one feature across positions</label>
<label><input type="checkbox" id="group-label"> supernodes: one label</label>
<label><input type="checkbox" id="pinned-only"> pinned subgraph only</label>
<button type="button" id="zoom-in">zoom in</button> <button type="button" id="zoom-out">zoom out</button>
<button type="button" id="zoom-reset">reset view</button></div>
</div>
<main><div id="graph"><noscript id="fallback">%%FALLBACK%%</noscript></div>
<aside id="side"><section id="card" aria-live="polite"><p>Select a node.</p></section>
<section id="pins" class="js-only"><h2>Pinned (<span id="pin-count">0</span>)</h2><ul id="pin-list"></ul>
<button type="button" id="clear-pins">clear</button> <button type="button" id="export">export the pinned subgraph (JSON)</button>
<textarea id="export-out" readonly hidden aria-label="exported subgraph"></textarea></section>
<section id="intervene" class="js-only"><h2>Intervention</h2>
<p>On the pinned feature nodes (or the selected one): <button type="button" id="run-zero">set to zero</button>
or <label>scale by <input type="number" id="scale" value="2" step="0.1"></label> <button type="button" id="run-scale">scale</button></p>
<p id="real-source"></p><div id="intervention-result" aria-live="polite"></div></section></aside></main>
<script id="graph-data" type="application/json">%%DATA%%</script>
<script src="%%D3%%"></script>
<script src="%%JS%%"></script>
<script>if (!document.querySelector("#graph svg")) {  // a static file missing: the drawing without script instead of nothing
  document.getElementById("graph").innerHTML = document.getElementById("fallback").textContent;
  document.querySelectorAll(".js-only").forEach(e => e.hidden = true); }</script>
</body></html>
"""
