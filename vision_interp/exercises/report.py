"""report.md / report.html / labels.json from results.json: every sentence is built from a measured number."""

from __future__ import annotations

import html
import re
import os
from pathlib import Path
from typing import Any

from .. import io as vio
from .. import resources
from .circuit import VERDICT_RULE

__all__ = ["write_report", "digit_paragraph", "clause_table", "render_markdown", "labels"]


def _f(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def _spec(x: float) -> str:
    return "inf (other digits unaffected)" if x >= 1e8 else f"{x:.2f}"


def digit_paragraph(dd: dict) -> str:
    """'A 0 is: ...' with the numbers behind every clause."""
    parts = []
    for c in dd["clauses"]:
        nm = c["name"] if c["name"] != "unclear" else "an unnamed feature"
        ma = c["mean_ablation"]
        if c["sign"] == "present":
            what = (f"**{nm}** (conv2:{c['channel']}) at the {c['region']} (mean activation {_f(c['mean_activation_on_digit'])} on "
                    f"{dd['digit']}s vs {_f(c['mean_activation_on_others'])} on other digits; direct logit {c['direct_logit_on_digit']:+.2f} vs "
                    f"{c['direct_logit_on_others']:+.2f})")
        else:
            what = (f"**no {nm}** (conv2:{c['channel']}) at the {c['region']}, where its classifier weights are inhibitory (sum "
                    f"{c['weight_sum']:+.2f}): it is quieter there on {dd['digit']}s ({_f(c['mean_activation_on_digit'])} vs "
                    f"{_f(c['mean_activation_on_others'])}; direct logit {c['direct_logit_on_digit']:+.2f} vs {c['direct_logit_on_others']:+.2f})")
        test = (f"mean-ablating it costs {_f(ma['margin_drop'])} margin (accuracy {-100 * ma['accuracy_drop']:+.1f} pts), above "
                f"{_f(c['percentile'], 0)}% of {c['controls']['n']} controls (control mean {_f(c['controls']['mean'])}), specificity "
                f"{_spec(ma['specificity'])}: **{c['verdict']}**")
        parts.append(f"{what}; {test}")
    return f"**A {dd['digit']} is:** " + "; ".join(parts[:-1]) + ("; and " if len(parts) > 1 else "") + parts[-1] + "."


def clause_table(ci: dict) -> str:
    """One row per clause: the mechanism at a glance (the long sentences are folded below it)."""
    rows = []
    for d in ci["digits"]:
        for c in d["clauses"]:
            ma = c["mean_ablation"]
            rows.append([d["digit"], f"{'+' if c['sign'] == 'present' else '-'}conv2:{c['channel']} {c['name']}", c["region"],
                         f"{-ma['margin_drop']:+.2f}", f"{_f(c['percentile'], 0)}% of {c['controls']['n']}", _spec(ma["specificity"]),
                         f"**{c['verdict']}**"])
    return _table(["digit", "clause (+ present, - absent)", "where", "margin change when mean-ablated", "controls below it", "specificity",
                   "verdict"], rows)


def _zero_vs_mean(dd: dict) -> list[str]:
    out = []
    for c in dd["clauses"]:
        m, z = c["mean_ablation"]["margin_drop"], c["zero_ablation"]["margin_drop"]
        if abs(m - z) > 0.5 * max(abs(m), abs(z), 0.2):
            if c["sign"] == "absent":
                why = (f"the channel is already low there on {dd['digit']}s ({_f(c['mean_activation_on_digit'])}); zeroing lowers it further "
                       f"(removing inhibition, margin change {-z:+.2f}), while the mean ({_f(c['dataset_mean'])}) fills in the missing feature, "
                       "so only mean-ablation tests an 'absent' clause")
            else:
                why = (f"zero also removes the activation the channel has on every digit (dataset mean {_f(c['dataset_mean'])}), so it "
                       f"costs more ({_f(z)}) than replacing it by its mean ({_f(m)})")
            out.append(f"digit {dd['digit']}, conv2:{c['channel']}: zero {_f(z)} vs mean {_f(m)}; {why}.")
    return out


def labels(r: dict) -> dict:
    out = {}
    for u in r["conv1"]["units"]:
        out[f"conv1:{u['channel']}"] = {"name": u["label"].split(":")[0] if u["label"].startswith("off") else u["label"],
                                         "note": f"exact optimum {u['exact_optimum_value']:.2f} vs best test {u['best_test_value']:.2f}; {u['label']}"}
    for u in r["conv2"]["units"]:
        out[f"conv2:{u['channel']}"] = {"name": u["name"], "note": u["note"]}
    for dd in r["circuits"]["digits"]:
        out[f"fc:{dd['digit']}"] = {"name": f"digit {dd['digit']}", "note": digit_paragraph(dd).replace("**", "")}
    return out


def _table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
                     + ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in rows])


def _figs(r: dict, section: str) -> list[str]:
    out = []
    for f in r["figures"]:
        if f["section"] == section:
            out += [f"![{f['title']}]({f['file']})", "", f"*{f['title']}.* {f['caption']}", ""]
    return out


# where the committed report (galleries/mnist_exercise/) finds the pages it cites
COMMITTED_LINKS = {"gallery": "../mnist_cnn/index.html", "card": "../../models/mnist_cnn.md",
                   "graphs": "../features/mnist_cnn_tc/graphs/index.html"}


def report_links(out: str | os.PathLike) -> dict[str, str | None]:
    """Links from ``out`` to the pages the report cites (the MNIST CNN's gallery, its model card, the per-digit
    attribution graphs), relative so the folder can be moved with them; None where a page is not on this
    machine (an installed package ships models, not galleries), and the report then names the command instead."""
    galleries = resources.checkout_galleries_dir()
    targets = {"gallery": galleries / "mnist_cnn" / "index.html" if galleries else None,
               "card": resources.find_model("mnist_cnn.md"),
               "graphs": galleries / "features" / "mnist_cnn_tc" / "graphs" / "index.html" if galleries else None}
    where = Path(out).resolve()
    return {k: Path(os.path.relpath(t.resolve(), where)).as_posix() if t is not None and t.is_file() else None
            for k, t in targets.items()}


def _cite(text: str, link: str | None, otherwise: str) -> str:
    return f"[{text}]({link})" if link else f"{text} ({otherwise})"


def selection_paragraph(sd: dict) -> str:
    """Where the clauses were chosen and where they were tested (results['selection_data'])."""
    s, t = sd["selection"], sd["test"]
    return (f"**Selection and test data.** Clauses, their positions and the baselines' rankings were chosen on {s['images']} "
            f"images of the {s['split']} split (indices {s['start']}..{s['stop'] - 1}); every verdict, ablation and "
            f"completeness figure is measured on {t['images']} {t['split']} images. {sd['identical_images_in_both']} images are "
            "pixel-identical in both sets.")


def interventions_markdown(iv: dict) -> str:
    """The intervention test split by block: conv1 features are the real test, conv2 features an arithmetic check."""
    c1, c2 = iv["blocks"]["conv1"], iv["blocks"]["conv2"]

    def r_text(b: dict) -> str:
        if b["pearson_r"] is None:
            return "r undefined (too few cases)"
        ci = f" (95% bootstrap interval over images {b['r_95'][0]:.2f} to {b['r_95'][1]:.2f})" if b["r_95"] else ""
        return f"r = {b['pearson_r']:.3f}{ci}"

    lines = ["## Interventions against the attribution graphs, split by block", "",
             f"On {iv['images']} held-out test images (indices {iv['test_indices'][0]}..{iv['test_indices'][1] - 1}), each of the top "
             f"{iv['top_nodes_per_graph']} feature nodes of the image's attribution graph is removed in the real model; predicted = the "
             "graph's total effect, measured = the real change of the label logit.", "",
             f"- **conv1 features, the real test** ({c1['cases']} cases): {r_text(c1)}; mean |measured - predicted| "
             f"{c1['mean_abs_error']:.3f} against mean |measured| {c1['mean_abs_measured']:.3f}; signs agree in {c1['sign_agreement']:.1%} "
             f"of cases, while {c1['measured_negative_share']:.1%} of the measured changes are negative (the bar a sign test clears by "
             "predicting 'down' every time).",
             f"- **conv2 features, arithmetic check (exact by construction: everything after pool2 is linear)** ({c2['cases']} cases): "
             f"{r_text(c2)}; mean |measured - predicted| {c2['mean_abs_error']:.2g}. This says nothing about the transcoders' fidelity.",
             f"- Pooling both, as a single headline would, gives r = {iv['pooled_pearson_r']:.3f}.", ""]
    return "\n".join(lines)


def render_markdown(r: dict, links: dict[str, str | None] | None = None) -> str:
    links = COMMITTED_LINKS if links is None else links
    ev, c1, fv, c2, ci = r["evaluation"], r["conv1"], r["featvis"], r["conv2"], r["circuits"]
    at, cf, dd = r["attribution"], r["confusions"], r["deep_dive"]
    mdl = r["model"]
    vc = ci["verdict_counts"]
    n_cl = sum(vc.values())
    L = ["# How a small CNN reads digits: the mechanism, tested", ""]
    L += [f"Model `mnist_cnn` (weights fingerprint `{mdl['fingerprint'][:16]}`, the same identity as in the "
          f"{_cite('feature-visualization gallery', links['gallery'], 'build it with `vision-interp gallery --model mnist_cnn`')} and the "
          f"{_cite('model card', links['card'], '`mnist_cnn.md` beside the checkpoint')}); "
          f"test accuracy {100 * ev['accuracy']:.2f}% on {ev['test_images']} images; {r['config']['eval_images']} test images analysed; seed {r['config']['seed']}.", ""]
    if "completeness" in r:  # what the named parts and the sparse replacement model carry: the two headline figures
        from ..features.completeness import completeness_headline
        L += [completeness_headline(r["completeness"])]
        if "baselines" in r["completeness"]:
            from ..features.completeness import baselines_headline
            L += [baselines_headline(r["completeness"]["baselines"]), ""]
    if "selection_data" in r:
        L += [selection_paragraph(r["selection_data"]), ""]
    L += ["## The mechanism", ""] + _figs(r, "mechanism")
    L += [f"Verdict rule (the only one in this report): {VERDICT_RULE}", "",
          f"Of {n_cl} clauses, {vc.get('supported', 0)} are supported, {vc.get('not established', 0)} not established and "
          f"{vc.get('refuted', 0)} refuted; every clause was mean-ablated and compared with {ci['controls_per_clause']} random controls.", ""]
    L += [clause_table(ci), ""]
    L += ["<details><summary>How the network computes this, and every clause in words (all the numbers)</summary>", ""]
    L += [f"The network is conv1 (8 filters, 5x5) -> ReLU -> 2x2 max-pool -> conv2 (16 filters) -> ReLU -> 2x2 max-pool -> one linear layer. "
          f"conv1 splits ink into oriented stroke edges and off units that report blank paper; conv2 combines them into "
          f"{c2['n_named']} of 16 nameable parts (strokes, arcs, loops); and because the classifier is linear, each logit is an exact weighted "
          f"sum of where those parts are - and where they are *not*. Each digit is described by its {r['config']['k_channels']} strongest "
          f"clauses (chosen by class-contrastive direct logit attribution, which scores a channel that fires equally on every digit as 0), and "
          f"every clause is ablated and compared with {ci['controls_per_clause']} random controls.", ""]
    for d in ci["digits"]:
        L += [digit_paragraph(d), ""]
    L += ["</details>", ""]
    if "completeness" in r and "baselines" in r["completeness"]:  # the table behind the headline's baseline sentence
        from ..features.completeness import baselines_markdown
        L += [baselines_markdown(r["completeness"]["baselines"])]
    if "interventions" in r:
        L += [interventions_markdown(r["interventions"])]
    if "completeness" in r:  # per digit, the pruned attribution graph beside the neuron-level clauses
        from ..features.completeness import completeness_by_digit
        L += [completeness_by_digit({**r["completeness"], "graphs_page": links["graphs"]})]
    L += ["## Classifier weights behind each clause", ""] + _figs(r, "circuits")
    # conv1
    n_beat = sum(u["exact_optimum_value"] >= u["best_test_value"] for u in c1["units"])
    L += ["## conv1, exactly", "",
          f"conv1 is linear in the pixels (after the model's fixed normalisation), so the patch in [0, 1] that maximises a unit is exact: "
          f"ink where the weight is positive, blank where it is negative. For {n_beat} of {len(c1['units'])} units this optimum beats the best "
          f"patch in the whole test set (ratios {min(u['optimum_over_best_test'] for u in c1['units']):.2f}-"
          f"{max(u['optimum_over_best_test'] for u in c1['units']):.2f}x). Labels come from synthetic bright strokes (angle x width x "
          f"perpendicular offset); a separate check refuses a label whose claimed stimulus does not drive the unit "
          f"({sum(1 for u in c1['units'] if u['label_check'])} refused).", ""]
    L += [_table(["unit", "label (checked)", "optimum", "best test", "blank", "best stroke", "worst stroke", "orientation selectivity"],
                 [[f"conv1:{u['channel']}", u["label"], _f(u["exact_optimum_value"]), _f(u["best_test_value"]), f"{u['blank_response']:+.2f}",
                   f"{u['best_stroke_response']:+.2f}", f"{u['worst_stroke_response']:+.2f}", _f(u["selectivity"])]
                  for u in c1["units"]]), ""]
    lin = max(abs(u["dark_line_response"] + u["worst_stroke_response"]) for u in c1["units"])
    L += [f"Polarity: stroke responses are relative to blank paper, so a positive 'best stroke' means ink excites the unit somewhere and "
          f"a negative 'worst stroke' means ink elsewhere suppresses it. A dark line on white gives exactly the negative of the worst bright "
          f"stroke (largest deviation {lin:.3f}), as it must for a unit that is linear in its pixels; off units are the ones whose every "
          "stroke through the centre is negative.", ""]
    L += _figs(r, "conv1")
    # featvis
    L += ["## Feature visualization", ""]
    for layer in ("conv1", "conv2"):
        f = fv[layer]
        worst = min(f["units"], key=lambda u: u["ratio"])
        L += [f"- {layer}: the default visualization of the centre neuron beats every test image at that neuron for {f['beats_all']} of "
              f"{f['n']} units (median {f['median_ratio']:.2f}x the best test activation; weakest {layer}:{worst['channel']} at {worst['ratio']:.2f}x)."]
    if fv["conv1"]["beats_all"] < fv["conv1"]["n"]:
        L += [f"- Every conv1 shortfall is the optimiser's, not the model's: the exact optimum above beats every test patch for "
              f"{n_beat} of {len(c1['units'])} units, while the default visualization reaches a median {fv['conv1']['median_ratio']:.2f}x "
              "of the best test image (the engine's default for these units needs fixing; see featvis)."]
    lg = fv["logits"]
    L += [f"- Class logits: the model classifies {lg['classified_as_own']} of 10 logit visualizations as their own digit; "
          f"{lg['most_similar_to_own']} of 10 are most similar (best correlation with the 10 top-scoring test images of each class) to their own class.", ""]
    L += [_table(["unit", "vis activation", "best test", "ratio"], [[f"{l}:{u['channel']}", _f(u["vis"]), _f(u["best_test"]), _f(u["ratio"])]
                                                                   for l in ("conv1", "conv2") for u in fv[l]["units"]]), ""]
    L += _figs(r, "featvis")
    # conv2
    L += ["## conv2, named from evidence", "",
          f"Each unit's name is the synthetic stimulus (strokes at 12 angles, arcs opening four ways, loops, stroke ends; each at 9 positions "
          f"around the receptive field) that drives it most, accepted only when it reaches at least 0.4x the unit's best activation on the "
          f"selection (training) images AND its picture (at the position where it drives the unit most) correlates with the mean of the "
          f"unit's 9 top selection-image patches "
          f"(r >= 0.25), and no other stimulus family comes within 5% of it; otherwise the unit is 'unclear'. "
          f"{c2['n_named']} of 16 are named. Polysemanticity is the effective number of digits among the top {c2['top_n']} activations "
          f"(exp of the entropy of the base-rate-corrected histogram: 1 = one digit, 10 = no preference).", ""]
    L += [_table(["unit", "name", "best synthetic / best selection image", "stimulus vs top patches r", "featvis vs top patches r", "polysemanticity", "evidence"],
                 [[f"conv2:{u['channel']}", u["name"], _f(u["stimulus_over_best_test"]), _f(u["stimulus_vs_top_patches_r"]),
                   _f(u["featvis_vs_top_patches_r"]), _f(u["polysemanticity"], 1), u["note"]] for u in c2["units"]]), ""]
    L += _figs(r, "conv2")
    # causal details
    L += ["## Causal tests, in detail", "",
          f"Channels and positions are selected by {ci['selection']}{', on ' + ci['selected_on'] if ci.get('selected_on') else ''}. Each clause is ablated at exactly its channel and positions (pool2, "
          f"where the classifier reads; the logit change is exact), by its dataset mean and by zero. Controls: {ci['controls_per_clause']} per clause, "
          f"same number of positions, channels not named for that digit, and matched in perturbation size (the {ci['controls_per_clause']} closest "
          f"of {3 * ci['controls_per_clause']} draws, half of them drawn favouring cells that move a lot; "
          "the worst match ratio is in the table). Specificity = margin drop on the digit / mean margin drop on the other digits' own images.", ""]
    rows = []
    for d in ci["digits"]:
        for c in d["clauses"]:
            rows.append([d["digit"], f"{'+' if c['sign'] == 'present' else '-'}conv2:{c['channel']}", c["region"], len(c["positions"]),
                         _f(c["mean_ablation"]["margin_drop"]), _f(c["zero_ablation"]["margin_drop"]), _f(c["controls"]["mean"]),
                         _f(c["controls"]["p95"]), _f(c["controls"]["size_ratio_max"]), _f(c["percentile"], 0), _spec(c["mean_ablation"]["specificity"]), c["verdict"]])
    use: dict[int, list[str]] = {}
    for d in ci["digits"]:
        for c in d["clauses"]:
            use.setdefault(c["channel"], []).append(f"{d['digit']}{'+' if c['sign'] == 'present' else '-'}")
    most = sorted(use.items(), key=lambda kv: -len(kv[1]))
    L += [f"{len(use)} of 16 channels appear in some clause. The most reused is conv2:{most[0][0]} ({len(most[0][1])} clauses: "
          f"{', '.join(most[0][1])}; '+' present, '-' absent)"
          + (f", then conv2:{most[1][0]} ({', '.join(most[1][1])})" if len(most) > 1 else "")
          + ". A channel named as *absent* for one digit and *present* for another is reused because where it fires separates digits, "
          "not because it is generally active: contrastive selection gives a channel with the same activation on every digit a score of 0.", ""]
    L += [_table(["digit", "clause", "where", "cells", "mean-abl.", "zero-abl.", "ctrl mean", "ctrl 95th", "size match (max ratio)", "percentile", "specificity", "verdict"], rows), ""]
    zm = [s for d in ci["digits"] for s in _zero_vs_mean(d)]
    if zm:
        L += ["Where zero- and mean-ablation disagree (by more than half the larger effect):", ""] + [f"- {s}" for s in zm] + [""]
    L += _figs(r, "causal")
    # attribution
    L += ["## Attribution that can see absent ink", "",
          f"On {at['images']} test images ({at['images'] // 10} per digit), integrated gradients ({at['ig_steps']} steps) from four baselines and "
          "black-patch occlusion. Share of |attribution| on blank paper (pixels < 0.1):", ""]
    fa = at["faithfulness"]
    L += [_table(["method", "share on blank paper", "deletion AUC (lower better)", "insertion AUC (higher better)", "cannot show"],
                 [[k, _f(at["background_share"][k]), _f(fa[k]["deletion_auc"]), _f(fa[k]["insertion_auc"]), at["cannot_show"][k]] for k in at["methods"]]
                 + [["random order", "-", _f(fa["random"]["deletion_auc"]), _f(fa["random"]["insertion_auc"]), "-"]]), ""]
    names = at["methods"]
    pairs = [(names[i], names[j], at["agreement_r"][i][j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    lo = min(pairs, key=lambda t: t[2])
    hi = max(pairs, key=lambda t: t[2])
    best_del = min(names, key=lambda k: fa[k]["deletion_auc"])
    best_ins = max(names, key=lambda k: fa[k]["insertion_auc"])
    L += [f"The methods disagree most between {lo[0]} and {lo[1]} (mean per-image r = {lo[2]:.2f}) and agree most between {hi[0]} and {hi[1]} "
          f"(r = {hi[2]:.2f}). IG black puts {100 * at['background_share']['IG black']:.1f}% of its mass on blank paper (zero by construction), "
          f"IG grey {100 * at['background_share']['IG grey']:.1f}%. The most faithful ranking under deletion is {best_del} (AUC "
          f"{fa[best_del]['deletion_auc']:.2f} vs random {fa['random']['deletion_auc']:.2f}), under insertion {best_ins} (AUC "
          f"{fa[best_ins]['insertion_auc']:.2f} vs random {fa['random']['insertion_auc']:.2f}); both use the blurred image as replacement, "
          "which favours no baseline.", ""]
    L += _figs(r, "attribution")
    # confusions
    L += ["## Confusions", "", f"Pairs with at least {cf['tie_cut']} errors on the full test set (pairs with equal counts are listed together, as ties):", ""]
    counts = [p["count"] for p in cf["pairs"]]
    for n in sorted(set(counts), reverse=True):
        tied = [f"{p['true']}->{p['predicted']}" for p in cf["pairs"] if p["count"] == n]
        if len(tied) > 1:
            L += [f"- Tied at {n} errors each: {', '.join(tied)}."]
    for p in cf["pairs"]:
        ww = "; ".join(f"conv2:{w['channel']} ({w['name']}) at the {w['region']} adds {w['push']:+.2f} towards {p['predicted']} more than on correctly read {p['true']}s"
                       for w in p["wrong_way"])
        L += [f"- **{p['true']} read as {p['predicted']}** ({p['count']} images): {ww}."]
    L += [""] + _figs(r, "confusions")
    # deep dive
    desc = "; ".join(f"conv1:{t['conv1']} rows {t['rows'][0]}-{t['rows'][1] - 1}, cols {t['cols'][0]}-{t['cols'][1] - 1}: {t['weight']:+.2f}" for t in dd["description"])
    verdict = "passes" if dd["r"] >= dd["threshold"] else "fails"
    L += ["## Deep dive: conv2:4 rewritten by hand", "",
          f"conv2:4 is named '{next(u['name'] for u in c2['units'] if u['channel'] == 4)}'. Reading its 8x5x5 weights from the pooled conv1 maps: "
          "it is excited by conv1:3 (the left edge of a vertical stroke) along the two centre-right columns and inhibited by it on the left column; "
          "inhibited by conv1:0 (a falling-diagonal edge) on the two left columns and by conv1:6 (blank paper) in the top-right block; mildly excited "
          "by conv1:1 (blank paper) on the second column. Written as five constant blocks by hand "
          f"({desc}), this kernel applied to the real pooled conv1 maps correlates with the real conv2:4 at r = {dd['r']:.3f} over "
          f"{dd['positions']} test positions (r = {dd['r_after_relu']:.3f} after ReLU); the threshold set before measuring is r >= "
          f"{dd['threshold']}: the re-implementation {verdict}. On synthetic strokes the two tuning curves correlate at r = {dd['tuning_r']:.2f} "
          f"and peak at {dd['real_peak_angle']} deg (real) and {dd['hand_peak_angle']} deg (hand-written). Dropping each block costs: "
          + ", ".join(f"{k} {v:+.3f}" for k, v in dd["r_lost_without_term"].items()) + " in r.", ""]
    L += _figs(r, "deepdive")
    L += ["## Appendix: every channel's classifier map, per digit", ""] + _figs(r, "appendix")
    L += ["## Model and evaluation", "",
          f"Test accuracy {100 * ev['accuracy']:.2f}% (weakest digit {min(range(10), key=lambda d: ev['per_class_accuracy'][d])} at "
          f"{100 * min(ev['per_class_accuracy']):.2f}%). Checkpoint `{mdl.get('checkpoint')}`, file sha256 `{(mdl.get('sha256') or '')[:16]}`, "
          f"weights fingerprint `{mdl['fingerprint']}`.", ""]
    L += _figs(r, "evaluation")
    t = r.get("timing_seconds", {})
    L += ["## Reproduce", "", "`vision-interp mnist-exercise` (or `make demo`); stage times (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "report"), ""]
    return "\n".join(L)


def _inline(text: str) -> str:
    import re

    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"<a href='\2'>\1</a>", t)
    return re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<i>\1</i>", t)


_DETAILS = re.compile(r"^(<details><summary>[^<>]*</summary>|</details>)$")


def render_html(md: str) -> str:
    """A small Markdown subset (headings, tables, images, lists, bold/italic/code/links) as HTML."""
    import re

    out, table, in_list = [], [], False
    for line in md.split("\n") + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        if table:
            out.append("<table>" + "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{_inline(c)}</{'th' if i == 0 else 'td'}>" for c in row) + "</tr>"
                                           for i, row in enumerate(table)) + "</table>")
            table = []
        if in_list and not line.startswith("- "):
            out.append("</ul>")
            in_list = False
        m = re.match(r"!\[([^\]]*)\]\(([^)]+)\)", line)
        if _DETAILS.match(line):  # the only raw HTML the report writes: a fixed <details> fold
            out.append(line)
        elif m:
            out.append(f"<p><img src='{html.escape(m.group(2))}' alt='{html.escape(m.group(1))}' style='max-width:100%'></p>")
        elif line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            out.append(f"<h{n}>{_inline(line[n:].strip())}</h{n}>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>MNIST exercise</title><style>body{font-family:sans-serif;max-width:1200px;"
            "margin:auto;padding:0 1em;line-height:1.45}table{border-collapse:collapse;font-size:13px;margin:0.5em 0}"
            "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#f4f4f4}"
            "details{margin:1em 0;padding:0.3em 0.8em;border:1px solid #ddd;border-radius:4px}summary{cursor:pointer;font-weight:bold}</style></head><body>"
            + "\n".join(out) + "</body></html>")


def write_report(results: dict, out: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out)
    md = render_markdown(results, report_links(out))
    p_md = vio.atomic_write_text(out / "report.md", md)
    p_html = vio.atomic_write_text(out / "report.html", render_html(md))
    vio.save_json(out / "labels.json", labels(results))
    return Path(p_md), Path(p_html)
