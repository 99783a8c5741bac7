"""The universality report: per layer, best-match distributions against controls, the fraction of
units matched in every other model, and "the same unit in N models" side by side.

Every sentence is generated from the numbers in ``report.json``; the verdict per layer follows one
rule, stated on the page (:data:`RULE`).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import io as vio
from ..checks import check_instance
from ..environment import environment_report
from ..images import make_grid, save_figure, save_png
from .matching import LayerMatch, weight_cosine_best
from .study import MEASURES, PRIMARY, UniversalityResult

if TYPE_CHECKING:
    from ..data.examples import ReceptiveField

__all__ = ["layer_summary", "write_report", "unit_picture", "PICTURE_KINDS", "RULE", "MARGIN"]

MARGIN = 0.1
RULE = (f"a layer is called universal above chance when the median best-match correlation between seed models "
        f"exceeds the median best-match correlation of the same units in every control model by at least {MARGIN}, "
        f"correlations measured on {MEASURES[PRIMARY]}")


def _q(v: torch.Tensor) -> dict:
    v = v.double()
    if len(v) == 0:
        return {"n": 0}
    qs = torch.quantile(v, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)).tolist()
    return {"n": len(v), "mean": round(float(v.mean()), 4), "p10": round(qs[0], 4), "p25": round(qs[1], 4),
            "median": round(qs[2], 4), "p75": round(qs[3], 4), "p90": round(qs[4], 4)}


def layer_summary(result: UniversalityResult, layer: str) -> dict:
    """The numbers of one layer's section (all from the matches)."""
    check_instance(result, UniversalityResult, "result")
    lm = result.layers[layer]
    t = result.config.threshold
    s = {
        "layer": layer,
        "units_per_model": int(next(iter(lm.pairs.values())).corr.shape[0]),
        "samples": lm.n_samples,
        "threshold": t,
        "best_match": _q(lm.best_match_values()),
        "one_to_one": _q(lm.assigned_values()),
        "fraction_matched_in_all_other_models": round(lm.fraction_universal(t), 4),
        "fraction_matched_per_pair": round(float((lm.best_match_values() >= t).double().mean()), 4),
        "controls": {},
    }
    for c in lm.control_names():
        pairs = [p for (m, cc), p in lm.controls.items() if cc == c]
        assigned = torch.cat([p.assigned_corr for p in pairs])
        s["controls"][c] = {
            "best_match": _q(lm.control_best_values(c)),
            "one_to_one": _q(assigned[~torch.isnan(assigned)]),
            "fraction_matched": round(lm.fraction_matched_in_control(c, t), 4),
        }
    ctrl_medians = [v["best_match"]["median"] for v in s["controls"].values()]
    s["margin_over_controls"] = round(min(s["best_match"]["median"] - m for m in ctrl_medians), 4) if ctrl_medians else None
    s["universal_above_chance"] = bool(ctrl_medians) and all(s["best_match"]["median"] - m >= MARGIN for m in ctrl_medians)
    s["measure"] = MEASURES[PRIMARY]
    s["other_measures"] = {kind: {"measure": MEASURES[kind], **_medians(layers[layer])}
                           for kind, layers in result.comparisons.items() if layer in layers}
    check = _weight_check(result, layer)
    if check:
        s["first_layer_weight_cosine"] = check
    return s


def _medians(lm: LayerMatch) -> dict:
    """Median best matches of one measure: seed vs seed and seed vs each control."""
    return {"samples": lm.n_samples, "best_match_median": round(float(lm.best_match_values().double().median()), 4),
            "controls": {c: round(float(lm.control_best_values(c).double().median()), 4) for c in lm.control_names()}}


def _first_conv(model: torch.nn.Module) -> str | None:
    return next((n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)), None)


def _weight_check(result: UniversalityResult, layer: str) -> dict | None:
    """For the first convolution: each filter's best |cosine| with the other model's filters (no data
    involved, so no background or ink-amount effect can enter)."""
    anchor = next(iter(result.models.values()))
    if layer != _first_conv(anchor):
        return None
    w = {n: m.get_submodule(layer).weight for n, m in {**result.models, **result.controls}.items()}
    seeds = torch.cat([weight_cosine_best(w[a], w[b]) for a in result.models for b in result.models if a != b])
    ctrl = {c: round(float(torch.cat([weight_cosine_best(w[a], w[c]) for a in result.models]).median()), 4)
            for c in sorted(result.controls)}
    return {"rule": "each filter's largest |cosine| with a filter of the other model (up to sign and scale)",
            "seed_vs_seed_median": round(float(seeds.median()), 4), "controls": ctrl}


def _histogram(result: UniversalityResult, layer: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lm = result.layers[layer]
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    bins = torch.linspace(-0.2, 1.0, 49).tolist()
    ax.hist(lm.best_match_values().tolist(), bins=bins, alpha=0.75, label="seed model vs seed model", density=True)
    for c in lm.control_names():
        ax.hist(lm.control_best_values(c).tolist(), bins=bins, alpha=0.5, label=f"seed model vs {c}", density=True, histtype="stepfilled")
    ax.axvline(result.config.threshold, color="k", lw=1, ls="--")
    ax.set_xlabel("best-match correlation (ink positions, ink amount partialled out)")
    ax.set_ylabel("density")
    ax.set_title(f"{layer}: each unit's best match in another model")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def _unit_name(layer: str, c: int) -> str:
    return f"{layer}:{c}"


def _render_unit(model, unit: str, steps: int) -> torch.Tensor:
    from ..featvis import visualize

    return visualize(model, unit, steps=steps, progress=False).images[0].detach().cpu()


def _matched_groups(result: UniversalityResult, layer: str, n_groups: int) -> list[dict]:
    """The anchor model's units with the highest worst-case best match, and their matches everywhere."""
    lm = result.layers[layer]
    anchor = lm.models[0]
    score = lm.best_in_all_others(anchor)
    order = torch.sort(score, descending=True, stable=True).indices[:n_groups].tolist()
    groups = []
    for c in order:
        row = {"anchor": anchor, "unit": c, "worst_best_match": round(float(score[c]), 4), "matches": {anchor: [c, 1.0]}}
        for o in lm.models[1:]:
            p = lm.pairs[(anchor, o)]
            row["matches"][o] = [int(p.best_index[c]), round(float(p.best[c]), 4)]
        for ctrl in lm.control_names():
            p = lm.controls[(anchor, ctrl)]
            row["matches"][ctrl] = [int(p.best_index[c]), round(float(p.best[c]), 4)]
        groups.append(row)
    return groups


FLAT_STD = 0.08  # a receptive-field crop of a visualization this flat (pixel std, pixels in [0, 1]) shows nothing to compare
PICTURE_KINDS = {"vis": "visualization (receptive-field crop)",
                 "kernel": f"kernel (red +, blue -); its visualization is nearly uniform (pixel std < {FLAT_STD})",
                 "top-mean": f"mean of the top receptive-field crops; its visualization is nearly uniform (pixel std < {FLAT_STD})"}


def _centre_crop(model, base: str, img: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, "ReceptiveField"]:
    """The receptive-field crop of the layer's centre position (the one the default visualization drives)."""
    from ..capture import capture
    from ..data.examples import crop_patches, receptive_field

    rf = receptive_field(model, base)
    with torch.no_grad():
        h, w = capture(model, images[:1], [base], detach=True)[base].shape[-2:]
    return crop_patches(img[None], torch.tensor([[h // 2, w // 2]]), rf)[0], rf


def unit_picture(model, layer: str, c: int, vis: torch.Tensor, images: torch.Tensor, top: list[dict]) -> tuple[torch.Tensor, str, torch.Tensor]:
    """(picture, kind, top crops) for one unit: its visualization cropped to the receptive field, or, where that
    crop is nearly uniform, the first convolution's kernel or the mean of its top receptive-field crops (kind says which)."""
    from ..data.examples import crop_patches

    base = layer.split("/")[0]
    crop, rf = _centre_crop(model, base, vis, images)
    idx = [e["index"] for e in top]
    pos = torch.tensor([e["position"] for e in top]) if top and "position" in top[0] else torch.zeros((len(idx), 2), dtype=torch.long)
    crops = crop_patches(images[idx], pos, rf)
    if float(crop.std()) >= FLAT_STD:
        return crop, "vis", crops
    if "/" not in layer and base == _first_conv(model):
        from ..images import diverging

        return diverging(model.get_submodule(base).weight.detach()[c].mean(0)), "kernel", crops
    return crops.mean(0), "top-mean", crops


def _group_pictures(result: UniversalityResult, layer: str, groups: list[dict], images: torch.Tensor, out: Path,
                    steps: int, examples: int) -> None:
    """A picture of every matched unit (what it is is recorded per unit) and its top receptive-field crops."""
    from ..data.examples import top_activating
    from ..features.attach import attached

    every = {**result.models, **result.controls}
    slug = layer.replace("/", "_")
    for g_i, g in enumerate(groups):
        for name, (c, _) in g["matches"].items():
            model = every[name]
            d = result.dictionaries.get(name)
            if "/" in layer and d is not None:
                with attached(model, d, check=False) as a:
                    vis = _render_unit(model, _unit_name(a.name, c), steps)
                    top = top_activating(model, a.name, images, k=examples, channels=[c])
            else:
                vis = _render_unit(model, _unit_name(layer, c), steps)
                top = top_activating(model, layer, images, k=examples, channels=[c])
            pic, kind, crops = unit_picture(model, layer, c, vis, images, top.for_channel(c))
            scale = max(2, 96 // max(pic.shape[-2:]))
            save_png(pic, out / f"img/{slug}/g{g_i}-{name}-vis.png", scale=scale)
            save_png(make_grid(crops, ncols=len(crops), pad_value=0.5), out / f"img/{slug}/g{g_i}-{name}-top.png",
                     scale=max(2, 48 // crops.shape[-1]))
            g.setdefault("top_indices", {})[name] = [e["index"] for e in top.for_channel(c)]
            g.setdefault("picture", {})[name] = kind


def _fmt_q(q: dict) -> str:
    return f"median {q['median']:.3f} (p10 {q['p10']:.3f}, p90 {q['p90']:.3f}, n = {q['n']})" if q.get("n") else "no values"


def _section_text(s: dict) -> list[str]:
    t = s["threshold"]
    lines = [f"Each of the {s['units_per_model']} units per model, {s['samples']} shared (image, position) samples; "
             f"measure: {s['measure']}.",
             f"Best match in another seed model: {_fmt_q(s['best_match'])}.",
             f"Optimal one-to-one matching (Hungarian): {_fmt_q(s['one_to_one'])}.",
             f"Units with a match >= {t} in another seed model (per pair of models): {100 * s['fraction_matched_per_pair']:.1f}%; "
             f"in every other seed model: {100 * s['fraction_matched_in_all_other_models']:.1f}%."]
    for c, v in s["controls"].items():
        lines.append(f"Against control '{c}': best match {_fmt_q(v['best_match'])}; one-to-one {_fmt_q(v['one_to_one'])}; "
                     f"{100 * v['fraction_matched']:.1f}% of units have a match >= {t} in it (compare with the per-pair figure).")
    ctrl = ", ".join(f"{v['best_match']['median']:.3f} ({c})" for c, v in s["controls"].items())
    gap = min((s["best_match"]["median"] - v["best_match"]["median"] for v in s["controls"].values()), default=float("nan"))
    lines.append(f"Verdict: median {s['best_match']['median']:.3f} vs control medians {ctrl} (smallest difference "
                 f"{gap:.3f}, the rule needs {MARGIN}): "
                 f"{'universal above chance' if s['universal_above_chance'] else 'NOT universal above chance'} by the rule.")
    for kind, o in s.get("other_measures", {}).items():
        oc = ", ".join(f"{v:.3f} ({c})" for c, v in o["controls"].items())
        lines.append(f"For comparison, measure '{kind}' ({o['measure']}; {o['samples']} samples): median best match "
                     f"{o['best_match_median']:.3f} between seed models vs {oc} (not used for the verdict).")
    w = s.get("first_layer_weight_cosine")
    if w:
        wc = ", ".join(f"{v:.3f} ({c})" for c, v in w["controls"].items())
        lines.append(f"Weight check ({w['rule']}): median {w['seed_vs_seed_median']:.3f} between seed models vs {wc} "
                     f"(no data involved; not used for the verdict).")
    return lines


def write_report(result: UniversalityResult, out_dir: str | os.PathLike, images: torch.Tensor, *, groups: int = 4,
                 steps: int = 64, examples: int = 4, cards: dict | None = None) -> Path:
    """Write ``index.html``, ``report.md``, ``report.json`` and pictures into ``out_dir``."""
    check_instance(result, UniversalityResult, "result")
    out = Path(out_dir)
    summaries, all_groups = {}, {}
    for layer in result.layers:
        summaries[layer] = layer_summary(result, layer)
        slug = layer.replace("/", "_")
        _histogram(result, layer, out / f"img/{slug}/best_match_hist.png")
        all_groups[layer] = _matched_groups(result, layer, groups)
        if steps > 0:
            _group_pictures(result, layer, all_groups[layer], images, out, steps, examples)
    data = {"rule": RULE, "measures": MEASURES, "config": result.config.__dict__, "models": list(result.models), "controls": list(result.controls),
            "model_cards": cards or {}, "layers": summaries, "groups": all_groups, "environment": environment_report(browser=False)}
    vio.save_json(out / "report.json", data)
    md = ["# Universality across independently trained MNIST CNNs", "",
          f"Models: {', '.join(result.models)} (identical configuration, only the seed differs); "
          f"controls: {', '.join(result.controls)}.", f"Rule: {RULE}.", ""]
    if cards:
        md += ["| model | labels | test accuracy |", "| --- | --- | --- |"]
        md += [f"| {n} | {c.get('labels', '-')} | {c.get('test_accuracy', '-')} |" for n, c in cards.items()]
        md.append("")
    for layer, s in summaries.items():
        md += [f"## {layer}", ""] + [f"- {line}" for line in _section_text(s)] + [""]
        md += ["| anchor unit | worst best match | matches (unit, corr) |", "| --- | --- | --- |"]
        for g in all_groups[layer]:
            md.append(f"| {layer}:{g['unit']} | {g['worst_best_match']:.3f} | " +
                      ", ".join(f"{n}: {c} ({r:.3f})" for n, (c, r) in g["matches"].items()) + " |")
        md.append("")
    vio.atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    vio.atomic_write_text(out / "index.html", _html(result, summaries, all_groups, cards or {}, steps > 0))
    return out / "index.html"


def _html(result: UniversalityResult, summaries: dict, groups: dict, cards: dict, pictures: bool) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Universality</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}img{image-rendering:pixelated;max-width:100%}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}"
             "table.same{table-layout:fixed;width:100%}.kind{color:#555;font-size:12px}"
             ".ctrl{background:#f6f0e8}</style></head><body>",
             "<h1>Universality across independently trained MNIST CNNs</h1>",
             f"<p>Models: {e(', '.join(result.models))} (identical configuration, only the seed differs). "
             f"Controls: {e(', '.join(result.controls))}.</p><p><b>Rule:</b> {e(RULE)}.</p>"]
    if cards:
        parts.append("<table><tr><th>model</th><th>labels</th><th>test accuracy</th></tr>")
        parts += [f"<tr><td>{e(n)}</td><td>{e(str(c.get('labels', '-')))}</td><td>{c.get('test_accuracy', '-')}</td></tr>" for n, c in cards.items()]
        parts.append("</table>")
    for layer, s in summaries.items():
        slug = layer.replace("/", "_")
        parts.append(f"<h2>{e(layer)}</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in _section_text(s)) + "</ul>")
        parts.append(f"<img src='img/{slug}/best_match_hist.png' alt='best-match histogram'>")
        parts.append("<h3>The same unit in every model (anchor: the first model's units with the highest worst-case match)</h3>")
        if pictures:
            parts.append("<p>Per unit: one picture, labelled with what it is - " + "; ".join(f"<i>{e(v)}</i>" for v in PICTURE_KINDS.values())
                         + " - then the receptive-field crops of its strongest test images.</p>")
        for g_i, g in enumerate(groups[layer]):
            parts.append(f"<p>{e(layer)}:{g['unit']} of {e(g['anchor'])}, worst best match {g['worst_best_match']:.3f}</p><table class='same'><tr>")
            for name, (c, r) in g["matches"].items():
                cls = " class='ctrl'" if name in result.controls else ""
                cell = f"<td{cls}><b>{e(name)}</b><br>{e(layer)}:{c}<br>corr {r:.3f}"
                if pictures:
                    kind = PICTURE_KINDS[g.get("picture", {}).get(name, "vis")].split(";")[0]
                    cell += (f"<br><img src='img/{slug}/g{g_i}-{e(name)}-vis.png' width='96' alt='{e(kind)}'><br><span class='kind'>{e(kind)}"
                             f"{' (visualization nearly uniform)' if g.get('picture', {}).get(name, 'vis') != 'vis' else ''}</span>"
                             f"<br><img src='img/{slug}/g{g_i}-{e(name)}-top.png' alt='top receptive-field crops'><br><span class='kind'>top crops</span>")
                parts.append(cell + "</td>")
            parts.append("</tr></table>")
    parts.append("</body></html>")
    return "\n".join(parts)
