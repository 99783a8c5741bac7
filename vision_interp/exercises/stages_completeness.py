"""Stage 4b: how much of the network the named clauses and the sparse replacement model explain.

Reads the clauses that :func:`.stages_circuits.stage_circuits` stored (chosen on the selection images) and
measures on the test images (a) the network with every pool2 cell not named by a clause mean-ablated and
(b) the committed transcoders' replacement model with its error share, plus the per-digit agreement of each
pruned attribution graph with that digit's clauses
(:func:`vision_interp.features.completeness.completeness_for_exercise`); then the named cells beside
random, label-free and attribution-ranked cells of the same number
(:func:`vision_interp.features.completeness.completeness_baselines`); then feature interventions against
the attribution graphs on held-out test images, split by block, because after pool2 everything is linear
and the conv2 cases are exact by construction.
"""

from __future__ import annotations

import numpy as np
import torch

INTERVENTION_IMAGES = 30  # the last test images (the transcoder analysis uses the first ones)
INTERVENTION_IMAGES_QUICK = 4
INTERVENTION_TOP = 10
BOOTSTRAP_DRAWS = 2000


def stage_completeness(ex) -> None:
    from ..features.completeness import completeness_baselines, completeness_for_exercise

    ex.results["completeness"] = completeness_for_exercise(ex.model, ex.results, ex.x, ex.y)
    clauses = [c for d in ex.results["circuits"]["digits"] for c in d["clauses"]]
    ex.results["completeness"]["baselines"] = completeness_baselines(ex.model, "pool2", clauses, ex.x, ex.y, ex.sel_x, ex.sel_y,
                                                                     random_seeds=10, seed=ex.cfg.seed + 37)
    ex.results["interventions"] = intervention_split(ex)


def bootstrap_r(pred: list[float], meas: list[float], groups: list[int], draws: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of Pearson r, resampling whole groups (images) with replacement: the cases of one
    image share its graph, so resampling cases alone would overstate the precision."""
    from ..features.interventions import pearson

    gen = np.random.default_rng(seed)
    ids = sorted(set(groups))
    by = {g: [i for i, h in enumerate(groups) if h == g] for g in ids}
    rs = []
    for _ in range(draws):
        pick = [i for g in gen.choice(ids, len(ids), replace=True) for i in by[int(g)]]
        r = pearson([pred[i] for i in pick], [meas[i] for i in pick])
        if r == r:
            rs.append(r)
    return float(np.percentile(rs, 2.5)), float(np.percentile(rs, 97.5))


def intervention_split(ex) -> dict:
    """Remove each of the top feature nodes of the attribution graph of held-out test images in the real model;
    report conv1-feature cases (the real test: the real conv2 block and pooling recompute) apart from conv2-feature
    cases (an arithmetic check: after pool2 the model is linear, so they agree by construction)."""
    from ..features.interventions import intervention_check, pearson
    from ..features.transcoders import load_transcoder

    n = INTERVENTION_IMAGES_QUICK if ex.cfg.quick else INTERVENTION_IMAGES
    top = 5 if ex.cfg.quick else INTERVENTION_TOP
    idx = list(range(len(ex.test_x) - n, len(ex.test_x)))
    tcs = [load_transcoder(t) for t in ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc")]
    iv = intervention_check(ex.model, tcs, ex.test_x[idx], ex.test_y[idx].tolist(), top=top, worst=0)
    out = {"images": n, "test_indices": [idx[0], idx[-1] + 1], "top_nodes_per_graph": top, "rule": iv["rule"], "blocks": {}}
    for layer, kind in ((tcs[0].feature_layer, "conv1"), (tcs[1].feature_layer, "conv2")):
        cases = [c for c in iv["all_cases"] if c["layer"] == layer]
        pred, meas = [c["predicted"] for c in cases], [c["measured"] for c in cases]
        r = pearson(pred, meas) if len(cases) > 2 else float("nan")
        lo, hi = bootstrap_r(pred, meas, [c["graph"] for c in cases], BOOTSTRAP_DRAWS, ex.cfg.seed + 38) if len(cases) > 2 else (float("nan"),) * 2
        err = float(np.mean([abs(m - p) for p, m in zip(pred, meas)])) if cases else float("nan")
        size = float(np.mean([abs(m) for m in meas])) if cases else float("nan")
        out["blocks"][kind] = {"feature_layer": layer, "cases": len(cases), "pearson_r": round(r, 4) if r == r else None,
                               "r_95": [round(lo, 4), round(hi, 4)] if lo == lo else None,
                               "mean_abs_error": round(err, 6), "mean_abs_measured": round(size, 6),
                               "measured_negative_share": round(float(np.mean([m < 0 for m in meas])), 4) if cases else None,
                               "sign_agreement": round(float(np.mean([(p > 0) == (m > 0) for p, m in zip(pred, meas)])), 4) if cases else None,
                               "role": ("the real test: removing a conv1 feature lets the real conv2 block, ReLU and max pools recompute"
                                        if kind == "conv1" else
                                        "arithmetic check (exact by construction: everything after pool2 is linear)")}
    pooled = pearson([c["predicted"] for c in iv["all_cases"]], [c["measured"] for c in iv["all_cases"]])
    out["pooled_pearson_r"] = round(pooled, 4) if pooled == pooled else None
    return out
