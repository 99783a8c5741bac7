"""An attribution graph as a file: the pruned graph as JSON, written atomically, kept when already there."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .. import io as vio
from ..checks import InputError, InputTypeError, check_images, check_index, check_instance, check_int, check_model
from .graph import AttributionGraph, GraphBuilder, check_chain, check_threshold
from .transcoders import INPUT, Transcoder, check_transcoders

__all__ = ["graph_json", "write_graph", "write_digit_graphs"]

GRAPH_FORMAT = "vision_interp.attribution_graph/2"


def graph_json(g: AttributionGraph, threshold: float = 0.8, *, max_edges: int = 800) -> dict:
    """The pruned graph: kept nodes (with influence and total effect) and the edges between them,
    strongest first (at most ``max_edges``, an integer >= 0), plus the summary figures of the whole graph."""
    check_instance(g, AttributionGraph, "g")
    threshold = check_threshold(threshold)
    max_edges = check_int(max_edges, "max_edges", minimum=0)
    infl, te = g.influence(), g.total_effects()
    p = g.prune(threshold)
    keep = p["kept"] + [g.logit_index]
    nodes = []
    for new, i in enumerate(keep):
        n = dict(g.nodes[i])
        n.update({"id": new, "index": i, "influence": round(float(infl[i]), 6), "total_effect": round(float(te[i]), 6)})
        nodes.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in n.items()})
    # edges ranked by the influence that flows along them: |w| / (target's incoming |w| in the whole graph)
    # x the target's influence (the pruning's normalised adjacency), so every layer's strongest paths show
    incoming = g.edges.abs().sum(1).clamp_min(1e-30)
    sub = g.edges[keep][:, keep]
    inf_t = torch.tensor([1.0 if i == g.logit_index else float(infl[i]) for i in keep], dtype=sub.dtype)
    flow = sub.abs() / incoming[keep][:, None] * inf_t[:, None]
    nz = sub.nonzero().tolist()
    nz.sort(key=lambda ts: -float(flow[ts[0], ts[1]]))
    edges = [{"source": s, "target": t, "weight": round(float(sub[t, s]), 6), "flow": round(float(flow[t, s]), 6)}
             for t, s in nz[:max_edges]]
    return {"format": GRAPH_FORMAT, "summary": g.summary(threshold), "meta": g.meta, "nodes": nodes, "edges": edges,
            "edges_total": len(nz)}


def _key(tcs: Sequence[Transcoder], image: torch.Tensor, target: int, threshold: float, pixel_group: int) -> str:
    h = hashlib.sha256()
    h.update(image.detach().cpu().float().contiguous().numpy().tobytes())
    h.update(f"{GRAPH_FORMAT} {target} {threshold} {pixel_group}".encode())  # a new file format rewrites old graphs
    for tc in tcs:
        h.update(str(tc.card.get("weights_sha256")).encode())
        h.update(tc.feature_layer.encode())
    return h.hexdigest()[:16]


def _check_names(names: object, arg: str) -> list[str]:
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputTypeError(f"{arg}: expected a list of names (str), got {names!r}")
    return list(names)


def _check_paths(paths: object, arg: str) -> list[Path]:
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, (list, tuple)) or not all(
            isinstance(p, (str, os.PathLike)) for p in paths):
        raise InputTypeError(f"{arg}: expected a list of folders (str or Path), got {paths!r}")
    return [Path(p) for p in paths]


def _check_labels(labels: object, tcs: Sequence[Transcoder]) -> dict | None:
    """``{feature_layer: {feature: {label, score}}}`` (compacted) from ``{feature_layer: feature_labels(...)}``,
    or None; a layer not in the chain is refused (its labels would name other features)."""
    from .graph_page import _compact_labels

    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise InputTypeError(f"labels: expected {{feature_layer: feature_labels(...)}} or None, got {type(labels).__name__}")
    names = [tc.feature_layer for tc in tcs]
    stray = [k for k in labels if k not in names]
    if stray:
        raise InputError(f"labels: layers {stray} are not in the chain {names}")
    try:
        return _compact_labels(labels)
    except (AttributeError, KeyError, TypeError):
        raise InputTypeError("labels: each layer's value must be a feature_labels(...) result or {feature: {label, score}}") from None


def _check_dir(path: object, arg: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputTypeError(f"{arg}: expected a folder (str or Path), got {type(path).__name__} {path!r}")
    return Path(path)


def write_graph(model: nn.Module, tcs: Sequence[Transcoder], image: torch.Tensor, target: int, out: Path, *, source: str = "",
                label: int | None = None, threshold: float = 0.8, pixel_group: int | None = None, transcoder_names: Sequence[str] = (),
                builder: GraphBuilder | None = None, galleries: Sequence[str | Path] = (), title: str = "",
                static_dir: str | Path | None = None, labels: dict | None = None) -> tuple[Path, bool]:
    """Write ``out/graph.json`` and the page ``out/index.html`` (feature cards link into ``galleries``; the d3 copy
    it loads goes to ``static_dir``, default ``out/static``); an existing graph for the same input, target and
    transcoders is kept when it holds the page data (:func:`graph_page.page_extras`: the whole graph, so the
    page prunes, groups and intervenes by itself). ``labels``: measured feature labels, ``{feature_layer:
    feature_labels(...)}`` (:mod:`vision_interp.features.labels`), shown on nodes and cards. Returns (path, kept). ``pixel_group`` defaults to ``builder``'s (else 4 for a chain from
    the model input, 1 for one from a hidden layer)."""
    from .graph_page import gallery_links, page_extras, write_graph_page

    check_model(model)
    tcs = check_chain(check_transcoders(tcs, model, arg="tcs"), arg="tcs")
    check_images(image, model, arg="image")
    target = check_index(target, "target", minimum=0, what="a logit index (an integer)")
    out = _check_dir(out, "out")
    if label is not None:
        label = check_index(label, "label", minimum=0, what="a class label (an integer) or None")
    threshold = check_threshold(threshold)
    for name, value in (("source", source), ("title", title)):
        if not isinstance(value, str):
            raise InputTypeError(f"{name}: expected a str, got {type(value).__name__}")
    names = _check_names(transcoder_names, "transcoder_names")
    galleries = _check_paths(galleries, "galleries")
    if static_dir is not None:
        static_dir = _check_dir(static_dir, "static_dir")
    labels = _check_labels(labels, tcs)
    if builder is not None:
        check_instance(builder, GraphBuilder, "builder")
        if builder.names != [tc.feature_layer for tc in tcs]:
            raise InputError(f"builder: built for {builder.names}, not for these transcoders {[tc.feature_layer for tc in tcs]}")
        if pixel_group is not None and check_int(pixel_group, "pixel_group", minimum=1) != builder.pixel_group:
            raise InputError(f"pixel_group: {pixel_group}, but the builder groups {builder.pixel_group} x {builder.pixel_group}; "
                             "give one of the two")
        pixel_group = builder.pixel_group
    elif pixel_group is None:
        pixel_group = 4 if tcs[0].in_layer == INPUT else 1
    else:
        pixel_group = check_int(pixel_group, "pixel_group", minimum=1)
    path = out / "graph.json"
    key = _key(tcs, image, target, threshold, pixel_group)
    links = gallery_links(list(galleries), out) if galleries else None
    if path.is_file():
        try:
            doc = vio.load_json(path)
        except ValueError:
            doc = {}
        if isinstance(doc, dict) and doc.get("key") == key and "page" in doc and (labels is None or doc["page"].get("labels") == labels):
            write_graph_page(doc, out / "index.html", links=links, title=title, static_dir=static_dir)  # cheap: the page follows the galleries
            return path, True
    builder = builder or GraphBuilder(model, tcs, pixel_group=pixel_group)
    g = builder.build(image, target)
    doc = {"key": key, "source": source, "label": label, "target": target, "transcoders": names,
           "image": [[round(float(v), 4) for v in row] for row in image.reshape(-1, image.shape[-1])], **graph_json(g, threshold),
           **page_extras(builder, g, image, labels=labels)}
    write_graph_page(doc, out / "index.html", links=links, title=title, static_dir=static_dir)
    vio.save_json(path, doc)  # last: a graph.json means the page is there too
    return path, False


def write_digit_graphs(model: nn.Module, tcs: Sequence[Transcoder], out_dir: str | Path, *, data_dir=None,
                       galleries: Sequence[str | Path] = (), transcoder_names: Sequence[str] = (), threshold: float = 0.8,
                       report: str | None = None, labels: dict | None = None) -> Path:
    """One graph per digit (its first MNIST test image, target = the label) in ``out_dir/digit_<d>/``,
    and ``out_dir/index.html`` listing them as cards (the input image, its figures; the gallery site's style,
    ``out_dir/static/gallery.css``; a link to ``report`` if given); the pages share one copy of d3 and of the
    page's script and style, ``out_dir/static/``. ``labels``: as for :func:`write_graph`."""
    from ..data import load_mnist
    from ..images import png_bytes

    check_model(model)
    tcs = check_chain(check_transcoders(tcs, model, arg="tcs"), arg="tcs")
    out = _check_dir(out_dir, "out_dir")
    galleries = _check_paths(galleries, "galleries")
    transcoder_names = _check_names(transcoder_names, "transcoder_names")
    threshold = check_threshold(threshold)
    if report is not None and not isinstance(report, str):
        raise InputTypeError(f"report: expected a relative link (str) or None, got {type(report).__name__}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise InputTypeError(f"data_dir: expected a folder (str or Path) or None, got {type(data_dir).__name__} {data_dir!r}")
    _check_labels(labels, tcs)
    test = load_mnist("test", data_dir)
    builder = GraphBuilder(model, tcs)
    cards = []
    for d in range(int(test.labels.max()) + 1):
        i = int((test.labels == d).nonzero()[0])
        sub = out / f"digit_{d}"
        path, _ = write_graph(model, tcs, test.images[i], d, sub, source=f"MNIST test[{i}]", label=d, threshold=threshold,
                              transcoder_names=transcoder_names, builder=builder, galleries=galleries,
                              title=f"Attribution graph: digit {d} (MNIST test[{i}]), logit {d}", static_dir=out / "static", labels=labels)
        thumb = sub / "input.png"
        data = png_bytes(test.images[i].clamp(0, 1))
        if not (thumb.is_file() and thumb.read_bytes() == data):
            vio.atomic_write_bytes(thumb, data)
        s = vio.load_json(path)["summary"]
        cards.append(_digit_card(d, i, s))
    return vio.atomic_write_text(out / "index.html", _digit_index(cards, out, galleries, threshold, report))


def _digit_card(d: int, i: int, s: dict) -> str:
    """One graph's card on the index: its input as a thumbnail, the logit and the graph's size."""
    return (f'<a class="card" href="digit_{d}/index.html"><img class="vis px" src="digit_{d}/input.png" '
            f'alt="digit {d}: MNIST test image {i}"><div class="name">digit {d} · test[{i}]</div>'
            f'<div class="name label">logit {s["logit"]:.2f} · {s["pruned_kept_nodes"]} of {s["nodes"]} nodes kept · '
            f'error share {s["pruned_error_share"]:.1%}</div></a>')


def _digit_index(cards: list[str], out: Path, galleries: list[Path], threshold: float, report: str | None) -> str:
    """The index of the per-digit graphs, in the gallery site's style (its stylesheet copied to ``out/static``)."""
    import html

    from ..gallery.site import CSS

    vio.atomic_write_text(out / "static" / "gallery.css", CSS)
    links = "".join(f'<li><a href="{html.escape(Path(os.path.relpath(Path(g) / "index.html", out)).as_posix())}">feature gallery '
                    f'{html.escape(Path(g).name)}</a></li>' for g in galleries)
    if report:
        links += f'<li><a href="{html.escape(report)}">report</a></li>'
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>Attribution graphs per digit</title>\n'
            '<link rel="stylesheet" href="static/gallery.css">\n</head>\n<body>\n'
            '<header><span class="brand">vision_interp</span><nav class="crumbs"><span>attribution graphs</span></nav></header>\n'
            '<main id="content">\n<h1>Attribution graphs per digit</h1>\n'
            f'<p class="sub">The first MNIST test image of each digit, its graph for the label logit, pruned to {threshold:.0%} of the '
            "influence on it (the page's sliders change both thresholds).</p>\n"
            f'<div class="grid" style="--thumb: 170px">\n{chr(10).join(cards)}\n</div>\n'
            + (f"<ul>{links}</ul>\n" if links else "") + "</main>\n</body>\n</html>\n")
