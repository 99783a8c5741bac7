"""How much of the network do the named parts carry? Completeness figures for the MNIST report.

Two figures, each on the same test images:

(a) **Named parts alone**: every channel and position of ``layer`` (the classifier's input, e.g.
    ``pool2``) that no clause names is mean-ablated (set to its dataset mean); the model's accuracy
    and the share of the logit margin that remains.
(b) **The sparse replacement model**: every transcoded block replaced (no error term); its accuracy
    and margin share, plus the error nodes' share of the influence on the label logit in per-input
    attribution graphs.

Margin of an image = its label's logit minus the largest other logit. *Margin share* = mean margin
under the intervention / mean clean margin (a ratio of means, so near-zero margins do not dominate).
Per digit, the graph is compared with the clauses: the share of the last block's feature influence
(pruned graph) that sits at the positions the digit's clauses name, and on the channels they name
(a feature counts for the channel its decoder writes most to).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .graph import GraphBuilder
from .replacement import replaced
from .transcoders import Transcoder

__all__ = ["named_mask", "margins", "mean_ablated_except", "completeness", "completeness_markdown", "completeness_headline",
           "completeness_by_digit", "completeness_for_exercise"]


def named_mask(clauses: Sequence[dict], shape: tuple[int, int, int]) -> torch.Tensor:
    """``(C, H, W)`` bool: the cells some clause names (``channel`` and ``positions`` as y * W + x)."""
    c, h, w = shape
    mask = torch.zeros(c, h * w, dtype=torch.bool)
    for cl in clauses:
        ch, pos = int(cl["channel"]), [int(p) for p in cl["positions"]]
        if not 0 <= ch < c or any(not 0 <= p < h * w for p in pos):
            raise ValueError(f"clause {cl} names a cell outside the layer's shape {shape}")
        mask[ch, pos] = True
    return mask.view(c, h, w)


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Label logit minus the largest other logit, per image."""
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return own - other


@torch.no_grad()
def mean_ablated_except(model: nn.Module, layer: str, keep: torch.Tensor, means: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Logits with every cell of ``layer`` outside ``keep`` set to ``means`` (hook removed afterwards)."""
    from ..capture import hooks

    keep_f = keep.to(means.dtype)

    def ablate(_m, _i, out):
        return out * keep_f + means * (1 - keep_f)

    with hooks(model, {layer: ablate}):
        return model(images)


def _figures(logits: torch.Tensor, labels: torch.Tensor, clean_margin: float) -> dict:
    m = margins(logits, labels)
    return {"accuracy": round(float((logits.argmax(1) == labels).float().mean()), 5),
            "mean_margin": round(float(m.mean()), 5), "margin_share": round(float(m.mean()) / clean_margin, 5)}


@torch.no_grad()
def completeness(model: nn.Module, tcs: Sequence[Transcoder], clauses: Sequence[dict], images: torch.Tensor, labels: torch.Tensor,
                 *, layer: str = "pool2", graph_images: int = 20, threshold: float = 0.8) -> dict:
    """Figures (a) and (b) and the per-digit comparison; see the module docstring."""
    from ..capture import capture
    from ..units import resolve_layer

    path = resolve_layer(model, layer)
    acts = capture(model, images, [path], detach=True)[path]
    means = acts.mean(0)
    keep = named_mask(clauses, tuple(acts.shape[1:]))
    clean = model(images)
    clean_margin = float(margins(clean, labels).mean())
    out = {"images": len(images), "layer": path, "clauses": len(clauses), "named_cells": int(keep.sum()), "cells": keep.numel(),
           "model": _figures(clean, labels, clean_margin),
           "named_parts_alone": _figures(mean_ablated_except(model, path, keep, means, images), labels, clean_margin)}
    with replaced(model, tcs):
        out["replacement"] = _figures(model(images), labels, clean_margin)
    out["replacement"].update(_graph_figures(model, tcs, clauses, images, labels, graph_images, threshold))
    out["margin_rule"] = "margin share = mean (label logit - largest other logit) under the intervention / the same mean for the model"
    return out


def _graph_figures(model: nn.Module, tcs: Sequence[Transcoder], clauses: Sequence[dict], images: torch.Tensor, labels: torch.Tensor,
                   n: int, threshold: float) -> dict:
    """Error share over the first ``n`` images, and per digit (its first image) graph-vs-clause agreement."""
    with torch.enable_grad():
        builder = GraphBuilder(model, tcs)
        shares, per_digit = [], {}
        first = {int(d): int((labels == d).nonzero()[0]) for d in labels.unique()}
        idx = sorted(set(range(min(n, len(images)))) | set(first.values()))
        for i in idx:
            g = builder.build(images[i], int(labels[i]))
            p = g.prune(threshold)
            if i < n:
                shares.append(p["error_share"])
            d = int(labels[i])
            if first.get(d) == i:
                per_digit[d] = _agreement(g, p["kept"], [c for c in clauses if int(c["digit"]) == d], tcs[-1])
    return {"graphs": len(shares), "mean_error_share": round(sum(shares) / max(1, len(shares)), 5), "per_digit": per_digit}


def _agreement(g, kept: list[int], clauses: Sequence[dict], last: Transcoder) -> dict:
    infl = g.influence()
    block = len(g.meta["feature_layers"]) - 1
    feats = [i for i in kept if g.nodes[i]["kind"] == "feature" and g.nodes[i]["block"] == block]
    total = sum(float(infl[i]) for i in feats) or 1e-30
    w = g.meta["feature_shapes"][block][2]  # clause positions are y * W + x on the last block's output grid
    top_channel = last.module.directions.abs().argmax(1)
    pos = {int(p) for c in clauses for p in c["positions"]}
    chans = {int(c["channel"]) for c in clauses}
    at_pos = sum(float(infl[i]) for i in feats if g.nodes[i]["y"] * w + g.nodes[i]["x"] in pos) / total
    on_ch = sum(float(infl[i]) for i in feats if int(top_channel[g.nodes[i]["feature"]]) in chans) / total
    top = sorted(feats, key=lambda i: -float(infl[i]))[:3]
    return {"kept_last_block_features": len(feats), "influence_at_clause_positions": round(at_pos, 4),
            "influence_on_clause_channels": round(on_ch, 4),
            "top_features": [{"feature": g.nodes[i]["feature"], "y": g.nodes[i]["y"], "x": g.nodes[i]["x"],
                              "writes_most_to_channel": int(top_channel[g.nodes[i]["feature"]])} for i in top],
            "clause_channels": sorted(chans)}


def completeness_markdown(c: dict) -> str:
    """The report section (headline, then the per-digit comparison); every sentence reads a measured number from ``c``."""
    return completeness_headline(c) + "\n" + completeness_by_digit(c)


def completeness_headline(c: dict) -> str:
    """The two completeness figures, (a) named parts alone and (b) the replacement model: the top of a report."""
    m, a, r = c["model"], c["named_parts_alone"], c["replacement"]
    lines = ["## How much do the named parts explain?", "",
             f"On {c['images']} test images the model is {m['accuracy']:.2%} accurate with a mean logit margin of {m['mean_margin']:.2f}.", "",
             f"- **(a) Named parts alone**: mean-ablating the {c['cells'] - c['named_cells']} of {c['cells']} {c['layer']} cells that "
             f"none of the {c['clauses']} clauses names leaves accuracy {a['accuracy']:.2%} and {a['margin_share']:.1%} of the logit margin.",
             f"- **(b) Sparse replacement model** (transcoders, no error term): accuracy {r['accuracy']:.2%}, {r['margin_share']:.1%} of the "
             f"margin; in {r['graphs']} attribution graphs the error nodes carry {r['mean_error_share']:.1%} of the influence on the label logit.",
             "", f"({c['margin_rule']}.)", ""]
    return "\n".join(lines)


def completeness_by_digit(c: dict) -> str:
    """Per digit, the pruned attribution graph beside the neuron-level clauses: where they agree and differ."""
    r = c["replacement"]
    lines = ["## Per digit: the attribution graph beside the clauses", "",
             "| digit | graph influence at clause positions | on clause channels | top features (channel written most) |",
             "| --- | --- | --- | --- |"]
    for d, s in sorted(r["per_digit"].items()):
        tops = ", ".join(f"{t['feature']}@{t['y']},{t['x']} (ch {t['writes_most_to_channel']})" for t in s["top_features"])
        lines.append(f"| {d} | {s['influence_at_clause_positions']:.0%} | {s['influence_on_clause_channels']:.0%} | {tops} |")
    if c.get("graphs_page"):
        lines += ["", f"The attribution graph of each digit: [graphs per digit]({c['graphs_page']})."]
    else:
        lines += ["", "The attribution graph of each digit: `vision-interp transcoder --gallery DIR` writes one page per digit."]
    lines += ["", "Agreement is the share of the pruned graph's last-block feature influence at the positions (or on the channels) "
              "that the digit's clauses name; the rest is where the graph and the neuron-level clauses differ.", ""]
    return "\n".join(lines)


def completeness_for_exercise(model: nn.Module, results: dict, images: torch.Tensor, labels: torch.Tensor, *,
                              transcoders: Sequence[str] = ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc"), graph_images: int = 20,
                              graphs_page: str | None = "../features/mnist_cnn_tc/graphs/index.html") -> dict:
    """The figures for the MNIST exercise: its clauses (``results["circuits"]["digits"]``) against the
    committed transcoders; the report renders ``results["completeness"]`` with :func:`completeness_markdown`."""
    from .transcoders import load_transcoder

    clauses = [c for d in results["circuits"]["digits"] for c in d["clauses"]]
    out = completeness(model, [load_transcoder(t) for t in transcoders], clauses, images, labels, graph_images=graph_images)
    out["graphs_page"] = graphs_page  # relative to the report (galleries/mnist_exercise/)
    return out
