"""The file format of an attribution graph: ``NAME.safetensors`` (the edges, sparse) + ``NAME.json`` (nodes,
target, logit, meta, the format version and the tensor file's sha256).

A leaf: it reads and writes the graph's parts (nodes, edges, target, logit, meta) and imports neither the graph
class nor the pages, so :meth:`AttributionGraph.save` / :meth:`AttributionGraph.load` (``graph.py``) and
:func:`vision_interp.features.graph_files.save_graph` / ``load_graph`` share one implementation without an
import cycle. The schema is documented in ``docs/graph_schema.md``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .. import io as vio
from ..checks import FileContentError, InputError

__all__ = ["GRAPH_FILE_FORMAT", "NODE_KINDS", "write_graph_files", "read_graph_files"]

GRAPH_FILE_FORMAT = "vision_interp.attribution_graph_file/1"
NODE_KINDS = ("pixels", "activation", "feature", "error", "logit")
"""Node kinds a graph file may hold: the input leaves (pixel groups, or groups of a hidden layer), features,
error nodes and the logit."""


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".json"), p.with_suffix(".safetensors")


def write_graph_files(nodes: list[dict], edges: torch.Tensor, target: int, logit: float, meta: dict,
                      path: str | os.PathLike) -> Path:
    """Write ``path.safetensors`` (edge indices int64 (2, nnz) as target, source; values float64) and then
    ``path.json`` (so a JSON file means its tensors are complete); returns the JSON path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"path: {path!r}; give a file path (NAME, NAME.json or NAME.safetensors)")
    n = len(nodes)
    if tuple(edges.shape) != (n, n):
        raise InputError(f"graph: edges of shape {tuple(edges.shape)} for {n} nodes")
    j_path, t_path = _paths(path)
    e = edges.detach().cpu().to(torch.float64)
    idx = e.nonzero().T.contiguous()  # (2, nnz): target, source
    vio.save_state_dict(t_path, {"indices": idx.to(torch.int64), "values": e[idx[0], idx[1]].contiguous()},
                        metadata={"format": GRAPH_FILE_FORMAT})
    doc = {"format": GRAPH_FILE_FORMAT, "tensors": t_path.name, "tensors_sha256": vio.sha256_file(t_path),
           "n_nodes": n, "n_edges": int(idx.shape[1]), "target": int(target), "logit": float(logit),
           "meta": meta, "nodes": nodes}
    return vio.save_json(j_path, doc)


def read_graph_files(path: str | os.PathLike) -> tuple[list[dict], torch.Tensor, int, float, dict]:
    """``(nodes, edges, target, logit, meta)`` of the files :func:`write_graph_files` wrote (checked: format
    version, the tensor file's sha256, shapes, node kinds, indices inside the graph and edges going forward)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"path: {path!r}; give the graph's file path (NAME, NAME.json or NAME.safetensors)")
    j_path, _ = _paths(path)
    if not j_path.is_file():
        raise FileNotFoundError(f"path: {j_path} does not exist (a saved graph is NAME.json + NAME.safetensors)")
    try:
        doc = vio.load_json(j_path)
    except ValueError as e:
        raise FileContentError(f"path: {j_path} is not a graph file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != GRAPH_FILE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise FileContentError(f"path: {j_path} has format {got!r}; this version reads {GRAPH_FILE_FORMAT!r}")
    for key, typ in (("nodes", list), ("n_nodes", int), ("target", int), ("logit", (int, float)), ("meta", dict), ("tensors", str)):
        if not isinstance(doc.get(key), typ):
            raise FileContentError(f"path: {j_path}: field {key!r} missing or of the wrong type")
    t_path = j_path.parent / Path(doc["tensors"]).name
    if not t_path.is_file():
        raise FileContentError(f"path: {j_path} names tensors {t_path.name}, which is missing")
    if vio.sha256_file(t_path) != doc.get("tensors_sha256"):
        raise FileContentError(f"path: {t_path} does not match the sha256 recorded in {j_path.name} (changed or truncated)")
    sd = vio.load_state_dict(t_path)
    n, nodes = doc["n_nodes"], doc["nodes"]
    if len(nodes) != n or not all(isinstance(d, dict) and d.get("kind") in NODE_KINDS for d in nodes):
        raise FileContentError(f"path: {j_path}: {len(nodes)} nodes for n_nodes {n}, or a node of an unknown kind")
    if nodes and nodes[-1]["kind"] != "logit":
        raise FileContentError(f"path: {j_path}: the last node must be the logit")
    idx, val = sd.get("indices"), sd.get("values")
    if idx is None or val is None or idx.ndim != 2 or idx.shape[0] != 2 or val.shape != (idx.shape[1],) \
            or idx.dtype != torch.int64 or val.dtype != torch.float64:
        raise FileContentError(f"path: {t_path}: expected indices int64 (2, nnz) and values float64 (nnz,)")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n or bool((idx[1] >= idx[0]).any())):
        raise FileContentError(f"path: {t_path}: an edge index outside 0..{n - 1} or an edge that does not go forward")
    if not torch.isfinite(val).all() or not math.isfinite(doc["logit"]):
        raise FileContentError(f"path: {t_path}: non-finite edge weights or logit")
    edges = torch.zeros(n, n, dtype=torch.float64)
    edges[idx[0], idx[1]] = val
    return nodes, edges, int(doc["target"]), float(doc["logit"]), doc["meta"]
