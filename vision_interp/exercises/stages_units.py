"""Stages 1-3 of the MNIST exercise: what each unit is -- conv1 exactly (optimum, tuning), feature
visualizations of conv1 and conv2, and conv2's units named from stimuli, examples and weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import conv_units as CU
from . import plots as P
from .stages_common import _acts, _pearson, _r, _short


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
        r = visualize_layer(m, layer, seed=ex.cfg.seed, steps=ex.cfg.featvis_steps, progress=False)
        for c in range(a.shape[1]):
            v = float(r.activations[c])
            best = float(a[:, c, cy, cx].max())
            ex.fv_images[(layer, c)] = r.images[c]
            rows.append({"channel": c, "vis": _r(v), "best_test": _r(best), "ratio": _r(v / best if best > 0 else float("inf"))})
        res[layer] = {"units": rows, "beats_all": sum(u["vis"] > u["best_test"] for u in rows), "n": len(rows), "steps": r.steps,
                      "median_ratio": _r(float(np.median([u["ratio"] for u in rows])))}
    # class logits: judged by the model's own reading and by similarity to the class's top test images
    logit_rows, cells = [], []
    clean = ex.clean_logits
    r_fc = visualize_layer(m, "fc", seed=ex.cfg.seed, steps=ex.cfg.featvis_steps, progress=False)
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
        return stim["name"], f"{cls}; best synthetic stimulus reaches {q:.2f}x the best selection-image activation, its image matches the top patches (r={r_syn:.2f})"
    why = []
    if q < 0.4:
        why.append(f"no synthetic stimulus drives it well (best {q:.2f}x the best selection-image activation)")
    if r_syn < 0.25:
        why.append(f"the best synthetic stimulus ({stim['name']}) does not look like its top patches (r={r_syn:.2f})")
    return "unclear", f"{cls}; " + "; ".join(why)



def stage_conv2(ex) -> None:
    from ..data.examples import crop_patches, receptive_field

    m = ex.model
    # names are chosen on the selection (training) images, never on the test images the verdicts use (issue 37)
    sx, sy = ex.sel_x, ex.sel_y
    from ..capture import capture

    with torch.no_grad():
        a = torch.cat([capture(m, sx[i : i + 2000], ["conv2"], detach=True)["conv2"] for i in range(0, len(sx), 2000)])
    rf = receptive_field(m, "conv2")
    st = CU.conv2_stimulus_tuning(m)
    R = st["response"].max(2)  # (C, S)
    base = torch.bincount(sy, minlength=10).double().numpy() / len(sy)
    n_top = 200
    units, rows = [], []
    for c in range(a.shape[1]):
        flat = a[:, c].flatten(1)
        per_img, arg = flat.max(1)
        top = per_img.topk(n_top).indices
        hist = CU.class_histogram(sy[top])
        poly = CU.polysemanticity(hist, base)
        best = float(per_img.max())
        s_idx = int(np.argmax(R[c]))
        q = float(R[c, s_idx]) / best
        pos = torch.stack([arg[top[:9]] // a.shape[-1], arg[top[:9]] % a.shape[-1]], 1)
        patches = crop_patches(sx[top[:9]], pos, rf)
        low = flat.min(1).values.topk(3, largest=False).indices
        lpos_flat = flat[low].argmin(1)
        lpos = torch.stack([lpos_flat // a.shape[-1], lpos_flat % a.shape[-1]], 1)
        lpatches = crop_patches(sx[low], lpos, rf)
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
                           "receptive_field": [rf.height, rf.width],
                           "evidence_images": f"{len(sy)} selection (training) images: 'best_test' and '*_over_best_test' are over these"}
    ex.conv2_names = {u["channel"]: u["name"] for u in units}
    for half in (0, 1):
        sl = slice(8 * half, 8 * half + 8)
        p = P.panel_grid(rows[sl], ex.fig_dir / f"conv2_units_{half}.png",
                         row_labels=[f"conv2:{u['channel']}\n{_short(u['name'])}" for u in units[sl]], cell_size=1.9)
        ex.add_figure(p, "conv2", f"conv2 units {8 * half}-{8 * half + 7}: the evidence behind each name",
                      f"Per unit ({rf.height}x{rf.width} receptive-field crops): its feature visualization, the synthetic stimulus that drives it "
                      f"most (and its activation relative to the best of the {len(sy)} selection (training) images), its four strongest and two most "
                      f"negative selection-image patches, and the digits of its {n_top} strongest selection images (eff. = effective number of "
                      "classes, 1 = one digit, 10 = as mixed as the data).")
