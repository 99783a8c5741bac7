"""Pictures of the induction report, each on a fixed, stated colour scale with a colourbar.

Fixed scales (never autoscaled, so two models or two runs can be compared by eye):

* attention-pattern scores, copying shares, attention probabilities: ``0 .. 1`` (white -> red);
* the copying eigenvalue ratio: ``-1 .. +1`` (blue -> white -> red);
* loss changes (exact ablation, attribution patching): symmetric log scale, linear within +-0.01 nats,
  saturating at +-5 nats, so a 0.2-nat induction head and a 4-nat previous-token head are both visible;
* composition: ``0 .. 4`` times the random-matrix baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..images import save_figure

__all__ = ["SCALES", "score_grid", "loss_curve", "attention_windows", "composition_graph"]

# name -> (vmin, vmax, colour map, norm kind, text for the page)
SCALES = {
    "unit": (0.0, 1.0, "Reds", "linear", "linear 0 to 1"),
    "signed_unit": (-1.0, 1.0, "RdBu_r", "linear", "linear -1 to +1, white at 0"),
    "loss": (-5.0, 5.0, "RdBu_r", "symlog", "symmetric log, linear within +-0.01 nats, +-5 nats at the ends"),
    "chance": (0.0, 4.0, "Reds", "linear", "linear 0 to 4 times the random-matrix baseline"),
}
LOSS_LINTHRESH = 0.01


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _norm(scale: str):
    from matplotlib.colors import Normalize, SymLogNorm

    vmin, vmax, _cmap, kind, _ = SCALES[scale]
    if kind == "symlog":
        return SymLogNorm(linthresh=LOSS_LINTHRESH, vmin=vmin, vmax=vmax, base=10)
    return Normalize(vmin=vmin, vmax=vmax)


def score_grid(arr: np.ndarray, path: Path, *, title: str, scale: str, row_label: str = "layer") -> Path:
    """A layer x head grid with every value written in its cell; NaN cells stay grey."""
    plt = _plt()
    a = np.asarray(arr, dtype=np.float64)
    L, H = a.shape
    fig, ax = plt.subplots(figsize=(max(3.5, 0.6 * H + 2.0), max(2.2, 0.45 * L + 1.4)), layout="constrained")
    cmap = plt.get_cmap(SCALES[scale][2]).with_extremes(bad="#dddddd")
    norm = _norm(scale)
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, norm=norm, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel(row_label)
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_title(title, fontsize=9)
    if L * H <= 400:
        for i in range(L):
            for j in range(H):
                if np.isfinite(a[i, j]):
                    dark = norm(a[i, j]) > 0.75 or norm(a[i, j]) < 0.25 if scale in ("signed_unit", "loss") else norm(a[i, j]) > 0.6
                    ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=6 if H > 8 else 7,
                            color="white" if dark else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.ax.tick_params(labelsize=7)
    return save_figure(fig, path, dpi=110, colors=None)


def loss_curve(position_loss: np.ndarray, seq_len: int, path: Path, *, uniform: float, title: str) -> Path:
    """Mean next-token loss at every position of ``[BOS] + R + R``: the first copy is unpredictable, the second
    copy is where induction lowers it. ``position_loss[t]`` is the loss of predicting token ``t+1``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    t = np.arange(1, len(position_loss) + 1)  # position of the predicted token
    ax.axvspan(0.5, seq_len + 0.5, color="#eeeeee", label="first copy")
    ax.axvspan(seq_len + 0.5, 2 * seq_len + 0.5, color="#e3eefc", label="second copy")
    ax.plot(t, position_loss, color="black", linewidth=1.2, label="mean loss over the batch")
    ax.axhline(uniform, color="tab:red", linestyle="--", linewidth=0.8, label=f"uniform prediction ln(vocab) = {uniform:.2f}")
    ax.set_xlim(0.5, 2 * seq_len + 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("position of the predicted token (1..seq_len: first copy)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncol=2)
    return save_figure(fig, path, dpi=110, colors=None)


def attention_windows(panels: Sequence[tuple[str, np.ndarray]], path: Path, *, seq_len: int,
                      key_labels: Sequence[str], query_labels: Sequence[str], first_query: int, title: str) -> Path:
    """Stacked attention windows (``queries x all keys``), one panel per (title, pattern window), shared
    ``0..1`` colour scale. Circles mark the induction key ``q - (seq_len - 1)`` of every query ``q``."""
    plt = _plt()
    n = len(panels)
    T = panels[0][1].shape[1]
    nq = panels[0][1].shape[0]
    fig, axes = plt.subplots(n, 1, figsize=(max(8.0, 0.12 * T + 2.0), n * (0.16 * nq + 1.6)), squeeze=False,
                             layout="constrained")
    norm = _norm("unit")
    im = None
    for ax, (name, p) in zip(axes[:, 0], panels):
        im = ax.imshow(p, cmap="Reds", norm=norm, aspect="auto", interpolation="nearest")
        q = np.arange(first_query, first_query + nq)
        ax.scatter(q - (seq_len - 1), np.arange(nq), s=22, facecolors="none", edgecolors="tab:blue", linewidths=0.7,
                   label="induction key q-(seq_len-1)")
        ax.axvline(seq_len + 0.5, color="gray", linewidth=0.6)
        ax.set_title(name, fontsize=8, loc="left")
        ax.set_xticks(range(T))
        ax.set_xticklabels(key_labels, rotation=90, fontsize=4.5)
        ax.set_yticks(range(nq))
        ax.set_yticklabels(query_labels, fontsize=5)
        ax.set_ylabel("query", fontsize=7)
    axes[0, 0].legend(fontsize=6, loc="upper left")
    axes[-1, 0].set_xlabel("key (position: token)", fontsize=7)
    fig.suptitle(title, fontsize=9)
    cb = fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01)
    cb.set_label("attention probability (0..1)", fontsize=7)
    return save_figure(fig, path, dpi=120, colors=None)


def composition_graph(sources: Sequence[tuple[int, int]], targets: Sequence[tuple[int, int]],
                      k_chance: np.ndarray, path: Path, *, n_layer: int, n_head: int, title: str) -> Path:
    """Heads on a layer x head lattice; an arrow from every previous-token head to every induction head,
    its width and label the K-composition in multiples of chance (``k_chance[l1, h1, l2, h2]``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * n_head + 2), max(3.0, 0.6 * n_layer + 1.5)), layout="constrained")
    hl = set(sources) | set(targets)
    for l in range(n_layer):
        for h in range(n_head):
            if (l, h) not in hl:
                ax.plot(h, l, "o", color="#cccccc", markersize=4)
    for l, h in sources:
        ax.plot(h, l, "s", color="tab:orange", markersize=10)
    for l, h in targets:
        ax.plot(h, l, "o", color="tab:red", markersize=10)
    for l1, h1 in sources:
        for l2, h2 in targets:
            if l1 >= l2:
                continue
            v = float(k_chance[l1, h1, l2, h2])
            ax.annotate("", xy=(h2, l2), xytext=(h1, l1),
                        arrowprops=dict(arrowstyle="-|>", color="tab:blue", alpha=0.7, lw=0.5 + 1.2 * max(0.0, v - 1),
                                        shrinkA=7, shrinkB=7))
            ax.text((h1 + h2) / 2, (l1 + l2) / 2, f"{v:.1f}x", fontsize=7, color="tab:blue", ha="center",
                    va="center", bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    ax.plot([], [], "s", color="tab:orange", label="previous-token head")
    ax.plot([], [], "o", color="tab:red", label="induction head")
    ax.set_xlim(-0.7, n_head - 0.3)
    ax.set_ylim(n_layer - 0.5, -0.7)
    ax.set_xticks(range(n_head))
    ax.set_yticks(range(n_layer))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, dpi=110, colors=None)
