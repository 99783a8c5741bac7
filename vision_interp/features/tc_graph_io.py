"""An attribution graph as a file: the pruned graph as JSON, written atomically, kept when already there."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .. import io as vio
from .graph import AttributionGraph, GraphBuilder
from .transcoders import Transcoder

__all__ = ["graph_json", "write_graph"]

GRAPH_FORMAT = "vision_interp.attribution_graph/1"


def graph_json(g: AttributionGraph, threshold: float = 0.8, *, max_edges: int = 2000) -> dict:
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
    sub = g.edges[keep][:, keep]
    nz = sub.nonzero().tolist()
    nz.sort(key=lambda ts: -abs(float(sub[ts[0], ts[1]])))
    edges = [{"source": s, "target": t, "weight": round(float(sub[t, s]), 6)} for t, s in nz[:max_edges]]
    return {"format": GRAPH_FORMAT, "summary": g.summary(threshold), "meta": g.meta, "nodes": nodes, "edges": edges,
            "edges_total": len(nz)}


def _key(tcs: Sequence[Transcoder], image: torch.Tensor, target: int, threshold: float, pixel_group: int) -> str:
    h = hashlib.sha256()
    h.update(image.detach().cpu().float().contiguous().numpy().tobytes())
    h.update(f"{target} {threshold} {pixel_group}".encode())
    for tc in tcs:
        h.update(str(tc.card.get("weights_sha256")).encode())
        h.update(tc.feature_layer.encode())
    return h.hexdigest()[:16]


def write_graph(model: nn.Module, tcs: Sequence[Transcoder], image: torch.Tensor, target: int, out: Path, *, source: str = "",
                label: int | None = None, threshold: float = 0.8, pixel_group: int = 4, transcoder_names: Sequence[str] = (),
                builder: GraphBuilder | None = None, galleries: Sequence[str | Path] = (), title: str = "") -> tuple[Path, bool]:
    """Write ``out/graph.json`` and the page ``out/index.html`` (feature cards link into ``galleries``);
    an existing graph for the same input, target and transcoders is kept. Returns (path, kept)."""
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
            write_graph_page(doc, out / "index.html", links=links, title=title)  # cheap: the page follows the galleries
            return path, True
    builder = builder or GraphBuilder(model, tcs, pixel_group=pixel_group)
    g = builder.build(image, target)
    doc = {"key": key, "source": source, "label": label, "target": target, "transcoders": list(transcoder_names),
           "image": [[round(float(v), 4) for v in row] for row in image.reshape(-1, image.shape[-1])], **graph_json(g, threshold)}
    write_graph_page(doc, out / "index.html", links=links, title=title)
    vio.save_json(path, doc)  # last: a graph.json means the page is there too
    return path, False
