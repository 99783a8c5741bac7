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

Pictures handed in (``images``, the inputs beside an attribution, a dataset) are read by one rule
(:func:`as_pictures`), so nothing is drawn saturated by accident: ``uint8`` is 0..255, ``bool`` is 0/1,
floating point must already be in [0, 1] (a float picture outside it, e.g. 0..255 floats or normalised
images, is refused with its range, never clipped), other integer dtypes are refused (their scale is
unknown), NaN and infinity are refused. NumPy arrays may also come in PIL's (H, W, C) layout.
Every argument is checked first; errors start with the argument's name.
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
from .checks import InputError, InputTypeError, NonFiniteError, check_int, check_number
from .io import atomic_write_text

__all__ = [
    "View", "show", "html", "png", "text", "as_pictures",
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
        if not isinstance(html, str):
            raise InputTypeError(f"html: expected the view's HTML as a str, got {type(html).__name__}")
        if png is not None and not isinstance(png, (bytes, bytearray)):
            raise InputTypeError(f"png: expected PNG bytes or None, got {type(png).__name__}")
        if not isinstance(text, str):
            raise InputTypeError(f"text: expected a str, got {type(text).__name__}")
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


_TOL = 1e-4  # float pictures may overshoot [0, 1] by rounding this much (clipped), not more


def as_pictures(x: Any, arg: str = "images", *, channels: tuple[int, ...] | None = (1, 3)) -> torch.Tensor:
    """Pictures as a float (N, C, H, W) tensor in [0, 1], read by one rule (see the module docstring):
    ``uint8`` / 255, ``bool`` as 0/1, float must lie in [0, 1] already, other integers, NaN and infinity are
    refused. Accepts (N, C, H, W), (C, H, W), (H, W), and NumPy arrays in (H, W, C) / (N, H, W, C) layout."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise InputTypeError(f"{arg}: a NumPy array of Python objects; give numbers (uint8 0..255 or float 0..1)")
        if x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3, 4):
            x = np.moveaxis(x, -1, 0)  # PIL layout (H, W, C)
        elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = np.moveaxis(x, -1, 1)
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{arg}: expected a torch.Tensor or NumPy array of pictures, got {type(x).__name__}")
    t = x.detach().cpu()
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype == torch.bool:
        t = t.float()
    elif t.is_complex():
        raise InputError(f"{arg}: dtype {t.dtype}; pictures are real numbers")
    elif not t.is_floating_point():
        raise InputError(f"{arg}: dtype {t.dtype}; pictures are uint8 (0..255) or floating point in [0, 1], and the "
                         f"scale of {t.dtype} values is unknown (e.g. x.to(torch.uint8) for 0..255 values, or x / x.max())")
    else:
        t = t.float()
    if t.ndim == 2:
        t = t[None]
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or (channels is not None and t.shape[1] not in channels):
        want = " or ".join(map(str, channels)) if channels is not None else "C"
        raise InputError(f"{arg}: shape {tuple(x.shape)}; pictures have {want} channels: (N, {want}, H, W), ({want}, H, W) or (H, W) "
                         "(kernels are shown with display.weights(), signed maps with display.attribution())")
    if 0 in t.shape:
        raise InputError(f"{arg}: shape {tuple(x.shape)} has an empty dimension")
    lo, hi = float(t.min()), float(t.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(f"{arg}: {n} NaN or infinite value(s); every pixel must be a finite number")
    if lo < -_TOL or hi > 1 + _TOL:
        hint = (" (they look like 0..255 values: divide by 255, or pass them as uint8)" if hi > 2 and lo >= 0 else
                " (signed values: show attributions with display.attribution(), kernels with display.weights())")
        raise InputError(f"{arg}: {x.dtype} values span [{lo:.4g}, {hi:.4g}]; float pictures must be in [0, 1]{hint}")
    return t.clamp(0, 1)


def _values(x: Any, arg: str) -> torch.Tensor:
    """A real, finite tensor of values (attributions, kernels, maps) as float on the CPU."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise InputTypeError(f"{arg}: a NumPy array of Python objects; give numbers")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{arg}: expected a torch.Tensor or NumPy array, got {type(x).__name__}")
    if x.is_complex():
        raise InputError(f"{arg}: dtype {x.dtype}; expected real numbers")
    t = x.detach().cpu().float()
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise NonFiniteError(f"{arg}: {int((~torch.isfinite(t)).sum())} NaN or infinite value(s) of {t.numel()}; "
                             "nothing is drawn from them")
    return t


def _result(obj: Any, cls_name: str, arg: str) -> Any:
    """``obj`` is an instance of the vision_interp class named ``cls_name`` (checked by name: no import)."""
    if not any(c.__name__ == cls_name and c.__module__.startswith("vision_interp") for c in type(obj).__mro__):
        raise InputTypeError(f"{arg}: expected a {cls_name}, got {type(obj).__name__}")
    return obj


def _opt_str(value: Any, arg: str) -> None:
    if value is not None and not isinstance(value, str):
        raise InputTypeError(f"{arg}: expected a str or None, got {type(value).__name__}")


def _captions(captions: Any, n: int, arg: str = "captions") -> list[str] | None:
    if captions is None:
        return None
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise InputTypeError(f"{arg}: expected a list of {n} strings, got {type(captions).__name__}")
    if len(captions) != n:
        raise InputError(f"{arg}: {len(captions)} given for {n} images; give one per image")
    return [str(c) for c in captions]


# --- feature visualization --------------------------------------------------------------------------


def featvis(res, *, max_images: int = MAX_IMAGES) -> View:
    """A :class:`~vision_interp.featvis.RenderResult`: each picture with its unit, objective value and activation."""
    _result(res, "RenderResult", "res")
    max_images = check_int(max_images, "max_images", minimum=1)
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
    """A batch of pictures (N, C, H, W) or one (C, H, W), read by :func:`as_pictures` (uint8 is 0..255, float
    must be in [0, 1]), each with an optional caption."""
    t = as_pictures(x, "images")
    if t.shape[1] == 4:
        t = t[:, :3]
    caps = _captions(captions, len(t)) or [str(i) for i in range(len(t))]
    if not isinstance(title, str):
        raise InputTypeError(f"title: expected a str, got {type(title).__name__}")
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

    x = as_pictures(inputs, "inputs")
    a = _values(attributions, "attributions")
    a = a[None] if a.ndim == 3 else a
    if a.ndim != 4 or len(x) != len(a) or x.shape[-2:] != a.shape[-2:]:
        raise InputError(f"attributions: shape {tuple(a.shape)} for inputs {tuple(x.shape)}; both must be (N, C, H, W) "
                         "with the same N, H and W (as attribute() returns them)")
    _opt_str(method, "method")
    if not isinstance(shared_scale, bool):
        raise InputTypeError(f"shared_scale: expected True or False, got {type(shared_scale).__name__}")
    labels = _captions(labels, len(x), "labels")
    alpha = check_number(alpha, "alpha", minimum=0.0, maximum=1.0)
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
    _result(la, "LayerAttribution", "la")
    k = check_int(k, "k", minimum=1)
    index = check_int(index, "index")
    if not 0 <= index < la.tensor.shape[0]:
        raise InputError(f"index: {index}; must be in 0..{la.tensor.shape[0] - 1} (one per attributed input)")
    if inputs is not None:
        inputs = as_pictures(inputs, "inputs")
        if len(inputs) != la.tensor.shape[0]:
            raise InputError(f"inputs: {len(inputs)} images for an attribution of {la.tensor.shape[0]} inputs")
    _check_pictures_arg(pictures)
    top = la.top_channels(k, by="abs")[index]
    parts = [f"<div style='color:#555'>{_e(la.method)} attribution of {_e(la.target)} to layer {_e(la.layer)}, input "
             f"{index}: total {_num(float(la.total[index]))}</div>"]
    if la.tensor.ndim == 4:
        sp = la.spatial[index].detach().cpu().float()
        vmax = float(sp.abs().max()) or 1e-12
        if inputs is not None:
            pic = vimg.overlay(inputs[index], sp, alpha=0.75, vmax=vmax)
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


def _check_pictures_arg(pictures: Any) -> None:
    if pictures is not None and not isinstance(pictures, (bool, Mapping)):
        raise InputTypeError(f"pictures: expected a mapping 'layer:channel' -> image, True/False or None, got "
                             f"{type(pictures).__name__}")


def _layer_attribution_text(la) -> str:
    top = la.top_channels(3, by="abs")[0] if la.tensor.shape[0] else []
    tops = ", ".join(f"{c} ({v:+.3g})" for c, v, _ in top)
    return (f"LayerAttribution({la.method} of {la.target} to {la.layer}; tensor {tuple(la.tensor.shape)}; "
            f"input 0 top channels {tops})")


def _thumbnails(model, units: list[str], pictures, featvis_kwargs: dict) -> dict[str, torch.Tensor]:
    """Pictures of units: a given mapping, or rendered by feature visualization when a model is given."""
    if isinstance(pictures, Mapping):
        return {u: as_pictures(pictures[u], f"pictures[{u!r}]")[0] for u in units if u in pictures}
    if model is None or pictures is False or not units:
        return {}
    from .circuits.diagram import _load_thumbnails

    kw = {"progress": False, **featvis_kwargs}
    progress = kw.pop("progress")
    return {u: t.detach().cpu().float() for u, t in _load_thumbnails(model, units, None, None, kw, progress).items()}


def completeness(res) -> View:
    """An :class:`~vision_interp.attribution.sanity.CompletenessResult` as a table."""
    _result(res, "CompletenessResult", "res")
    rows = [[str(i), _num(s), _num(d), _num(e), f"{100 * float(r):.3f}%"] for i, (s, d, e, r) in
            enumerate(zip(res.attribution_sum.tolist(), res.output_difference.tolist(), res.error.tolist(),
                          res.relative_error.tolist()))]
    return View(_wrap(_table(["input", "sum of IG", "f(x) - f(baseline)", "|gap|", "relative gap"], rows),
                      f"IG completeness ({res.n_steps} steps)"), None, str(res))


def randomization(res) -> View:
    """A :class:`~vision_interp.attribution.sanity.RandomizationResult`: rank correlation as layers are randomised."""
    _result(res, "RandomizationResult", "res")
    rows = [[_e(name), _num(c, "+.3f"), _bar(c, 1.0)] for name, c in zip(res.layers, res.mean)]
    return View(_wrap(_table(["randomised up to", "mean Spearman", ""], rows),
                      f"cascading randomization ({res.method})"), None, str(res).splitlines()[0])


# --- circuits ---------------------------------------------------------------------------------------------


def weights(w: torch.Tensor, *, src: str | None = None, dst: str | None = None, max_rows: int = 32,
            max_cols: int = 32) -> View:
    """Kernels (C_out, C_in, kh, kw) (what ``direct_weights``/``expanded_weights`` return): a row per output
    channel, a column per input channel, one diverging scale with its colour bar."""
    from .circuits.diagram import kernel_grid

    t = _values(w, "w")
    if t.ndim == 2:
        t = t[:, :, None, None]
    if t.ndim != 4 or 0 in t.shape:
        raise InputError(f"w: shape {tuple(t.shape)}; weights must be (C_out, C_in, kh, kw) or (C_out, C_in), non-empty")
    _opt_str(src, "src")
    _opt_str(dst, "dst")
    max_rows = check_int(max_rows, "max_rows", minimum=1)
    max_cols = check_int(max_cols, "max_cols", minimum=1)
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
    if not isinstance(conn, Mapping):
        raise InputTypeError(f"conn: expected the dict top_connections() returns, got {type(conn).__name__}")
    for key in ("unit", "layer", "direction", "excitatory", "inhibitory"):
        if key not in conn:
            raise InputError(f"conn: connections() needs the dict top_connections() returns; {key!r} is missing")
    if conn["direction"] not in ("inputs", "outputs"):
        raise InputError(f"conn: direction {conn['direction']!r}; expected 'inputs' or 'outputs'")
    if model is not None:
        from .errors import check_model

        check_model(model)
    _check_pictures_arg(pictures)
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

    _result(groups, "NeuronGroups", "groups")
    k = check_int(k, "k", minimum=1)
    if image is not None:
        image = as_pictures(image, "image")[0]
    g = groups.groups if groups.groups.ndim == 3 else groups.groups[0]
    vmax = float(g.max()) or 1.0
    figs = []
    for i, m in enumerate(g):
        if image is not None:
            pic = vimg.overlay(image, m, alpha=0.85, vmax=vmax)
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
    _result(top, "TopExamples", "top")
    per_channel = check_int(per_channel, "per_channel", minimum=1)
    if dataset is not None:
        dataset = as_pictures(dataset, "dataset")
        if top.indices.numel() and int(top.indices.max()) >= len(dataset):
            raise InputError(f"dataset: {len(dataset)} images, but the examples index image {int(top.indices.max())}; "
                             "give the dataset the examples were found in")
    if model is not None:
        from .errors import check_model

        check_model(model)
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
                img = dataset[idx]
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
    _result(d, "Dictionary", "d")
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
    from .checks import check_index
    from .data.examples import top_activating
    from .errors import check_model
    from .features import attached

    _result(d, "Dictionary", "d")
    check_model(model)
    k = check_int(k, "k", minimum=1)
    if features is not None and (isinstance(features, (str, bytes)) or not isinstance(features, Sequence)):
        raise InputTypeError(f"features: expected a list of feature ids, got {type(features).__name__}")
    feats = list(range(min(8, d.n_features))) if features is None else [
        check_index(f, f"features: item {i}", minimum=0, maximum=d.n_features - 1) for i, f in enumerate(features)]
    if not feats:
        raise InputError("features: an empty list; give at least one feature id")
    if isinstance(dataset, torch.Tensor):
        from .checks import check_images

        check_images(dataset, model, arg="dataset", allow_single=False)
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

    window = check_int(window, "window", minimum=1)
    _result(report, "InductionReport", "report")

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

    _result(g, "AttributionGraph", "g")
    threshold = check_number(threshold, "threshold", minimum=0.0, maximum=1.0, strict_min=True)
    max_edges = check_int(max_edges, "max_edges", minimum=1)

    doc = {**graph_json(g, threshold, max_edges=max_edges), "source": "attribution graph", "target": g.target}
    key = ("<div style='margin:4px 0'>Red edges raise their target, blue edges lower it; node size: influence on the "
           "logit. Grey: input groups, green: features, orange: error nodes, purple: the logit.</div>")
    body = f"<div style='margin:2px 0'>{graph_head(doc)}</div>{key}<div style='max-width:960px'>{graph_svg(doc, max_edges=max_edges)}</div>"
    return View(_wrap(body, f"attribution graph for logit {g.target}"), None, _graph_text(g))


def _graph_text(g) -> str:
    kinds = g.kinds()
    return (f"AttributionGraph(target {g.target}, logit {g.logit:.4g}; {len(kinds)} nodes: {kinds.count('feature')} features, "
            f"{kinds.count('error')} error, {kinds.count('pixels') + kinds.count('activation')} input groups; sum-rule residual {g.sum_rule_residual():.1e})")


# --- galleries and universality ----------------------------------------------------------------------------------

MAX_GALLERY_THUMBS = 12


def gallery(res, *, max_units: int = MAX_GALLERY_THUMBS) -> View:
    """A :class:`~vision_interp.gallery.plan.GalleryResult`: what the call did (rendered, resumed, seconds), the
    layers of its manifest, and the first ``max_units`` units' pictures (the files the gallery wrote, embedded so
    the view travels with the notebook), with the path of the site's index."""
    _result(res, "GalleryResult", "res")
    max_units = check_int(max_units, "max_units", minimum=0)
    m = res.manifest or {}
    state = "complete" if res.complete else "incomplete (jobs left: run it again to resume)"
    head = (f"<div style='margin:2px 0'>{_e(state)}: {res.rendered_units} units rendered by this call, {res.skipped_units} "
            f"already there; {res.seconds:.1f} s. Site: <code>{_e(res.index)}</code></div>")
    layers = m.get("layers") or []
    table = _table(["layer", "units", "shape"], [[_e(l.get("name")), _e(l.get("units")), _e(" x ".join(map(str, l.get("shape") or [])))]
                                                 for l in layers]) if layers else ""
    labels, figs = m.get("labels") or {}, []
    for unit, e in list((m.get("units") or {}).items())[:max_units]:
        main = (e.get("files") or {}).get("main")
        path = Path(res.out_dir) / main if main else None
        if path is None or not path.is_file():
            continue
        name = (labels.get(unit) or {}).get("name")
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        figs.append(f"<figure style='{_FIG}'><img src='{src}' alt='{_e(unit)}' "
                    f"style='image-rendering:pixelated;display:block;width:96px;height:96px'><figcaption style='{_CAP.format(w=96)}'>{_e(unit)}"
                    + (f"<br>{_e(name)}" if name else "") + "</figcaption></figure>")
    shown = f"<div>{''.join(figs)}</div>" if figs else "<div style='margin:4px 0'>No unit pictures in the manifest.</div>"
    return View(_wrap(head + table + shown, f"gallery {Path(res.out_dir).name}"), None, _gallery_text(res))


def _gallery_text(res) -> str:
    units = len((res.manifest or {}).get("units") or {})
    return (f"GalleryResult({Path(res.out_dir).name}: {'complete' if res.complete else 'incomplete'}, {units} units; "
            f"{res.rendered_units} rendered, {res.skipped_units} resumed, {res.seconds:.1f} s)")


def universality(res) -> View:
    """A :class:`~vision_interp.universality.study.UniversalityResult`: per layer, the median best match between
    models and against each control, the share of units matched in every other model, one-to-one medians, and
    whether the models agree more than with the controls (the report's rule, ``universality.report.MARGIN``)."""
    from .universality.report import MARGIN

    _result(res, "UniversalityResult", "res")
    t = res.config.threshold
    rows = []
    for name, lm in res.layers.items():
        best = lm.best_match_values().double()
        med = float(best.median()) if len(best) else float("nan")
        one = lm.assigned_values().double()
        ctrl = {c: float(lm.control_best_values(c).double().median()) for c in lm.control_names()}
        margin = min((med - v for v in ctrl.values()), default=None)
        verdict = "no controls" if margin is None else ("above chance" if margin >= MARGIN else "not above chance")
        rows.append([_e(name), _e(len(lm.models)), f"{_num(med, '.3f')} {_bar(med, 1.0)}",
                     _num(float(one.median()) if len(one) else float('nan'), ".3f"),
                     f"{lm.fraction_universal(t):.1%}", _e(", ".join(f"{c} {v:.3f}" for c, v in ctrl.items()) or "none"),
                     _e(verdict if margin is None else f"{verdict} (margin {margin:+.3f})")])
    table = _table(["layer", "models", "best match (median)", "one-to-one (median)", f"matched in all others (r >= {t:g})",
                    "controls (median best match)", "verdict"], rows)
    note = (f"<div style='margin:2px 0'>Correlation of unit activations on {res.config.images} images, each unit's best "
            f"match in every other model; controls are models that should not match. The verdict asks for a margin of "
            f"{MARGIN:g} over every control.</div>")
    return View(_wrap(note + table, "universality"), None, _universality_text(res))


def _universality_text(res) -> str:
    parts = []
    for name, lm in res.layers.items():
        best = lm.best_match_values().double()
        parts.append(f"{name} median best match {float(best.median()):.3f}" if len(best) else f"{name}: no pairs")
    return f"UniversalityResult({len(next(iter(res.layers.values())).models) if res.layers else 0} models; {'; '.join(parts)})"


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
    "GalleryResult": gallery,
    "UniversalityResult": universality,
}
_TEXTS: dict[str, Callable[[Any], str]] = {
    "RenderResult": _featvis_text,
    "LayerAttribution": _layer_attribution_text,
    "NeuronGroups": _groups_text,
    "TopExamples": _examples_text,
    "Dictionary": _dictionary_text,
    "InductionReport": _induction_text,
    "AttributionGraph": _graph_text,
    "GalleryResult": _gallery_text,
    "UniversalityResult": _universality_text,
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
        return images(obj, **kwargs)
    return _handler(_VIEWS, obj)(obj, *more, **kwargs)
