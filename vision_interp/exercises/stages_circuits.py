"""Stages 4-5 and 7 of the MNIST exercise: how the units make digits -- per-digit circuits read from
the classifier weights (clauses chosen on the selection images, from the training split), each clause
tested on the test images by closed-form ablation against random controls, and
where the wrong answer of each common confusion comes from."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from . import circuit as CI
from . import plots as P
from .stages_common import _acts, _r, _short


def _effects(abl) -> dict:
    """The four effect numbers of a closed-form ablation, in the order results.json stores them."""
    return {k: getattr(abl, k) for k in ("margin_drop", "others_margin_drop", "specificity", "accuracy_drop")}



def stage_circuits(ex) -> None:
    from ..circuits import closed_form_ablation

    m = ex.model
    a = _acts(ex)["pool2"]
    a_sel, y_sel = _selection_pool2(ex)  # clauses are chosen here (training images), tested on a (test images)
    W = m.fc.weight.detach()
    clean, y = ex.clean_logits, ex.y
    mean = a.flatten(2).mean(0)
    gen = torch.Generator().manual_seed(ex.cfg.seed + 14)
    n_ctrl = ex.cfg.random_draws
    contrib = a.flatten(2)  # (N, C, P)
    digits, fig_rows, all_clauses = [], [], []
    for d in ex.cfg.circuit_classes:
        clauses = CI.select_clauses(W, a_sel, y_sel, d, n_clauses=ex.cfg.k_channels)
        exclude = {c.channel for c in clauses}
        mean_img = ex.x[y == d].mean(0)[0]
        wd = W[d].view(a.shape[1], -1)
        crow = [{"img": mean_img, "title": f"mean {d} ({int((y == d).sum())} images)"}]
        cl_out = []
        for cl in clauses:
            unit = ("pool2", cl.channel)
            abl = closed_form_ablation(m, unit, ex.x, y, d, positions=cl.positions, mode="mean", controls=n_ctrl,
                                       exclude=sorted(exclude), generator=gen, activations=a, logits=clean)
            em = _effects(abl)
            ez = _effects(closed_form_ablation(m, unit, ex.x, y, d, positions=cl.positions, mode="zero", activations=a, logits=clean))
            rc = {"margin_drops": abl.control_drops, "size_ratio_max": abl.control_size_ratio_max, "n": len(abl.control_drops),
                  "channels_used": abl.control_channels}
            pct = abl.percentile
            verdict = CI.verdict(em["margin_drop"], pct, em["specificity"])
            on_d = float(contrib[y == d][:, cl.channel, cl.positions].mean())
            on_other = float(contrib[y != d][:, cl.channel, cl.positions].mean())
            dla_d = float((contrib[y == d][:, cl.channel, cl.positions] * wd[cl.channel, cl.positions]).sum(1).mean())
            dla_o = float((contrib[y != d][:, cl.channel, cl.positions] * wd[cl.channel, cl.positions]).sum(1).mean())
            entry = {**cl.as_dict(), "name": ex.conv2_names.get(cl.channel, "unclear"), "region": CI.region_word(cl.positions),
                     "mean_activation_on_digit": _r(on_d), "mean_activation_on_others": _r(on_other), "dataset_mean": _r(float(mean[cl.channel, cl.positions].mean())),
                     "direct_logit_on_digit": _r(dla_d), "direct_logit_on_others": _r(dla_o),
                     "weight_sum": _r(float(wd[cl.channel, cl.positions].sum())),
                     "mean_ablation": {k: _r(v) for k, v in em.items()}, "zero_ablation": {k: _r(v) for k, v in ez.items()},
                     "controls": {"n": rc["n"], "mean": _r(np.mean(rc["margin_drops"])), "p95": _r(np.percentile(rc["margin_drops"], 95)),
                                  "max": _r(max(rc["margin_drops"])), "size_ratio_max": _r(rc["size_ratio_max"]), "excluded_channels": sorted(exclude),
                                  "channels_used": rc["channels_used"],
                                  "drops": [_r(v) for v in rc["margin_drops"]]},
                     "percentile": _r(pct, 1), "verdict": verdict}
            cl_out.append(entry)
            all_clauses.append(entry)
            outline = [(p // 7, p % 7) for p in cl.positions]
            crow.append({"img": wd[cl.channel].view(7, 7), "signed": True, "under": mean_img, "outline": outline,
                         "title": f"{'+' if cl.sign == 'present' else '-'} conv2:{cl.channel} {entry['region']}\n{_short(entry['name'], 22)}"})
        fig_rows.append(crow)
        digits.append({"digit": d, "clauses": cl_out})
    flat = a_sel.flatten(2)  # the figure shows what the selection saw: the selection (training) images
    dla = torch.stack([(flat * W[d].view(a.shape[1], -1)).sum(2) for d in range(10)], 1)  # (N, 10, C)
    contrast = torch.stack([dla[y_sel == d, d].mean(0) - dla[y_sel != d, d].mean(0) for d in range(10)])  # (10, C)
    p = P.annotated_heatmap(contrast.numpy(), ex.fig_dir / "direct_logit.png", row_labels=[f"logit {d}" for d in range(10)],
                            col_labels=[f"conv2:{c}" for c in range(a.shape[1])],
                            title="Class-contrastive direct logit contribution of each conv2 channel",
                            xlabel="channel (after ReLU and pooling)", ylabel="digit")
    ex.add_figure(p, "circuits", "Direct logit contribution of every channel to every digit",
                  f"Cell (d, c): mean contribution of channel c to logit d on the {len(y_sel)} selection (training) images of d, minus the same on "
                  "the other digits' selection images "
                  "(exact, since the classifier is linear). Red: the channel speaks for d more on d's; blue: it speaks less (often because "
                  "its weights are inhibitory and it is quiet on d). A row's largest positive cells are the digit's clauses.")
    ex.results["direct_logit_contrast"] = [[_r(v) for v in row] for row in contrast.tolist()]
    ex.results["circuits"] = {"digits": digits, "selection": "class-contrastive direct logit attribution: W[d,c,p] * (E[a|d] - E[a|not d])",
                              "selected_on": f"{len(y_sel)} training images (results['selection_data']); tested on {len(y)} test images",
                              "verdict_rule": CI.VERDICT_RULE, "controls_per_clause": n_ctrl,
                              "verdict_counts": dict(Counter(c["verdict"] for c in all_clauses))}
    ex.results["ablations"] = {"summary": {"classes_named_beats_random_margin": sum(all(c["percentile"] >= CI.PERCENTILE_MIN for c in dd["clauses"]) for dd in digits)}}
    from .overview import draw_overview  # the report's opening figure: every clause where it acts

    draw_overview(ex, digits)
    for part, sl in (("a", slice(0, 5)), ("b", slice(5, 10))):
        if not fig_rows[sl]:
            continue
        p = P.panel_grid(fig_rows[sl], ex.fig_dir / f"circuits_{part}.png", row_labels=[f"digit {dd['digit']}" for dd in digits[sl]], cell_size=2.6)
        ex.add_figure(p, "circuits", f"Circuits, digits {', '.join(str(dd['digit']) for dd in digits[sl])}: classifier weights over the mean digit",
                      "Per digit: its mean test image, then for each clause the 7x7 classifier weights from that conv2 channel (after pooling) to the "
                      "digit's logit, drawn over the mean digit (red = evidence for the digit where the channel fires, blue = against; symmetric colourbar). "
                      "Green boxes: the positions the clause names. '+' clauses: the feature is present there on this digit; '-' clauses: it is absent there, "
                      "and its weights there are inhibitory.")
    for dd in digits:  # appendix: every channel's classifier map for every digit
        d = dd["digit"]
        mean_img = ex.x[y == d].mean(0)[0]
        wd = W[d].view(a.shape[1], -1)
        vmax = float(wd.abs().max())
        named = {c["channel"]: c for c in dd["clauses"]}
        cells = [{"img": wd[c].view(7, 7), "signed": True, "vmax": vmax, "under": mean_img, "colorbar": False,
                  "outline": [(q // 7, q % 7) for q in named[c]["positions"]] if c in named else [],
                  "title": f"conv2:{c}{' (clause)' if c in named else ''}\n{_short(ex.conv2_names.get(c, 'unclear'), 20)}"}
                 for c in range(a.shape[1])]
        p = P.panel_grid([cells[:8], cells[8:]], ex.fig_dir / f"classifier_maps_{d}.png", cell_size=1.9)
        ex.add_figure(p, "appendix", f"Digit {d}: classifier weights of all 16 channels",
                      f"The 7x7 weights from each conv2 channel to logit {d}, over the mean {d}, on one symmetric scale for the digit (one colourbar) "
                      "(red = evidence for the digit where the channel fires). Green boxes: positions named by a clause.")
    labels = [f"{c['digit']}:{'+' if c['sign'] == 'present' else '-'}{c['channel']}" for c in all_clauses]
    p = P.strip_plot(labels, [c["mean_ablation"]["margin_drop"] for c in all_clauses], [c["controls"]["drops"] for c in all_clauses],
                     [c["verdict"] for c in all_clauses], ex.fig_dir / "clause_tests.png",
                     title=f"Mean-ablating each clause vs {n_ctrl} activation-matched random controls", ylabel="margin drop on the digit")
    ex.add_figure(p, "causal", "Causal test of every clause",
                  f"Each column is one clause (digit:+channel or digit:-channel). Diamond: drop of the digit's margin when exactly the clause's "
                  f"channel and positions are mean-ablated, coloured by verdict; grey: the same for {n_ctrl} random controls of the same size "
                  "(channels not named for that digit, closest in perturbation size).")



def _selection_pool2(ex) -> tuple[torch.Tensor, torch.Tensor]:
    """pool2 on the selection (training) images, captured once; never the test images the verdicts use."""
    if not hasattr(ex, "_sel_pool2"):
        from ..capture import capture

        with torch.no_grad():
            ex._sel_pool2 = torch.cat([capture(ex.model, ex.sel_x[i : i + 2000], ["pool2"], detach=True)["pool2"]
                                       for i in range(0, len(ex.sel_x), 2000)])
    return ex._sel_pool2, ex.sel_y


def stage_confusions(ex) -> None:
    m = ex.model
    from ..capture import capture

    conf = np.asarray(ex.results["evaluation"]["confusion"])
    off = conf.copy()
    np.fill_diagonal(off, 0)
    pairs = sorted(((int(off[i, j]), i, j) for i in range(10) for j in range(10) if off[i, j] > 0), reverse=True)
    cut = pairs[min(3, len(pairs) - 1)][0] if pairs else 0
    chosen = [p for p in pairs if p[0] >= cut and p[0] > 1][:8]
    with torch.no_grad():
        a = capture(m, ex.test_x, ["pool2"], detach=True)["pool2"].flatten(2)
        pred = torch.cat([m(ex.test_x[i : i + 2000]).argmax(1) for i in range(0, len(ex.test_x), 2000)])
    W = m.fc.weight.detach().view(10, a.shape[1], -1)
    out, rows = [], []
    for count, t, p in chosen:
        err = (ex.test_y == t) & (pred == p)
        ok = (ex.test_y == t) & (pred == t)
        diff_w = W[p] - W[t]  # (C, P): positive = pushes towards p
        ce = (a[err] * diff_w).mean(0)
        co = (a[ok] * diff_w).mean(0)
        delta = ce - co  # what is different on the errors
        per_ch = delta.clamp_min(0).sum(1)
        top = torch.argsort(per_ch, descending=True)[:2].tolist()
        items = []
        for c in top:
            cells = torch.argsort(delta[c], descending=True)[:4].tolist()
            items.append({"channel": c, "name": ex.conv2_names.get(c, "unclear"), "push": _r(float(per_ch[c])),
                          "positions": cells, "region": CI.region_word(cells)})
        out.append({"true": t, "predicted": p, "count": count, "wrong_way": items, "total_push": _r(float(delta.sum()))})
        eidx = torch.nonzero(err).flatten()[:3]
        row = []
        for i in eidx.tolist():
            cmap = (a[i] * diff_w)[top[0]].view(7, 7)
            row.append({"img": cmap, "signed": True, "under": ex.test_x[i, 0], "title": f"{t} read as {p}\nconv2:{top[0]} push",
                        "outline": [(q // 7, q % 7) for q in items[0]["positions"]]})
        rows.append(row)
    ex.results["confusions"] = {"pairs": out, "tie_cut": cut}
    if rows:
        p = P.panel_grid(rows, ex.fig_dir / "confusions.png", row_labels=[f"{o['true']} -> {o['predicted']} ({o['count']}x)" for o in out], cell_size=2.4)
        ex.add_figure(p, "confusions", "Confusions: where the wrong answer comes from",
                      "Misclassified test images with the contribution of the channel that pushes most towards the wrong digit: (W[wrong] - W[true]) x "
                      "activation at each pooled position, on a symmetric colourbar (red = towards the wrong digit). Green: the positions named in the text.")
