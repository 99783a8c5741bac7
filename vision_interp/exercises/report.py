"""The exercise report: findings written from the measured numbers, as Markdown and HTML.

Every finding is generated from ``results`` (see :mod:`.mnist`) and carries the numbers it rests
on; when a number contradicts the hypothesis the sentence says so ("refuted"). Nothing in the
findings is hand-written about this particular checkpoint, so a retrained model gets an honest
report too.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import io as vio

__all__ = ["findings", "write_report", "verdict"]


def _pct(x: float, nd: int = 1) -> str:
    return f"{100 * x:.{nd}f}%"


def _dpts(x: float) -> str:
    """A drop in accuracy (a fraction) as percentage points; negative means it rose."""
    return f"{100 * x:.1f} points"


def _num(x: float | None, fmt: str) -> str:
    """Format a number; '-' for a missing one (NaN in memory, null in results.json)."""
    return "-" if x is None or x != x else fmt.format(x)


def _chs(layer: str, chans: Sequence[int]) -> str:
    return ", ".join(f"{layer}:{c}" for c in chans)


def verdict(named: float, control_mean: float, frac_random_ge: float, alpha: float = 0.1, weak: float = 0.3) -> str:
    """'supported' when the named effect beats the random mean and at most ``alpha`` of random draws
    reach it; 'weakly supported' when at most ``weak`` of them do; otherwise 'refuted' (random
    channels do about as well, so the analysis did not single out the channels that matter)."""
    if named > control_mean and frac_random_ge <= alpha:
        return "supported"
    if named > control_mean and frac_random_ge <= weak:
        return "weakly supported"
    return "refuted"


def _acc_change(drop: float) -> str:
    """'lowers its accuracy by X points' or 'raises ...' for a negative drop."""
    return f"lowers its accuracy by {100 * drop:.1f} points" if drop >= 0 else f"raises its accuracy by {-100 * drop:.1f} points"


def findings(r: dict) -> list[dict]:
    """Findings as ``{"section", "text", "verdict"?}``; every text quotes the numbers behind it."""
    out: list[dict] = []

    def add(section: str, text: str, v: str | None = None) -> None:
        out.append({"section": section, "text": text, **({"verdict": v} if v else {})})

    ev = r["evaluation"]
    pca = ev["per_class_accuracy"]
    worst = int(np.argmin(pca))
    tc = ev["top_confusions"][0] if ev["top_confusions"] else None
    add("evaluation", f"The CNN classifies {_pct(ev['accuracy'], 2)} of the {ev['test_images']} test images correctly; its weakest digit is "
        f"{worst} ({_pct(pca[worst], 2)})" + (f", and its most frequent confusion is {tc['true']} read as {tc['predicted']} ({tc['count']} images)." if tc else "."))

    # ---- filters
    f = r["filters"]
    prof = f["profiles"]
    oriented = [p for p in prof if p["orientation_selectivity"] > f["orientation_threshold"] and "off" not in p["kind"]]
    if oriented:
        desc = "; ".join(f"conv1:{p['channel']} {'edge' if 'edge' in p['kind'] else 'bar'} at {p['preferred_angle']:.0f} deg "
                         f"(selectivity {p['orientation_selectivity']:.2f})" for p in oriented)
        agree = f["angle_agreement_deg"]
        add("filters", f"{len(oriented)} of {len(prof)} first-layer filters are orientation-selective (selectivity index > {f['orientation_threshold']} "
            f"on bar/edge responses): {desc}. For these, the angle read from the weights alone (structure tensor) differs from the "
            f"response-based angle by a median of {np.median(agree):.0f} deg" + (" - two independent measurements agree." if np.median(agree) <= 20 else
                                                                                 " - the two measurements disagree, so treat these angles with care."))
    else:
        add("filters", f"None of the {len(prof)} first-layer filters is orientation-selective (all selectivity indices <= {f['orientation_threshold']}).")
    rest = [p for p in prof if p not in oriented]
    if rest:
        add("filters", "The other first-layer channels are: " + "; ".join(
            f"conv1:{p['channel']} {p['kind']} (ink polarity {p['ink_polarity']:+.2f}, centre-surround {p['centre_surround']:+.2f})" for p in rest) + ".")

    # ---- feature visualization
    fv = r["featvis"]
    for layer in ("conv1", "conv2"):
        d = fv[layer]
        n = d["channels"]
        gap = d["median_r"] - d["median_r_mismatched"]
        if d["median_r"] >= 0.5 and d["self_identified"] >= n / 2:
            v = "the visualizations are recognisable summaries of what drives these units"
        elif gap >= 0.15 and d["self_identified"] >= max(2, n / 4):
            v = "the visualizations carry some unit-specific signal but are far from a faithful picture"
        else:
            v = "the visualizations are not interpretable here: they barely resemble what actually drives each unit"
        ratio = float(np.median(d["vis_activation_over_best_example"]))
        add("featvis", f"{layer}: centre-neuron visualizations correlate with the mean of their own channel's top-activating test patches at median "
            f"r = {d['median_r']:.2f}, against r = {d['median_r_mismatched']:.2f} for other channels' patches; a visualization picks out its own channel "
            f"in {d['self_identified']}/{n} cases (chance: 1/{n}). Verdict: {v}. The optimised images drive the neuron to a median "
            f"{ratio:.2f}x the activation of the best test image" + (", i.e. they are super-stimuli outside the data distribution." if ratio >= 1 else
            ": the optimisation did not find stronger stimuli than real digits, another sign that it struggles on this model.")
)
    lg = fv["logits"]
    good = lg["median_r"] >= 0.4 and lg["self_identified"] >= 6
    add("featvis", f"Class-logit visualizations correlate with the mean test image of their digit at median r = {lg['median_r']:.2f} "
        f"(mean over the other digits' means: {np.median(lg['vis_vs_other_class_means_r']):.2f}); {lg['self_identified']}/10 are most similar to their own digit, "
        f"while the model assigns them a median confidence of {_pct(float(np.median(lg['model_confidence_on_vis'])))}. "
        + ("They look like the digits." if good else "The model is certain about images that do not look like the digit: feature visualization of the logits says little about how digits are recognised."))

    # ---- attribution
    at = r["attribution"]
    on_ink, frac = at["positive_ig_on_ink_share"], at["ink_pixel_fraction"]
    add("attribution", f"{_pct(on_ink)} of the positive integrated-gradients attribution lies on ink pixels, which are only {_pct(frac)} of all pixels "
        f"({on_ink / max(frac, 1e-9):.1f}x enrichment; black baseline, {at['images_per_class']} images per digit); {_pct(at['negative_ig_share'])} of all |attribution| is "
        f"negative evidence. IG completeness holds to a median relative error of {_pct(at['completeness_relative_error_median'], 2)} at {at['ig_steps']} steps.")
    de = at["deletion"]
    ok = de["logit_drop_top_ig"] > de["logit_drop_random"]
    add("attribution", f"Erasing the {_pct(de['fraction_of_ink_erased'], 0)} of ink pixels with the highest attribution lowers the true-class logit by "
        f"{de['logit_drop_top_ig']:.2f} on average (accuracy {_pct(de['accuracy_top_ig'])}), against {de['logit_drop_random']:.2f} "
        f"(accuracy {_pct(de['accuracy_random'])}) for as many random ink pixels: "
        + (f"the attribution ranks pixels by causal importance ({de['logit_drop_top_ig'] / max(de['logit_drop_random'], 1e-6):.1f}x)." if ok else
           "the attribution does NOT pick out the causally important pixels better than chance (refuted)."),
        "supported" if ok else "refuted")
    shares = [at["named_share"][str(d)] for d in range(10)]
    ab = r["ablations"]
    reuse = {int(c): v for c, v in ab["channel_reuse"].items()}
    most = max(reuse, key=lambda c: len(reuse[c]))
    add("attribution", f"Layer attribution onto the 16 pool2 channels names {r['config']['k_channels']} channels per digit; these carry a median "
        f"{_pct(float(np.median(shares)))} of each digit's signed attribution (range {_pct(min(shares))}-{_pct(max(shares))}). "
        f"Channels are shared: pool2:{most} is named for {len(reuse[most])} digits ({', '.join(map(str, reuse[most]))}), and "
        f"{len(reuse)} of 16 channels are named at least once.")

    # ---- circuits
    for d, c in r.get("circuits", {}).items():
        chans = [e["conv2_channel"] for e in c["conv2_channels"]]
        per = "; ".join(f"pool2:{e['conv2_channel']} adds {e['mean_direct_contribution_on_class']:+.2f} to logit {d} on {d}s vs "
                        f"{e['mean_direct_contribution_on_other_classes']:+.2f} on other digits" for e in c["conv2_channels"])
        kinds = "; ".join(f"conv1:{k} ({v})" for k, v in c["conv1_kinds"].items())
        add("circuits", f"Digit {d}: the named channels {_chs('pool2', chans)} supply {_pct(c['named_direct_share_of_positive_logit'])} of the positive direct "
            f"evidence for logit {d} on test {d}s (exact, since the classifier is linear): {per}. By expanded-weight norm their strongest "
            f"first-layer inputs are {kinds}.")

    # ---- ablations
    s = ab["summary"]
    for pc in ab["per_class"]:
        m = pc["mean_ablation"]
        rc = pc["random_control"]
        v = verdict(m["margin_drop"], rc["margin_drop"]["mean"], rc["fraction_at_least_as_large_margin"])
        spec = m["margin_drop"] / max(m["other_classes_margin_drop"], 1e-6) if m["other_classes_margin_drop"] > 0 else float("inf")
        spec_txt = (f"other digits' margins fall by {m['other_classes_margin_drop']:.2f} on average, so the effect is "
                    + ("specific to this digit" if spec >= 2 else "not specific to this digit") + f" (ratio {spec:.2f})"
                    if np.isfinite(spec) else f"other digits' margins do not fall on average ({m['other_classes_margin_drop']:+.2f})")
        add("ablations", f"Digit {pc['class']}: mean-ablating {_chs('pool2', pc['channels'])} lowers its logit margin by {m['margin_drop']:.2f} and "
            f"{_acc_change(m['accuracy_drop'])} from {_pct(pc['clean_accuracy'])}, against {rc['margin_drop']['mean']:.2f} +- {rc['margin_drop']['std']:.2f} "
            f"(accuracy {100 * rc['accuracy_drop']['mean']:.1f} +- {100 * rc['accuracy_drop']['std']:.1f} points) for {rc['margin_drop']['n']} random "
            f"{len(pc['channels'])}-channel sets, {_pct(rc['fraction_at_least_as_large_margin'], 0)} of which hurt at least as much; {spec_txt}. "
            + (f"Zero-ablation instead costs {_dpts(pc['zero_ablation']['accuracy_drop'])} of accuracy. " if pc["zero_ablation"] else "")
            + f"Hypothesis 'these channels carry digit {pc['class']}': {v}.", v)
    specific = [pc["class"] for pc in ab["per_class"]
                if pc["mean_ablation"]["margin_drop"] >= 2 * max(pc["mean_ablation"]["other_classes_margin_drop"], 1e-6)]
    add("ablations", f"Specificity: for {len(specific)}/10 digits ({', '.join(map(str, specific)) or 'none'}) ablating the named channels lowers that digit's "
        f"margin at least twice as much as the other digits' (mean over digits of the others' margin drop: {s['mean_named_other_classes_margin_drop']:.2f}). "
        + ("The last layer's features are mostly shared between digits rather than dedicated to one." if len(specific) <= 5 else
           "Most digits have channels dedicated to them."))
    add("ablations", f"Overall, the attribution-named channels hurt their own digit more than random channels for {s['classes_named_beats_random_margin']}/10 digits "
        f"(mean margin drop {s['mean_named_margin_drop']:.2f} vs {s['mean_random_margin_drop']:.2f}; mean accuracy drop {_dpts(s['mean_named_accuracy_drop'])} vs "
        f"{_dpts(s['mean_random_accuracy_drop'])}).", "supported" if s["classes_named_beats_random_margin"] >= 8 else
        ("weakly supported" if s["classes_named_beats_random_margin"] > 5 else "refuted"))
    for d, cc in ab.get("conv1_circuit", {}).items():
        rc = cc["random_control_margin_drop"]
        v = verdict(cc["margin_drop"], rc["mean"], cc["fraction_random_at_least_as_large"])
        add("ablations", f"Circuit check for digit {d}: mean-ablating its first-layer inputs {_chs('conv1', cc['conv1_channels'])} lowers the digit's margin by "
            f"{cc['margin_drop']:.2f} (accuracy drop {_dpts(cc['accuracy_drop'])}) against {rc['mean']:.2f} +- {rc['std']:.2f} for random conv1 "
            f"pairs ({_pct(cc['fraction_random_at_least_as_large'], 0)} at least as large); other digits' margins fall by "
            f"{cc['other_classes_margin_drop']:.2f}. Hypothesis that these conv1 channels are the digit's key inputs: {v}.", v)
    out.insert(0, {"section": "summary", "text": _summary(r)})
    return out


def _summary(r: dict) -> str:
    """The story in a few sentences, each number taken from the detailed findings below."""
    prof = r["filters"]["profiles"]
    thr = r["filters"]["orientation_threshold"]
    n_or = sum(p["orientation_selectivity"] > thr and "off" not in p["kind"] for p in prof)
    fv, at, ab = r["featvis"], r["attribution"], r["ablations"]
    s = ab["summary"]
    de = at["deletion"]
    specific = sum(pc["mean_ablation"]["margin_drop"] >= 2 * max(pc["mean_ablation"]["other_classes_margin_drop"], 1e-6) for pc in ab["per_class"])
    return (f"In short: {n_or} of the {len(prof)} first-layer filters are measured oriented edge/stroke detectors. Unit visualizations of conv1/conv2 "
            f"resemble their top-activating test patches (median r = {fv['conv1']['median_r']:.2f} / {fv['conv2']['median_r']:.2f} vs "
            f"{fv['conv1']['median_r_mismatched']:.2f} / {fv['conv2']['median_r_mismatched']:.2f} for mismatched channels), but class-logit visualizations do not "
            f"resemble digits (median r = {fv['logits']['median_r']:.2f}). Integrated gradients put {_pct(at['positive_ig_on_ink_share'])} of positive evidence on "
            f"the strokes, and erasing the top-attributed {_pct(de['fraction_of_ink_erased'], 0)} of ink costs {de['logit_drop_top_ig']:.2f} logits vs "
            f"{de['logit_drop_random']:.2f} for random ink. Each digit is read from a few shared conv2 channels: ablating the {r['config']['k_channels']} "
            f"attribution-named channels hurts the digit more than random channels for {s['classes_named_beats_random_margin']}/10 digits (mean margin drop "
            f"{s['mean_named_margin_drop']:.2f} vs {s['mean_random_margin_drop']:.2f}), yet only {specific}/10 of these effects are specific to the digit.")


# =============================================================================== rendering

SECTIONS = [
    ("summary", "Summary"),
    ("evaluation", "Model and evaluation"),
    ("filters", "First-layer filters"),
    ("featvis", "Feature visualization"),
    ("attribution", "Attribution"),
    ("circuits", "Circuits"),
    ("ablations", "Causal checks (ablations)"),
]

INTRO = (
    "The exercise: train a small CNN on MNIST and try to understand mechanistically how it classifies digits, "
    "with feature visualization, attribution, weights-based circuit analysis, and ablations that test the claims. "
    "Every finding below is generated from a measured number; a hypothesis the numbers contradict is marked refuted."
)

METHOD_NOTES = [
    "Model: normalize -> conv1 (1->8, 5x5) -> ReLU -> maxpool 2 -> conv2 (8->16, 5x5) -> ReLU -> maxpool 2 -> fc (784->10). The classifier is linear, so the classifier view (fc weights as 16 maps of 7x7 per class) is exact.",
    "Feature visualization: pixel parameterization with +-2 px jitter (featvis defaults for 28x28 inputs); neuron objectives at the centre of the layer, cropped to the unit's receptive field for comparison with dataset patches.",
    "Top-activating examples: images with the largest spatial-max activation of the channel (pre-ReLU conv output) in the evaluation subset; patches are the measured receptive field around the maximising position.",
    "Attribution: integrated gradients from a black image (the MNIST background), towards each image's true class; layer attribution is layer integrated gradients onto pool2 (the classifier's input).",
    "Named channels: for each digit, the pool2 channels with the largest mean layer attribution. Ablation replaces them by their dataset mean (mean ablation; zero ablation reported too), through forward hooks, on the evaluation subset.",
    "Margin = logit of the true digit minus the largest other logit; effects are measured on each digit's own test images. Random controls draw channel sets of the same size uniformly from all channels (seeded; they may include named channels). 'supported': the named effect exceeds the random mean and at most 10% of random draws reach it; 'weakly supported': at most 30% do; otherwise 'refuted'.",
    "Limits: the evaluation subset and the random draws are finite (see the counts), integrated gradients depends on its black baseline, expanded weights linearise ReLU and max pooling, and mean ablation keeps the channel's average contribution (it tests the variation, not the presence, of a feature).",
]


def _table_md(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _tables(r: dict) -> dict[str, list[tuple[str, list[str], list[list[Any]]]]]:
    """Section -> [(title, header, rows)] with the per-unit numbers behind the findings."""
    t: dict[str, list] = {k: [] for k, _ in SECTIONS}
    ev = r["evaluation"]
    t["evaluation"].append(("Per-digit test accuracy", ["digit"] + [str(d) for d in range(10)],
                            [["accuracy"] + [f"{100 * a:.2f}%" for a in ev["per_class_accuracy"]]]))
    t["filters"].append(("conv1 channels, measured", ["channel", "kind", "pref. angle", "weight angle", "selectivity", "width (px)", "ink polarity", "centre-surround"],
                         [[f"conv1:{p['channel']}", p["kind"], _num(p["preferred_angle"], "{:.0f}"),
                           f"{p['weight_angle']:.0f}", f"{p['orientation_selectivity']:.2f}", f"{p['preferred_width']:g}",
                           f"{p['ink_polarity']:+.2f}", f"{p['centre_surround']:+.2f}"] for p in r["filters"]["profiles"]]))
    for layer in ("conv1", "conv2"):
        d = r["featvis"][layer]
        t["featvis"].append((f"{layer}: visualization vs top-activating patches", ["channel", "r (own)", "r (other channels)", "vis / best example activation", "channel vis vs mean top image r"],
                             [[f"{layer}:{c}", f"{d['neuron_vs_top_patches_r'][c]:+.2f}", f"{d['neuron_vs_other_channels_patches_r'][c]:+.2f}",
                               f"{d['vis_activation_over_best_example'][c]:.1f}x", f"{d['channel_vis_vs_mean_top_images_r'][c]:+.2f}"] for c in range(d["channels"])]))
    lg = r["featvis"]["logits"]
    t["featvis"].append(("Class-logit visualizations", ["digit", "r with class mean", "r with other means", "model confidence"],
                         [[d, f"{lg['vis_vs_class_mean_r'][d]:+.2f}", f"{lg['vis_vs_other_class_means_r'][d]:+.2f}", f"{100 * lg['model_confidence_on_vis'][d]:.1f}%"] for d in range(10)]))
    at = r["attribution"]
    t["attribution"].append(("Channels named per digit (pool2, by layer attribution)", ["digit", "channels", "share of attribution"],
                             [[d, _chs("pool2", at["named_channels"][str(d)]), _pct(at["named_share"][str(d)])] for d in range(10)]))
    if at["misclassified"]:
        t["attribution"].append(("Misclassified examples shown", ["test index", "true", "predicted", "logit true", "logit predicted"],
                                 [[m["test_index"], m["true"], m["predicted"], m["logit_true"], m["logit_pred"]] for m in at["misclassified"]]))
    for d, c in r.get("circuits", {}).items():
        t["circuits"].append((f"Digit {d}: named pool2 channels", ["channel", "attribution share", f"direct contribution on {d}s", "on other digits", "fc weights > 0", "excitatory conv1 inputs", "inhibitory conv1 inputs"],
                              [[f"pool2:{e['conv2_channel']}", _pct(e["attribution_share"]), f"{e['mean_direct_contribution_on_class']:+.2f}",
                                f"{e['mean_direct_contribution_on_other_classes']:+.2f}", _pct(e["classifier_weight_positive_fraction"], 0),
                                ", ".join(f"{u} ({s:.2f})" for u, s in e["excitatory_conv1_inputs"]),
                                ", ".join(f"{u} ({s:.2f})" for u, s in e["inhibitory_conv1_inputs"])] for e in c["conv2_channels"]]))
    ab = r["ablations"]
    rows = []
    for pc in ab["per_class"]:
        m, rc = pc["mean_ablation"], pc["random_control"]
        rows.append([pc["class"], ", ".join(map(str, pc["channels"])), f"{m['margin_drop']:.2f}",
                     f"{rc['margin_drop']['mean']:.2f} +- {rc['margin_drop']['std']:.2f}", _pct(rc["fraction_at_least_as_large_margin"], 0),
                     f"{100 * m['accuracy_drop']:.1f}", f"{100 * rc['accuracy_drop']['mean']:.1f} +- {100 * rc['accuracy_drop']['std']:.1f}",
                     f"{m['other_classes_margin_drop']:.2f}", f"{100 * pc['zero_ablation']['accuracy_drop']:.1f}" if pc["zero_ablation"] else "-",
                     verdict(m["margin_drop"], rc["margin_drop"]["mean"], rc["fraction_at_least_as_large_margin"])])
    t["ablations"].append((f"Mean ablation of named pool2 channels ({ab['eval_images']} test images, {ab['draws']} random draws)",
                           ["digit", "channels", "margin drop", "random margin drop", "random >= named", "acc. drop (pts)", "random acc. drop (pts)",
                            "other digits' margin drop", "zero-abl. acc. drop (pts)", "verdict"], rows))
    return t


def _timing_line(r: dict) -> str:
    tm = r.get("timing_seconds", {})
    parts = [f"{k}: {v:.1f} s" for k, v in tm.items() if k not in ("total", "report")]
    return f"Total {tm.get('total', 0):.1f} s ({'; '.join(parts)})."


def render_markdown(r: dict, fnds: list[dict]) -> str:
    md = ["# MNIST exercise: how does a small CNN read digits?", "", INTRO, ""]
    cfg = r["config"]
    md += [f"Model: {r['model']['source']} `{Path(r['model']['checkpoint']).name}`; seed {cfg['seed']}; "
           f"{'quick mode; ' if cfg['quick'] else ''}evaluation subset {r['evaluation']['eval_subset']['images']} test images.", ""]
    md += ["## Findings", ""]
    for title_key, title in SECTIONS:
        items = [f for f in fnds if f["section"] == title_key]
        if items:
            md.append(f"**{title}**")
            md.append("")
            md += [f"- {f['text']}" + (f" **[{f['verdict']}]**" if f.get("verdict") else "") for f in items]
            md.append("")
    tables = _tables(r)
    for key, title in SECTIONS:
        if key == "summary":
            continue
        md += [f"## {title}", ""]
        for f in r["figures"]:
            if f["section"] == key:
                md += [f"### {f['title']}", "", f"![{f['title']}]({f['file']})", "", f"*{f['caption']}*", ""]
        for ttitle, header, rows in tables[key]:
            md += [f"**{ttitle}**", "", _table_md(header, rows), ""]
    md += ["## Methods and caveats", ""] + [f"- {m}" for m in METHOD_NOTES] + [""]
    md += ["## Reproduce", "", "```", _command(r), "```", "", _timing_line(r), "", "All numbers: `results.json`.", ""]
    return "\n".join(md)


def _command(r: dict) -> str:
    cfg = r["config"]
    cmd = f"vision-interp mnist-exercise --out {cfg['out']} --seed {cfg['seed']}"
    if cfg["retrain"]:
        cmd += " --retrain"
    if cfg["quick"]:
        cmd += " --quick"
    return cmd


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em;margin-bottom:.3em}
figure{margin:1em 0 1.5em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.88em;color:#555;max-width:900px}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0 1.5em 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}th{background:#f5f5f5}
.v{font-weight:600;padding:1px 6px;border-radius:3px;font-size:.85em}.supported{background:#d5f5e3}.weakly{background:#fcf3cf}.refuted{background:#fadbd8}
.findings li{margin:.35em 0}.meta{color:#666;font-size:.9em}code,pre{background:#f6f6f6;padding:2px 4px}
"""


def render_html(r: dict, fnds: list[dict]) -> str:
    e = html.escape
    cfg = r["config"]
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>MNIST exercise report</title>",
             f"<style>{CSS}</style></head><body>", "<h1>MNIST exercise: how does a small CNN read digits?</h1>", f"<p>{e(INTRO)}</p>",
             f"<p class='meta'>Model: {e(r['model']['source'])} <code>{e(Path(r['model']['checkpoint']).name)}</code>; seed {cfg['seed']}; "
             f"{'quick mode; ' if cfg['quick'] else ''}evaluation subset {r['evaluation']['eval_subset']['images']} test images.</p>",
             "<h2 id='findings'>Findings</h2>"]
    for key, title in SECTIONS:
        items = [f for f in fnds if f["section"] == key]
        if not items:
            continue
        head = f"<h3>{e(title)}</h3>" if key == "summary" else f"<h3><a href='#{key}'>{e(title)}</a></h3>"
        parts.append(f"{head}<ul class='findings'>")
        for f in items:
            badge = ""
            if f.get("verdict"):
                cls = f["verdict"].split()[0]
                badge = f" <span class='v {cls}'>{e(f['verdict'])}</span>"
            parts.append(f"<li>{e(f['text'])}{badge}</li>")
        parts.append("</ul>")
    tables = _tables(r)
    for key, title in SECTIONS:
        if key == "summary":
            continue
        parts.append(f"<h2 id='{key}'>{e(title)}</h2>")
        for f in r["figures"]:
            if f["section"] == key:
                parts.append(f"<figure><h3>{e(f['title'])}</h3><img src='{e(f['file'])}' alt='{e(f['title'])}'>"
                             f"<figcaption>{e(f['caption'])}</figcaption></figure>")
        for ttitle, header, rows in tables[key]:
            parts.append(f"<h3>{e(ttitle)}</h3>" + _table_html(header, rows))
    parts.append("<h2>Methods and caveats</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in METHOD_NOTES) + "</ul>")
    parts.append(f"<h2>Reproduce</h2><pre>{e(_command(r))}</pre><p class='meta'>{e(_timing_line(r))} All numbers: "
                 "<a href='results.json'>results.json</a>.</p></body></html>")
    return "\n".join(parts)


def write_report(results: dict, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (atomically) and store the findings in ``results``."""
    out = Path(out)
    fnds = findings(results)
    results["findings"] = fnds
    md = vio.atomic_write_text(out / "report.md", render_markdown(results, fnds))
    ht = vio.atomic_write_text(out / "report.html", render_html(results, fnds))
    return md, ht
