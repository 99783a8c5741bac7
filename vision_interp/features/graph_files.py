"""An :class:`~vision_interp.features.graph.AttributionGraph` as files: ``NAME.safetensors`` (the edges, sparse)
+ ``NAME.json`` (nodes, target, logit, meta, the format version and the tensor file's sha256).

The page JSON (:mod:`tc_graph_io`) holds a pruned graph for reading; these files hold the whole graph, so a
loaded graph answers every question the built one does (influence, pruning at any threshold, total effects,
the sum rule) with the same numbers, bit for bit. The schema is documented in ``docs/graph_schema.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..checks import check_instance
from .graph import AttributionGraph
from .graph_store import GRAPH_FILE_FORMAT

__all__ = ["GRAPH_FILE_FORMAT", "save_graph", "load_graph", "page_nodes", "page_edges"]


def save_graph(graph: AttributionGraph, path: str | os.PathLike) -> Path:
    """Write ``path.safetensors`` (edge indices int64 (2, nnz) as target, source; values float64) and then
    ``path.json`` (so a JSON file means its tensors are complete); returns the JSON path. The same as
    :meth:`AttributionGraph.save`."""
    check_instance(graph, AttributionGraph, "graph")
    return graph.save(path)


def load_graph(path: str | os.PathLike) -> AttributionGraph:
    """The graph :func:`save_graph` wrote (checked: format version, the tensor file's sha256, shapes, node
    kinds, indices inside the graph and edges going from earlier to later nodes). The same as
    :meth:`AttributionGraph.load`."""
    return AttributionGraph.load(path)


# -- the packed node and edge columns of a graph page's data (graph_page.page_extras; docs/graph_schema.md)
def _r(v: float, digits: int = 6) -> float:
    return float(f"{float(v):.{digits}g}")


KINDS = ("pixels", "feature", "error", "logit", "activation")  # index = the packed "kind" code: append only
_DTYPES = {"int32": "<i4", "float32": "<f4", "float64": "<f8"}


def _pack(values, dtype: str) -> dict:
    """A column as little-endian bytes in base64: compact in any JSON file, however it is indented."""
    import base64

    import numpy as np

    return {"dtype": dtype, "b64": base64.b64encode(np.asarray(values, dtype=_DTYPES[dtype]).tobytes()).decode()}


def _unpack(col: dict) -> list:
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(col["b64"]), dtype=_DTYPES[col["dtype"]]).tolist()


def page_nodes(page: dict, *, exact: bool = False) -> list[dict]:
    """The nodes of :func:`page_extras`'s packed columns as dicts (id = the node's index in the whole graph);
    values rounded to 6 digits for the page, or ``exact`` (what ``vision-interp serve`` intervenes with)."""
    cols = {k: _unpack(v) for k, v in page["nodes"].items()}
    layers = page["layers"]
    g = layers[0].get("cell", 1)
    effects = page.get("logit_effects") or {}
    per = {}
    if effects.get("nodes"):
        vals, k = _unpack(effects["values"]), effects["n_logits"]
        per = {i: [_r(v, 4) for v in vals[r * k:(r + 1) * k]] for r, i in enumerate(effects["nodes"])}
    out = []
    for i in range(page["n_nodes"]):
        kind = KINDS[cols["kind"][i]]
        n = {"id": i, "kind": kind, "value": cols["value"][i] if exact else _r(cols["value"][i]), "influence": _r(cols["influence"][i]),
             "total_effect": cols["total_effect"][i]}
        b = cols["bias"][i]
        if b == b:
            n["bias"] = _r(b)
        if kind in ("feature", "error"):
            n.update({"block": cols["block"][i], "layer": layers[cols["block"][i] + 1]["name"], "y": cols["y"][i], "x": cols["x"][i]})
        if kind == "feature":
            n["feature"] = cols["feature"][i]
        if kind in ("pixels", "activation"):  # the leaves: groups of the model input, or of a hidden layer
            y, x = cols["y"][i], cols["x"][i]
            n.update({"layer": layers[0]["name"], "y": y, "x": x, "box": [y * g, x * g, y * g + g, x * g + g]})
        if kind == "logit":
            n["layer"] = "logits"
        if i in per:
            n["logits"] = per[i]
        out.append(n)
    return out


def page_edges(page: dict) -> list[list]:
    """The shipped edges of :func:`page_extras` as ``[source, target, weight, flow]`` (strongest flow first)."""
    cols = [_unpack(page["edges"][k]) for k in ("source", "target", "weight", "flow")]
    return [[s, t, w, _r(f, 4)] for s, t, w, f in zip(*cols)]
