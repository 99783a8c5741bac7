"""A short generated write-up of a dictionary: what its features are and whether they are more
monosemantic than the layer's neurons. Every sentence is built from a number in the card or a
weight read from the model; the verdict follows :func:`more_monosemantic_verdict`'s rule."""

from __future__ import annotations

import html
import os
from pathlib import Path

import torch
from torch import nn

from .. import io as vio
from .circuits import feature_logit_weights
from .dictionary import Dictionary
from .metrics import more_monosemantic_verdict

__all__ = ["feature_table", "write_writeup"]


def feature_table(model: nn.Module, dictionary: Dictionary) -> list[dict]:
    """Per feature: firing frequency, top-image class purity and majority label, strongest neurons
    of its decoder direction, and the logits its unit writes to most (summed over positions)."""
    m = dictionary.card.get("metrics", {})
    mono = m.get("monosemanticity", {}).get("features", {})
    purity, freq = mono.get("purity", []), m.get("feature_frequency", [])
    majority = m.get("feature_majority_label", [])
    logits = feature_logit_weights(model, dictionary).sum(dim=(2, 3))  # (F, n_classes)
    rows = []
    for f in range(dictionary.n_features):
        d = dictionary.directions[f]
        order = torch.sort(d.abs(), descending=True, stable=True).indices[:3].tolist()
        lo = logits[f]
        rows.append({
            "feature": f,
            "frequency": freq[f] if f < len(freq) else None,
            "purity": purity[f] if f < len(purity) else None,
            "majority_label": majority[f] if f < len(majority) else None,
            "neurons": [(f"{dictionary.layer}:{c}", round(float(d[c]), 3)) for c in order],
            "promotes": int(lo.argmax()), "promotes_weight": round(float(lo.max()), 3),
            "suppresses": int(lo.argmin()), "suppresses_weight": round(float(lo.min()), 3),
        })
    return rows


def _after_relu_line(dictionary: Dictionary, m: dict) -> str:
    """The after-ReLU sentence where the card has those figures, else why they are omitted (no ReLU follows)."""
    if "fvu_after_relu" in m:
        nmf = (f"; the existing NMF with {dictionary.k} groups (fitted on the ReLU output) leaves "
               f"{m['nmf_rank_k_fvu_after_relu']:.4f}") if "nmf_rank_k_fvu_after_relu" in m else ""
        return f"- After the ReLU that follows {dictionary.layer}: FVU {m['fvu_after_relu']:.4f}{nmf}."
    why = m.get("after_relu", {}).get("why") or f"no ReLU is known to follow {dictionary.layer}"
    return (f"- No after-ReLU figures and no NMF baseline (NMF needs non-negative data): {why}, so clamping at 0 "
            "would not be what the rest of the model sees.")


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def write_writeup(model: nn.Module, dictionary: Dictionary, out_dir: str | os.PathLike, *, gallery: str | None = None,
                  neuron_gallery: str | None = None) -> Path:
    """Write ``README.md`` and ``index.html`` for the dictionary into ``out_dir``."""
    out = Path(out_dir)
    card, m = dictionary.card, dictionary.card["metrics"]
    mono = m["monosemanticity"]
    fs, ns = mono["features"]["purity_summary"], mono["neurons"]["purity_summary"]
    fe, ne = mono["features"]["entropy_summary"], mono["neurons"]["entropy_summary"]
    _, verdict = more_monosemantic_verdict(m)
    rows = feature_table(model, dictionary)
    alive = [r for r in rows if r["frequency"]]
    lines = [
        f"# {dictionary.feature_layer}: {dictionary.n_features} sparse features of {card.get('model', 'the model')}'s {dictionary.layer}",
        "",
        f"A TopK sparse autoencoder with {dictionary.n_features} features, k = {dictionary.k} active per position, "
        f"trained on {card.get('data')} ({card.get('samples')} positions) in {card.get('training_seconds')} s. "
        f"Measured on {card.get('metrics_data')}.",
        "",
        "## Reconstruction",
        "",
        f"- Fraction of variance unexplained (FVU): {m['fvu']:.4f}; a rank-{dictionary.k} PCA (the same number of "
        f"coefficients per position) leaves {m['pca_fvu_rank_k']:.4f}.",
        _after_relu_line(dictionary, m),
        f"- Mean L0 {m['mean_l0']:.2f} active features per position; {m['dead_features']} of {dictionary.n_features} "
        f"features never fire on the held-out images.",
        f"- Test accuracy {100 * m['test_accuracy']:.2f}% as trained, {100 * m['test_accuracy_reconstructed']:.2f}% when "
        f"{dictionary.layer} is replaced by its reconstruction ({100 * (m['test_accuracy_reconstructed'] - m['test_accuracy']):+.2f} points).",
        "",
        "## Monosemanticity: features vs neurons",
        "",
        f"Rule: {mono['rule']}. Units with fewer than {mono.get('top', 100)} active images are not ranked.",
        "",
        "| units | ranked | purity p10 | p25 | median | p75 | p90 | label entropy median (bits) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| features | {fs['n']} (skipped {fs['skipped']}) | {fs['p10']:.3f} | {fs['p25']:.3f} | {fs['median']:.3f} | "
        f"{fs['p75']:.3f} | {fs['p90']:.3f} | {fe['median']:.3f} |",
        f"| neurons | {ns['n']} (skipped {ns['skipped']}) | {ns['p10']:.3f} | {ns['p25']:.3f} | {ns['median']:.3f} | "
        f"{ns['p75']:.3f} | {ns['p90']:.3f} | {ne['median']:.3f} |",
        "",
        f"Verdict: {verdict}.",
        "",
        "## What the features are",
        "",
        f"{len(alive)} features fire on held-out images. Each row: how often the feature is active (share of positions), "
        "the class purity of its top images and their majority digit, the neurons its decoder direction writes most "
        "(weight), and the logit it raises / lowers most (classifier view through the decoder, summed over positions).",
        "",
        "| feature | frequency | purity | majority digit | strongest neurons | raises logit | lowers logit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_purity = sorted(rows, key=lambda r: -(r["purity"] or -1))
    for r in by_purity:
        neurons = ", ".join(f"{u} ({w:+.2f})" for u, w in r["neurons"])
        lines.append(f"| {dictionary.feature_layer}:{r['feature']} | {_fmt(r['frequency'], '.4f')} | {_fmt(r['purity'])} | "
                     f"{r['majority_label'] if r['majority_label'] is not None else '-'} | {neurons} | "
                     f"{r['promotes']} ({r['promotes_weight']:+.2f}) | {r['suppresses']} ({r['suppresses_weight']:+.2f}) |")
    if gallery or neuron_gallery:
        lines += ["", "## Galleries", ""]
        if gallery:
            lines.append(f"- Feature gallery: [{gallery}]({gallery})")
            manifest = out / Path(gallery).parent / "manifest.json"
            if manifest.is_file():
                units = vio.load_json(manifest)["units"].values()
                acts = [u["activations"]["main"] for u in units]
                lines.append(f"- Feature visualization reached a positive activation for {sum(a > 0 for a in acts)} of "
                             f"{len(acts)} features (median activation {sorted(acts)[len(acts) // 2]:.3f}).")
        if neuron_gallery:
            lines.append(f"- Neuron gallery of the same layer: [{neuron_gallery}]({neuron_gallery})")
    md = "\n".join(lines) + "\n"
    vio.atomic_write_text(out / "README.md", md)
    vio.atomic_write_text(out / "index.html", _markdown_to_html(md))
    return out / "README.md"


def _markdown_to_html(md: str) -> str:
    """The few Markdown constructs the write-up uses (headings, bullets, tables, links) as HTML."""
    import re

    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>features</title><style>body{font-family:sans-serif;"
           "max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
           "padding:2px 6px;font-size:13px}</style></head><body>"]
    in_list = in_table = False

    def inline(text: str) -> str:
        return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", lambda m: f"<a href='{e(m[2])}'>{e(m[1])}</a>", e(text).replace("&#x27;", "'"))

    for line in md.splitlines():
        if in_list and not line.startswith("- "):
            out.append("</ul>")
            in_list = False
        if in_table and not line.startswith("|"):
            out.append("</table>")
            in_table = False
        if line.startswith("# "):
            out.append(f"<h1>{e(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{e(line[3:])}</h2>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-", " "} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{inline(c)}</{tag}>" for c in cells) + "</tr>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if in_list:
        out.append("</ul>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
