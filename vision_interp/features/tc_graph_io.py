"""An attribution graph as a file: the pruned graph as JSON, written atomically, kept when already there."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .. import io as vio
from .graph import AttributionGraph, GraphBuilder
from .transcoders import Transcoder

__all__ = ["graph_json", "write_graph", "write_digit_graphs"]

GRAPH_FORMAT = "vision_interp.attribution_graph/2"


def graph_json(g: AttributionGraph, threshold: float = 0.8, *, max_edges: int = 800) -> dict:
    """The pruned graph: kept nodes (with influence and total effect) and the edges between them,
    strongest first (at most ``max_edges``), plus the summary figures of the whole graph."""
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


def write_graph(model: nn.Module, tcs: Sequence[Transcoder], image: torch.Tensor, target: int, out: Path, *, source: str = "",
                label: int | None = None, threshold: float = 0.8, pixel_group: int = 4, transcoder_names: Sequence[str] = (),
                builder: GraphBuilder | None = None, galleries: Sequence[str | Path] = (), title: str = "",
                static_dir: str | Path | None = None) -> tuple[Path, bool]:
    """Write ``out/graph.json`` and the page ``out/index.html`` (feature cards link into ``galleries``; the d3 copy
    it loads goes to ``static_dir``, default ``out/static``); an existing graph for the same input, target and
    transcoders is kept. Returns (path, kept)."""
    from .graph_page import gallery_links, write_graph_page

    path = out / "graph.json"
    key = _key(tcs, image, target, threshold, pixel_group)
    links = gallery_links(list(galleries), out) if galleries else None
    if path.is_file():
        try:
            doc = vio.load_json(path)
        except ValueError:
            doc = {}
        if doc.get("key") == key:
            write_graph_page(doc, out / "index.html", links=links, title=title, static_dir=static_dir)  # cheap: the page follows the galleries
            return path, True
    builder = builder or GraphBuilder(model, tcs, pixel_group=pixel_group)
    g = builder.build(image, target)
    doc = {"key": key, "source": source, "label": label, "target": target, "transcoders": list(transcoder_names),
           "image": [[round(float(v), 4) for v in row] for row in image.reshape(-1, image.shape[-1])], **graph_json(g, threshold)}
    write_graph_page(doc, out / "index.html", links=links, title=title, static_dir=static_dir)
    vio.save_json(path, doc)  # last: a graph.json means the page is there too
    return path, False


def write_digit_graphs(model: nn.Module, tcs: Sequence[Transcoder], out_dir: str | Path, *, data_dir=None,
                       galleries: Sequence[str | Path] = (), transcoder_names: Sequence[str] = (), threshold: float = 0.8,
                       report: str | None = None) -> Path:
    """One graph per digit (its first MNIST test image, target = the label) in ``out_dir/digit_<d>/``,
    and ``out_dir/index.html`` listing them with their figures (and a link to ``report`` if given); the pages
    share one copy of d3 and of the page's script and style, ``out_dir/static/``."""
    import html

    from ..data import load_mnist

    test = load_mnist("test", data_dir)
    out = Path(out_dir)
    builder = GraphBuilder(model, tcs)
    rows = []
    for d in range(int(test.labels.max()) + 1):
        i = int((test.labels == d).nonzero()[0])
        sub = out / f"digit_{d}"
        path, _ = write_graph(model, tcs, test.images[i], d, sub, source=f"MNIST test[{i}]", label=d, threshold=threshold,
                              transcoder_names=transcoder_names, builder=builder, galleries=galleries,
                              title=f"Attribution graph: digit {d} (MNIST test[{i}]), logit {d}", static_dir=out / "static")
        s = vio.load_json(path)["summary"]
        rows.append(f"<tr><td><a href=\"digit_{d}/index.html\">digit {d}</a></td><td>test[{i}]</td><td>{s['logit']:.2f}</td>"
                    f"<td>{s['nodes']}</td><td>{s['pruned_kept_nodes']}</td><td>{s['pruned_error_share']:.1%}</td></tr>")
    links = "".join(f'<li><a href="{html.escape(Path(os.path.relpath(Path(g) / "index.html", out)).as_posix())}">feature gallery '
                    f'{html.escape(Path(g).name)}</a></li>' for g in galleries)
    if report:
        links += f'<li><a href="{html.escape(report)}">report</a></li>'
    page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Attribution graphs per digit</title></head><body>"
            f"<h1>Attribution graphs per digit</h1><p>Pruned to {threshold:.0%} of the influence on the label logit.</p>"
            f"<table><tr><th>graph</th><th>image</th><th>logit</th><th>nodes</th><th>kept</th><th>error share</th></tr>{''.join(rows)}"
            f"</table><ul>{links}</ul></body></html>\n")
    return vio.atomic_write_text(out / "index.html", page)
