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

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import (InputError, InputTypeError, TargetRangeError, check_finite, check_images, check_index, check_int,
                      check_matrix, check_model)
from ..model_state import using
from .graph import GraphBuilder, check_chain, check_threshold, logits_path, model_logits
from .replacement import replaced
from .transcoders import Transcoder, check_transcoders

__all__ = ["named_mask", "margins", "mean_ablated_except", "completeness", "completeness_markdown", "completeness_headline",
           "completeness_by_digit", "completeness_for_exercise", "completeness_baselines", "baselines_markdown", "baselines_headline", "BASELINE_RULE"]


def _check_clauses(clauses: object, arg: str = "clauses") -> list[Mapping]:
    """A list of clause dicts, each with an integer ``channel``, a list of integer ``positions`` and an integer
    ``digit`` (the class the clause is about); floats are refused, never truncated."""
    if isinstance(clauses, (str, bytes, Mapping)) or not isinstance(clauses, (list, tuple)):
        raise InputTypeError(f"{arg}: expected a list of clause dicts ({{'digit', 'channel', 'positions'}}), got {type(clauses).__name__}")
    for i, cl in enumerate(clauses):
        if not isinstance(cl, Mapping):
            raise InputTypeError(f"{arg}[{i}]: expected a dict with 'digit', 'channel' and 'positions', got {type(cl).__name__}")
        missing = [k for k in ("digit", "channel", "positions") if k not in cl]
        if missing:
            raise InputError(f"{arg}[{i}]: no {', '.join(repr(k) for k in missing)}; a clause names a digit, a channel and positions")
        check_index(cl["digit"], f"{arg}[{i}]['digit']", minimum=0, what="a class index (an integer)")
        check_index(cl["channel"], f"{arg}[{i}]['channel']", minimum=0, what="a channel (an integer)")
        pos = cl["positions"]
        if isinstance(pos, (str, bytes)) or not isinstance(pos, (list, tuple, range)):
            raise InputTypeError(f"{arg}[{i}]['positions']: expected a list of positions y * W + x, got {type(pos).__name__}")
        for p in pos:
            check_index(p, f"{arg}[{i}]['positions']", minimum=0, what="a position y * W + x (an integer)")
    return list(clauses)


def named_mask(clauses: Sequence[dict], shape: tuple[int, int, int]) -> torch.Tensor:
    """``(C, H, W)`` bool: the cells some clause names (``channel`` and ``positions`` as y * W + x)."""
    _check_clauses(clauses)
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) != 3:
        raise InputError(f"shape: {shape!r}; expected a layer shape (C, H, W)")
    c, h, w = (check_index(v, "shape", minimum=1) for v in shape)
    mask = torch.zeros(c, h * w, dtype=torch.bool)
    for cl in clauses:
        ch, pos = int(cl["channel"]), [int(p) for p in cl["positions"]]
        if not 0 <= ch < c or any(not 0 <= p < h * w for p in pos):
            raise InputError(f"clauses: {dict(cl)} names a cell outside the layer's shape {tuple(shape)} (channels 0..{c - 1}, "
                             f"positions 0..{h * w - 1})")
        mask[ch, pos] = True
    return mask.view(c, h, w)


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Label logit minus the largest other logit, per image."""
    check_matrix(logits, "logits", ndim=2)
    _check_labels(labels, len(logits), logits.shape[1])
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return own - other


def _check_labels(labels: object, n: int, n_classes: int | None = None) -> torch.Tensor:
    """One integer class label per image (a float tensor is refused, never truncated), in range."""
    if not isinstance(labels, torch.Tensor):
        raise InputTypeError(f"labels: expected a 1-D integer tensor of class labels, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or len(labels) != n:
        raise InputError(f"labels: {tuple(labels.shape)} {labels.dtype}; expected one integer class label per image ({n})")
    if n and (int(labels.min()) < 0 or n_classes is not None and int(labels.max()) >= n_classes):
        hi = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
        raise TargetRangeError(f"labels: span {int(labels.min())}..{int(labels.max())}; class labels must be in {hi}")
    return labels


@torch.no_grad()
def mean_ablated_except(model: nn.Module, layer: str, keep: torch.Tensor, means: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Logits with every cell of ``layer`` outside ``keep`` set to ``means`` (hook removed afterwards; the
    model runs in eval mode on the caller's behalf)."""
    from ..capture import hooks
    from ..units import layer_shape, resolve_layer

    check_model(model)
    with using(model, what="mean_ablated_except()"):
        path = resolve_layer(model, layer)
        shape = tuple(layer_shape(model, path, tuple(images.shape[1:]) if isinstance(images, torch.Tensor) and images.ndim == 4 else None))
        for name, t in (("keep", keep), ("means", means)):
            if not isinstance(t, torch.Tensor):
                raise InputTypeError(f"{name}: expected a tensor of {path!r}'s shape {shape}, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise InputError(f"{name}: shape {tuple(t.shape)}; expected {path!r}'s shape {shape}")
        check_finite(means, "means")
        if keep.dtype != torch.bool:
            raise InputError(f"keep: dtype {keep.dtype}; expected a bool mask (True = keep the cell)")
        x, _ = check_images(images, model, arg="images", allow_single=False)
        keep_f = keep.to(x.device, means.dtype)
        means = means.to(x.device)

        def ablate(_m, _i, out):
            return out * keep_f + means * (1 - keep_f)

        with hooks(model, {path: ablate}):
            return model_logits(model, x, logits_path(model))


def _figures(logits: torch.Tensor, labels: torch.Tensor, clean_margin: float) -> dict:
    m = margins(logits, labels)
    return {"accuracy": round(float((logits.argmax(1) == labels).float().mean()), 5),
            "mean_margin": round(float(m.mean()), 5), "margin_share": round(float(m.mean()) / clean_margin, 5)}


@torch.no_grad()
def completeness(model: nn.Module, tcs: Sequence[Transcoder], clauses: Sequence[dict], images: torch.Tensor, labels: torch.Tensor,
                 *, layer: str = "pool2", graph_images: int = 20, threshold: float = 0.8) -> dict:
    """Figures (a) and (b) and the per-digit comparison; see the module docstring. ``layer`` is the
    classifier's input the clauses name cells of (a conv map); the model runs in eval mode on the caller's
    behalf (BatchNorm statistics are not updated), under its lock, and comes back as it was."""
    from ..capture import capture
    from ..units import resolve_layer

    check_model(model)
    if not isinstance(layer, str):
        raise InputTypeError(f"layer: expected a layer name, got {type(layer).__name__} {layer!r}")
    graph_images = check_int(graph_images, "graph_images", minimum=0)
    threshold = check_threshold(threshold)
    clauses = _check_clauses(clauses)
    with using(model, what="completeness()"):
        tcs = check_chain(check_transcoders(tcs, model, arg="tcs"), arg="tcs")
        path = resolve_layer(model, layer)
        if path != tcs[-1].out_layer:
            raise InputError(f"layer: {path!r}; the clauses' cells are compared with the last transcoder's features, which write "
                             f"{tcs[-1].out_layer!r}: give layer={tcs[-1].out_layer!r} (or end the chain at {path!r})")
        images, _ = check_images(images, model, arg="images", allow_single=False)
        _check_labels(labels, len(images))
        clean = model_logits(model, images, logits_path(model))
        _check_labels(labels, len(images), clean.shape[1])
        labels = labels.to(clean.device)
        if not _clean_margin_ok(clean, labels):
            raise InputError("labels: the model's mean logit margin on these images is not positive; margin shares would "
                             "divide by a non-positive number (give images the model classifies)")
        acts = capture(model, images, [path], detach=True)[path]
        if acts.ndim != 4:
            raise InputError(f"layer: {path!r} gives {tuple(acts.shape[1:])}; clauses name cells of a conv map (C, H, W)")
        means = acts.mean(0)
        keep = named_mask(clauses, tuple(acts.shape[1:]))
        clean_margin = float(margins(clean, labels).mean())
        out = {"images": len(images), "layer": path, "clauses": len(clauses), "named_cells": int(keep.sum()), "cells": keep.numel(),
               "model": _figures(clean, labels, clean_margin),
               "named_parts_alone": _figures(mean_ablated_except(model, path, keep, means, images), labels, clean_margin)}
        with replaced(model, tcs):
            out["replacement"] = _figures(model_logits(model, images, logits_path(model)), labels, clean_margin)
        out["replacement"].update(_graph_figures(model, tcs, clauses, images, labels, graph_images, threshold))
    out["margin_rule"] = "margin share = mean (label logit - largest other logit) under the intervention / the same mean for the model"
    return out


def _clean_margin_ok(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether the mean clean margin is a positive finite number (the denominator of every margin share)."""
    m = float(margins(logits, labels).mean())
    return m > 0 and m == m and m != float("inf")


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


# ----------------------------------------------------------------------------- baselines (issue 37, item 3)

BASELINE_MARGIN = 0.02
BASELINE_RULE = (f"each figure is normalised as (value - floor) / (model - floor), floor = every cell mean-ablated, so 0 is the floor "
                 f"and 1 the model; the named account **beats** a baseline on a figure when its normalised value is higher by at least "
                 f"{BASELINE_MARGIN:g} (against random cells: higher than every seed's), **falls short** when lower by at least {BASELINE_MARGIN:g} "
                 f"(against random cells: lower than the seeds' mean), and is **level** otherwise")
_FIGURES = ("accuracy", "agreement", "margin_share")


def _keep_figures(clean: torch.Tensor, A: torch.Tensor, W: torch.Tensor, means: torch.Tensor, labels: torch.Tensor,
                  keep: torch.Tensor, clean_margin: float) -> dict:
    """Accuracy, agreement with the model's predictions and margin share with every cell outside ``keep`` (flat bool)
    mean-ablated; exact because the logits are linear in the layer (checked by the caller)."""
    logits = clean + ((means - A) * (~keep).to(A.dtype)) @ W.T
    m = margins(logits, labels)
    return {"accuracy": float((logits.argmax(1) == labels).float().mean()),
            "agreement": float((logits.argmax(1) == clean.argmax(1)).float().mean()),
            "margin_share": float(m.mean()) / clean_margin}


def _normalised(v: dict, floor: dict, model: dict) -> dict:
    return {f: (v[f] - floor[f]) / (model[f] - floor[f]) if abs(model[f] - floor[f]) > 1e-12 else float("nan") for f in _FIGURES}


def _rounded(d: dict, nd: int = 5) -> dict:
    return {k: round(float(v), nd) if v == v else None for k, v in d.items()}


def _top_k(score: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros(score.numel(), dtype=torch.bool)
    keep[torch.argsort(score, descending=True, stable=True)[:k]] = True
    return keep


@torch.no_grad()
def completeness_baselines(model: nn.Module, layer: str, clauses: Sequence[dict], images: torch.Tensor, labels: torch.Tensor,
                           selection_images: torch.Tensor, selection_labels: torch.Tensor, *, random_seeds: int = 10, seed: int = 0,
                           batch_size: int = 1000) -> dict:
    """The named cells beside baselines of the same size, all measured by the same code on ``images``.

    Keeping only a set of ``layer`` cells (every other cell set to its mean over ``images``), for: the cells the
    ``clauses`` name; ``random_seeds`` random sets; the top cells by ``sum_d |W[d, cell]| x std(cell)`` (ignores labels);
    the top cells by class-contrastive attribution ``sum_d max(0, W[d, cell] (E[a|d] - E[a|not d]))``. Both rankings are
    computed on ``selection_images`` (the data the clauses were chosen on), never on ``images``. Each figure (accuracy,
    agreement with the model's predictions, margin share) is also given normalised between the floor (all cells
    ablated) and the model, and each clause's own share of its digit's normalised margin. The logits must read
    ``layer`` linearly (checked on the captured activations; closed form, no forward pass per set).
    """
    from ..circuits.logit_attribution import _linear_readout, contrastive_map

    check_model(model)
    if not isinstance(layer, str):
        raise InputTypeError(f"layer: expected a layer name, got {type(layer).__name__} {layer!r}")
    clauses = _check_clauses(clauses)
    random_seeds = check_int(random_seeds, "random_seeds", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    with using(model, what="completeness_baselines()"):
        images, _ = check_images(images, model, arg="images", allow_single=False)
        selection_images, _ = check_images(selection_images, model, arg="selection_images", allow_single=False)
        _check_labels(labels, len(images))
        _check_labels(selection_labels, len(selection_images))
        path, acts, clean, W, labels = _linear_readout(model, layer, images, labels, None, None, batch_size)
        _, sel_acts, _, _, sel_labels = _linear_readout(model, path, selection_images, selection_labels, None, None, batch_size)
        if acts.ndim != 4:
            raise InputError(f"layer: {path!r} gives {tuple(acts.shape[1:])}; clauses name cells of a conv map (C, H, W)")
        if not _clean_margin_ok(clean, labels):
            raise InputError("labels: the model's mean logit margin on these images is not positive; margin shares would "
                             "divide by a non-positive number (give images the model classifies)")
        shape = tuple(acts.shape[1:])
        named = named_mask(clauses, shape).flatten()
        k = int(named.sum())
        if k == 0:
            raise InputError("clauses: they name no cell; there is nothing to compare with the baselines")
        A, means, W = acts.flatten(1), acts.flatten(1).mean(0), W.to(acts.dtype)
        clean_margin = float(margins(clean, labels).mean())

        def figs(keep: torch.Tensor) -> dict:
            return _keep_figures(clean, A, W, means, labels, keep, clean_margin)

        model_f = figs(torch.ones_like(named))
        floor_f = figs(torch.zeros_like(named))

        def entry(keep: torch.Tensor) -> dict:
            v = figs(keep)
            return {"raw": _rounded(v), "normalised": _rounded(_normalised(v, floor_f, model_f))}

        S = sel_acts.flatten(1)
        weight_std = W.abs().sum(0) * S.std(0)
        contrast = torch.zeros_like(weight_std)
        for d in sorted({int(v) for v in sel_labels.tolist()}):
            if (sel_labels != d).any():
                contrast += contrastive_map(W, sel_acts, sel_labels, d).flatten().clamp_min(0)
        gen = torch.Generator().manual_seed(seed)
        draws = []
        for _ in range(random_seeds):
            keep = torch.zeros_like(named)
            keep[torch.randperm(named.numel(), generator=gen)[:k]] = True
            draws.append(entry(keep))
        rand = {"seeds": random_seeds, "draws": draws}
        for part in ("raw", "normalised"):
            rand[part] = {f: _spread([d[part][f] for d in draws]) for f in _FIGURES}
        out = {"images": len(images), "selection_images": len(selection_images), "layer": path, "cells": named.numel(),
               "k": k, "clauses": len(clauses),
               "model": _rounded(model_f), "floor": _rounded(floor_f), "named": entry(named), "random": rand,
               "top_weight_std": entry(_top_k(weight_std, k)), "top_contrastive": entry(_top_k(contrast, k)),
               "means_from": "images", "rule": BASELINE_RULE,
               "rankings": {"top_weight_std": "sum over classes of |W[class, cell]| x the cell's std on the selection images",
                            "top_contrastive": "sum over classes of max(0, W[class, cell] x (E[a | class] - E[a | other classes])) "
                                               "on the selection images"}}
        out["verdicts"] = _baseline_verdicts(out)
        out["per_clause"] = _clause_shares(clauses, shape, clean, A, W, means, labels)
    return out


def _spread(values: list) -> dict:
    """Mean, sd, min and max of the defined values (None where the figure is undefined: the model equals the floor)."""
    v = [x for x in values if x is not None]
    if len(v) < 2:
        return {"mean": v[0] if v else None, "sd": None, "min": v[0] if v else None, "max": v[0] if v else None}
    return {"mean": round(float(np.mean(v)), 5), "sd": round(float(np.std(v, ddof=1)), 5), "min": round(min(v), 5), "max": round(max(v), 5)}


def _baseline_verdicts(b: dict) -> dict:
    """:data:`BASELINE_RULE` applied to every baseline and figure: the difference and its word."""
    named = b["named"]["normalised"]
    out = {}
    for name in ("random", "top_weight_std", "top_contrastive"):
        per = {}
        for f in _FIGURES:
            base = b["random"]["normalised"][f]["mean"] if name == "random" else b[name]["normalised"][f]
            if named[f] is None or base is None:
                per[f] = {"difference": None, "verdict": "undefined (the model equals the floor)"}
                continue
            if name == "random":
                hi, mid = b["random"]["normalised"][f]["max"], b["random"]["normalised"][f]["mean"]
                diff = named[f] - mid
                word = "beats" if named[f] - hi >= BASELINE_MARGIN else ("falls short" if named[f] - mid <= -BASELINE_MARGIN else "level")
            else:
                diff = named[f] - b[name]["normalised"][f]
                word = "beats" if diff >= BASELINE_MARGIN else ("falls short" if diff <= -BASELINE_MARGIN else "level")
            per[f] = {"difference": round(diff, 5), "verdict": word}
        out[name] = per
    return out


def _clause_shares(clauses: Sequence[Mapping], shape: tuple, clean: torch.Tensor, A: torch.Tensor, W: torch.Tensor,
                   means: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """Per clause, on its digit's images: the digit's mean margin keeping only the clause's cells, normalised between
    the floor and the model; beside it the same for all of the digit's clauses together."""
    rows, by_digit = [], {}
    for cl in clauses:
        by_digit.setdefault(int(cl["digit"]), []).append(cl)
    for cl in clauses:
        d = int(cl["digit"])
        sel = labels == d
        if not bool(sel.any()):
            rows.append({"digit": d, "channel": int(cl["channel"]), "cells": len(cl["positions"]), "own_share": None, "digit_share": None})
            continue
        c, Ad, ld = clean[sel], A[sel], labels[sel]

        def mean_margin(keep: torch.Tensor) -> float:
            return float(margins(c + ((means - Ad) * (~keep).to(Ad.dtype)) @ W.T, ld).mean())

        hi, lo = mean_margin(torch.ones(A.shape[1], dtype=torch.bool)), mean_margin(torch.zeros(A.shape[1], dtype=torch.bool))

        def share(keep: torch.Tensor) -> float | None:
            return round((mean_margin(keep) - lo) / (hi - lo), 5) if abs(hi - lo) > 1e-12 else None

        rows.append({"digit": d, "channel": int(cl["channel"]), "sign": cl.get("sign"), "cells": len(cl["positions"]),
                     "own_share": share(named_mask([cl], shape).flatten()),
                     "digit_share": share(named_mask(by_digit[d], shape).flatten())})
    return rows


_FIG_WORDS = {"accuracy": "accuracy", "agreement": "agreement with the model", "margin_share": "margin share"}


def _n(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def baselines_headline(b: dict) -> str:
    """One sentence for the top of a report: the named account's normalised figures beside each baseline's, and the verdicts."""
    n, r = b["named"]["normalised"], b["random"]["normalised"]
    names = {"random": "random cells", "top_weight_std": "the label-free ranking (sum |W| x std)",
             "top_contrastive": "the contrastive-attribution ranking"}
    counts = "; ".join(f"{names[k]} on {sum(v[f]['verdict'] == 'beats' for f in _FIGURES)} of 3 "
                       f"(falls short on {sum(v[f]['verdict'] == 'falls short' for f in _FIGURES)})" for k, v in b["verdicts"].items())
    return (f"- **(c) Against baselines of the same {b['k']} cells** (normalised margin share, 0 = all cells ablated, 1 = the model): "
            f"named {_n(n['margin_share'])}; random {_n(r['margin_share']['mean'])} (max of {b['random']['seeds']} seeds "
            f"{_n(r['margin_share']['max'])}); label-free top cells {_n(b['top_weight_std']['normalised']['margin_share'])}; "
            f"contrastive top cells {_n(b['top_contrastive']['normalised']['margin_share'])}. Of the three figures (accuracy, agreement "
            f"with the model, margin share) the named account beats {counts}; the table and the rule are below.")


def baselines_markdown(b: dict) -> str:
    """The baselines section of a report: one table, the verdict per baseline, each clause's share; every number from ``b``."""
    def cell(e: dict, f: str) -> str:
        return f"{e['raw'][f]:.3f} ({_n(e['normalised'][f])})"

    r = b["random"]
    lines = ["## The named account against baselines of the same size", "",
             f"Keeping only {b['k']} of {b['cells']} {b['layer']} cells (every other cell mean-ablated) on {b['images']} test images; "
             f"both rankings were computed on the {b['selection_images']} selection images, not on the test images. "
             "Each cell: raw value (normalised: (value - floor) / (model - floor)).", "",
             "| cells kept | accuracy | agreement with the model | margin share |", "| --- | --- | --- | --- |",
             f"| all (the model) | {b['model']['accuracy']:.3f} (1) | {b['model']['agreement']:.3f} (1) | {b['model']['margin_share']:.3f} (1) |",
             f"| none (the floor) | {b['floor']['accuracy']:.3f} (0) | {b['floor']['agreement']:.3f} (0) | {b['floor']['margin_share']:.3f} (0) |",
             f"| **the {b['clauses']} named clauses** | " + " | ".join(cell(b["named"], f) for f in _FIGURES) + " |",
             f"| random, {r['seeds']} seeds (mean +- sd of the normalised) | "
             + " | ".join(f"{r['raw'][f]['mean']:.3f} ({_n(r['normalised'][f]['mean'])} +- {_n(r['normalised'][f]['sd'])}, "
                          f"max {_n(r['normalised'][f]['max'])})" for f in _FIGURES) + " |",
             f"| top {b['k']} by sum \\|W\\| x std (label-free) | " + " | ".join(cell(b["top_weight_std"], f) for f in _FIGURES) + " |",
             f"| top {b['k']} by contrastive attribution | " + " | ".join(cell(b["top_contrastive"], f) for f in _FIGURES) + " |",
             "", f"Rule: {b['rule']}.", ""]
    names = {"random": "random cells", "top_weight_std": "the label-free top cells by |W| x std",
             "top_contrastive": "the top cells by contrastive attribution"}
    for name, per in b["verdicts"].items():
        parts = [f"{_FIG_WORDS[f]}: {per[f]['verdict']}" + ("" if per[f]["difference"] is None else f" ({per[f]['difference']:+.3f})")
                 for f in _FIGURES]
        n_beats = sum(per[f]["verdict"] == "beats" for f in _FIGURES)
        lines.append(f"- Against {names[name]}: the named account beats it on {n_beats} of 3 figures; " + "; ".join(parts) + ".")
    lines += ["", "(Differences are normalised named minus normalised baseline; against random cells, minus the seeds' mean.)", "",
              "Each clause's own share: on its digit's test images, the digit's mean margin keeping only the clause's cells, "
              "normalised between the floor and the model (the digit's clauses together beside it).", "",
              f"| digit | {b['layer']} channel | cells | own share | the digit's clauses together |", "| --- | --- | --- | --- | --- |"]
    for row in b["per_clause"]:
        sign = "+" if row.get("sign") == "present" else ("-" if row.get("sign") == "absent" else "")
        own = "n/a" if row["own_share"] is None else f"{row['own_share']:.3f}"
        dig = "n/a" if row["digit_share"] is None else f"{row['digit_share']:.3f}"
        lines.append(f"| {row['digit']} | {sign}{row['channel']} | {row['cells']} | {own} | {dig} |")
    lines.append("")
    return "\n".join(lines)
