"""The whole mechanism in one figure: per digit, its clauses as feature pictures placed where they act.

The report opens with this figure. Everything on it is measured: the digit's mean test image, the
pool2 cells each clause names, the clause's feature picture (the mean of the channel's strongest receptive-field crops), its
classifier-weight sum, the margin change when it is mean-ablated, and its verdict.
"""

from __future__ import annotations

from typing import Any

import torch

from . import plots as P

__all__ = ["feature_picture", "draw_overview", "TOP_N"]

TOP_N = 9  # the picture of a channel is the mean of this many of its strongest receptive-field crops


def feature_picture(ex: Any, channel: int, acts: torch.Tensor, rf: Any, n_top: int = TOP_N) -> torch.Tensor:
    """The mean receptive-field crop of one conv2 channel's strongest test images (each at its best position).

    Its feature visualization would also do, but at 14x14 px it is a high-frequency pattern a reader cannot
    match by eye across digits; the mean top crop shows the stroke or arc the channel answers to."""
    from ..data.examples import crop_patches

    w = acts.shape[-1]
    per_img, arg = acts[:, channel].flatten(1).max(1)
    top = per_img.topk(n_top).indices
    pos = torch.stack([arg[top] // w, arg[top] % w], 1)
    return crop_patches(ex.x[top], pos, rf).mean(0)[0]


def draw_overview(ex: Any, digits: list[dict]) -> None:
    """Draw figures/mechanism.png from the clauses of ``stage_circuits`` and register it (section 'mechanism')."""
    from ..capture import capture
    from ..data.examples import receptive_field

    with torch.no_grad():
        acts = capture(ex.model, ex.x, ["conv2"], detach=True)["conv2"]
    rf = receptive_field(ex.model, "conv2")
    pictures: dict[int, torch.Tensor] = {}
    panels = []
    for dd in digits:
        d = dd["digit"]
        clauses = []
        for c in dd["clauses"]:
            if c["channel"] not in pictures:
                pictures[c["channel"]] = feature_picture(ex, c["channel"], acts, rf)
            clauses.append({"picture": pictures[c["channel"]], "cells": [(p // 7, p % 7) for p in c["positions"]], "present": c["sign"] == "present",
                            "label": f"{'+' if c['sign'] == 'present' else '−'}conv2:{c['channel']}", "weight": c["weight_sum"],
                            "margin": c["mean_ablation"]["margin_drop"], "verdict": c["verdict"]})
        panels.append({"title": f"digit {d}", "mean": ex.x[ex.y == d].mean(0)[0], "clauses": clauses})
    p = P.mechanism_overview(panels, ex.fig_dir / "mechanism.png")
    ex.add_figure(p, "mechanism", "The mechanism: each digit's clauses, placed where they act",
                  "Per digit: its mean test image; each clause's pool2 cells are boxed and joined to the clause's feature picture, "
                  f"the mean of the channel's {TOP_N} strongest receptive-field crops. Red, solid: a '+' clause, the feature is present "
                  "there and its classifier weights speak for the digit; blue, dashed: a '−' clause, the feature is absent there and its "
                  "weights are inhibitory. Beside each picture: the sum w of its classifier weights over those cells, the change of the "
                  "digit's margin when the clause is mean-ablated (as in the table below) and its verdict. The channels' feature "
                  "visualizations are in the section 'Feature visualization'.")
