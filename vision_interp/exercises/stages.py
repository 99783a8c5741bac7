"""The mechanism stages of the MNIST exercise (methods bound to :class:`.mnist._Exercise`).

Each stage measures, draws its figures and stores numbers in ``ex.results``; :mod:`.report` writes
the text from those numbers only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import circuit as CI
from . import conv_units as CU
from . import plots as P

HAND_R_THRESHOLD = 0.7  # the hand-written conv2 unit must correlate at least this well with the real one


def _r(x: float, nd: int = 3) -> float:
    x = float(x)
    return round(x, nd) if np.isfinite(x) else (1e9 if x > 0 else -1e9)


def _pearson(a, b) -> float:
    a = np.asarray(a, float).ravel()
    b = np.asarray(b, float).ravel()
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 1e-12 else 0.0


def _acts(ex) -> dict:
    if not hasattr(ex, "_acts"):
        from ..capture import capture

        with torch.no_grad():
            ex._acts = capture(ex.model, ex.x, ["conv1", "pool1", "conv2", "pool2"], detach=True)
    return ex._acts


# =============================================================================== 1. conv1, exactly

def stage_conv1(ex) -> None:
    m = ex.model
    mean, std = CU._norm(m)
    t = CU.conv1_tuning(m)
    acts = _acts(ex)["conv1"]
    w = m.conv1.weight.detach()[:, 0]
    rows, units = [], []
    for c in range(m.c1):
        opt = CU.conv1_optimum(w[c])
        val = CU.conv1_optimum_value(w[c], float(m.conv1.bias[c]), mean, std)
        flat = acts[:, c].flatten(1)
        best = float(flat.max())
        n_idx = int(flat.max(1).values.argmax())
        pos = int(flat[n_idx].argmax())
        py, px = divmod(pos, acts.shape[-1])
        patch = F.pad(ex.x[n_idx, 0], (2, 2, 2, 2))[py : py + 5, px : px + 5]
        label = CU.label_conv1(t, c)
        problems = CU.check_conv1_label(t, label)
        final = label.text if not problems else "unclear (label refused: " + "; ".join(problems) + ")"
        bright = t["bright"][c] - t["blank"][c]
        ai, wi, oi = np.unravel_index(int(np.argmax(bright)), bright.shape)
        units.append({
            "channel": c, "label": final, "label_kind": label.kind, "label_check": problems, "selectivity": _r(label.selectivity),
            "exact_optimum_value": _r(val), "best_test_value": _r(best), "optimum_over_best_test": _r(val / best if best > 0 else float("inf")),
            "blank_response": _r(t["blank"][c]), "best_stroke_response": _r(bright.max()), "worst_stroke_response": _r(bright.min()),
            "dark_line_response": _r((t["dark"][c] - t["white"][c]).max()),
            "tuning_curve": [_r(v) for v in bright[:, wi, oi]],
        })
        vmax = float(w.abs().max())
        rows.append([
            {"img": w[c], "signed": True, "vmax": vmax, "title": f"conv1:{c} weights"},
            {"img": opt, "title": f"exact optimum\n{val:.2f}"},
            {"img": patch, "title": f"best test patch\n{best:.2f}"},
        ])
    res = {"units": units, "angles": t["angles"], "all_optimum_beats_test": all(u["exact_optimum_value"] >= u["best_test_value"] for u in units)}
    ex.results["conv1"] = res
    p = P.panel_grid(rows, ex.fig_dir / "conv1_exact.png", row_labels=[f"conv1:{c}" for c in range(m.c1)], cell_size=2.0)
    ex.add_figure(p, "conv1", "conv1: weights, exact optimum, best test patch",
                  "Left: each 5x5 filter (red raises the unit, blue lowers it; shared symmetric scale). Middle: the exact optimal stimulus "
                  "x = 1[w > 0] with its pre-ReLU value. Right: the test-set patch (over all 10000 images and positions) that drives the unit "
                  "most. Look at how the optimum is the filter's positive lobe rendered as ink: no real patch can beat it.")
    panels = {f"conv1:{u['channel']}": {"bright stroke": (t["angles"], u["tuning_curve"])} for u in units}
    p = P.lines({}, ex.fig_dir / "conv1_tuning.png", title="conv1 orientation tuning (response minus blank, at the best width and offset)",
                xlabel="stroke angle (deg)", ylabel="pre-ReLU response - blank", panels=panels)
    ex.add_figure(p, "conv1", "conv1 orientation tuning",
                  "Response (minus the blank-paper response) of each conv1 centre unit to a bright stroke at each angle, at the width and "
                  "perpendicular offset that drive it most. Off units stay at or below zero: ink only lowers them.")


# =============================================================================== 2. feature visualization

def stage_featvis(ex) -> None:
    from ..featvis import visualize_layer

    m = ex.model
    acts = _acts(ex)
    res: dict[str, Any] = {}
    ex.fv_images = {}
    for layer in ("conv1", "conv2"):
        a = acts[layer]
        h, w = a.shape[-2:]
        cy, cx = h // 2, w // 2
        rows = []
        # every unit of the layer in one batched optimisation (the default objective for this model is
        # the centre neuron, (h // 2, w // 2)): 16 units cost about one unit's time
        r = visualize_layer(m, layer, seed=ex.cfg.seed, progress=False)
        for c in range(a.shape[1]):
            v = float(r.activations[c])
            best = float(a[:, c, cy, cx].max())
            ex.fv_images[(layer, c)] = r.images[c]
            rows.append({"channel": c, "vis": _r(v), "best_test": _r(best), "ratio": _r(v / best if best > 0 else float("inf"))})
        res[layer] = {"units": rows, "beats_all": sum(u["vis"] > u["best_test"] for u in rows), "n": len(rows),
                      "median_ratio": _r(float(np.median([u["ratio"] for u in rows])))}
    # class logits: judged by the model's own reading and by similarity to the class's top test images
    logit_rows, cells = [], []
    clean = ex.clean_logits
    r_fc = visualize_layer(m, "fc", seed=ex.cfg.seed, progress=False)
    for d in range(10):
        img = r_fc.images[d]
        with torch.no_grad():
            prob = torch.softmax(m(img[None]), 1)[0]
        sims = []
        for k in range(10):
            idx = torch.nonzero(ex.y == k).flatten()
            top = idx[clean[idx, k].topk(min(10, len(idx))).indices]
            sims.append(max(_pearson(img, ex.x[i]) for i in top))
        logit_rows.append({"digit": d, "predicted": int(prob.argmax()), "prob": _r(prob[d]), "sim_own": _r(sims[d]),
                           "sim_best_other": _r(max(s for k, s in enumerate(sims) if k != d)),
                           "most_similar_class": int(np.argmax(sims))})
        cells.append({"img": img, "title": f"logit {d}: p={float(prob[d]):.2f}\nsim own {sims[d]:.2f}"})
    res["logits"] = {"units": logit_rows, "classified_as_own": sum(u["predicted"] == u["digit"] for u in logit_rows),
                     "most_similar_to_own": sum(u["most_similar_class"] == u["digit"] for u in logit_rows)}
    ex.results["featvis"] = res
    fv_rows = []
    for layer, crop in (("conv1", 7), ("conv2", 18)):
        row = []
        for c in range(16 if layer == "conv2" else m.c1):
            img = ex.fv_images[(layer, c)][0]
            u = res[layer]["units"][c]
            row.append({"img": img[14 - crop // 2 : 14 + (crop + 1) // 2, 14 - crop // 2 : 14 + (crop + 1) // 2],
                        "title": f"{layer}:{c}\n{u['ratio']:.2f}x best"})
        fv_rows += [row[:8]] + ([row[8:]] if len(row) > 8 else [])
    p = P.panel_grid(fv_rows, ex.fig_dir / "featvis_units.png", row_labels=["conv1", "conv2 0-7", "conv2 8-15"], cell_size=1.9)
    ex.add_figure(p, "featvis", "Centre-neuron visualizations (defaults of vision_interp.featvis.visualize_layer)",
                  "Each panel: the default visualization of a centre neuron, cropped around its receptive field; the number is its activation "
                  "divided by the best activation of that neuron on any of the 10000 test images (above 1 = the visualization beats every test image).")
    p = P.panel_grid([cells[:5], cells[5:]], ex.fig_dir / "featvis_logits.png", cell_size=2.4)
    ex.add_figure(p, "featvis", "Class-logit visualizations",
                  "The default visualization of each logit, with the model's probability for that digit and the best correlation with the "
                  "class's 10 highest-scoring test images. Look for the digit's parts (a loop for 0, a bar for 1) rather than a whole digit.")


# =============================================================================== 3. conv2, named

AMBIGUOUS = 0.95  # a second stimulus family within 5% of the best one: the stimuli do not decide


def _unit_name(stim: dict, q: float, r_syn: float, hist: np.ndarray, family_best: dict[str, float]) -> tuple[str, str]:
    """(name, evidence note) from the best synthetic stimulus and its agreement with the real top patches."""
    classes = [str(d) for d in np.argsort(-hist) if hist[d] >= 0.2]
    cls = f"top activations mostly on {', '.join(classes)}" if classes else "top activations spread over many digits"
    rivals = [f for f, v in family_best.items() if f != stim["family"] and v >= AMBIGUOUS * q]
    if rivals and q >= 0.4:
        return "unclear", (f"{cls}; the best {stim['family']} ({stim['name']}, {q:.2f}x) and the best "
                           f"{', '.join(rivals)} ({', '.join(f'{family_best[f]:.2f}x' for f in rivals)}) drive it almost equally")
    if q >= 0.4 and r_syn >= 0.25:
        return stim["name"], f"{cls}; best synthetic stimulus reaches {q:.2f}x the best test activation, its image matches the top patches (r={r_syn:.2f})"
    why = []
    if q < 0.4:
        why.append(f"no synthetic stimulus drives it well (best {q:.2f}x the best test activation)")
    if r_syn < 0.25:
        why.append(f"the best synthetic stimulus ({stim['name']}) does not look like its top patches (r={r_syn:.2f})")
    return "unclear", f"{cls}; " + "; ".join(why)


def stage_conv2(ex) -> None:
    from ..data.examples import crop_patches, receptive_field

    m = ex.model
    a = _acts(ex)["conv2"]
    rf = receptive_field(m, "conv2")
    st = CU.conv2_stimulus_tuning(m)
    R = st["response"].max(2)  # (C, S)
    base = torch.bincount(ex.y, minlength=10).double().numpy() / len(ex.y)
    n_top = 200
    units, rows = [], []
    for c in range(a.shape[1]):
        flat = a[:, c].flatten(1)
        per_img, arg = flat.max(1)
        top = per_img.topk(n_top).indices
        hist = CU.class_histogram(ex.y[top])
        poly = CU.polysemanticity(hist, base)
        best = float(per_img.max())
        s_idx = int(np.argmax(R[c]))
        q = float(R[c, s_idx]) / best
        pos = torch.stack([arg[top[:9]] // a.shape[-1], arg[top[:9]] % a.shape[-1]], 1)
        patches = crop_patches(ex.x[top[:9]], pos, rf)
        low = flat.min(1).values.topk(3, largest=False).indices
        lpos_flat = flat[low].argmin(1)
        lpos = torch.stack([lpos_flat // a.shape[-1], lpos_flat % a.shape[-1]], 1)
        lpatches = crop_patches(ex.x[low], lpos, rf)
        h, w = a.shape[-2:]
        stim_img = st["images"][st["best_shift"][c, s_idx], s_idx]  # at the offset where it drives the unit most
        stim_patch = crop_patches(torch.as_tensor(stim_img, dtype=torch.float32)[None, None], torch.tensor([[h // 2, w // 2]]), rf)
        r_syn = _pearson(stim_patch, patches.mean(0))
        fv_patch = crop_patches(ex.fv_images[("conv2", c)][None], torch.tensor([[h // 2, w // 2]]), rf)
        r_fv = _pearson(fv_patch, patches.mean(0))
        fam_best = {f: _r(max(R[c, i] for i, s in enumerate(st["stimuli"]) if s["family"] == f) / best)
                    for f in ("stroke", "arc", "loop", "end")}
        name, note = _unit_name(st["stimuli"][s_idx], q, r_syn, hist, fam_best)
        units.append({"channel": c, "name": name, "note": note, "best_stimulus": st["stimuli"][s_idx]["name"], "stimulus_over_best_test": _r(q),
                      "stimulus_vs_top_patches_r": _r(r_syn), "featvis_vs_top_patches_r": _r(r_fv), "class_histogram": [_r(v) for v in hist],
                      "polysemanticity": _r(poly), "family_best_over_test": fam_best, "best_test": _r(best)})
        row = [{"img": fv_patch[0, 0], "title": "featvis"}, {"img": stim_patch[0, 0], "title": f"best stimulus\n{q:.2f}x"}]
        row += [{"img": patches[i, 0], "title": f"top {i + 1}"} for i in range(4)]
        row += [{"img": lpatches[i, 0], "title": f"bottom {i + 1}"} for i in range(2)]
        row += [{"bars": hist, "labels": [str(d) for d in range(10)], "title": f"top-{n_top} classes (eff. {poly:.1f})"}]
        rows.append(row)
    ex.results["conv2"] = {"units": units, "n_named": sum(u["name"] != "unclear" for u in units), "top_n": n_top,
                           "receptive_field": [rf.height, rf.width]}
    ex.conv2_names = {u["channel"]: u["name"] for u in units}
    for half in (0, 1):
        sl = slice(8 * half, 8 * half + 8)
        p = P.panel_grid(rows[sl], ex.fig_dir / f"conv2_units_{half}.png",
                         row_labels=[f"conv2:{u['channel']}\n{_short(u['name'])}" for u in units[sl]], cell_size=1.9)
        ex.add_figure(p, "conv2", f"conv2 units {8 * half}-{8 * half + 7}: the evidence behind each name",
                      f"Per unit ({rf.height}x{rf.width} receptive-field crops): its feature visualization, the synthetic stimulus that drives it "
                      "most (and its activation relative to the best test image), its four strongest and two most negative test patches, and the "
                      f"digits of its {n_top} strongest test images (eff. = effective number of classes, 1 = one digit, 10 = as mixed as the data).")


def _short(name: str, n: int = 26) -> str:
    return name if len(name) <= n else name[: n - 1] + "."


# =============================================================================== 4-5. circuits and causal tests

def stage_circuits(ex) -> None:
    m = ex.model
    a = _acts(ex)["pool2"]
    W = m.fc.weight.detach()
    clean, y = ex.clean_logits, ex.y
    mean = a.flatten(2).mean(0)
    gen = torch.Generator().manual_seed(ex.cfg.seed + 14)
    n_ctrl = ex.cfg.random_draws
    contrib = a.flatten(2)  # (N, C, P)
    digits, fig_rows, all_clauses = [], [], []
    for d in ex.cfg.circuit_classes:
        clauses = CI.select_clauses(W, a, y, d, n_clauses=ex.cfg.k_channels)
        exclude = {c.channel for c in clauses}
        mean_img = ex.x[y == d].mean(0)[0]
        wd = W[d].view(a.shape[1], -1)
        crow = [{"img": mean_img, "title": f"mean {d} ({int((y == d).sum())} images)"}]
        cl_out = []
        for cl in clauses:
            em = CI.clause_effects(clean, y, CI.ablation_delta(W, a, cl.channel, cl.positions, mean), d)
            ez = CI.clause_effects(clean, y, CI.ablation_delta(W, a, cl.channel, cl.positions, 0.0), d)
            rc = CI.random_controls(W, a, y, clean, cl, exclude, mean, n_ctrl, gen)
            pct = 100.0 * float(np.mean(np.asarray(rc["margin_drops"]) < em["margin_drop"]))
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
    flat = a.flatten(2)
    dla = torch.stack([(flat * W[d].view(a.shape[1], -1)).sum(2) for d in range(10)], 1)  # (N, 10, C)
    contrast = torch.stack([dla[y == d, d].mean(0) - dla[y != d, d].mean(0) for d in range(10)])  # (10, C)
    p = P.annotated_heatmap(contrast.numpy(), ex.fig_dir / "direct_logit.png", row_labels=[f"logit {d}" for d in range(10)],
                            col_labels=[f"conv2:{c}" for c in range(a.shape[1])],
                            title="Class-contrastive direct logit contribution of each conv2 channel",
                            xlabel="channel (after ReLU and pooling)", ylabel="digit")
    ex.add_figure(p, "circuits", "Direct logit contribution of every channel to every digit",
                  "Cell (d, c): mean contribution of channel c to logit d on test images of d, minus the same on the other digits' images "
                  "(exact, since the classifier is linear). Red: the channel speaks for d more on d's; blue: it speaks less (often because "
                  "its weights are inhibitory and it is quiet on d). A row's largest positive cells are the digit's clauses.")
    ex.results["direct_logit_contrast"] = [[_r(v) for v in row] for row in contrast.tolist()]
    ex.results["circuits"] = {"digits": digits, "selection": "class-contrastive direct logit attribution: W[d,c,p] * (E[a|d] - E[a|not d])",
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


# =============================================================================== 6. attribution

def _blur(x: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    r = int(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    xp = F.conv2d(xp, k.view(1, 1, 1, -1))
    return F.conv2d(xp, k.view(1, 1, -1, 1))


def stage_attribution(ex) -> None:
    from ..attribution import attribute

    m = ex.model
    per = 4 if ex.cfg.quick else 10
    idx = ex.class_sample(per)
    xs, ys = ex.x[idx], ex.y[idx]
    gen = torch.Generator().manual_seed(ex.cfg.seed + 6)
    blurred = _blur(xs)
    baselines = {"IG black": torch.zeros_like(xs), "IG grey": torch.full_like(xs, 0.5), "IG blurred": blurred,
                 "IG noise": torch.rand(xs.shape, generator=gen)}
    steps = ex.cfg.ig_steps
    maps = {k: attribute(m, xs, ys, method="integrated_gradients", baselines=b, n_steps=steps) for k, b in baselines.items()}
    maps["occlusion (black 4x4)"] = attribute(m, xs, ys, method="occlusion", sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0)
    names = list(maps)
    bg = xs < 0.1
    absent = {k: _r(float((v.abs() * bg).sum() / v.abs().sum().clamp_min(1e-12))) for k, v in maps.items()}
    agree = [[_r(np.mean([_pearson(maps[a][i], maps[b][i]) for i in range(len(xs))])) for b in names] for a in names]
    # deletion / insertion (replacement: the blurred image, the same for every method) + a random ranking
    fracs = [0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0]
    rankings = {k: torch.argsort(v.flatten(1), 1, descending=True) for k, v in maps.items()}
    rankings["random"] = torch.stack([torch.randperm(784, generator=gen) for _ in range(len(xs))])
    curves = {}
    flat_x, flat_b = xs.flatten(1), blurred.flatten(1)
    with torch.no_grad():
        for k, order in rankings.items():
            dele, ins = [], []
            for f in fracs:
                n = int(round(f * 784))
                mask = torch.zeros_like(flat_x, dtype=torch.bool)
                if n:
                    mask.scatter_(1, order[:, :n], True)
                xd = torch.where(mask, flat_b, flat_x).view_as(xs)
                xi = torch.where(mask, flat_x, flat_b).view_as(xs)
                dele.append(float(torch.softmax(m(xd), 1).gather(1, ys[:, None]).mean()))
                ins.append(float(torch.softmax(m(xi), 1).gather(1, ys[:, None]).mean()))
            curves[k] = {"deletion": [_r(v) for v in dele], "insertion": [_r(v) for v in ins],
                         "deletion_auc": _r(np.mean(dele)), "insertion_auc": _r(np.mean(ins))}
    ex.results["attribution"] = {"images": len(xs), "ig_steps": steps, "methods": names, "background_share": absent,
                                 "agreement_r": agree, "faithfulness": curves, "fractions": fracs,
                                 "cannot_show": {
                                     "IG black": "evidence from absent ink: (x - 0) is 0 on every background pixel, so blank paper gets exactly 0",
                                     "IG grey": "pixels whose value is near 0.5 (stroke borders) get ~0, and it credits background as 'darker than grey'",
                                     "IG blurred": "anything the blur keeps (coarse layout, position of the digit's mass)",
                                     "IG noise": "a single clean answer: each noise draw gives a different baseline; structure finer than the noise",
                                     "occlusion (black 4x4)": "absent ink (blacking out blank paper changes nothing) and detail finer than the 4x4 window"}}
    ex_idx = [int(torch.nonzero(ys == d).flatten()[0]) for d in (0, 4, 7, 9)]
    rows = []
    for i in ex_idx:
        row = [{"img": xs[i, 0], "title": f"test digit {int(ys[i])}"}]
        row += [{"img": maps[k][i, 0], "signed": True, "title": k} for k in names]
        rows.append(row)
    p = P.panel_grid(rows, ex.fig_dir / "attribution_baselines.png", cell_size=2.3)
    ex.add_figure(p, "attribution", "Attribution with five methods",
                  "Per image: integrated gradients towards the true class from four baselines, and occlusion by a black 4x4 patch; each map on its own "
                  "symmetric colourbar (red raises the logit). Look at the background: only the non-black baselines can mark blank paper (e.g. the hole "
                  "of a 0, the gap at the top of a 4) as evidence.")
    dpanels = {"deletion (lower = more faithful)": {k: (fracs, v["deletion"]) for k, v in curves.items()},
               "insertion (higher = more faithful)": {k: (fracs, v["insertion"]) for k, v in curves.items()}}
    p = P.lines({}, ex.fig_dir / "faithfulness.png", title="Deletion / insertion faithfulness", xlabel="fraction of pixels replaced/inserted",
                ylabel="mean probability of the true class", panels=dpanels)
    ex.add_figure(p, "attribution", "Deletion and insertion curves",
                  "Pixels are taken in each method's order (most positive first) and replaced by the blurred image (deletion) or inserted into it "
                  "(insertion); 'random' is a random order. A faithful ranking drops fast under deletion and rises fast under insertion.")


# =============================================================================== 7. confusions

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


# =============================================================================== 8. deep dive

# The written description of conv2:4 ("a near-vertical stroke"), from its conv1 weights (conv2_4_weights.png):
# "excited by conv1:3 (the left edge of a vertical stroke) along the two centre-right columns; inhibited by conv1:3
# on the left column and by conv1:0 (falling-diagonal edge) on the two left columns; inhibited by conv1:6 (blank
# paper) in the top-right block; mildly excited by conv1:1 (blank paper) on the second column."
HAND_DESCRIPTION = [
    # (conv1 channel, rows, cols, weight): set by hand from the sentence above, not copied
    (3, slice(0, 5), slice(2, 4), +0.2),
    (3, slice(0, 5), slice(0, 1), -0.2),
    (0, slice(0, 5), slice(0, 2), -0.25),
    (6, slice(0, 3), slice(2, 5), -0.2),
    (1, slice(0, 5), slice(1, 2), +0.15),
]
DEEP_UNIT = 4


def hand_kernel(n_in: int = 8) -> torch.Tensor:
    k = torch.zeros(1, n_in, 5, 5)
    for ch, rs, cs, v in HAND_DESCRIPTION:
        k[0, ch, rs, cs] = v
    return k


def stage_deep_dive(ex) -> None:
    m = ex.model
    acts = _acts(ex)
    real = acts["conv2"][:, DEEP_UNIT]
    hand = F.conv2d(acts["pool1"], hand_kernel(m.c1), padding=2)[:, 0]
    r = _pearson(hand, real)
    r_relu = _pearson(hand.clamp_min(0), real.clamp_min(0))
    terms = {}
    for j, (ch, rs, cs, v) in enumerate(HAND_DESCRIPTION):
        k = hand_kernel(m.c1)
        k[0, ch, rs, cs] = 0.0
        terms[f"conv1:{ch} {'+' if v > 0 else '-'}"] = _r(r - _pearson(F.conv2d(acts["pool1"], k, padding=2)[:, 0], real))
    from ..circuits import expanded_weights

    w = m.conv2.weight.detach()[DEEP_UNIT]
    vmax = float(w.abs().max())
    hk = hand_kernel(m.c1)[0]
    exp = expanded_weights(m, "normalize", "conv2", dst_channels=[DEEP_UNIT])[0, 0]  # pixels -> conv2:4, ReLU/pool linearised
    rows = [[{"img": exp, "signed": True, "title": "expanded: pixels -> conv2:4"}] + [None] * (m.c1 - 1),
            [{"img": w[i], "signed": True, "vmax": vmax, "title": f"real: from pool1:{i}"} for i in range(m.c1)],
            [{"img": hk[i], "signed": True, "vmax": vmax, "title": f"hand: from pool1:{i}"} for i in range(m.c1)]]
    p = P.panel_grid(rows, ex.fig_dir / "deep_dive_weights.png", row_labels=["expanded\n(pixel space)", "real conv2:4", "hand-written"], cell_size=1.8)
    ex.add_figure(p, "deepdive", "conv2:4 from its conv1 inputs: real weights vs hand-written",
                  "Top: the linearised pixel-space template of conv2:4 (ReLU and max-pool replaced by their linear stand-ins): an excitatory stroke (red) between inhibitory flanks (blue), slanted like the tuning peak reported in the text. Middle: the 5x5 weights from each conv1 channel (after ReLU and pooling) into conv2:4, on one symmetric scale. Bottom: the kernel "
                  "written by hand from the one-sentence description in the text (five constant blocks). Look at conv1:3's column pair and conv1:0/6's "
                  "negative blocks.")
    plt = P._plt()
    fig, ax = plt.subplots(figsize=(7, 6.2), dpi=P.DPI)
    sel = torch.randperm(real.numel(), generator=torch.Generator().manual_seed(0))[:6000]
    ax.scatter(hand.flatten()[sel], real.flatten()[sel], s=2, alpha=0.3)
    ax.set_xlabel("hand-written unit")
    ax.set_ylabel("real conv2:4 (pre-ReLU)")
    ax.set_title(f"all test positions: r = {r:.3f}")
    from ..images import save_figure

    p = save_figure(fig, ex.fig_dir / "deep_dive_scatter.png", colors=None)
    ex.add_figure(p, "deepdive", "Hand-written vs real conv2:4", "Each dot is one position of one test image (6000 of them drawn at random).")
    # tuning: real vs hand-written centre unit on synthetic strokes (best of 9 positions), every angle
    st = CU.stroke_stimuli(28, (14.5, 14.5))
    strokes = [k for k, s_ in enumerate(st) if s_["family"] == "stroke"]
    shifts = [(dy, dx) for dy in (-3, 0, 3) for dx in (-3, 0, 3)]
    imgs = torch.tensor(np.stack([CU.stroke_stimuli(28, (14.5 + dy, 14.5 + dx))[k]["image"] for dy, dx in shifts for k in strokes]),
                        dtype=torch.float32)[:, None]
    from ..capture import capture

    with torch.no_grad():
        sa = capture(m, imgs, ["pool1", "conv2"], detach=True)
    real_t = sa["conv2"][:, DEEP_UNIT, 7, 7].view(len(shifts), -1).max(0).values
    hand_t = F.conv2d(sa["pool1"], hand_kernel(m.c1), padding=2)[:, 0, 7, 7].view(len(shifts), -1).max(0).values
    angles = [st[k]["param"] for k in strokes]
    p = P.lines({}, ex.fig_dir / "deep_dive_tuning.png", title="", xlabel="stroke angle (deg)", ylabel="pre-ReLU response",
                panels={"conv2:4 vs the hand-written unit: stroke orientation tuning": {"real conv2:4": (angles, real_t.tolist()),
                                                                                         "hand-written": (angles, hand_t.tolist())}})
    ex.add_figure(p, "deepdive", "Orientation tuning, real vs hand-written",
                  "Response of the centre unit to a 10px stroke at each angle (best of 9 positions); compare the peak angles (given in the text). The hand-written "
                  "unit's scale differs because its weights are rounded constants.")
    tuning_r = _pearson(real_t, hand_t)
    ex.results["deep_dive"] = {"tuning_r": _r(tuning_r), "real_peak_angle": angles[int(real_t.argmax())], "hand_peak_angle": angles[int(hand_t.argmax())],"unit": f"conv2:{DEEP_UNIT}", "r": _r(r), "r_after_relu": _r(r_relu), "threshold": HAND_R_THRESHOLD,
                               "positions": int(real.numel()), "r_lost_without_term": terms,
                               "description": [{"conv1": ch, "rows": [rs.start, rs.stop], "cols": [cs.start, cs.stop], "weight": v} for ch, rs, cs, v in HAND_DESCRIPTION]}
