"""Large, labelled matplotlib figures for the mechanism report (every signed map gets a symmetric colourbar)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..images import save_figure

__all__ = ["panel_grid", "lines", "strip_plot", "mechanism_overview"]

DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 11})
    return plt


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().float().numpy()
    a = np.asarray(a, float)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    return a


def panel_grid(cells: Sequence[Sequence[dict | None]], path: str | os.PathLike, *, row_labels: Sequence[str] = (),
               title: str = "", cell_size: float = 2.2) -> Path:
    """A grid of image panels. Each cell: {"img": array, "signed": bool, "title": str, "under": array|None,
    "outline": list of (y, x) cells on a 7x7 grid, "vmax": float} or {"bars": values, "labels": [...]}; None = empty."""
    plt = _plt()
    nr, nc = len(cells), max(len(r) for r in cells)
    fig, axes = plt.subplots(nr, nc, figsize=(cell_size * nc * 1.25, cell_size * nr + (0.6 if title else 0)), squeeze=False, dpi=DPI)
    for i, row in enumerate(cells):
        for j in range(nc):
            ax = axes[i, j]
            cell = row[j] if j < len(row) else None
            if cell is None:
                ax.axis("off")
                continue
            if "bars" in cell:
                v = np.asarray(cell["bars"], float)
                ax.bar(range(len(v)), v, color=cell.get("color", "#555"))
                ax.set_xticks(range(len(v)))
                ax.set_xticklabels(cell.get("labels", [str(k) for k in range(len(v))]), fontsize=9)
                ax.tick_params(axis="y", labelsize=8)
            else:
                _draw(ax, fig, cell)
            ax.set_title(cell.get("title", ""), fontsize=10)
        if i < len(row_labels):
            axes[i, 0].set_ylabel(row_labels[i], fontsize=11, rotation=0, ha="right", va="center", labelpad=10)
            axes[i, 0].yaxis.set_visible(True)
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    if getattr(fig, "_shared_im", None) is not None:  # cells on one scale share one symmetric colourbar
        cb = fig.colorbar(fig._shared_im, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
        cb.ax.tick_params(labelsize=9)
    return save_figure(fig, path, colors=None)


def _draw(ax, fig, cell: dict) -> None:
    img = _np(cell["img"])
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    ext = None
    if cell.get("under") is not None:
        under = _np(cell["under"])
        ax.imshow(under, cmap="gray", vmin=0, vmax=max(float(under.max()), 1e-6), extent=(0, 28, 28, 0))
        ext = (0, 28, 28, 0)
    if cell.get("signed"):
        vmax = cell.get("vmax") or max(float(np.abs(img).max()), 1e-9)
        im = ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=ext, alpha=0.6 if ext else 1.0, interpolation="nearest")
        if cell.get("colorbar", True):
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            cb.ax.tick_params(labelsize=8)
        else:
            fig._shared_im = im
    elif img.ndim == 3:
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
    else:
        ax.imshow(img, cmap="gray", vmin=cell.get("vmin", 0.0), vmax=cell.get("vmax", 1.0), interpolation="nearest")
    for (y, x) in cell.get("outline", []):
        s = 4 if ext else 1
        ax.add_patch(__import__("matplotlib.patches", fromlist=["Rectangle"]).Rectangle((x * s, y * s), s, s, fill=False, ec="lime", lw=1.6))
    ax.set_xticks([])
    ax.set_yticks([])


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike, *, title: str, xlabel: str,
          ylabel: str, panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]] | None = None) -> Path:
    """Line plots; ``panels`` = {panel title: {label: (x, y)}} draws one subplot per panel."""
    plt = _plt()
    panels = panels or {title: series}
    n = len(panels)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.2 * cols, 7.5), max(3.4 * rows, 5.0)), squeeze=False, dpi=DPI)
    for k, (pt, ser) in enumerate(panels.items()):
        ax = axes[k // cols, k % cols]
        for lab, (xs, ys) in ser.items():
            ax.plot(xs, ys, marker="o", ms=3, label=lab)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(pt, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].axis("off")
    if n > 1:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return save_figure(fig, path, colors=None)


def strip_plot(labels: Sequence[str], named: Sequence[float], controls: Sequence[Sequence[float]], verdicts: Sequence[str],
               path: str | os.PathLike, *, title: str, ylabel: str) -> Path:
    """Each clause: its effect (coloured by verdict) over the spread of its random controls (grey dots)."""
    plt = _plt()
    colors = {"supported": "#1a9850", "not established": "#fdae61", "refuted": "#d73027"}
    fig, ax = plt.subplots(figsize=(max(10, 0.45 * len(labels)), 5.5), dpi=DPI)
    rng = np.random.default_rng(0)
    for i, (v, ctrl) in enumerate(zip(named, controls)):
        c = np.asarray(ctrl, float)
        ax.scatter(i + rng.uniform(-0.25, 0.25, len(c)), c, s=4, color="#999", alpha=0.6)
        ax.scatter([i], [v], s=60, marker="D", color=colors.get(verdicts[i], "k"), zorder=3)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=70, fontsize=9)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for name, col in colors.items():
        ax.scatter([], [], marker="D", color=col, label=name)
    ax.scatter([], [], s=6, color="#999", label="random controls")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, colors=None)


def annotated_heatmap(values: np.ndarray, path: str | os.PathLike, *, row_labels: Sequence[str], col_labels: Sequence[str],
                      title: str, xlabel: str, ylabel: str, fmt: str = "{:+.1f}", counts: bool = False) -> Path:
    """A signed matrix with its numbers written in the cells and a symmetric colourbar (``counts``: a
    non-negative matrix on a log grey scale instead)."""
    plt = _plt()
    v = np.asarray(values, float)
    vmax = max(float(np.abs(v).max()), 1e-9)
    fig, ax = plt.subplots(figsize=(max(0.75 * v.shape[1] + 2.5, 7), max(0.6 * v.shape[0] + 1.8, 6)), dpi=DPI)
    if counts:
        from matplotlib.colors import LogNorm

        im = ax.imshow(v + 1, cmap="Greys", norm=LogNorm(vmin=1, vmax=vmax + 1))
    else:
        im = ax.imshow(v, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            ax.text(j, i, fmt.format(v[i, j]), ha="center", va="center", fontsize=8, color="white" if abs(v[i, j]) > 0.6 * vmax else "black")
    ax.set_xticks(range(v.shape[1]))
    ax.set_xticklabels(col_labels, rotation=60, fontsize=9)
    ax.set_yticks(range(v.shape[0]))
    ax.set_yticklabels(row_labels, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    return save_figure(fig, path, colors=None)


_SIGN = {True: ("#c62828", "-"), False: ("#1565c0", "--")}  # present: red, solid; absent: blue, dashed
_VERDICT = {"supported": "#1a9850", "not established": "#b8860b", "refuted": "#d73027"}


def mechanism_overview(panels: Sequence[dict], path: str | os.PathLike, *, ncols: int = 3) -> Path:
    """One panel per digit: its mean image (28x28, pool2 cells of 4x4 px) with each clause's cells boxed and
    joined to the clause's feature picture, which is labelled with sign, weight sum, margin and verdict.

    ``panels``: [{"title", "mean": 28x28, "clauses": [{"picture", "cells": [(y, x)], "present",
    "label", "weight", "margin" (the mean-ablation margin drop), "verdict"}]}]."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    n = len(panels)
    ncols = max(1, min(ncols, n + 1))  # one cell more than the digits: the key
    nrows = (n + ncols) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.1 * ncols, 2.3 * nrows), squeeze=False, dpi=DPI)
    for k in range(nrows * ncols):
        ax = axes[k // ncols, k % ncols]
        ax.axis("off")
        if k >= n:
            if k == n:
                _overview_key(ax)
            continue
        pn = panels[k]
        ax.imshow(_np(pn["mean"]), cmap="gray", vmin=0, vmax=1, extent=(0, 28, 28, 0), interpolation="nearest")
        ax.set_title(pn["title"], fontsize=11, loc="left")
        cl = sorted(pn["clauses"], key=lambda c: sum(y for y, _ in c["cells"]) / max(len(c["cells"]), 1))
        slot = 13.5
        top = 14 - slot * (len(cl) - 1) / 2 - 5.5
        for i, c in enumerate(cl):
            color, ls = _SIGN[bool(c["present"])]
            for (y, x) in c["cells"]:
                ax.add_patch(Rectangle((4 * x, 4 * y), 4, 4, fill=False, ec=color, lw=1.4, ls=ls))
            cy = 4 * sum(y for y, _ in c["cells"]) / len(c["cells"]) + 2
            cx = 4 * max(x for _, x in c["cells"]) + 4
            y0 = top + i * slot
            ax.imshow(_np(c["picture"]), cmap="gray", vmin=0, vmax=1, extent=(31, 42, y0 + 11, y0), interpolation="nearest")
            ax.add_patch(Rectangle((31, y0), 11, 11, fill=False, ec=color, lw=2.0, ls=ls))
            ax.plot([cx, 31], [cy, y0 + 5.5], color=color, lw=1.0, ls=ls)
            ax.text(43.5, y0 + 1.0, c["label"], fontsize=9.5, color=color, va="top", fontweight="bold")
            ax.text(43.5, y0 + 5.3, f"w {c['weight']:+.2f}  ablated {-c['margin']:+.2f}", fontsize=8.5, va="top")
            ax.text(43.5, y0 + 9.4, c["verdict"], fontsize=8.5, va="top", color=_VERDICT.get(c["verdict"], "k"))
        ax.set_xlim(-0.5, 75)
        ax.set_ylim(top + slot * len(cl) + 0.5, min(top, 0) - 0.5)
        ax.set_aspect("equal")
    fig.tight_layout(pad=0.4, w_pad=0.6, h_pad=0.8)
    return save_figure(fig, path, colors=None)


def _overview_key(ax) -> None:
    """The key of :func:`mechanism_overview`, in the first empty panel."""
    lines = [("+  present: the feature is there; weights speak for the digit", _SIGN[True][0]),
             ("−  absent: the feature is not there; weights inhibitory", _SIGN[False][0]),
             ("w: classifier-weight sum over the boxed cells", "k"),
             ("ablated: change of the digit's margin when the", "k"), ("    clause is mean-ablated", "k"),
             ("picture: mean of the channel's strongest", "k"), ("    receptive-field crops", "k")]
    for i, (t, col) in enumerate(lines):
        ax.text(0.0, 0.95 - i * 0.14, t, transform=ax.transAxes, fontsize=8.5, color=col, va="top")
