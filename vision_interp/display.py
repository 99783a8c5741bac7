"""Results that show themselves in a notebook: one home for rich display.

Every result class's ``_repr_html_`` / ``_repr_png_`` / ``__repr__`` delegates here (:func:`html`,
:func:`png`, :func:`text`); results that are bare tensors or dicts (``attribute()``,
``direct_weights()``, ``top_connections()``) are shown with :func:`show` or the function named after
what they hold (:func:`attribution`, :func:`weights`, :func:`connections`, ...), each returning a
:class:`View`.

The HTML is self-contained: pictures are inline ``data:image/png`` URIs, styles are inline, there is
no script and nothing is fetched from the network, so a saved notebook or ``View.save("x.html")``
shows the same thing offline. Every picture is drawn by :mod:`vision_interp.images` (red positive,
blue negative, white zero, symmetric around zero) and every signed picture has a colour bar stating
the value at its ends.
"""

from __future__ import annotations

import base64
import html as _html
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from . import images as vimg
from .io import atomic_write_text

__all__ = [
    "View", "show", "html", "png", "text",
    "featvis", "images", "attribution", "layer_attribution", "weights", "connections", "dataset_examples",
    "neuron_groups", "dictionary", "dictionary_features", "induction", "completeness", "randomization",
]

MIN_SIDE = 112  # small pictures (MNIST, kernels) are enlarged with nearest neighbours to at least this many pixels
MAX_IMAGES = 64  # a featvis grid shows at most this many pictures (the text says how many were left out)

_STYLE = ("font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.35;color:#222;"
          "max-width:100%;overflow-x:auto")
_FIG = "display:inline-block;margin:3px 6px 6px 0;vertical-align:top;text-align:center"
_CAP = "font-size:11px;color:#444;max-width:{w}px;overflow-wrap:anywhere"
_TABLE = "border-collapse:collapse;font-size:12px;margin:4px 0"
_CELL = "padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:middle"


class View:
    """A rendered result: ``_repr_html_`` for notebooks, ``_repr_png_`` when one picture says it all."""

    def __init__(self, html: str, png: bytes | None = None, text: str = "View") -> None:
        self.html, self.png, self.text = html, png, text

    def _repr_html_(self) -> str:
        return self.html

    def _repr_png_(self) -> bytes | None:
        return self.png

    def __repr__(self) -> str:
        return self.text

    def save(self, path: str | os.PathLike) -> Path:
        """Write a standalone HTML page (atomically)."""
        title = _e(self.text.splitlines()[0] if self.text else "vision_interp")
        return atomic_write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                                       f"<body>{self.html}</body></html>\n")


# --- building blocks ------------------------------------------------------------------------------


def _e(x: object) -> str:
    return _html.escape(str(x), quote=True)


def _scale_for(h: int, w: int) -> int:
    return max(1, math.ceil(MIN_SIDE / max(1, min(h, w)))) if min(h, w) < MIN_SIDE else 1


def _uri(img: torch.Tensor, scale: int | None = None) -> tuple[str, int, int]:
    """A (C, H, W) or (H, W) picture in [0, 1] as a PNG data URI, with its displayed width and height."""
    t = img.detach().cpu().float()
    h, w = t.shape[-2:]
    s = _scale_for(h, w) if scale is None else scale
    data = base64.b64encode(vimg.png_bytes(t, scale=s)).decode("ascii")
    return f"data:image/png;base64,{data}", w * s, h * s


def _img(img: torch.Tensor, alt: str, scale: int | None = None) -> str:
    src, w, h = _uri(img, scale)
    return f"<img src='{src}' width='{w}' height='{h}' alt='{_e(alt)}' style='image-rendering:pixelated;display:block'>"


def _figure(img: torch.Tensor, caption: str, alt: str | None = None, scale: int | None = None) -> str:
    h, w = img.shape[-2:]
    s = _scale_for(h, w) if scale is None else scale
    return (f"<figure style='{_FIG}'>{_img(img, alt or caption, s)}"
            f"<figcaption style='{_CAP.format(w=max(w * s, 120))}'>{caption}</figcaption></figure>")


def _wrap(body: str, title: str = "") -> str:
    head = f"<div style='font-weight:600;margin:2px 0 4px'>{_e(title)}</div>" if title else ""
    return f"<div class='vision-interp-view' style=\"{_STYLE}\">{head}{body}</div>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th style='{_CELL};font-weight:600'>{_e(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td style='{_CELL}'>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table style='{_TABLE}'><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def _bar(value: float, vmax: float, width: int = 120) -> str:
    """A horizontal bar, red for positive and blue for negative, length |value| / vmax."""
    frac = 0.0 if not (vmax > 0 and math.isfinite(value)) else min(1.0, abs(value) / vmax)
    colour = "#d03b3b" if value >= 0 else "#3b5bd0"
    return (f"<div style='display:inline-block;width:{width}px;height:9px;background:#f1f1f1;vertical-align:middle'>"
            f"<div style='width:{frac * width:.1f}px;height:9px;background:{colour}'></div></div>")


def colorbar(vmax: float, label: str = "", width: int = 160) -> str:
    """The diverging scale as a picture (drawn by :func:`images.diverging`) with its end values written under it."""
    ramp = vimg.diverging(torch.linspace(-1.0, 1.0, width)[None].expand(10, width), 1.0)
    v = f"{vmax:.3g}" if math.isfinite(vmax) else "nan"
    ticks = (f"<div style='display:flex;justify-content:space-between;width:{width}px;font-size:10px;color:#444'>"
             f"<span>-{v}</span><span>0</span><span>+{v}</span></div>")
    cap = f"<div style='font-size:10px;color:#444;max-width:{width + 40}px'>{_e(label)}</div>" if label else ""
    return f"<div style='{_FIG};text-align:left'>{_img(ramp, f'colour scale -{v} .. +{v}', 1)}{ticks}{cap}</div>"


def _num(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    return "nan" if math.isnan(f) else format(f, spec)


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


# --- feature visualization --------------------------------------------------------------------------


def featvis(res, *, max_images: int = MAX_IMAGES) -> View:
    """A :class:`~vision_interp.featvis.RenderResult`: each picture with its unit, objective value and activation."""
    n = len(res)
    shown = min(n, max_images)
    units = res.units or []
    per = max(1, res.images_per_unit)
    figs = []
    for i in range(shown):
        name = units[i] if i < len(units) else res.descriptions[min(i, len(res.descriptions) - 1)]
        cap = f"<b>{_e(name)}</b><br>objective {_num(res.values[i])}"
        if res.activations is not None and i < len(res.activations):
            cap += f"<br>activation {_num(res.activations[i])}"
        figs.append(_figure(res.images[i], cap, alt=str(name)))
    preset = res.settings.get("preset") if isinstance(res.settings, dict) else None
    meta = (f"{n} image{'s' if n != 1 else ''}" + (f" ({per} per unit)" if per > 1 else "") +
            f", {res.steps} steps, seed {res.seed}" + (f", preset {preset}" if preset else "") + f", {res.seconds:.1f} s")
    more = f"<div style='color:#a33'>showing {shown} of {n} images</div>" if shown < n else ""
    return View(_wrap(f"<div style='color:#555'>{_e(meta)}</div><div>{''.join(figs)}</div>{more}", "feature visualization"),
                _featvis_png(res, max_images), _featvis_text(res))


def _featvis_png(res, max_images: int = MAX_IMAGES) -> bytes:
    imgs = res.images[:max_images]
    s = _scale_for(*imgs.shape[-2:])
    return vimg.png_bytes(vimg.make_grid(vimg.upscale(imgs, s), ncols=min(len(imgs), 8)))


def _featvis_text(res) -> str:
    shape = "x".join(str(d) for d in res.images.shape[1:])
    units = res.units or res.descriptions
    names = ", ".join(map(str, units[:4])) + (f", ... ({len(units)})" if len(units) > 4 else "")
    vals = ", ".join(_num(v, ".3g") for v in res.values[:4].tolist()) + (", ..." if len(res) > 4 else "")
    return f"RenderResult({len(res)} images {shape}; units [{names}]; values [{vals}]; {res.steps} steps, {res.seconds:.1f} s)"


def images(x: torch.Tensor, captions: Sequence[str] | None = None, title: str = "") -> View:
    """A batch of pictures (N, C, H, W) or one (C, H, W) in [0, 1], each with an optional caption."""
    t = torch.as_tensor(x).detach().cpu().float()
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W) or (1 or 3, H, W) in [0, 1], got shape {tuple(t.shape)}; "
                         "kernels are shown with display.weights()")
    caps = list(captions) if captions is not None else [str(i) for i in range(len(t))]
    if len(caps) != len(t):
        raise ValueError(f"got {len(caps)} captions for {len(t)} images")
    figs = "".join(_figure(img, _e(c)) for img, c in zip(t, caps))
    s = _scale_for(*t.shape[-2:])
    return View(_wrap(figs, title), vimg.png_bytes(vimg.make_grid(vimg.upscale(t, s), ncols=min(len(t), 8))),
                f"images({len(t)} x {'x'.join(map(str, t.shape[1:]))})")


# --- attribution ----------------------------------------------------------------------------------------


def attribution(inputs: torch.Tensor, attributions: torch.Tensor, *, target: Any = None, method: str | None = None,
                shared_scale: bool = False, labels: Sequence[str] | None = None, alpha: float = 0.75) -> View:
    """Attribution maps (what ``attribute()`` returns) beside their inputs: input | signed overlay | heatmap,
    each row with a colour bar giving the value of full red / full blue (per input, or one ``shared_scale``)."""
    from .attribution.pictures import attribution_grid, heatmaps

    x = torch.as_tensor(inputs).detach().cpu().float()
    x = x[None] if x.ndim == 3 else x
    a = torch.as_tensor(attributions).detach().cpu().float()
    a = a[None] if a.ndim == 3 else a
    if x.ndim != 4 or a.ndim != 4 or len(x) != len(a) or x.shape[-2:] != a.shape[-2:]:
        raise ValueError(f"inputs {tuple(x.shape)} and attributions {tuple(a.shape)} must be (N, C, H, W) with the "
                         "same N, H and W (as attribute() returns them)")
    h = heatmaps(a)
    shared = float(h.abs().max()) if shared_scale else None
    rows = []
    for i, (xi, hi) in enumerate(zip(x, h)):
        vmax = shared if shared is not None else float(hi.abs().max())
        label = labels[i] if labels is not None else f"input {i}"
        cells = [_figure(_rgb(xi), _e(label)),
                 _figure(vimg.overlay(xi, hi, alpha=alpha, vmax=vmax or 1e-12), "overlay"),
                 _figure(vimg.diverging(hi, vmax or 1e-12), f"heatmap (sum {_num(float(hi.sum()), '.3g')})"),
                 colorbar(vmax, "attribution summed over channels; red raises the target, blue lowers it")]
        rows.append(f"<div>{''.join(cells)}</div>")
    what = " of ".join(p for p in (method, f"target {target}" if target is not None else None) if p)
    title = "attribution" + (f": {what}" if what else "")
    s = _scale_for(*x.shape[-2:])
    png = vimg.png_bytes(attribution_grid(x, a, alpha=alpha), scale=s)
    return View(_wrap("".join(rows), title), png, f"{title} ({len(x)} inputs {'x'.join(map(str, x.shape[1:]))})")


def layer_attribution(la, inputs: torch.Tensor | None = None, *, k: int = 8, index: int = 0, model=None,
                      pictures: Mapping[str, torch.Tensor] | bool | None = None, **featvis_kwargs: Any) -> View:
    """Building Blocks: where in the image the layer contributes (spatial map, over ``inputs`` when given)
    and its top ``k`` channels by |contribution| with bars; with ``model`` (or a ``pictures`` mapping
    ``"layer:channel" -> image``) each channel's visualization beside it."""
    if not 0 <= index < la.tensor.shape[0]:
        raise ValueError(f"index must be in 0..{la.tensor.shape[0] - 1}, got {index}")
    top = la.top_channels(k, by="abs")[index]
    parts = [f"<div style='color:#555'>{_e(la.method)} attribution of {_e(la.target)} to layer {_e(la.layer)}, input "
             f"{index}: total {_num(float(la.total[index]))}</div>"]
    if la.tensor.ndim == 4:
        sp = la.spatial[index].detach().cpu().float()
        vmax = float(sp.abs().max()) or 1e-12
        if inputs is not None:
            xi = torch.as_tensor(inputs)[index].detach().cpu().float()
            pic = vimg.overlay(xi, sp, alpha=0.75, vmax=vmax)
        else:
            pic = vimg.diverging(sp, vmax)
        parts.append(_figure(pic, "where: summed over channels") + colorbar(vmax, "per position of " + la.layer))
    thumbs = _thumbnails(model, [f"{la.layer}:{c}" for c, _, _ in top], pictures, featvis_kwargs)
    vmax = max((abs(v) for _, v, _ in top), default=0.0)
    rows = []
    for c, v, share in top:
        pic = thumbs.get(f"{la.layer}:{c}")
        rows.append([_img(pic, f"{la.layer}:{c}", max(1, 64 // pic.shape[-1]))
                     if pic is not None else "", f"<b>{_e(la.layer)}:{c}</b>", _num(v), f"{100 * share:+.1f}%", _bar(v, vmax)])
    header = (["visualization"] if thumbs else [""]) + ["channel", "contribution", "share of |total|", ""]
    parts.append(_table(header, rows))
    return View(_wrap("".join(parts), "layer attribution (Building Blocks)"), None, _layer_attribution_text(la))


def _layer_attribution_text(la) -> str:
    top = la.top_channels(3, by="abs")[0] if la.tensor.shape[0] else []
    tops = ", ".join(f"{c} ({v:+.3g})" for c, v, _ in top)
    return (f"LayerAttribution({la.method} of {la.target} to {la.layer}; tensor {tuple(la.tensor.shape)}; "
            f"input 0 top channels {tops})")


def _thumbnails(model, units: list[str], pictures, featvis_kwargs: dict) -> dict[str, torch.Tensor]:
    """Pictures of units: a given mapping, or rendered by feature visualization when a model is given."""
    if isinstance(pictures, Mapping):
        return {u: torch.as_tensor(pictures[u]).detach().cpu().float() for u in units if u in pictures}
    if model is None or pictures is False or not units:
        return {}
    from .circuits.diagram import _load_thumbnails

    kw = {"progress": False, **featvis_kwargs}
    progress = kw.pop("progress")
    return {u: t.detach().cpu().float() for u, t in _load_thumbnails(model, units, None, None, kw, progress).items()}


def completeness(res) -> View:
    """An :class:`~vision_interp.attribution.sanity.CompletenessResult` as a table."""
    rows = [[str(i), _num(s), _num(d), _num(e), f"{100 * float(r):.3f}%"] for i, (s, d, e, r) in
            enumerate(zip(res.attribution_sum.tolist(), res.output_difference.tolist(), res.error.tolist(),
                          res.relative_error.tolist()))]
    return View(_wrap(_table(["input", "sum of IG", "f(x) - f(baseline)", "|gap|", "relative gap"], rows),
                      f"IG completeness ({res.n_steps} steps)"), None, str(res))


def randomization(res) -> View:
    """A :class:`~vision_interp.attribution.sanity.RandomizationResult`: rank correlation as layers are randomised."""
    rows = [[_e(name), _num(c, "+.3f"), _bar(c, 1.0)] for name, c in zip(res.layers, res.mean)]
    return View(_wrap(_table(["randomised up to", "mean Spearman", ""], rows),
                      f"cascading randomization ({res.method})"), None, str(res).splitlines()[0])


# --- circuits ---------------------------------------------------------------------------------------------


def weights(w: torch.Tensor, *, src: str | None = None, dst: str | None = None, max_rows: int = 32,
            max_cols: int = 32) -> View:
    """Kernels (C_out, C_in, kh, kw) (what ``direct_weights``/``expanded_weights`` return): a row per output
    channel, a column per input channel, one diverging scale with its colour bar."""
    from .circuits.diagram import kernel_grid

    t = torch.as_tensor(w).detach().cpu().float()
    if t.ndim == 2:
        t = t[:, :, None, None]
    if t.ndim != 4:
        raise ValueError(f"weights must be (C_out, C_in, kh, kw) or (C_out, C_in), got shape {tuple(t.shape)}")
    shown = t[:max_rows, :max_cols]
    vmax = float(t.abs().max()) or 1e-12
    scale = max(1, min(8, 48 // max(t.shape[-1], 1), 480 // max(shown.shape[0] * (t.shape[-2] + 1), 1)))  # fits ~480 px
    grid = kernel_grid(shown, scale=scale, vmax=vmax)
    more = "" if shown.shape[:2] == t.shape[:2] else (
        f"<div style='color:#a33'>showing {shown.shape[0]} x {shown.shape[1]} of {t.shape[0]} x {t.shape[1]} kernels</div>")
    axes = f"rows: {_e(dst or 'output')} channels 0..{shown.shape[0] - 1}; columns: {_e(src or 'input')} channels 0..{shown.shape[1] - 1}"
    body = f"<div style='color:#555'>{axes}</div>{_figure(grid, 'kernels', scale=1)}{colorbar(vmax, 'weight')}{more}"
    title = f"weights {src or 'input'} -> {dst or 'output'} {tuple(t.shape)}" if (src or dst) else f"weights {tuple(t.shape)}"
    return View(_wrap(body, title), vimg.png_bytes(grid), title)


def connections(conn: Mapping[str, Any], model=None, *, pictures: Mapping[str, torch.Tensor] | bool | None = None,
                input_shape: Sequence[int] | None = None, **featvis_kwargs: Any) -> View:
    """``top_connections()``: excitatory and inhibitory connected units with their strengths; with ``model``
    each connection's kernel (expanded weights) beside the connected unit's visualization (or ``pictures``)."""
    for key in ("unit", "layer", "direction", "excitatory", "inhibitory"):
        if key not in conn:
            raise ValueError(f"connections() needs the dict top_connections() returns; {key!r} is missing")
    kernels = _connection_kernels(model, conn, input_shape) if model is not None else {}
    units = [u for kind in ("excitatory", "inhibitory") for u, _ in conn[kind]]
    thumbs = _thumbnails(model, units, pictures, featvis_kwargs)
    kmax = max((float(k.abs().max()) for k in kernels.values()), default=0.0) or 1e-12
    smax = max((abs(s) for kind in ("excitatory", "inhibitory") for _, s in conn[kind]), default=0.0)
    parts = []
    for kind in ("excitatory", "inhibitory"):
        rows = []
        for u, s in conn[kind]:
            row = []
            if kernels:
                kern = kernels.get(u)
                row.append(_img(vimg.upscale(vimg.diverging(kern, kmax), max(1, 40 // kern.shape[-1])), f"kernel {u}", 1)
                           if kern is not None else "")
            if thumbs:
                pic = thumbs.get(u)
                row.append(_img(pic, u, max(1, 64 // pic.shape[-1])) if pic is not None else "")
            rows.append(row + [f"<b>{_e(u)}</b>", _num(s), _bar(s, smax)])  # inhibitory strengths are negative: blue
        header = (["kernel"] if kernels else []) + (["visualization"] if thumbs else []) + ["unit", "strength", ""]
        parts.append(f"<div style='{_FIG};margin-right:24px'><div style='font-weight:600'>{kind}</div>{_table(header, rows)}</div>")
    cb = colorbar(kmax, "kernel weight (expanded)") if kernels else ""
    word = "inputs from" if conn["direction"] == "inputs" else "outputs to"
    title = f"top connections: {conn['unit']} {word} {conn['layer']}"
    return View(_wrap("".join(parts) + cb, title), None, title)


def _connection_kernels(model, conn: Mapping[str, Any], input_shape) -> dict[str, torch.Tensor]:
    """The expanded-weight kernel of each listed connection, keyed by the connected unit's name."""
    from .circuits.weights import expanded_weights
    from .units import parse_unit, resolve_unit

    u = resolve_unit(model, conn["unit"], input_shape, single_channel=True)
    if conn["direction"] == "inputs":
        k = expanded_weights(model, conn["layer"], u.layer, dst_channels=[u.channel], input_shape=input_shape)[0]
    else:
        k = expanded_weights(model, u.layer, conn["layer"], src_channels=[u.channel], input_shape=input_shape)[:, 0]
    out = {}
    for kind in ("excitatory", "inhibitory"):
        for name, _ in conn[kind]:
            out[name] = k[parse_unit(name).channel].detach().cpu().float()
    return out


def neuron_groups(groups, image: torch.Tensor | None = None, *, k: int = 5) -> View:
    """:class:`~vision_interp.circuits.NeuronGroups`: each group's map (over ``image`` when given) and its top channels."""
    from .circuits.groups import neuron_groups_picture

    g = groups.groups if groups.groups.ndim == 3 else groups.groups[0]
    vmax = float(g.max()) or 1.0
    figs = []
    for i, m in enumerate(g):
        if image is not None:
            img = torch.as_tensor(image).detach().cpu().float()
            img = img[0] if img.ndim == 4 else img
            pic = vimg.overlay(img, m, alpha=0.85, vmax=vmax)
        else:
            pic = vimg.diverging(m, vmax)
        chans = ", ".join(f"{c} ({v:.2f})" for c, v in groups.top_channels(i, k))
        figs.append(_figure(pic, f"<b>group {i}</b><br>channels {_e(chans)}"))
    body = (f"<div style='color:#555'>{len(g)} groups of {groups.loadings.shape[1]} channels; relative reconstruction "
            f"error {groups.error:.4f} after {groups.iterations} NMF iterations; red = where the group is active "
            f"(one scale, 0..{vmax:.3g})</div><div>{''.join(figs)}</div>")
    return View(_wrap(body, "neuron groups"), vimg.png_bytes(neuron_groups_picture(groups, image)), _groups_text(groups))


def _groups_text(groups) -> str:
    return (f"NeuronGroups({groups.loadings.shape[0]} groups of {groups.loadings.shape[1]} channels; maps "
            f"{tuple(groups.groups.shape)}; error {groups.error:.4f})")


# --- dataset examples and dictionary features -----------------------------------------------------------------


def dataset_examples(top, dataset: torch.Tensor | None = None, model=None, *, per_channel: int = 8) -> View:
    """:class:`~vision_interp.data.examples.TopExamples`: per channel its top images (receptive-field patches when
    ``model`` is given and the layer is spatial) with their activations; without ``dataset``, the numbers only."""
    rf = _receptive_field(model, top.layer, dataset) if (model is not None and dataset is not None
                                                         and top.positions is not None) else None
    rows = []
    n = min(per_channel, top.indices.shape[1])
    for r, c in enumerate(top.channels):
        cells = []
        for j in range(n):
            idx = int(top.indices[r, j])
            if idx < 0:
                continue
            pos = top.positions[r, j].tolist() if top.positions is not None else None
            cap = f"#{idx}<br>{_num(top.values[r, j], '.3g')}" + (f"<br>@{pos[0]},{pos[1]}" if pos else "")
            if dataset is not None:
                img = dataset[idx].detach().cpu().float()
                if rf is not None:
                    from .data.examples import crop_patches

                    img = crop_patches(img[None], top.positions[r, j][None], rf)[0]
                cells.append(_figure(img, cap, alt=f"example {idx}", scale=max(1, 64 // max(img.shape[-1], 1))))
            else:
                cells.append(f"<span style='{_FIG};font-size:11px'>{cap}</span>")
        rows.append([f"<b>{_e(top.layer)}:{c}</b>", "".join(cells)])
    what = "receptive-field patches" if rf is not None else ("whole images" if dataset is not None else "dataset index")
    note = f"<div style='color:#555'>top {n} of each unit ({what}; value = the channel's largest activation)</div>"
    return View(_wrap(note + _table(["unit", "examples"], rows), f"dataset examples: {top.layer}"), None, _examples_text(top))


def _receptive_field(model, layer: str, dataset: torch.Tensor):
    from .data.examples import receptive_field
    from .trace import TraceError

    try:
        return receptive_field(model, layer, tuple(dataset.shape[1:]))
    except (TraceError, ValueError):
        return None  # not traceable (e.g. an attached feature layer): whole images


def _examples_text(top) -> str:
    return (f"TopExamples({top.layer}: {len(top.channels)} channels x top {top.indices.shape[1]}; "
            f"best {', '.join(f'{c}:#{int(i)}' for c, i in zip(top.channels[:4], top.indices[:4, 0]))}"
            f"{', ...' if len(top.channels) > 4 else ''})")


def dictionary(d) -> View:
    """A :class:`~vision_interp.features.Dictionary`: its card's numbers and the decoder directions."""
    card = d.card or {}
    m = card.get("metrics", {})
    rows = [["layer", f"{_e(d.layer)} -> features as {_e(d.feature_layer)}"],
            ["features, k", f"{d.n_features}, {d.k} active per position"],
            ["data", _e(card.get("data", "-"))]]
    for key, label in (("fvu", "fraction of variance unexplained (held out)"), ("mean_l0", "mean active features"),
                       ("dead_features", "dead features"), ("test_accuracy", "test accuracy"),
                       ("test_accuracy_reconstructed", "test accuracy, layer replaced by its reconstruction")):
        if key in m:
            rows.append([label, _num(m[key])])
    dirs = d.directions.detach().cpu().float().T  # (C, F): a column per feature
    vmax = float(dirs.abs().max()) or 1e-12
    s = max(1, min(8, 512 // max(dirs.shape[1], 1)))
    pic = vimg.upscale(vimg.diverging(dirs, vmax), s)
    body = (_table(["", ""], rows) +
            f"<div style='color:#555'>decoder directions: column f is feature f over the {dirs.shape[0]} channels "
            f"(rows) of {_e(d.layer)}</div>" + _figure(pic, "decoder directions", scale=1) + colorbar(vmax, "direction weight"))
    return View(_wrap(body, f"dictionary: {d.n_features} features on {d.layer}"), None, _dictionary_text(d))


def _dictionary_text(d) -> str:
    fvu = (d.card or {}).get("metrics", {}).get("fvu")
    return f"Dictionary({d.n_features} features on {d.layer}, k={d.k}" + (f", FVU {fvu:.3f})" if fvu is not None else ")")


def dictionary_features(d, model, dataset: torch.Tensor, features: Sequence[int] | None = None, *, k: int = 6) -> View:
    """Dictionary features as units: each feature's top ``k`` dataset examples (features attached for the call only)."""
    from .data.examples import top_activating
    from .features import attached

    feats = list(range(min(8, d.n_features))) if features is None else list(features)
    with attached(model, d):
        top = top_activating(model, d.feature_layer, dataset, k=k, channels=feats)
        view = dataset_examples(top, dataset, model, per_channel=k)
    return View(view.html.replace("dataset examples:", "dictionary features:", 1), None,
                f"dictionary features {d.feature_layer}: {len(feats)} features x top {k}")


# --- induction heads ------------------------------------------------------------------------------------------

_INDUCTION_GRIDS = ("induction", "previous_token", "copying", "ablation_mean")


def induction(report, *, window: int = 20) -> View:
    """An :class:`~vision_interp.transformer.InductionReport`: the detected heads, the layer x head score grids
    on their fixed colour scales, and the attention patterns of the top heads with token labels."""
    from .transformer import figures
    from .transformer.report import SCORE_SCALES, format_head

    ind = ", ".join(format_head(*h) for h in report.induction_heads) or "none"
    prev = ", ".join(format_head(*h) for h in report.previous_token_heads) or "none"
    lines = (f"<div>{_e(report.model_name)}: {report.n_layer} layers x {report.n_head} heads; probe [BOS]+R+R, "
             f"seq_len {report.seq_len}, batch {report.batch}, seed {report.seed}<br>"
             f"loss on the first copy {report.losses['first_copy']:.3f}, on the second {report.losses['second_copy']:.3f} nats"
             f"<br>induction heads: <b>{_e(ind)}</b>; previous-token heads: <b>{_e(prev)}</b></div>")
    figs = []
    with tempfile.TemporaryDirectory(prefix="vi-display-") as tmp:
        for name in (n for n in _INDUCTION_GRIDS if n in report.scores):
            scale = SCORE_SCALES.get(name, "unit")
            p = figures.score_grid(report.scores[name], Path(tmp) / f"{name}.png", scale=scale,
                                   title=f"{name}; scale {figures.SCALES[scale][4]}")
            figs.append(_png_figure(p.read_bytes(), name))
    heads = [h for h in (report.top("induction", 1)[0][:2], report.top("previous_token", 1)[0][:2])]
    attention = "".join(_attention_table(report, l, h, window) for l, h in dict.fromkeys(heads))
    table = f"<details><summary>all numbers</summary><pre style='font-size:11px'>{_e(report.table())}</pre></details>"
    return View(_wrap(lines + f"<div>{''.join(figs)}</div>" + attention + table, "induction heads"), None,
                _induction_text(report))


def _attention_table(report, layer: int, head: int, window: int) -> str:
    """One head's attention (sequence 0, the last ``window`` queries x every key) as a table with token labels;
    cell colour from :func:`images.diverging` on the fixed 0..1 scale, the induction key q-(seq_len-1) outlined."""
    from .transformer.report import format_head

    p = report.example_patterns[layer, head].detach().cpu().float()
    T = p.shape[-1]
    q0 = T - min(window, T)
    s = report.seq_len
    tok = report.token_text or [str(int(t)) for t in report.tokens[0]]
    label = lambda t: ("BOS" if t == 0 else f"{t}" if t <= s else f"{t}'") + f":{tok[t]}"
    rgb = (vimg.diverging(p[q0:], 1.0) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).tolist()
    style = ("<style>.vi-att td{width:11px;height:11px;padding:0;border:1px solid #fff}"
             ".vi-att td.ind{outline:1.5px solid #1f5fd0;outline-offset:-2px}</style>")
    head_row = "<th></th>" + "".join(
        f"<th style='writing-mode:vertical-rl;transform:rotate(180deg);font-size:9px;font-weight:400;padding:1px'>"
        f"{_e(label(k))}</th>" for k in range(T))
    rows = []
    for i, q in enumerate(range(q0, T)):
        tds = []
        for k in range(T):
            ring = " class='ind'" if k == q - (s - 1) else ""
            tds.append(f"<td{ring} title='{float(p[q, k]):.3f}' style='background:#{bytes(rgb[i][k]).hex()}'></td>")
        rows.append(f"<tr><th style='font-size:9px;font-weight:400;text-align:right;padding:0 3px'>{_e(label(q))}</th>"
                    + "".join(tds) + "</tr>")
    caption = (f"head {format_head(layer, head)}: induction {report.scores['induction'][layer, head]:.2f}, previous-token "
               f"{report.scores['previous_token'][layer, head]:.2f}; attention of sequence 0 (rows: queries, columns: keys, "
               f"'position:token', n' = second copy); white 0 to red 1; outlined: the induction key q-(seq_len-1)")
    return (f"<div style='margin:6px 0'><div style='font-size:11px;color:#444;max-width:900px'>{_e(caption)}</div>"
            f"{style}<table class='vi-att' style='border-collapse:collapse;table-layout:fixed'><thead><tr>{head_row}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _png_figure(data: bytes, caption: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f"<figure style='{_FIG}'><img src='{src}' alt='{_e(caption)}' style='max-width:100%;display:block'>"
            f"<figcaption style='{_CAP.format(w=600)}'>{_e(caption)}</figcaption></figure>")


def _induction_text(report) -> str:
    from .transformer.report import format_head

    best = ", ".join(f"{format_head(l, h)} ({v:.2f})" for l, h, v in report.top("induction", 3))
    return (f"InductionReport({report.model_name}: {report.n_layer}x{report.n_head} heads; top induction {best}; "
            f"loss {report.losses['first_copy']:.2f} -> {report.losses['second_copy']:.2f})")


# --- attribution graphs ------------------------------------------------------------------------------------------


def attribution_graph(g, *, threshold: float = 0.8, max_edges: int = 400) -> View:
    """An :class:`~vision_interp.features.graph.AttributionGraph`: its pruned graph as one static SVG (the
    graph page's drawing, without its script), under a sentence of its measured figures."""
    from .features.graph_page import graph_head, graph_svg
    from .features.tc_graph_io import graph_json

    doc = {**graph_json(g, threshold, max_edges=max_edges), "source": "attribution graph", "target": g.target}
    key = ("<div style='margin:4px 0'>Red edges raise their target, blue edges lower it; node size: influence on the "
           "logit. Grey: pixel groups, green: features, orange: error nodes, purple: the logit.</div>")
    body = f"<div style='margin:2px 0'>{graph_head(doc)}</div>{key}<div style='max-width:960px'>{graph_svg(doc, max_edges=max_edges)}</div>"
    return View(_wrap(body, f"attribution graph for logit {g.target}"), None, _graph_text(g))


def _graph_text(g) -> str:
    kinds = g.kinds()
    return (f"AttributionGraph(target {g.target}, logit {g.logit:.4g}; {len(kinds)} nodes: {kinds.count('feature')} features, "
            f"{kinds.count('error')} error, {kinds.count('pixels')} pixel groups; sum-rule residual {g.sum_rule_residual():.1e})")


# --- dispatch -----------------------------------------------------------------------------------------------------

# class name -> (view function, short text); keyed by name so this module imports no subpackage eagerly
_VIEWS: dict[str, Callable[[Any], View]] = {
    "RenderResult": featvis,
    "LayerAttribution": layer_attribution,
    "NeuronGroups": neuron_groups,
    "TopExamples": dataset_examples,
    "Dictionary": dictionary,
    "InductionReport": induction,
    "CompletenessResult": completeness,
    "RandomizationResult": randomization,
    "AttributionGraph": attribution_graph,
}
_TEXTS: dict[str, Callable[[Any], str]] = {
    "RenderResult": _featvis_text,
    "LayerAttribution": _layer_attribution_text,
    "NeuronGroups": _groups_text,
    "TopExamples": _examples_text,
    "Dictionary": _dictionary_text,
    "InductionReport": _induction_text,
    "AttributionGraph": _graph_text,
}


def _handler(table: Mapping[str, Callable], obj: Any) -> Callable:
    for cls in type(obj).__mro__:
        if cls.__name__ in table and cls.__module__.startswith("vision_interp"):
            return table[cls.__name__]
    raise TypeError(f"no display for {type(obj).__name__}; displayable: {', '.join(sorted(_VIEWS))}, "
                    "attribution tensors (show(inputs, attributions)), kernels (display.weights), "
                    "top_connections() dicts, image batches")


def html(obj: Any) -> str:
    """The rich HTML of a result (what its ``_repr_html_`` returns)."""
    return _handler(_VIEWS, obj)(obj).html


def png(obj: Any) -> bytes | None:
    """The single PNG of a result (what its ``_repr_png_`` returns), drawn without the HTML."""
    name = type(obj).__name__
    if name == "RenderResult":
        return _featvis_png(obj)
    if name == "NeuronGroups":
        from .circuits.groups import neuron_groups_picture

        return vimg.png_bytes(neuron_groups_picture(obj))
    return _handler(_VIEWS, obj)(obj).png


def text(obj: Any) -> str:
    """A short plain ``repr`` (one line: what it is, its size, its headline numbers)."""
    return _handler(_TEXTS, obj)(obj)


def show(obj: Any, *more: Any, **kwargs: Any) -> View:
    """Display anything vision_interp returns, also bare tensors and dicts:

    ``show(result)`` for result classes (extra arguments go to the view, e.g. ``show(la, x, model=m)``);
    ``show(inputs, attributions)`` for ``attribute()``; ``show(top_connections(...), model)``; ``show(images)``
    for a batch of pictures. Kernels from ``direct_weights`` are shown with :func:`weights`.
    """
    if isinstance(obj, View):
        return obj
    if isinstance(obj, Mapping) and "excitatory" in obj:
        return connections(obj, *more, **kwargs)
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        if more:
            return attribution(obj, *more, **kwargs)
        return images(torch.as_tensor(obj), **kwargs)
    return _handler(_VIEWS, obj)(obj, *more, **kwargs)
