"""Labelled figures for the exercise report: tiles from :mod:`vision_interp.images`, labels from matplotlib.

Every PNG is written by :func:`vision_interp.images.save_png` (atomic, compressed); matplotlib
only draws axes and text around pictures that ``images`` made (red positive, blue negative).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import images as vimg
from ..images import save_figure

__all__ = ["tile", "signed_tile", "save_figure", "labeled_grid", "heatmap", "bar_comparison"]


def tile(img: torch.Tensor, size: int = 28) -> torch.Tensor:
    """One image (C, H, W) or (H, W) enlarged with nearest neighbours to ``size`` x ``size``."""
    t = img.detach().cpu().float()
    if t.ndim == 2:
        t = t[None]
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t[None], size=(size, size), mode="nearest")[0]
    return t


def signed_tile(values: torch.Tensor, size: int = 28, vmax: float | None = None) -> torch.Tensor:
    """A signed map (H, W) as an RGB tile in the package's diverging colours."""
    v = values.detach().cpu().float()
    while v.ndim > 2:
        v = v.sum(0)
    return tile(vimg.diverging(v, vmax), size)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def labeled_grid(
    rows: Sequence[Sequence[torch.Tensor]],
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    size: int = 28,
    pad: int = 2,
    pixel_scale: float = 2.0,
) -> Path:
    """A table of image tiles (rows x columns) with row and column labels, saved as PNG."""
    plt = _plt()
    ncols = max(len(r) for r in rows)
    blank = torch.ones(3, size, size)
    flat = []
    for r in rows:
        r = [tile(t, size) for t in r] + [blank] * (ncols - len(r))
        flat.extend(x.expand(3, -1, -1) if x.shape[0] == 1 else x for x in r)
    grid = vimg.make_grid(torch.stack(flat), ncols=ncols, pad=pad)
    h, w = grid.shape[1:]
    dpi = 100
    fig = plt.figure(figsize=(w * pixel_scale / dpi + 1.6, h * pixel_scale / dpi + 0.7), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(vimg.to_numpy_image(grid), interpolation="nearest")
    step = size + pad
    ax.set_xticks([pad + j * step + size / 2 for j in range(ncols)])
    ax.set_xticklabels(list(col_labels) + [""] * (ncols - len(col_labels)), fontsize=8, rotation=0)
    ax.xaxis.tick_top()
    ax.set_yticks([pad + i * step + size / 2 for i in range(len(rows))])
    ax.set_yticklabels(row_labels, fontsize=8)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10, pad=18)
    return save_figure(fig, path)


def heatmap(
    matrix: np.ndarray,
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    signed: bool = True,
    fmt: str = "{:.2f}",
    highlight: Sequence[tuple[int, int]] = (),
) -> Path:
    """An annotated matrix (signed: red/blue around zero; unsigned: white to dark)."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(0.45 * m.shape[1] + 1.8, 0.4 * m.shape[0] + 1.2), dpi=100)
    if signed:
        vmax = float(np.nanmax(np.abs(m))) or 1.0
        rgb = vimg.diverging(torch.as_tensor(m), vmax).permute(1, 2, 0).numpy()
        ax.imshow(rgb, interpolation="nearest", aspect="auto")
    else:
        ax.imshow(m, cmap="Greys", interpolation="nearest", aspect="auto", norm=_log_norm(m))
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            strong = abs(m[i, j]) > 0.6 * (np.nanmax(np.abs(m)) or 1)
            ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=6.5,
                    color="white" if (strong and not signed) else "black")
    for i, j in highlight:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.6))
    ax.set_xticks(range(m.shape[1]))
    ax.set_xticklabels(col_labels, fontsize=7)
    ax.set_yticks(range(m.shape[0]))
    ax.set_yticklabels(row_labels, fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def _log_norm(m: np.ndarray):
    from matplotlib.colors import LogNorm

    pos = m[m > 0]
    return LogNorm(vmin=max(pos.min(), 1e-3) if pos.size else 1e-3, vmax=max(m.max(), 1.0))


def bar_comparison(
    labels: Sequence[str],
    named: Sequence[float],
    control_mean: Sequence[float],
    control_std: Sequence[float],
    path: str | os.PathLike,
    *,
    title: str,
    ylabel: str,
    named_label: str = "named channels",
    control_label: str = "random channels (mean +- sd)",
) -> Path:
    """Grouped bars: the named ablation next to its random-control distribution, per group."""
    plt = _plt()
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(labels) + 2), 2.8), dpi=100)
    ax.bar(x - 0.2, named, 0.4, label=named_label, color="#c0392b")
    ax.bar(x + 0.2, control_mean, 0.4, yerr=control_std, label=control_label, color="#95a5a6", capsize=2)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.tick_params(labelsize=7)
    return save_figure(fig, path)


def tuning_curves(angles: Sequence[float], curves: np.ndarray, path: str | os.PathLike, *, labels: Sequence[str], title: str) -> Path:
    """Orientation tuning curves (response minus blank) of several channels, one panel each."""
    plt = _plt()
    n = len(curves)
    ncols = min(4, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 1.6 * nrows), dpi=100, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.plot(angles, curves[i], marker="o", markersize=2.5, color="#c0392b", linewidth=1)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(labels[i], fontsize=6.5)
        ax.set_xticks([0, 45, 90, 135])
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


__all__.append("tuning_curves")
