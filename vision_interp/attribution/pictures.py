"""Pictures of attributions, all drawn through :mod:`vision_interp.images`.

Convention: red = the pixel raises the target, blue = it lowers it, white = no effect; each map
is normalised on its own (largest |value| = full colour) unless a shared scale is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..checks import InputError, InputTypeError, check_int, check_matrix, check_number

from .. import images as vimg

__all__ = [
    "heatmaps",
    "overlays",
    "attribution_grid",
    "save_attribution_png",
    "class_mean_grid",
    "layer_map_overlay",
    "save_grid",
]


def heatmaps(attributions: torch.Tensor, arg: str = "attributions") -> torch.Tensor:
    """(N, C, H, W) or (C, H, W) -> (N, H, W): attributions summed over input channels."""
    check_matrix(attributions, arg, ndim=(3, 4), finite=False)
    a = attributions.detach().cpu().float()
    return (a[None] if a.ndim == 3 else a).sum(1)


def _inputs(inputs: torch.Tensor) -> torch.Tensor:
    """The pictures' inputs as a CPU float batch (N, C, H, W)."""
    check_matrix(inputs, "inputs", ndim=(3, 4))
    x = inputs.detach().cpu().float()
    return x[None] if x.ndim == 3 else x


def _alpha(alpha: float) -> float:
    return check_number(alpha, "alpha", minimum=0.0, maximum=1.0)


def _same_batch(x: torch.Tensor, maps: torch.Tensor, arg: str) -> None:
    if len(maps) != len(x):
        raise InputError(f"{arg}: {len(maps)} maps for {len(x)} inputs; give one map per input")


def overlays(inputs: torch.Tensor, attributions: torch.Tensor, alpha: float = 0.75) -> torch.Tensor:
    """(N, 3, H, W): each signed heatmap blended over its (grayed) input, normalised per image."""
    x, alpha = _inputs(inputs), _alpha(alpha)
    h = heatmaps(attributions)
    _same_batch(x, h, "attributions")
    return torch.stack([vimg.overlay(xi, hi, alpha=alpha) for xi, hi in zip(x, h)])


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def attribution_grid(inputs: torch.Tensor, attributions: torch.Tensor, *, per_row: int | None = None, alpha: float = 0.75) -> torch.Tensor:
    """One (3, H', W') picture: for each input, the input | its signed heatmap | the overlay."""
    x, alpha = _inputs(inputs), _alpha(alpha)
    if per_row is not None:
        per_row = check_int(per_row, "per_row", minimum=1)
    h = heatmaps(attributions)
    _same_batch(x, h, "attributions")
    tiles = []
    for xi, hi, oi in zip(_rgb(x), h, overlays(x, attributions, alpha)):
        tiles += [xi, vimg.diverging(hi), oi]
    n = len(x)
    per_row = per_row or min(n, 4)
    return vimg.make_grid(torch.stack(tiles), ncols=3 * per_row, pad=2)


def _default_scale(height: int) -> int:
    return max(1, 112 // height) if height < 112 else 1


def save_attribution_png(
    path: str | os.PathLike,
    inputs: torch.Tensor,
    attributions: torch.Tensor,
    *,
    per_row: int | None = None,
    scale: int | None = None,
) -> Path:
    """Write :func:`attribution_grid` as a PNG (atomically); small inputs such as MNIST are enlarged."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path: expected a file path, got {type(path).__name__}")
    if scale is not None:
        scale = check_int(scale, "scale", minimum=1, maximum=64)
    grid = attribution_grid(inputs, attributions, per_row=per_row)
    h = inputs.shape[-2]
    return vimg.save_png(grid, path, scale=scale or _default_scale(h))


def class_mean_grid(means: torch.Tensor, *, shared_scale: bool = False, ncols: int | None = None) -> torch.Tensor:
    """Per-class mean attribution maps (K, C, H, W) as a grid of signed heatmaps (class k at tile k)."""
    if not isinstance(shared_scale, bool):
        raise InputTypeError(f"shared_scale: expected True or False, got {type(shared_scale).__name__} {shared_scale!r}")
    if ncols is not None:
        ncols = check_int(ncols, "ncols", minimum=1)
    h = heatmaps(means, "means")
    vmax = float(h.abs().max()) if shared_scale else None
    tiles = torch.stack([vimg.diverging(hi, vmax) for hi in h])
    return vimg.make_grid(tiles, ncols=ncols or min(len(h), 5), pad=2)


def layer_map_overlay(inputs: torch.Tensor, spatial: torch.Tensor, alpha: float = 0.75) -> torch.Tensor:
    """(N, 3, H, W): a layer attribution's spatial map (N, h, w), upsampled and blended over each input."""
    x, alpha = _inputs(inputs), _alpha(alpha)
    check_matrix(spatial, "spatial", ndim=(2, 3))
    s = spatial.detach().cpu().float()
    if s.ndim == 2:
        s = s[None]
    _same_batch(x, s, "spatial")
    return torch.stack([vimg.overlay(xi, si, alpha=alpha) for xi, si in zip(x, s)])


def save_grid(path: str | os.PathLike, tiles: torch.Tensor | Sequence[torch.Tensor], *, ncols: int | None = None, scale: int = 1) -> Path:
    """Tile (N, C, H, W) pictures and save them as one PNG."""
    return vimg.save_png(vimg.make_grid(tiles, ncols=ncols), path, scale=scale)

