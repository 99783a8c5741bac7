"""How much of a model do its transcoders explain? Figures for a JSON file and a short write-up.

Every sentence of :func:`analysis_markdown` is built from a measured number in the analysis dict.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .. import io as vio
from ..checks import InputError, InputTypeError, check_images, check_int, check_model
from ..model_state import using
from .graph import GraphBuilder, check_chain, check_threshold
from .interventions import intervention_check
from .tc_circuits import feature_feature_weights, feature_logit_weights_tc, sparsity_comparison, top_connections
from .transcoders import Transcoder, check_transcoders

__all__ = ["transcoder_analysis", "analysis_markdown", "write_analysis"]


def transcoder_analysis(model: nn.Module, tcs: Sequence[Transcoder], images: torch.Tensor, labels: torch.Tensor, *,
                        top: int = 10, threshold: float = 0.8) -> dict:
    """Graphs of ``images`` for their labels (sizes, error share), interventions on their ``top`` nodes
    (removal: scale 0), global circuits and their sparsity against the neuron-level weights. The model
    runs in eval mode on the caller's behalf, under its lock, and comes back as it was."""
    check_model(model)
    with using(model, what="transcoder_analysis()"):
        return _analysis(model, tcs, images, labels, top, threshold)


def _analysis(model: nn.Module, tcs: Sequence[Transcoder], images: torch.Tensor, labels: torch.Tensor, top: int,
              threshold: float) -> dict:
    tcs = check_chain(check_transcoders(tcs, model, arg="tcs"), arg="tcs")
    images, _ = check_images(images, model, arg="images", allow_single=False)
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool \
            or len(labels) != len(images):
        what = f"{tuple(labels.shape)} {labels.dtype}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise InputError(f"labels: {what}; expected a 1-D integer tensor, one class label per image ({len(images)})")
    top = check_int(top, "top", minimum=1)
    threshold = check_threshold(threshold)
    builder = GraphBuilder(model, tcs)
    t0 = time.perf_counter()
    check = intervention_check(model, tcs, images, labels.tolist(), top=top, scale=0.0, builder=builder, threshold=threshold)
    seconds = time.perf_counter() - t0
    per = check["per_graph"]
    mean = lambda key: round(sum(g[key] for g in per) / len(per), 5)  # noqa: E731
    graphs = {"graphs": len(per), "threshold": threshold, "mean_nodes": mean("nodes"), "mean_kept_nodes": mean("kept_nodes"),
              "mean_error_share": mean("error_share"), "max_error_share": max(g["error_share"] for g in per),
              "mean_kept_features": round(sum(g["kept_by_kind"]["feature"] for g in per) / len(per), 3),
              "mean_kept_error_nodes": round(sum(g["kept_by_kind"]["error"] for g in per) / len(per), 3)}
    circuits = {"sparsity": sparsity_comparison(model, tcs)}
    for a, b in zip(tcs, tcs[1:]):
        w = feature_feature_weights(a, b)
        # per downstream feature: its 5 strongest (upstream feature, dy, dx) weights
        circuits[f"top_{a.feature_layer}_to_{b.feature_layer}"] = top_connections(w, 5)
    flw = feature_logit_weights_tc(model, tcs[-1])  # (F, L, H, W): per feature its 3 strongest (logit, y, x) weights
    circuits[f"top_{tcs[-1].feature_layer}_to_logits"] = top_connections(flw, 3)
    cards = {tc.feature_layer: tc.card.get("metrics", {}) for tc in tcs}
    return {"transcoders": cards, "graphs": graphs, "interventions": {k: v for k, v in check.items() if k != "per_graph"},
            "per_graph": per, "circuits": circuits, "seconds": round(seconds, 2),
            "images": f"MNIST test, first {len(images)} images, target = the true label"}


def analysis_markdown(a: dict) -> str:
    """The write-up: one sentence per measured figure, and where the graph is wrong."""
    missing = [k for k in ("transcoders", "graphs", "interventions", "circuits")] if not isinstance(a, dict) else \
        [k for k in ("transcoders", "graphs", "interventions", "circuits") if k not in a]
    if missing:
        raise InputError(f"a: {type(a).__name__} without {', '.join(missing)}; give the dict transcoder_analysis() returns")
    lines = ["# Transcoders: how much of the network the sparse replacement explains", ""]
    for layer, m in a["transcoders"].items():
        if m:
            lines.append(f"- `{layer}`: FVU {m['fvu']}, mean L0 {m['mean_l0']}, {m['dead_features']} dead features; "
                         f"accuracy with this block replaced {m['accuracy_replaced']:.2%} (model {m['accuracy']:.2%}).")
    first = next((m for m in a["transcoders"].values() if m), None)
    if first:
        lines.append(f"- Both blocks replaced (no error term): accuracy {first['accuracy_all_replaced']:.2%}.")
    g = a["graphs"]
    lines += ["", f"## Attribution graphs ({g['graphs']} inputs, target = label)", "",
              f"A graph has {g['mean_nodes']:.0f} nodes on average; keeping {g['threshold']:.0%} of the influence on the "
              f"logit needs {g['mean_kept_nodes']:.0f} ({g['mean_kept_features']:.0f} features, {g['mean_kept_error_nodes']:.0f} "
              f"error nodes). Error nodes carry {g['mean_error_share']:.1%} of the influence on average "
              f"(at most {g['max_error_share']:.1%})."]
    iv = a["interventions"]
    lines += ["", "## Interventions against the graph", "",
              f"Removing each of the top {iv['top_nodes_per_graph']} feature nodes of {iv['graphs']} graphs ({iv['cases']} cases) "
              f"in the real model: Pearson r between predicted and measured logit change {iv['pearson_r']}, "
              f"signs agree in {iv['sign_agreement']:.1%} of cases.", ""]
    for layer, s in iv["by_layer"].items():
        exact = (" Exact up to float32 rounding (error below 0.1% of the effect): after this block the model is linear given "
                 "the frozen choices.") if s["mean_abs_error"] < 1e-3 * s["mean_abs_measured"] else " Here the frozen graph misses later nonlinearities and the later blocks' errors."
        lines.append(f"- `{layer}`: {s['cases']} cases, r = {s['pearson_r']}, mean |measured - predicted| "
                     f"{s['mean_abs_error']:.3f} against mean |measured| {s['mean_abs_measured']:.3f}.{exact}")
    lines += ["", "Where the graph is wrong (largest |measured - predicted|):", "",
              "| graph | target | node | activation | predicted | measured |", "| --- | --- | --- | --- | --- | --- |"]
    for c in iv["worst"][:5]:
        lines.append(f"| {c['graph']} | {c['target']} | {c['layer']}:{c['feature']}@{c['y']},{c['x']} | {c['activation']:.3f} | "
                     f"{c['predicted']:.3f} | {c['measured']:.3f} |")
    lines += ["", "## Global circuits: sparsity of feature weights vs neuron weights", ""]
    for pair, s in a["circuits"]["sparsity"].items():
        f, n = s["features"], s["neurons"]
        lines.append(f"- {pair}: features keep {f['top10_share_mean']:.1%} of each unit's weight mass in its top 10 of "
                     f"{f['connections_per_unit']} connections (effective {f['effective_connections_mean']:.0f}); neurons "
                     f"(`{n['layer']}`) {n['top10_share_mean']:.1%} of {n['connections_per_unit']} (effective {n['effective_connections_mean']:.0f}).")
    tops = [k for k in a["circuits"] if k.startswith("top_")]
    lines += ["", f"Per feature, its strongest input-invariant connections are listed in analysis.json ({', '.join(tops)}).",
              "", f"Rule: {iv['rule']}.", ""]
    return "\n".join(lines)


def write_analysis(model: nn.Module, tcs: Sequence[Transcoder], out_dir: str | os.PathLike, *, n_images: int = 50,
                   data_dir: str | os.PathLike | None = None, top: int = 10) -> Path:
    """``out_dir/analysis.json`` + ``out_dir/README.md`` for the first ``n_images`` MNIST test images."""
    from ..data import load_mnist

    check_model(model)
    n_images = check_int(n_images, "n_images", minimum=1)
    top = check_int(top, "top", minimum=1)
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise InputTypeError(f"out_dir: expected a folder (str or Path), got {type(out_dir).__name__} {out_dir!r}")
    check_chain(check_transcoders(tcs, model, arg="tcs"), arg="tcs")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise InputTypeError(f"data_dir: expected a folder (str or Path) or None, got {type(data_dir).__name__} {data_dir!r}")
    test = load_mnist("test", data_dir, limit=n_images)
    a = transcoder_analysis(model, tcs, test.images, test.labels, top=top)
    out = Path(out_dir)
    vio.save_json(out / "analysis.json", a)
    vio.atomic_write_text(out / "README.md", analysis_markdown(a))
    return out / "README.md"
