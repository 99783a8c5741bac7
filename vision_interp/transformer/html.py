"""``index.html`` of the induction report: every sentence is filled from a number of the report.

Static HTML, no scripts, every piece of text escaped; pictures are the PNGs written next to it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .. import io as vio
from . import figures
from .rules import (AGREEMENT_THRESHOLD, INDUCTION_THRESHOLD, PREV_TOKEN_THRESHOLD, SCORE_DEFINITIONS, SCORE_SCALES,
                    format_head, top_heads)

__all__ = ["write_page"]

# an InductionReport: report.py imports this module to write its page, so the page does not import report back
Report = Any

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:4px 0}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%;text-align:left}.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid figure{margin:0;max-width:520px}figcaption{font-size:85%;color:#444}code{background:#f4f4f4}"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _heads(heads) -> str:
    return ", ".join(format_head(l, h) for l, h in heads) or "none"


def _fig(name: str, files: set[str], caption: str) -> str:
    if name not in files:
        return ""
    return f'<figure><img src="{_e(name)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _summary(r: Report) -> str:
    lo = r.losses
    return (f"<p>Probe: [BOS] + R + R, R = {r.seq_len} random tokens, batch {r.batch}, seed {r.seed}. Mean loss on the "
            f"first copy {lo['first_copy']:.3f} nats, on the second copy {lo['second_copy']:.3f} nats "
            f"(uniform prediction: ln {r.config['vocab_size']} = {__import__('math').log(r.config['vocab_size']):.3f}).</p>"
            f"<p>Rule: a head is an <b>induction head</b> when its induction score is at least {INDUCTION_THRESHOLD}, a "
            f"<b>previous-token head</b> when its previous-token score is at least {PREV_TOKEN_THRESHOLD}. "
            f"Induction heads: {_e(_heads(r.induction_heads))}. Previous-token heads: {_e(_heads(r.previous_token_heads))}.</p>")


def _scores_section(r: Report, files: set[str]) -> str:
    items = []
    for name in [n for n in r.scores if not n.startswith("ablation_")]:  # ablations: their own section
        scale = figures.SCALES[SCORE_SCALES.get(name, "unit")][4]
        items.append(_fig(f"heatmap_{name}.png", files, f"{name}: {SCORE_DEFINITIONS.get(name, '')}. Colour scale: {scale}."))
    return "<h2>Scores of every head (layer x head)</h2><div class='grid'>" + "".join(items) + "</div>"


def _ablation_section(r: Report, files: set[str]) -> str:
    if not r.estimates() and not any(k.startswith("ablation_") for k in r.scores):
        return ""
    ig = r.integrated_settings
    parts = ["<h2>Exact ablation and its estimates</h2>",
             "<p>Attribution patching: the gradient at the clean run, one forward and one backward pass. Integrated "
             f"gradients: the gradient averaged over {_e(ig.get('steps', 'n/a'))} points on the straight line from the "
             f"clean to the ablated z, with {'all heads of all layers' if ig.get('scope') == 'all' else _e(ig.get('scope'))} "
             f"moved together ({_e(ig.get('steps', 'n/a'))} forward + backward passes per ablation mode). The estimates of all "
             "heads then sum to the rise from ablating every head at once, so they rank heads; the sizes are the exact "
             "scan's.</p>",
             f"<p>Rule: an estimator tracks the exact scan when the Pearson correlation over all "
             f"{r.n_layer * r.n_head} heads is at least {AGREEMENT_THRESHOLD}.</p><table><tr><th>estimator</th><th>mode</th>"
             "<th>Pearson r</th><th>Spearman</th><th>max |error|</th><th>verdict</th><th>largest exact effect</th>"
             "<th>its estimate</th></tr>"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"
    estimates = r.estimates()
    for name, per_mode in r.agreement().items():
        for mode, ag in per_mode.items():
            exact, est = r.scores[f"ablation_{mode}"], estimates[name][mode]
            (l, h, _), = top_heads(abs(exact), 1)
            verdict = "n/a" if ag["pearson"] is None else ("tracks the exact scan" if ag["tracks_exact"] else
                                                           "does not track the exact scan; use the exact numbers")
            parts.append(f"<tr><td>{_e(name.replace('_', ' '))}</td><td>{_e(mode)}</td><td>{fmt(ag['pearson'])}</td>"
                         f"<td>{fmt(ag['spearman'])}</td><td>{ag['max_abs_error']:.3f} nats</td><td>{_e(verdict)}</td>"
                         f"<td>{format_head(l, h)}: {exact[l, h]:+.3f} nats</td><td>{est[l, h]:+.3f} nats</td></tr>")
    parts.append("</table>")
    parts.append(_line_table(r))
    parts.append("<div class='grid'>")
    scale = figures.SCALES["loss"][4]
    for mode in [n[len("ablation_"):] for n in r.scores if n.startswith("ablation_")]:
        parts.append(_fig(f"heatmap_ablation_{mode}.png", files,
                          f"exact {mode} ablation: rise of the second-copy loss (nats). Colour scale: {scale}."))
        parts.append(_fig(f"heatmap_attribution_{mode}.png", files,
                          f"attribution patching estimate, {mode} ablation (nats). Colour scale: {scale}."))
        parts.append(_fig(f"heatmap_integrated_attribution_{mode}.png", files,
                          f"integrated-gradients attribution patching estimate, {mode} ablation (nats). Colour scale: {scale}."))
    parts.append("</div>")
    return "".join(parts)


def _line_table(r: Report) -> str:
    """The loss along the line from clean to ablated z of the largest-effect head: why a first-order estimate can miss."""
    if not r.ablation_lines:
        return ""
    rows = []
    for mode, line in r.ablation_lines.items():
        if not rows:
            rows.append("<table><tr><th>mode</th><th>head</th><th>slope at t=0 (attribution patching)</th>"
                        + "".join(f"<th>t={t:g}</th>" for t in line["t"]) + "</tr>")
        rows.append(f"<tr><td>{_e(mode)}</td><td>{_e(line['head'])}</td><td>{line['slope_at_0']:+.3f}</td>"
                    + "".join(f"<td>{v:+.3f}</td>" for v in line["loss_rise"]) + "</tr>")
    return ("<p>Rise of the second-copy loss (nats) with the largest-effect head's z moved a fraction t of the way "
            "to its ablation (t=1: the exact ablation). A first-order estimate reads only the slope at t=0.</p>"
            + "".join(rows) + "</table>")


def _joint_section(r: Report) -> str:
    j = r.joint
    if not j:
        return ""
    rows = [f"<h2>Joint and path ablations</h2><p>Clean second-copy loss {j['clean_second_copy_loss']:.3f} nats. "
            f"Induction heads: {_e(_heads(j['induction_heads']))}; previous-token heads: {_e(_heads(j['previous_token_heads']))}; "
            f"path senders (previous-token heads in layers before every induction head): {_e(_heads(j['path_senders']))}.</p>"
            "<table><tr><th>mode</th><th>ablated</th><th>second-copy loss</th><th>rise</th></tr>"]
    labels = {"induction_heads": "all induction heads together", "previous_token_heads": "all previous-token heads together",
              "previous_token_to_induction_keys": "previous-token -> induction keys only (path)"}
    for mode in ("mean", "zero"):
        for key, label in labels.items():
            v = j.get(mode, {}).get(key)
            if mode in j:
                cells = ("n/a (no such heads)", "") if v is None else (f"{v['loss']:.3f}", f"{v['increase']:+.3f}")
                rows.append(f"<tr><td>{mode}</td><td>{_e(label)}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    single = ""
    for mode in ("mean", "zero"):
        if mode in j and j[mode].get("induction_heads") and f"ablation_{mode}" in r.scores:
            best = max(float(r.scores[f"ablation_{mode}"][l, h]) for l, h in j["induction_heads"])
            single += (f"<p>{mode}: the largest rise from one induction head alone is {best:+.3f} nats; all of them "
                       f"together: {j[mode]['induction_heads']['increase']:+.3f} nats.</p>")
    return "".join(rows) + "</table>" + single


def _composition_section(r: Report, files: set[str]) -> str:
    if not r.composition:
        return ""
    b = r.baseline
    parts = [f"<h2>Composition</h2><p>Chance level: random Gaussian matrices of the heads' shapes (d_model "
             f"{r.config['n_embd']}, d_head {r.config['n_embd'] // r.n_head}) score {b['mean']:.3f} "
             f"(std {b['std']:.3f}, {b['samples']} draws) for K-, Q- and V-composition alike.</p>"]
    pairs = [(p, i) for p in r.previous_token_heads for i in r.induction_heads if p[0] < i[0]]
    if pairs:
        parts.append("<table><tr><th>previous-token head</th><th>induction head</th><th>K-comp</th><th>x chance</th>"
                     "<th>Q-comp</th><th>V-comp</th></tr>")
        for (l1, h1), (l2, h2) in pairs:
            k = r.composition["k_composition"][l1, h1, l2, h2]
            q = r.composition["q_composition"][l1, h1, l2, h2]
            v = r.composition["v_composition"][l1, h1, l2, h2]
            parts.append(f"<tr><td>{format_head(l1, h1)}</td><td>{format_head(l2, h2)}</td><td>{k:.3f}</td>"
                         f"<td>{k / b['mean']:.2f}x</td><td>{q:.3f} ({q / b['mean']:.2f}x)</td><td>{v:.3f} ({v / b['mean']:.2f}x)</td></tr>")
        parts.append("</table>")
    parts.append("<div class='grid'>")
    parts.append(_fig("composition_graph.png", files, "K-composition from previous-token heads to induction heads, in multiples of chance"))
    parts.append(_fig("heatmap_k_composition_into_top_induction.png", files,
                      "K-composition of every earlier head into the top induction head, times chance (scale 0 to 4)"))
    parts.append("</div>")
    return "".join(parts)


def write_page(r: Report, out: Path, files: list[str]) -> Path:
    """Assemble ``index.html`` from the report and the files already written to ``out``."""
    have = set(files)
    body = [f"<h1>Induction heads: {_e(r.model_name)}</h1>",
            f"<p>{r.n_layer} layers x {r.n_head} heads, d_model {r.config['n_embd']}, vocab {r.config['vocab_size']}. "
            "Every number is in <a href='induction.json'>induction.json</a>.</p>",
            _summary(r),
            "<h2>Loss per position</h2>", _fig("loss_per_position.png", have, "mean next-token loss at each position; "
                                                "grey: first copy, blue: second copy"),
            _scores_section(r, have), _ablation_section(r, have), _joint_section(r), _composition_section(r, have),
            "<h2>Attention patterns of the top heads</h2>",
            _fig("attention_top_heads.png", have, "top 4 heads by induction score and top 2 by previous-token score, in "
                 "layer.head order; the last queries against every key, averaged over the batch and for sequence 0; "
                 "circles: the induction key q-(seq_len-1)")]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Induction heads: {_e(r.model_name)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return vio.atomic_write_text(out / "index.html", page)
