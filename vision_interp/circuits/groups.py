"""Neuron groups ("The Building Blocks of Interpretability"): factorize a layer's activations with NMF.

The activations ``A`` of one layer on an image (or a batch) are read as a matrix with one row per
spatial position and one column per channel, ``V (N*H*W, C) >= 0``, and factorized as
``V ~= W @ H`` with ``W (N*H*W, k) >= 0`` (where each group is active: spatial maps) and
``H (k, C) >= 0`` (which channels make up each group: loadings). Groups are a handful of directions
that explain most of the layer, so a picture of k maps replaces one of C channels.

NMF is solved with HALS (hierarchical alternating least squares), seeded, in float64.

NMF is defined for non-negative data only. Activations with negative values (a layer that is not a ReLU
output: a convolution, a PReLU / LeakyReLU / GELU / ELU output, batch norm) are refused with their minimum
and the share of negative values, never clamped at 0 (which would silently factorize a different matrix).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
import torch
from torch import nn

from ..capture import capture_dataset
from ..checks import check_finite, check_instance, check_int, check_number

__all__ = ["NeuronGroups", "nmf", "neuron_groups", "layer_neuron_groups", "neuron_groups_picture", "save_neuron_groups"]


@dataclass
class NeuronGroups:
    """``groups`` (k, H, W) -- or (N, k, H, W) for a batch -- are the group activation maps;
    ``loadings`` (k, C) the non-negative channel weights of each group (rows of unit L2 norm);
    ``error`` the relative reconstruction error ``||V - W H||_F / ||V||_F``."""

    groups: torch.Tensor
    loadings: torch.Tensor
    error: float
    iterations: int

    def __repr__(self) -> str:  # short; the pictures are in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)

    def _repr_png_(self) -> bytes | None:
        from ..display import png
        return png(self)

    def reconstruction(self) -> torch.Tensor:
        """The activations rebuilt from the groups, same shape as the input activations."""
        g = self.groups if self.groups.ndim == 4 else self.groups[None]
        rec = torch.einsum("nkhw,kc->nchw", g, self.loadings)
        return rec if self.groups.ndim == 4 else rec[0]

    def top_channels(self, group: int, k: int = 5) -> list[tuple[int, float]]:
        """The channels that load most on ``group``: [(channel, loading)]."""
        vals, idx = torch.sort(self.loadings[group], descending=True, stable=True)
        return [(int(i), float(v)) for i, v in zip(idx[:k], vals[:k])]


def nmf(v: torch.Tensor, k: int, *, iterations: int = 1000, seed: int = 0, tol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Non-negative matrix factorization ``v ~= w @ h`` by HALS. Returns ``(w, h, rel_error, iterations)``.

    Initialisation is random (seeded) scaled to the data, as in scikit-learn's "random" init.
    Stops when the relative error improves by less than ``tol`` between checks.
    """
    check_instance(v, torch.Tensor, "v")
    if v.ndim != 2 or 0 in v.shape:
        raise ValueError(f"v: nmf needs a non-empty matrix, got shape {tuple(v.shape)}")
    k = check_int(k, "k", minimum=1)
    iterations = check_int(iterations, "iterations", minimum=1)
    seed = check_int(seed, "seed")
    tol = check_number(tol, "tol", minimum=0.0)
    if v.is_complex() or not (v.is_floating_point() or v.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"v: dtype {v.dtype}; NMF needs real numbers")
    check_finite(v, "v")
    _check_nonnegative(v, "v")
    v = v.double()
    n, m = v.shape
    # HALS is many tiny ops: on a busy machine, intra-op threads cost more than they give
    threads = torch.get_num_threads()
    if n * m * k < 4_000_000 and v.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _hals(v, k, iterations, seed, tol)
    finally:
        torch.set_num_threads(threads)


def _check_nonnegative(t: torch.Tensor, arg: str) -> None:
    """NMF needs ``t >= 0``: refuse otherwise, saying how negative and how often (never clamp)."""
    lo = float(t.min())
    if lo < 0:
        share = float((t < 0).double().mean())
        raise ValueError(
            f"{arg}: min {lo:.4g}, {100 * share:.1f}% of the values negative; NMF factorizes non-negative data only, "
            "and clamping at 0 would factorize a different matrix. Use a layer whose values are non-negative (a post-ReLU "
            "layer), or shift explicitly (values - values.min()) and report the groups as groups of the shifted values")


def _hals(v: torch.Tensor, k: int, iterations: int, seed: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    n, m = v.shape
    gen = torch.Generator().manual_seed(seed)
    scale = (v.mean() / k).sqrt().clamp_min(1e-12)
    w = (torch.rand((n, k), generator=gen, dtype=torch.float64) * scale).to(v.device)
    h = (torch.rand((k, m), generator=gen, dtype=torch.float64) * scale).to(v.device)
    eps = 1e-12
    norm_v = v.norm().clamp_min(1e-30)
    prev = float("inf")
    err = float((v - w @ h).norm() / norm_v)
    it = 0
    for it in range(1, iterations + 1):
        wtv, wtw = w.T @ v, w.T @ w
        for r in range(k):
            h[r] = (h[r] + (wtv[r] - wtw[r] @ h) / wtw[r, r].clamp_min(eps)).clamp_min(0)
        vht, hht = v @ h.T, h @ h.T
        for r in range(k):
            w[:, r] = (w[:, r] + (vht[:, r] - w @ hht[:, r]) / hht[r, r].clamp_min(eps)).clamp_min(0)
        if it % 10 == 0 or it == iterations:
            err = float((v - w @ h).norm() / norm_v)
            if prev - err < tol:
                break
            prev = err
    return w, h, err, it


def neuron_groups(activations: torch.Tensor, n_groups: int, seed: int = 0, *, iterations: int = 1000) -> NeuronGroups:
    """Factorize non-negative activations (C, H, W) or (N, C, H, W) into ``n_groups`` groups.

    Groups are ordered by their total activation (largest first); loadings rows have unit L2 norm.
    """
    check_instance(activations, torch.Tensor, "activations")
    n_groups = check_int(n_groups, "n_groups", minimum=1)
    seed = check_int(seed, "seed")
    iterations = check_int(iterations, "iterations", minimum=1)
    if not activations.is_floating_point():
        raise ValueError(f"activations: dtype {activations.dtype}; expected a float tensor of activations")
    check_finite(activations, "activations")
    a = activations.detach().cpu()
    single = a.ndim == 3
    if single:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"activations must be (C, H, W) or (N, C, H, W), got shape {tuple(activations.shape)}")
    n, c, hgt, wid = a.shape
    if n_groups > c:
        raise ValueError(f"n_groups: {n_groups} exceeds the number of channels ({c})")
    if 0 in a.shape:
        raise ValueError(f"activations: shape {tuple(activations.shape)} has an empty dimension")
    _check_nonnegative(a, "activations")
    v = a.permute(0, 2, 3, 1).reshape(-1, c)
    w, h, err, its = nmf(v, n_groups, iterations=iterations, seed=seed)
    norms = h.norm(dim=1).clamp_min(1e-30)
    h = h / norms[:, None]
    w = w * norms[None, :]
    order = torch.argsort(w.sum(0), descending=True, stable=True)
    w, h = w[:, order], h[order]
    groups = w.T.reshape(n_groups, n, hgt, wid).permute(1, 0, 2, 3).float()
    return NeuronGroups(groups[0] if single else groups, h.float(), err, its)


def layer_neuron_groups(model: nn.Module, images: torch.Tensor, layer: str, n_groups: int, seed: int = 0, **kw) -> NeuronGroups:
    """Capture ``layer`` on ``images`` (N, C, H, W) and factorize it (see :func:`neuron_groups`).

    Images go through the package's one dataset loop (model's device and dtype, eval mode). A layer with
    negative activations is refused (see the module docstring), naming the nearest non-negative layers."""
    check_instance(images, torch.Tensor, "images")
    n_groups = check_int(n_groups, "n_groups", minimum=1)
    if images.ndim == 3:
        images = images[None]
    act = torch.cat([cache[layer].float().cpu() for _, cache in capture_dataset(model, images, [layer], batch_size=256)])
    if act.ndim != 4:
        raise ValueError(f"layer {layer!r} has no spatial dimensions (shape {tuple(act.shape)}); neuron groups need maps")
    try:
        _check_nonnegative(act, f"layer {layer!r}")
    except ValueError as e:
        raise ValueError(f"{e}{_nonnegative_layers_hint(model, layer, tuple(images.shape[1:]))}") from None
    return neuron_groups(act if act.shape[0] > 1 else act[0], n_groups, seed, **kw)


def _nonnegative_layers_hint(model: nn.Module, layer: str, input_shape: tuple[int, ...]) -> str:
    """The modules right after ``layer`` in the trace whose output cannot be negative (ReLU, ReLU6), if any."""
    from ..trace import trace
    from ..units import resolve_layer

    try:
        tr = trace(model, input_shape)
        path = resolve_layer(model, layer)
        start = tr.by_path[path][-1]
    except (ValueError, KeyError, IndexError):
        return ""
    after = [c.path for c in tr.calls[start + 1 : start + 6] if isinstance(c.module, (nn.ReLU, nn.ReLU6))]
    return f" (the next ReLU output: {after[0]!r})" if after else ""


def neuron_groups_picture(result: NeuronGroups, image: torch.Tensor | None = None, *, size: int = 112) -> torch.Tensor:
    """One tile per group: its activation map over the input image (first image of a batch), red =
    active, plus a final tile with the loadings (rows = groups, columns = channels)."""
    import torch.nn.functional as F

    from ..images import diverging, make_grid, overlay

    check_instance(result, NeuronGroups, "result")
    g = result.groups if result.groups.ndim == 3 else result.groups[0]
    tiles = []
    vmax = float(g.max()) or 1.0
    for m in g:
        if image is not None:
            img = image if image.ndim == 3 else image[0]
            img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
            tiles.append(overlay(img, m, alpha=0.85, vmax=vmax))
        else:
            heat = diverging(m, vmax)
            tiles.append(F.interpolate(heat[None], size=(size, size), mode="nearest")[0])
    load = diverging(result.loadings, float(result.loadings.max()) or 1.0)
    ch = max(1, size // max(result.loadings.shape[1], 1))
    load = load.repeat_interleave(max(1, size // (4 * result.loadings.shape[0])), dim=-2).repeat_interleave(ch, dim=-1)
    tiles.append(load)
    return make_grid(tiles, ncols=len(tiles))


def save_neuron_groups(result: NeuronGroups, path: str | os.PathLike, image: torch.Tensor | None = None, *, size: int = 112) -> Path:
    """Write :func:`neuron_groups_picture` as a PNG (atomically)."""
    from ..images import save_png

    return save_png(neuron_groups_picture(result, image, size=size), path)
