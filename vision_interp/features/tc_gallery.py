"""A feature gallery for a transcoder: the ordinary gallery builder on the model with the features attached."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..checks import InputError, InputTypeError, check_int, check_model
from .replacement import attached_transcoder
from .transcoders import Transcoder, check_transcoder, check_transcoders

__all__ = ["publish_transcoder_gallery", "publish_transcoder_site", "enrich_transcoder_gallery"]


def _check_common(out_dir: object, steps: object, progress: object) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise InputTypeError(f"out_dir: expected a folder (str or Path), got {type(out_dir).__name__} {out_dir!r}")
    check_int(steps, "steps", minimum=1)
    if not isinstance(progress, bool):
        raise InputTypeError(f"progress: expected True or False, got {type(progress).__name__} {progress!r}")
    return Path(out_dir)


def publish_transcoder_gallery(model: nn.Module, tc: Transcoder, out_dir: str | os.PathLike, *, steps: int = 64, batch: int = 16,
                               examples: int = 8, data_dir: str | os.PathLike | None = None, overwrite: bool = False,
                               progress: bool = True) -> Path:
    """``vision_interp.gallery.make_gallery`` for layer ``"<block>/tc"`` into ``out_dir/<block>_tc``
    (feature visualizations with straight-through gradients, top dataset examples); returns its index."""
    from ..gallery import make_gallery

    check_model(model)
    check_transcoder(tc, model)
    out = _check_common(out_dir, steps, progress) / tc.feature_layer.replace("/", "_")
    check_int(batch, "batch", minimum=1)
    check_int(examples, "examples", minimum=0)
    if not isinstance(overwrite, bool):
        raise InputTypeError(f"overwrite: expected True or False, got {type(overwrite).__name__} {overwrite!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise InputTypeError(f"data_dir: expected a folder (str or Path) or None, got {type(data_dir).__name__} {data_dir!r}")
    with attached_transcoder(model, tc, gradient="linear") as a:
        make_gallery(model, [a.name], out, steps=steps, batch=batch, diverse=0, negative=True, examples=examples,
                     data_dir=data_dir, progress=progress, model_name=tc.card.get("model"), overwrite=overwrite)
    return out / "index.html"


def publish_transcoder_site(model: nn.Module, tcs: list[Transcoder], out_dir: str | os.PathLike, *, names: list[str],
                            steps: int = 64, data_dir: str | os.PathLike | None = None, progress: bool = True,
                            analysis: str | None = None, label_images: int = 2000) -> Path:
    """A gallery per transcoder (with measured labels, dead features apart, measured connections), one attribution
    graph per digit linking into them (labels on nodes and cards), and ``out_dir/index.html``. Labels come from
    :func:`~vision_interp.features.labels.feature_labels` on the first ``label_images`` MNIST test images (half
    measure, half score) and are kept in ``out_dir/graphs/labels.json``."""
    from .. import io as vio
    from ..data import load_mnist
    from .graph import check_chain
    from .labels import feature_labels
    from .tc_graph_io import write_digit_graphs

    check_model(model)
    tcs = check_chain(check_transcoders(tcs, model, arg="tcs"), arg="tcs")
    out = _check_common(out_dir, steps, progress)
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputTypeError(f"names: expected a list of transcoder names (str), got {names!r}")
    if len(names) != len(tcs):
        raise InputError(f"names: {len(names)} names for {len(tcs)} transcoders; give one name per transcoder")
    if analysis is not None and not isinstance(analysis, str):
        raise InputTypeError(f"analysis: expected a relative link (str) or None, got {type(analysis).__name__}")
    label_images = check_int(label_images, "label_images", minimum=4)
    galleries = [publish_transcoder_gallery(model, tc, out, steps=steps, data_dir=data_dir, progress=progress).parent for tc in tcs]
    test = load_mnist("test", data_dir)
    labels = {tc.feature_layer: feature_labels(model, tc, test.images[:label_images], test.labels[:label_images]) for tc in tcs}
    vio.save_json(out / "graphs" / "labels.json", labels)
    enrich_transcoder_gallery(model, tcs, galleries, labels)
    write_digit_graphs(model, tcs, out / "graphs", data_dir=data_dir, galleries=galleries, transcoder_names=names, labels=labels)
    return vio.atomic_write_text(out / "index.html", _site_index(out, tcs, galleries, labels, analysis))


def _site_index(out: Path, tcs: list[Transcoder], galleries: list[Path], labels: dict, analysis: str | None) -> str:
    """The site's front page in the gallery site's style: a card per transcoder gallery (a thumbnail of its most
    frequent live feature) and one for the graphs (the first digit's input)."""
    import html

    from .. import io as vio
    from ..gallery.site import CSS

    vio.atomic_write_text(out / "static" / "gallery.css", CSS)
    cards = []
    for g, tc in zip(galleries, tcs):
        lab = labels[tc.feature_layer]
        live = [r for r in lab["features"] if not r["dead"]]
        best = max(live, key=lambda r: r["frequency"])["feature"] if live else 0
        unit = vio.load_json(g / "manifest.json")["units"].get(f"{tc.feature_layer}:{best}") or {}
        thumb = (unit.get("files") or {}).get("main")
        img = f'<img class="vis px" src="{html.escape(g.name)}/{html.escape(thumb)}" alt="{html.escape(tc.feature_layer)}:{best}">' if thumb else ""
        score = f"mean label score {lab['mean_score']:.2f}" if lab.get("mean_score") is not None else "no label scores"
        cards.append(f'<a class="card" href="{html.escape(g.name)}/index.html">{img}<div class="name">{html.escape(tc.feature_layer)}</div>'
                     f'<div class="name label">{tc.n_features} features ({lab["dead"]} dead), {html.escape(tc.in_layer)} &rarr; '
                     f'{html.escape(tc.out_layer)}; {score}</div></a>')
    cards.append('<a class="card" href="graphs/index.html"><img class="vis px" src="graphs/digit_0/input.png" alt="digit 0">'
                 '<div class="name">attribution graphs</div><div class="name label">one per digit</div></a>')
    more = f'<p><a href="{html.escape(analysis)}">analysis: interventions against the graphs, sparsity</a></p>\n' if analysis else ""
    model = html.escape(str(tcs[0].card.get("model", "the model")))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>Transcoder features</title>\n'
            '<link rel="stylesheet" href="static/gallery.css">\n</head>\n<body>\n'
            '<header><span class="brand">vision_interp</span><nav class="crumbs"><span>transcoder features</span></nav></header>\n'
            f'<main id="content">\n<h1>Transcoder features of {model}</h1>\n'
            '<p class="sub">Each block replaced by sparse features; labels are measured, each scored on held-out images.</p>\n'
            f'<div class="grid" style="--thumb: 200px">\n{chr(10).join(cards)}\n</div>\n{more}</main>\n</body>\n</html>\n')


def _kernel_png(gallery: Path, rel: str, kernel: torch.Tensor, vmax: float) -> str:
    """A signed kernel as a picture (red excites, blue inhibits, one scale per table), enlarged to be seen."""
    from .. import io as vio
    from ..images import diverging, png_bytes

    side = max(kernel.shape[-2:])
    data = png_bytes(diverging(kernel.float(), vmax=vmax), scale=max(1, 32 // side))
    path = gallery / rel
    if not (path.is_file() and path.read_bytes() == data):
        vio.atomic_write_bytes(path, data)
    return rel


def _rows(gallery: Path, unit: str, kind: str, weights: torch.Tensor, names: list[str], n: int) -> list[dict]:
    """The ``n`` connected units of largest |weight| mass, as the site's connection rows (net, positive, negative)."""
    mass = weights.abs().flatten(1).sum(1)
    order = torch.argsort(mass, descending=True)[:n].tolist()
    vmax = float(weights[order].abs().max()) if order else 1.0
    slug = unit.replace("/", "_").replace(":", "-")
    return [{"unit": names[k], "net": round(float(weights[k].sum()), 6), "positive": round(float(weights[k].clamp_min(0).sum()), 6),
             "negative": round(float(weights[k].clamp_max(0).sum()), 6),
             "picture": _kernel_png(gallery, f"img/connections/{slug}/{kind}-{k}.png", weights[k], vmax)} for k in order]


def enrich_transcoder_gallery(model: nn.Module, tcs: list[Transcoder], galleries: list[str | os.PathLike], labels: dict, *,
                              top: int = 8) -> list[Path]:
    """Rewrite each transcoder gallery (``galleries[i]`` holds ``tcs[i]``'s features) from its manifest with what the
    generic gallery cannot know: each feature's measured label and simulation score (``labels``: ``{feature_layer:
    feature_labels(...)}``), dead features marked (``dead``; listed apart by the site), bottom examples with a zero
    activation dropped (a sparse feature is zero on most images: the "lowest" images say nothing; a sentence says
    so), and the connections measured through the decoders: inputs from the previous transcoder's features (the
    expanded kernel, decoder -> encoder), outputs to the next one's or, for the last block, to the logits (the
    affine head's weights per position). Returns the index pages."""
    from .. import io as vio
    from ..gallery.site import write_site
    from .graph import check_chain
    from .tc_circuits import feature_feature_weights, feature_logit_weights_tc

    check_model(model)
    tcs = check_chain(check_transcoders(tcs, model, arg="tcs"), arg="tcs")
    if isinstance(galleries, (str, bytes, os.PathLike)) or not isinstance(galleries, (list, tuple)) or len(galleries) != len(tcs):
        raise InputTypeError(f"galleries: expected a list of {len(tcs)} gallery folders (one per transcoder), got {galleries!r}")
    if not isinstance(labels, dict) or any(tc.feature_layer not in labels for tc in tcs):
        raise InputError(f"labels: expected {{feature_layer: feature_labels(...)}} for {[tc.feature_layer for tc in tcs]}")
    top = check_int(top, "top", minimum=1)
    ups = [None] + [feature_feature_weights(a, b) for a, b in zip(tcs, tcs[1:])]  # ups[i]: (F_i, F_{i-1}, kh, kw)
    try:
        head = feature_logit_weights_tc(model, tcs[-1])  # (F, n_logits, H, W); refused when the head is not affine
        head_note = None
    except (InputError, ValueError) as e:
        head, head_note = None, f"outputs: the layers after {tcs[-1].out_layer!r} are not affine, so no fixed weights to the logits ({e})"
    written = []
    for i, (tc, g) in enumerate(zip(tcs, galleries)):
        g = Path(g)
        manifest = vio.load_json(g / "manifest.json")
        lab = {r["feature"]: r for r in labels[tc.feature_layer]["features"]}
        held = labels[tc.feature_layer].get("held_out")
        manifest.setdefault("labels", {})
        for unit, e in manifest["units"].items():
            if e.get("layer") != tc.feature_layer:
                continue
            f = int(e["channel"])
            r = lab.get(f)
            if r is not None:
                score = f"simulation score {r['score']:.2f} (Pearson r of a label-only simulator on {held} held-out images)" \
                    if r.get("score") is not None else "no score (never active)"
                name, _, writes = r["label"].partition("; ")  # the card shows the short part; the page all of it
                manifest["labels"][unit] = {"name": name, "note": f"Measured label: {r['label']}; {score}; active at "
                                            f"{r['frequency']:.1%} of positions."}
                e["dead"] = bool(r.get("dead"))
            ex = e.get("examples") or {}
            bottom = ex.get("bottom") or []
            kept = [b for b in bottom if b.get("value") != 0.0]
            if len(kept) < len(bottom):
                ex["bottom"] = kept
                e["bottom_note"] = (f"{len(bottom) - len(kept)} of the {len(bottom)} lowest dataset images have activation 0 "
                                    "(this feature is zero on most images), so they are not shown"
                                    + ("." if kept else "; no bottom examples remain."))
            conns = {}
            if ups[i] is not None:
                prev = tcs[i - 1].feature_layer
                w = ups[i][f]
                conns["inputs"] = {"layer": prev, "kernel": list(w.shape[-2:]),
                                   "rows": _rows(g, unit, "in", w, [f"{prev}:{k}" for k in range(w.shape[0])], top)}
            if i + 1 < len(tcs):
                nxt = tcs[i + 1].feature_layer
                w = ups[i + 1][:, f]
                conns["outputs"] = {"layer": nxt, "kernel": list(w.shape[-2:]),
                                    "rows": _rows(g, unit, "out", w, [f"{nxt}:{k}" for k in range(w.shape[0])], top)}
            elif head is not None:
                w = head[f]
                conns["outputs"] = {"layer": "logits (per position of the block's output)", "kernel": list(w.shape[-2:]),
                                    "rows": _rows(g, unit, "out", w, [f"logit {k}" for k in range(w.shape[0])], top)}
            e["connections"] = conns
            notes = [] if "inputs" in conns else ["inputs: the model input (see the feature's encoder and its receptive-field crops)"]
            if "outputs" not in conns and head_note:
                notes.append(head_note)
            e["connections_note"] = "; ".join(notes) or None
        vio.save_json(g / "manifest.json", manifest)
        write_site(g, manifest)
        written.append(g / "index.html")
    return written
