"""Do interventions in the real model agree with what an attribution graph predicts?

For a feature node of a graph, the graph predicts that scaling the feature's activation by ``c``
changes the target logit by ``(c - 1) * total_effect`` (its effect along every path of the frozen
linear local replacement). In the *real* model the same intervention adds ``(c - 1) * z * d_f`` to the
block's output at the node's position (``d_f`` the feature's decoder direction) and lets every later
layer -- the true later blocks, not their transcoders -- recompute. The difference measures what
the frozen graph misses: later nonlinearities (ReLU signs, max-pool choices, TopK selections that
flip) and errors that do not stay fixed.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..checks import (IdTypeError, InputError, InputTypeError, TargetRangeError, check_images, check_index, check_instance,
                      check_int, check_number)
from ..model_state import runs_model
from .graph import AttributionGraph, GraphBuilder, check_chain, check_threshold, logits_path, model_logits
from .transcoders import Transcoder, check_transcoders

__all__ = ["measure_interventions", "intervention_check", "pearson"]


def pearson(a: Sequence[float], b: Sequence[float]) -> float:
    """Pearson correlation (nan when either side is constant)."""
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else math.nan


def _node_ids(node_ids: object, graph: AttributionGraph) -> list[int]:
    """Feature node indices of ``graph``: integers (never a float, also not ``3.0``), in range, feature nodes."""
    if isinstance(node_ids, torch.Tensor):
        if node_ids.ndim != 1 or node_ids.is_floating_point() or node_ids.is_complex() or node_ids.dtype == torch.bool:
            raise IdTypeError(f"node_ids: a {node_ids.dtype} tensor of shape {tuple(node_ids.shape)}; give a 1-D integer "
                              "tensor or a list of the graph's feature node indices")
        node_ids = node_ids.tolist()
    if isinstance(node_ids, (str, bytes)) or not isinstance(node_ids, (list, tuple, range)) or not len(node_ids):
        raise InputError(f"node_ids: {node_ids!r}; expected a non-empty list of the graph's feature node indices")
    ids = [check_index(i, "node_ids", minimum=0, maximum=len(graph.nodes) - 1, what="a node index (an integer)") for i in node_ids]
    bad = [i for i in ids if graph.nodes[i]["kind"] != "feature"]
    if bad:
        raise InputError(f"node_ids: nodes {bad} are not feature nodes ({graph.nodes[bad[0]]['kind']}); interventions act "
                         "on feature nodes only")
    return ids


def _check_graph_for(graph: object, tcs: Sequence[Transcoder]) -> AttributionGraph:
    check_instance(graph, AttributionGraph, "graph")
    if graph.meta.get("feature_layers") != [tc.feature_layer for tc in tcs]:
        raise InputError(f"graph: built for {graph.meta.get('feature_layers')}, not for these transcoders "
                         f"{[tc.feature_layer for tc in tcs]}")
    return graph


@runs_model
@torch.no_grad()
def measure_interventions(model: nn.Module, transcoders: Sequence[Transcoder], image: torch.Tensor, graph: AttributionGraph,
                          node_ids: Sequence[int], scale: float = 0.0) -> torch.Tensor:
    """The measured change of the target logit when each feature node is scaled by ``scale`` (0:
    removed) in the real model, one batched forward pass for all nodes. ``image`` must be the one the
    graph was built for (checked: the model's logit for it must be the graph's)."""
    from ..capture import hooks

    tcs = check_chain(check_transcoders(transcoders, model))
    _check_graph_for(graph, tcs)
    scale = check_number(scale, "scale")
    x, _ = check_images(image, model, arg="image")
    if x.shape[0] != 1:
        raise InputError(f"image: {x.shape[0]} images; give the one image the graph was built for")
    if list(x.shape[1:]) != list(graph.meta.get("input_shape", x.shape[1:])):
        raise InputError(f"image: shape {tuple(x.shape[1:])}; the graph was built for an input of {tuple(graph.meta['input_shape'])}")
    ids = _node_ids(node_ids, graph)
    nodes = [graph.nodes[i] for i in ids]
    dev, dtype = x.device, x.dtype
    batch = x.expand(len(nodes) + 1, *x.shape[1:])  # row 0: no intervention
    fns = {}
    for b, tc in enumerate(tcs):
        rows = [(r + 1, n) for r, n in enumerate(nodes) if n["block"] == b]
        if rows:
            fns[tc.out_layer] = _adder(rows, tc.module.directions.to(dev, dtype), scale)
    with hooks(model, fns):
        logits = model_logits(model, batch, logits_path(model))[:, graph.target].double().cpu()
    clean = float(logits[0])
    if abs(clean - graph.logit) > 1e-3 * max(1.0, abs(graph.logit)):
        raise InputError(f"image: the model's logit {graph.target} for this image is {clean:.6g}, the graph's is {graph.logit:.6g}; "
                         "give the image the graph was built for")
    return logits[1:] - logits[0]


def _adder(rows: list, directions: torch.Tensor, scale: float):
    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        for r, n in rows:
            out[r, :, n["y"], n["x"]] += (scale - 1.0) * n["value"] * directions[n["feature"]]
        return out
    return hook


def _targets(targets: object, n: int) -> list[int]:
    """One integer logit index per image (a float, also ``3.0``, or a float tensor is refused, never truncated)."""
    if isinstance(targets, torch.Tensor):
        if targets.ndim != 1 or targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise IdTypeError(f"targets: a {targets.dtype} tensor of shape {tuple(targets.shape)}; give a 1-D integer tensor "
                              "or a list of logit indices, one per image")
        targets = targets.tolist()
    elif isinstance(targets, (str, bytes)) or not isinstance(targets, (list, tuple, range)):
        raise InputTypeError(f"targets: expected a list of logit indices (one per image), got {type(targets).__name__}")
    if len(targets) != n:
        raise InputError(f"targets: {len(targets)}; give one target logit index per image ({n})")
    return [check_index(t, "targets", minimum=0, what="a logit index (an integer)") for t in targets]


@runs_model
def intervention_check(model: nn.Module, transcoders: Sequence[Transcoder], images: torch.Tensor, targets: Sequence[int], *,
                       top: int = 10, scale: float = 0.0, worst: int = 10, builder: GraphBuilder | None = None,
                       threshold: float = 0.8) -> dict:
    """For each image: its graph for its target, its ``top`` feature nodes by |total effect|, and the
    measured vs predicted logit change when each is scaled by ``scale``. Returns Pearson r overall and
    per block, the worst cases and per-graph figures (pruned at ``threshold``; JSON-ready). ``builder`` (a :class:`GraphBuilder`
    for this model and these transcoders) saves copying the model again."""
    tcs = check_chain(check_transcoders(transcoders, model))
    images, _ = check_images(images, model, arg="images", allow_single=False)
    targets = _targets(targets, len(images))
    top = check_int(top, "top", minimum=1)
    worst = check_int(worst, "worst", minimum=0)
    scale = check_number(scale, "scale")
    threshold = check_threshold(threshold)
    if builder is not None:
        check_instance(builder, GraphBuilder, "builder")
        if builder.names != [tc.feature_layer for tc in tcs] or list(builder.input_shape) != list(images.shape[1:]):
            raise InputError(f"builder: built for {builder.names} on inputs {tuple(builder.input_shape)}, not for these "
                             f"transcoders {[tc.feature_layer for tc in tcs]} and images {tuple(images.shape[1:])}")
    builder = builder or GraphBuilder(model, tcs)
    if max(targets) >= builder.n_logits:
        raise TargetRangeError(f"targets: {max(targets)}; must be logit indices in 0..{builder.n_logits - 1}")
    cases, graphs = [], []
    for gi, (img, t) in enumerate(zip(images, targets)):
        g = builder.build(img, int(t))
        te = g.total_effects()
        feats = [i for i, n in enumerate(g.nodes) if n["kind"] == "feature"]
        chosen = sorted(feats, key=lambda i: -abs(float(te[i])))[:top]
        measured = measure_interventions(model, tcs, img, g, chosen, scale) if chosen else torch.zeros(0)
        for i, m in zip(chosen, measured.tolist()):
            n = g.nodes[i]
            cases.append({"graph": gi, "target": int(t), "layer": n["layer"], "feature": n["feature"], "y": n["y"], "x": n["x"],
                          "activation": round(n["value"], 6), "predicted": (scale - 1.0) * float(te[i]), "measured": m})
        graphs.append({"graph": gi, "target": int(t), "logit": round(g.logit, 5), **g.prune(threshold), "kept": None})
    for c in cases:  # 9 significant digits: the last ones depend on summation order, not on the method
        c["error"] = _sig(c["measured"] - c["predicted"])
        c["predicted"], c["measured"] = _sig(c["predicted"]), _sig(c["measured"])
    pred, meas = [c["predicted"] for c in cases], [c["measured"] for c in cases]
    by_layer = {}
    for layer in sorted({c["layer"] for c in cases}):
        sel = [c for c in cases if c["layer"] == layer]
        by_layer[layer] = {"cases": len(sel), "pearson_r": _r(pearson([c["predicted"] for c in sel], [c["measured"] for c in sel])),
                           "mean_abs_error": round(sum(abs(c["error"]) for c in sel) / len(sel), 6),
                           "mean_abs_measured": round(sum(abs(c["measured"]) for c in sel) / len(sel), 6)}
    sign_ok = sum(1 for c in cases if (c["predicted"] > 0) == (c["measured"] > 0)) / len(cases) if cases else None
    return {"graphs": len(graphs), "top_nodes_per_graph": top, "scale": scale, "cases": len(cases),
            "pearson_r": _r(pearson(pred, meas)),
            "sign_agreement": round(sign_ok, 5) if sign_ok is not None else None, "by_layer": by_layer,
            "worst": sorted(cases, key=lambda c: -abs(c["error"]))[:worst],
            "rule": "predicted = (scale - 1) x the node's total effect in the frozen local replacement; measured = the change "
                    "of the target logit in the real model when (scale - 1) x activation x decoder direction is added at the node",
            "per_graph": [{k: v for k, v in gr.items() if k != "kept"} for gr in graphs], "all_cases": cases}


def _sig(v: float) -> float:
    return float(f"{v:.9g}")


def _r(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 5)
