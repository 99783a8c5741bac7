"""Match units across models by how they respond to the same inputs.

Two units "are the same feature" to the extent that their activations on the same images and
positions are correlated. For every pair of models and a layer we compute the Pearson correlation
of every unit of one with every unit of the other (positions as samples, identical positions for
both models), then read off

* each unit's *best match* in the other model (max over its units; units may share a match), and
* an *optimal one-to-one matching* (the permutation maximising the summed correlation), solved
  exactly with the Hungarian algorithm (:func:`linear_assignment`, implemented here because SciPy
  is not a dependency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from ..checks import check_finite, check_int

__all__ = ["linear_assignment", "correlation_matrix", "PairMatch", "match_pair", "shared_samples", "LayerMatch",
           "match_layer", "patch_ink", "partial_out", "weight_cosine_best"]


def linear_assignment(cost: torch.Tensor) -> tuple[list[int], list[int]]:
    """Exact minimum-cost assignment of every row to a distinct column (rows <= columns), Hungarian
    algorithm with potentials, O(n^2 m). Returns ``(rows, cols)`` sorted by row."""
    check_finite(cost, "cost")
    c = cost.detach().double().cpu()
    if c.ndim != 2:
        raise ValueError(f"cost must be a matrix, got shape {tuple(c.shape)}")
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    n, m = c.shape
    if not torch.isfinite(c).all():
        raise ValueError("cost must be finite")
    a = c.tolist()
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    p, way = [0] * (m + 1), [0] * (m + 1)  # p[j]: row matched to column j (1-based, 0 = none)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            row = a[i0 - 1]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = sorted((p[j] - 1, j - 1) for j in range(1, m + 1) if p[j])
    rows, cols = [r for r, _ in pairs], [col for _, col in pairs]
    if transposed:
        pairs = sorted(zip(cols, rows))
        rows, cols = [r for r, _ in pairs], [col for _, col in pairs]
    return rows, cols


def correlation_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation ``(Ca, Cb)`` between the columns of ``a (M, Ca)`` and ``b (M, Cb)``.
    A constant unit (zero variance, e.g. dead) correlates 0 with everything."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"b: need samples (M, Ca) and (M, Cb) with the same M, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    za, zb = a - a.mean(0), b - b.mean(0)
    sa, sb = za.norm(dim=0), zb.norm(dim=0)
    corr = (za.T @ zb) / (sa[:, None] * sb[None, :]).clamp_min(1e-30)
    corr[sa < 1e-12] = 0.0
    corr[:, sb < 1e-12] = 0.0
    return corr.clamp(-1.0, 1.0)


@dataclass
class PairMatch:
    """Model A's units against model B's, for one layer."""

    corr: torch.Tensor  # (Ca, Cb)
    best: torch.Tensor  # (Ca,) best-match correlation of each unit of A in B
    best_index: torch.Tensor  # (Ca,) which unit of B
    assignment: list[int]  # one-to-one: unit i of A <-> assignment[i] of B (-1 when A has more units)
    assigned_corr: torch.Tensor  # (Ca,) correlation along the one-to-one matching (nan when unmatched)


def match_pair(a: torch.Tensor, b: torch.Tensor) -> PairMatch:
    """Best matches and the optimal one-to-one matching of the units (columns) of ``a`` to ``b``."""
    corr = correlation_matrix(a, b)
    best, best_index = corr.max(dim=1)
    rows, cols = linear_assignment(-corr)
    assignment = [-1] * corr.shape[0]
    assigned = torch.full((corr.shape[0],), float("nan"), dtype=torch.float64)
    for r, c in zip(rows, cols):
        assignment[r] = c
        assigned[r] = corr[r, c]
    return PairMatch(corr, best, best_index, assignment, assigned)


def shared_samples(n_images: int, positions: int, max_samples: int | None, seed: int = 0,
                   allowed: torch.Tensor | None = None) -> torch.Tensor | None:
    """A fixed subset of (image, position) sample indices, identical for every model (None = all).

    ``allowed`` (bool, ``n_images * positions``) restricts the samples to those positions, e.g. the
    informative ones of :func:`ink_mask`."""
    check_int(n_images, "n_images", minimum=1)
    check_int(positions, "positions", minimum=1)
    total = n_images * positions
    if allowed is not None:
        if allowed.shape != (total,):
            raise ValueError(f"allowed must be a bool mask of {total} samples, got shape {tuple(allowed.shape)}")
        candidates = allowed.nonzero().flatten()
        if len(candidates) == 0:
            raise ValueError("no informative samples: every position's receptive field is blank")
        if max_samples is None or len(candidates) <= max_samples:
            return candidates
        gen = torch.Generator().manual_seed(seed)
        return candidates[torch.randperm(len(candidates), generator=gen)[:max_samples]].sort().values
    if max_samples is None or total <= max_samples:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=gen)[:max_samples].sort().values


def patch_ink(images: torch.Tensor, rf, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max, mean)``, each ``(N * H * W,)`` in (image, y, x) order: the brightest pixel and the mean
    pixel (zero padding counted) of the receptive field (``rf``, a
    :class:`~vision_interp.data.examples.ReceptiveField`) of every layer position (y, x).

    Why: on a blank patch every unit outputs its constant blank response, so positions without ink
    form one cluster that all units share, and among inked patches the amount of ink drives every
    filter whose weights do not sum to zero. Correlations dominated by either reward any two units
    that separate "ink" from "no ink", which a random filter does as well as a learned one.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    bright = images.amax(1)  # (N, H, W)
    peak, mean = torch.zeros(n, *out_hw), torch.zeros(n, *out_hw)
    for y in range(out_hw[0]):
        for x in range(out_hw[1]):
            y0, x0, y1, x1 = rf.box(y, x)
            y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
            if y1 > y0 and x1 > x0:
                patch = bright[:, y0:y1, x0:x1].flatten(1)
                peak[:, y, x] = patch.amax(1)
                mean[:, y, x] = patch.sum(1) / (rf.height * rf.width)
    return peak.reshape(-1), mean.reshape(-1)


def partial_out(samples: torch.Tensor, covariate: torch.Tensor) -> torch.Tensor:
    """``samples (M, C)`` minus their least-squares fit on ``[1, covariate (M,)]``: what each unit
    does beyond following the covariate (here the amount of ink in its receptive field)."""
    if covariate.shape != (samples.shape[0],):
        raise ValueError(f"covariate must have one value per sample ({samples.shape[0]}), got shape {tuple(covariate.shape)}")
    x = torch.stack([torch.ones_like(covariate), covariate], 1).double()
    a = samples.double()
    return a - x @ torch.linalg.lstsq(x, a).solution


def weight_cosine_best(wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """``(Ca,)``: for each filter of ``wa (Ca, ...)`` the largest |cosine| with a filter of ``wb (Cb, ...)``.

    A feature-level check that needs no data: two first-layer filters that compute the same
    feature point the same way in weight space (up to sign and scale)."""
    a, b = wa.detach().double().flatten(1), wb.detach().double().flatten(1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"filters must have the same size, got {tuple(wa.shape)} and {tuple(wb.shape)}")
    cos = (a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)) @ (b / b.norm(dim=1, keepdim=True).clamp_min(1e-30)).T
    return cos.abs().max(dim=1).values


@dataclass
class LayerMatch:
    """All pairwise matches of one layer across a family of models (and against controls)."""

    layer: str
    models: list[str]
    pairs: dict[tuple[str, str], PairMatch] = field(repr=False)  # (A, B) for A != B among models
    controls: dict[tuple[str, str], PairMatch] = field(default_factory=dict, repr=False)  # (A, control)
    n_samples: int = 0

    def best_in_all_others(self, model: str) -> torch.Tensor:
        """``(C,)``: each unit's *worst* best-match over the other models (>= t means matched above t everywhere)."""
        others = [self.pairs[(model, o)].best for o in self.models if o != model]
        return torch.stack(others).min(0).values

    def fraction_universal(self, threshold: float) -> float:
        """Share of units (pooled over models) whose best match is >= ``threshold`` in every other model."""
        vals = torch.cat([self.best_in_all_others(m) for m in self.models])
        return float((vals >= threshold).double().mean())

    def best_match_values(self) -> torch.Tensor:
        return torch.cat([p.best for p in self.pairs.values()])

    def assigned_values(self) -> torch.Tensor:
        v = torch.cat([p.assigned_corr for p in self.pairs.values()])
        return v[~torch.isnan(v)]

    def control_names(self) -> list[str]:
        return sorted({c for _, c in self.controls})

    def control_best_values(self, control: str) -> torch.Tensor:
        return torch.cat([p.best for (m, c), p in self.controls.items() if c == control])

    def fraction_matched_in_control(self, control: str, threshold: float) -> float:
        return float((self.control_best_values(control) >= threshold).double().mean())


def match_layer(samples: Mapping[str, torch.Tensor], *, controls: Mapping[str, torch.Tensor] | None = None,
                layer: str = "", progress: Callable[[str], None] | None = None) -> LayerMatch:
    """Match every ordered pair of ``samples`` (name -> (M, C) activations on shared samples), and
    every model against every control."""
    names = list(samples)
    if len(names) < 2:
        raise ValueError(f"samples: need at least two models to match, got {len(names)}")
    m = {t.shape[0] for t in samples.values()} | {t.shape[0] for t in (controls or {}).values()}
    if len(m) != 1:
        raise ValueError(f"every model's samples must be the same inputs; got sample counts {sorted(m)}")
    pairs = {}
    for a in names:
        for b in names:
            if a != b:
                pairs[(a, b)] = match_pair(samples[a], samples[b])
        if progress:
            progress(f"{layer}: matched {a}")
    ctrl = {(a, c): match_pair(samples[a], t) for a in names for c, t in (controls or {}).items()}
    return LayerMatch(layer, names, pairs, ctrl, n_samples=m.pop())
