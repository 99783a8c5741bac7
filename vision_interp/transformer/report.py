"""All per-head scores of one model in one object: a ranked table, layer x head heatmaps, attention pictures, JSON.

``analyze_induction(model)`` validates the probe size, builds ``[BOS] + R + R``, runs *one* forward pass for
the attention scores, computes the weight-based scores (copying, composition) without data, and runs the
batched ablation scan. ``InductionReport.save(out_dir)`` writes every number to ``induction.json`` and the
pictures next to it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import io as vio
from ..images import save_figure
from .ablation import ABLATION_MODES, ablation_scan
from .scores import (attention_patterns, check_probe, composition_scores, copy_losses, copying_scores,
                     head_weights, pattern_scores, repeated_tokens)

__all__ = ["InductionReport", "analyze_induction", "top_heads", "format_head"]

# Ranking columns of the terminal table, in order.
TABLE_SCORES = ("induction", "previous_token", "duplicate_token", "copying", "ablation_mean", "ablation_zero")


def format_head(layer: int, head: int) -> str:
    """Heads are written ``layer.head`` (``5.1``), as in the induction-head literature."""
    return f"{layer}.{head}"


def top_heads(scores: np.ndarray, k: int = 5) -> list[tuple[int, int, float]]:
    """The ``k`` highest-scoring heads of an ``(L, H)`` array as ``(layer, head, score)``, best first."""
    flat = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    H = scores.shape[1]
    return [(int(i // H), int(i % H), float(flat[i])) for i in order]


def _nan_to_none(a: np.ndarray):
    if np.ndim(a) == 0:
        v = float(a)
        return None if np.isnan(v) else v
    return [_nan_to_none(x) for x in a]


@dataclass
class InductionReport:
    """Scores of every head; ``scores[name]`` is ``(n_layer, n_head)``, ``composition[kind]`` is ``(L, H, L, H)``."""

    model_name: str
    config: dict
    seq_len: int
    batch: int
    seed: int
    tokens: torch.Tensor
    scores: dict[str, np.ndarray]
    composition: dict[str, np.ndarray]
    losses: dict[str, float]
    example_patterns: torch.Tensor  # (L, H, T, T) of the first sequence
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_layer(self) -> int:
        return int(self.config["n_layer"])

    @property
    def n_head(self) -> int:
        return int(self.config["n_head"])

    def top(self, score: str = "induction", k: int = 5) -> list[tuple[int, int, float]]:
        if score not in self.scores:
            raise KeyError(f"no score {score!r}; available: {', '.join(self.scores)}")
        return top_heads(self.scores[score], k)

    def composition_into(self, layer: int, head: int, kind: str = "k_composition") -> np.ndarray:
        """``(layer, H)`` scores of every earlier head composing into ``layer.head`` (rows = earlier layers)."""
        return self.composition[kind][:layer, :, layer, head]

    def table(self, k: int = 10) -> str:
        """The ``k`` top heads by induction score with all their scores, then the top 3 of every other score."""
        names = [s for s in TABLE_SCORES if s in self.scores]
        lines = [f"{self.model_name}: {self.n_layer} layers x {self.n_head} heads; probe [BOS]+R+R, seq_len "
                 f"{self.seq_len}, batch {self.batch}, seed {self.seed}",
                 f"loss first copy {self.losses['first_copy']:.3f}, second copy {self.losses['second_copy']:.3f}",
                 "", "rank  head   " + "  ".join(f"{n:>15s}" for n in names)]
        for r, (l, h, _) in enumerate(self.top("induction", k), 1):
            lines.append(f"{r:4d}  {format_head(l, h):5s}  " + "  ".join(f"{self.scores[n][l, h]:15.3f}" for n in names))
        lines.append("")
        for n in names[1:]:
            best = ", ".join(f"{format_head(l, h)} ({v:.3f})" for l, h, v in self.top(n, 3))
            lines.append(f"top {n}: {best}")
        l, h, _ = self.top("induction", 1)[0]
        if l > 0 and self.composition:
            kc = self.composition_into(l, h)
            src = top_heads(kc, 3)
            lines.append(f"K-composition into {format_head(l, h)}: " + ", ".join(f"{format_head(a, b)} ({v:.3f})" for a, b, v in src))
        return "\n".join(lines)

    def to_json(self) -> dict:
        """Every number of the report, JSON-ready (NaN -> null)."""
        return {
            "model": self.model_name,
            "config": self.config,
            "probe": {"layout": "[BOS] + R + R", "seq_len": self.seq_len, "batch": self.batch, "seed": self.seed,
                      "tokens": self.tokens.tolist()},
            "losses": self.losses,
            "scores": {k: np.asarray(v).tolist() for k, v in self.scores.items()},
            "composition": {k: _nan_to_none(v) for k, v in self.composition.items()},
            "top_heads": {k: [{"head": format_head(l, h), "layer": l, "index": h, "score": s}
                              for l, h, s in self.top(k, min(10, self.n_layer * self.n_head))] for k in self.scores},
            "timings_seconds": self.timings,
            "definitions": SCORE_DEFINITIONS,
        }

    def save(self, out_dir: str | os.PathLike, *, top_k_patterns: int = 4) -> list[Path]:
        """Write ``induction.json``, one ``heatmap_<score>.png`` per score, and ``attention_top_heads.png``."""
        out = Path(out_dir)
        paths = [vio.save_json(out / "induction.json", self.to_json())]
        for name, arr in self.scores.items():
            paths.append(_heatmap(arr, out / f"heatmap_{name}.png", title=f"{name} ({self.model_name})",
                                  signed=name.startswith(("ablation", "copying")) and name != "copying_positive_share"))
        l, h, _ = self.top("induction", 1)[0]
        if l > 0 and self.composition:
            paths.append(_heatmap(self.composition_into(l, h), out / "heatmap_k_composition_into_top_induction.png",
                                  title=f"K-composition into {format_head(l, h)}", signed=False))
        heads = [(a, b) for a, b, _ in self.top("induction", top_k_patterns)]
        for a, b, _ in self.top("previous_token", 2):
            if (a, b) not in heads:
                heads.append((a, b))
        paths.append(_attention_picture(self, heads, out / "attention_top_heads.png"))
        return paths


SCORE_DEFINITIONS = {
    "induction": "mean attention from each second-copy position q to q-(seq_len-1) (the token after the previous "
                 "occurrence), over batch and second-copy queries",
    "previous_token": "mean attention from position i to i-1 over all i>=1 and the batch",
    "duplicate_token": "mean attention from each second-copy position q to q-seq_len (earlier copy of the same token)",
    "copying": "Re(sum lambda)/sum|lambda| over the nonzero eigenvalues of W_E W_V W_O W_U (via the d_head x d_head "
               "matrix W_O W_U W_E W_V), LayerNorm weights and centring folded",
    "copying_positive_share": "share of those eigenvalues with positive real part",
    "ablation_mean": "increase of the mean second-copy loss when the head's z is replaced by its mean over batch and positions",
    "ablation_zero": "increase of the mean second-copy loss when the head's z is set to 0",
    "k_composition": "||W_OV1 W_QK2^T||_F / (||W_OV1||_F ||W_QK2||_F), indexed [l1][h1][l2][h2], null where l1 >= l2",
    "q_composition": "||W_OV1 W_QK2||_F / (||W_OV1||_F ||W_QK2||_F)",
    "v_composition": "||W_OV1 W_OV2||_F / (||W_OV1||_F ||W_OV2||_F)",
    "second_copy_loss": "mean next-token loss predicting R[1:] in the second copy (first token of each copy excluded)",
}


def _heatmap(arr: np.ndarray, path: Path, *, title: str, signed: bool) -> Path:
    """Layer x head heatmap: red = high; signed scores are centred on white at 0 (blue negative)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    a = np.asarray(arr, dtype=np.float64)
    L, H = a.shape
    fig, ax = plt.subplots(figsize=(max(3.0, 0.55 * H + 1.5), max(2.0, 0.45 * L + 1.2)))
    finite = a[np.isfinite(a)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    im = ax.imshow(a, cmap="RdBu_r" if signed else "Reds", vmin=-vmax if signed else 0.0, vmax=vmax, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    ax.set_title(title, fontsize=9)
    if L * H <= 256:
        for i in range(L):
            for j in range(H):
                if np.isfinite(a[i, j]):
                    ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if abs(a[i, j]) > 0.6 * vmax else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path, dpi=110, colors=None)


def _attention_picture(report: InductionReport, heads: Sequence[tuple[int, int]], path: Path) -> Path:
    """Attention patterns (query rows, key columns) of ``heads`` on the first probe sequence; the dashed line
    marks the induction offset seq_len-1 in the second copy."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(heads)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    T = report.example_patterns.shape[-1]
    s = report.seq_len
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (l, h) in zip(axes.ravel(), heads):
        p = report.example_patterns[l, h].numpy()
        ax.imshow(p, cmap="Reds", vmin=0.0, vmax=1.0, interpolation="nearest")
        q = np.arange(s + 1, T)
        ax.plot(q - (s - 1), q, "--", color="tab:blue", linewidth=0.6, alpha=0.6)
        ax.axhline(s + 0.5, color="gray", linewidth=0.5)
        ax.axvline(s + 0.5, color="gray", linewidth=0.5)
        ax.set_title(f"head {format_head(l, h)}: induction {report.scores['induction'][l, h]:.2f}, "
                     f"prev {report.scores['previous_token'][l, h]:.2f}", fontsize=8)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
    fig.suptitle(f"{report.model_name}: attention on [BOS] + R + R (seq_len {s})", fontsize=10)
    return save_figure(fig, path, dpi=110, colors=None)


def analyze_induction(model: torch.nn.Module, *, model_name: str = "model", seq_len: int = 50, batch: int = 10,
                      seed: int = 0, ablation: Sequence[str] = ABLATION_MODES, fold_ln: bool = True,
                      composition: bool = True, max_rows: int = 64, progress: bool = True) -> InductionReport:
    """Compute every per-head score of a GPT-2 (see :data:`SCORE_DEFINITIONS`).

    ``ablation=()`` skips the ablation scan and ``composition=False`` the head-pair composition scores (the two
    costly parts for GPT-2-size models).
    """
    check_probe(model, seq_len, batch)
    ablation = list(ablation)
    bad = [m for m in ablation if m not in ABLATION_MODES]
    if bad:
        raise ValueError(f"unknown ablation mode(s) {bad}; choose from {', '.join(ABLATION_MODES)}")
    timings: dict[str, float] = {}
    tokens = repeated_tokens(model, seq_len, batch, seed)

    t0 = time.perf_counter()
    patterns = attention_patterns(model, tokens)  # (L, B, H, T, T)
    scores = pattern_scores(patterns, seq_len)
    timings["attention_scores"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    w = head_weights(model, fold_ln)
    scores.update(copying_scores(model, fold_ln, weights=w))
    timings["copying_scores"] = time.perf_counter() - t0
    comp: dict[str, np.ndarray] = {}
    if composition:
        t0 = time.perf_counter()
        comp = composition_scores(model, fold_ln, weights=w)
        timings["composition_scores"] = time.perf_counter() - t0

    first, second = copy_losses(model, tokens)
    losses = {"first_copy": first, "second_copy": second}
    if ablation:
        t0 = time.perf_counter()
        scan = ablation_scan(model, tokens, ablation, max_rows=max_rows, progress=progress)
        timings["ablation_scan"] = time.perf_counter() - t0
        for m in ablation:
            scores[f"ablation_{m}"] = scan[m]
        losses["clean_second_copy_recomputed"] = scan["clean_loss_recomputed"]
    cfg = model.config
    config = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")}
    return InductionReport(model_name=model_name, config=config, seq_len=seq_len, batch=batch, seed=seed,
                           tokens=tokens, scores=scores, composition=comp, losses=losses,
                           example_patterns=patterns[:, 0], timings={k: round(v, 3) for k, v in timings.items()})
