"""Pictures of weights: kernel grids and circuit diagrams (PNG + HTML) like the Circuits thread's.

Colours follow the package convention (:func:`vision_interp.images.diverging`): red positive,
blue negative, white zero, one symmetric scale per picture so kernels are comparable.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_number
from ..images import diverging, make_grid, save_png, upscale
from ..units import parse_unit, resolve_layer, resolve_unit
from .graph import LinearizationError
from .weights import expanded_weights, previous_layer, rank_connections

__all__ = ["kernel_grid", "save_kernel_grid", "circuit_diagram", "Thumbnails"]

# a mapping "layer:channel" -> image (C, H, W), or a callable (layer, channels) -> images (N, C, H, W)
Thumbnails = Union[Mapping[str, torch.Tensor], Callable[[str, list], torch.Tensor], None, bool]

RED, BLUE, GRAY = (0.85, 0.1, 0.1), (0.1, 0.25, 0.85), (0.6, 0.6, 0.6)


def kernel_grid(weights: torch.Tensor, *, scale: int = 4, vmax: float | None = None, pad: int = 1) -> torch.Tensor:
    """Kernels ``(C_out, C_in, kh, kw)`` as one RGB image: a row per output channel, a column per
    input channel, on one diverging scale (``vmax`` default: the largest |weight|)."""
    check_int(scale, "scale", minimum=1)
    check_int(pad, "pad", minimum=0)
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights: expected a torch.Tensor of kernels (C_out, C_in, kh, kw), got {type(weights).__name__}")
    if not weights.is_floating_point():
        weights = weights.float()
    if weights.numel() and not bool(torch.isfinite(weights).all()):
        raise ValueError(f"weights: {int((~torch.isfinite(weights)).sum())} NaN or infinite value(s); nothing is drawn from them")
    if vmax is not None:
        vmax = check_number(vmax, "vmax", minimum=0.0, strict_min=True)
    if weights.ndim == 2:
        weights = weights[None, None]
    elif weights.ndim == 3:
        weights = weights[None]
    if weights.ndim != 4:
        raise ValueError(f"weights: kernel_grid needs (C_out, C_in, kh, kw) weights, got shape {tuple(weights.shape)}")
    c_out, c_in = weights.shape[:2]
    vmax = float(vmax) if vmax is not None else float(weights.abs().max())
    tiles = upscale(diverging(weights.detach().float().cpu().reshape(c_out * c_in, *weights.shape[2:]), vmax), scale)
    return make_grid(tiles, ncols=c_in, pad=pad, pad_value=0.85)


def save_kernel_grid(weights: torch.Tensor, path: str | os.PathLike, *, scale: int = 4, vmax: float | None = None) -> Path:
    """Write :func:`kernel_grid` as a PNG (atomically)."""
    return save_png(kernel_grid(weights, scale=scale, vmax=vmax), path)


def _frame(img: torch.Tensor, rgb: tuple[float, float, float], width: int = 3) -> torch.Tensor:
    img = img.expand(3, -1, -1) if img.shape[0] == 1 else img
    out = torch.tensor(rgb, dtype=img.dtype).view(3, 1, 1).repeat(1, img.shape[1] + 2 * width, img.shape[2] + 2 * width)
    out[:, width:-width, width:-width] = img
    return out


def _resize(img: torch.Tensor, size: int, nearest: bool) -> torch.Tensor:
    img = img.detach().float().cpu()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    mode = "nearest" if nearest else "bilinear"
    kw = {} if nearest else {"align_corners": False}
    return F.interpolate(img[None], size=(size, size), mode=mode, **kw)[0].clamp(0, 1)


def _load_thumbnails(model: nn.Module, units: Sequence[str], thumbnails: Thumbnails, dataset: torch.Tensor | None,
                     featvis_kwargs: dict, progress: bool) -> dict[str, torch.Tensor]:
    """Images for ``units`` from a mapping, a callable, feature visualization, or (if featvis is
    unavailable) the receptive-field patch of each unit's top-activating dataset image."""
    if thumbnails is False:
        return {}
    by_layer: dict[str, list[int]] = {}
    for u in units:
        p = parse_unit(u)
        by_layer.setdefault(p.layer, []).append(p.channel)
    if isinstance(thumbnails, Mapping):
        missing = [u for u in units if u not in thumbnails]
        if missing:
            raise KeyError(f"thumbnails has no image for {', '.join(missing)}")
        return {u: torch.as_tensor(thumbnails[u]) for u in units}
    out: dict[str, torch.Tensor] = {}
    if callable(thumbnails):
        fn = thumbnails
    else:
        try:
            from ..featvis import visualize_layer
        except ImportError:
            visualize_layer = None
        if visualize_layer is not None:
            def fn(layer: str, chans: list) -> torch.Tensor:
                return visualize_layer(model, layer, chans, progress=progress, **featvis_kwargs).images
        elif dataset is not None:
            fn = _dataset_patches(model, dataset)
        else:
            raise ValueError("feature visualization is not available; pass thumbnails=... or dataset=images")
    for layer, chans in by_layer.items():
        imgs = fn(layer, chans)
        if len(imgs) != len(chans):
            raise ValueError(f"thumbnail source returned {len(imgs)} images for {len(chans)} channels of {layer!r}")
        for c, im in zip(chans, imgs):
            out[f"{layer}:{c}"] = im
    return out


def _dataset_patches(model: nn.Module, dataset: torch.Tensor) -> Callable[[str, list], torch.Tensor]:
    from ..data.examples import crop_patches, receptive_field, top_activating

    def fn(layer: str, chans: list) -> torch.Tensor:
        top = top_activating(model, layer, dataset, k=1, channels=chans)
        idx = top.indices[:, 0].clamp_min(0)
        imgs = dataset[idx]
        if top.positions is None:
            return imgs
        rf = receptive_field(model, layer, tuple(dataset.shape[1:]))
        return crop_patches(imgs, top.positions[:, 0], rf)

    return fn


def circuit_diagram(
    model: nn.Module,
    unit,
    out_dir: str | os.PathLike,
    k: int = 4,
    *,
    layer: str | None = None,
    thumbnails: Thumbnails = None,
    dataset: torch.Tensor | None = None,
    featvis_kwargs: dict | None = None,
    size: int = 96,
    input_shape: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Draw ``unit`` with its ``k`` strongest excitatory and ``k`` strongest inhibitory inputs from
    ``layer`` (default: the previous layer of units), each input's picture above the expanded
    weight kernel that connects it to ``unit``; red frames excite, blue frames inhibit.

    ``thumbnails``: a mapping ``"layer:channel" -> image``, a callable ``(layer, channels) -> images``,
    None (feature visualization via :func:`vision_interp.featvis.visualize_layer`, with
    ``featvis_kwargs``; falls back to ``dataset`` patches if featvis is missing), or False (kernels only).
    Writes ``circuit_<unit>.png``, ``circuit_<unit>.html`` and the parts under ``<out_dir>/parts``;
    returns ``{"png": ..., "html": ..., "json": ...}``.
    """
    from ..io import atomic_write_text, save_json

    check_int(k, "k", minimum=1)
    check_int(size, "size", minimum=8)
    if isinstance(out_dir, bytes) or not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir: expected a folder path (str or os.PathLike), got {type(out_dir).__name__}")
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer: expected a layer name (str) or None, got {type(layer).__name__}")
    if featvis_kwargs is not None and not isinstance(featvis_kwargs, Mapping):
        raise TypeError(f"featvis_kwargs: expected a dict of feature-visualization options, got {type(featvis_kwargs).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected True or False, got {type(progress).__name__}")
    if not (thumbnails is None or isinstance(thumbnails, (bool, Mapping)) or callable(thumbnails)):
        raise TypeError(f"thumbnails: expected a mapping 'layer:channel' -> image, a callable, None or False, got "
                        f"{type(thumbnails).__name__}")
    u = resolve_unit(model, unit, input_shape, single_channel=True)
    name = u.name or u.layer
    target = f"{name}:{u.channel}"
    src = layer or previous_layer(model, u.layer, input_shape=input_shape)
    try:
        kernels = expanded_weights(model, src, u.layer, dst_channels=[u.channel], input_shape=input_shape)[0]
    except LinearizationError as e:
        def fmt(a: str, b: str) -> str:
            same = resolve_layer(model, b) == u.layer
            return f"circuit_diagram(model, {target!r}, out_dir, layer={a!r})" if same else f"expanded_weights(model, {a!r}, {b!r})"

        raise e.with_alternatives(f"circuit_diagram of {target} from {src!r}", e.alternatives, fmt) from None
    ranked = rank_connections(kernels, src, k)
    inputs = [(unit_s, s, "excitatory") for unit_s, s in ranked["excitatory"]]
    inputs += [(unit_s, s, "inhibitory") for unit_s, s in ranked["inhibitory"]]
    if not inputs:
        raise ValueError(f"{target} has no non-zero weights from {src!r}")
    wanted = list(dict.fromkeys([i[0] for i in inputs] + [target]))
    thumbs = _load_thumbnails(model, wanted, thumbnails, dataset, featvis_kwargs or {}, progress)

    out = Path(out_dir)
    slug = target.replace(":", "_").replace("/", "_")
    parts = out / "parts"
    vmax = float(kernels.abs().max()) or 1.0
    blank = torch.ones(3, size, size)
    top_row, bottom_row, rows_html = [], [], []
    for unit_s, strength, kind in inputs:
        c = int(unit_s.rsplit(":", 1)[1])
        colour = RED if kind == "excitatory" else BLUE
        kern = _resize(diverging(kernels[c].float().cpu(), vmax), size, nearest=True)
        thumb = _resize(thumbs[unit_s], size, nearest=False) if unit_s in thumbs else blank
        top_row.append(_frame(thumb, colour))
        bottom_row.append(_frame(kern, GRAY, 1))
        stem = f"{kind[:3]}_{unit_s.replace(':', '_')}"
        kpath = save_png(kern, parts / f"{slug}_{stem}_kernel.png")
        tpath = save_png(thumb, parts / f"{slug}_{stem}_thumb.png") if unit_s in thumbs else None
        rows_html.append((unit_s, strength, kind, kpath, tpath))
    target_img = _resize(thumbs[target], size, nearest=False) if target in thumbs else blank
    top_row.append(_frame(target_img, (0.1, 0.1, 0.1)))
    bottom_row.append(_frame(blank, (1.0, 1.0, 1.0), 1))
    bottom_row = [F.pad(b, [(top_row[0].shape[-1] - b.shape[-1]) // 2] * 2 + [(top_row[0].shape[-2] - b.shape[-2]) // 2] * 2, value=1.0)
                  for b in bottom_row]
    png = save_png(make_grid(top_row + bottom_row, ncols=len(top_row), pad=6), out / f"circuit_{slug}.png")
    target_path = save_png(target_img, parts / f"{slug}_target.png") if target in thumbs else None

    def rel(p: Path | None) -> str:
        return html.escape(os.path.relpath(p, out), quote=True) if p is not None else ""

    esc = html.escape
    cells = []
    for unit_s, strength, kind, kpath, tpath in rows_html:
        colour = "#d91a1a" if kind == "excitatory" else "#1a40d9"
        img = f'<img src="{rel(tpath)}" alt="{esc(unit_s, quote=True)}" width="{size}">' if tpath else ""
        cells.append(
            f'<div class="cell" style="border-color:{colour}">{img}'
            f'<img class="k" src="{rel(kpath)}" alt="weights {esc(unit_s, quote=True)}" width="{size}">'
            f"<div>{esc(unit_s)}</div><div>{esc(kind)} {strength:+.4g}</div></div>"
        )
    tgt = f'<img src="{rel(target_path)}" alt="{esc(target, quote=True)}" width="{size * 2}">' if target_path else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>circuit {esc(target)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.cell {{ border: 3px solid; padding: 4px; text-align: center; font-size: 12px; }}
.cell img {{ display: block; image-rendering: pixelated; margin-bottom: 3px; }}
.target {{ margin-top: 1.5em; }}
</style></head><body>
<h1>Circuit for {esc(target)}</h1>
<p>Strongest inputs from <code>{esc(src)}</code> by expanded-weight norm (positive part: excitatory,
red; negative part: inhibitory, blue). Kernels share one colour scale (|w| max {vmax:.4g}); ReLUs are
treated as identity, max pooling as average pooling, local response normalisation is skipped.</p>
<div class="row">{''.join(cells)}</div>
<div class="target"><h2>{esc(target)}</h2>{tgt}</div>
</body></html>
"""
    page_path = atomic_write_text(out / f"circuit_{slug}.html", page)
    meta = save_json(out / f"circuit_{slug}.json", {"unit": target, "layer": src, **ranked, "vmax": vmax})
    return {"png": png, "html": page_path, "json": meta}
