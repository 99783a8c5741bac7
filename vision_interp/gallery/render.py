"""Rendering one job: the feature visualizations of one chunk of channels, the part an executor
runs (a pure function of its arguments, so a Ray worker renders the same pictures)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .plan import GallerySettings, _derive_seed


def render_job(model: nn.Module, layer: str, channels: Sequence[int], settings: "GallerySettings", size: int | None,
               base_seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The feature visualizations of one chunk: {"main", "negative"?, "diverse"?} -> (images, values, activations)."""
    out = {"main": _render(model, layer, channels, settings, size, _derive_seed(base_seed, "main"))}
    if settings.negative:
        out["negative"] = _render(model, layer, channels, settings, size, _derive_seed(base_seed, "negative"), negative=True)
    if settings.diverse > 1:
        out["diverse"] = _render(model, layer, channels, settings, size, _derive_seed(base_seed, "diverse"), diverse=settings.diverse)
    return out


def _render(model, layer: str, channels: Sequence[int], settings: "GallerySettings", size: int | None, seed: int, *,
            negative: bool = False, diverse: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk through featvis; returns images (N,C,H,W) in [0,1], objective values (N,) and
    raw channel activations (N,), unit-major with ``diverse`` images per channel when diverse > 1.

    The whole chunk is one optimisation (``batch_size`` covers it), so a unit's picture is fixed by
    (seed, layer, chunk) and never by which shard or resumed run rendered it.
    """
    from ..featvis import visualize_layer

    kw: dict[str, Any] = dict(negative=negative, steps=settings.steps, size=size, seed=seed, progress=False, objective=settings.objective,
                              precision=settings.precision)
    if diverse > 1:
        kw.update(diversity=settings.diversity_weight, images_per_unit=diverse, batch_size=max(settings.batch, diverse))
    else:
        kw.update(batch_size=len(channels))
    res = visualize_layer(model, layer, list(channels), **kw)
    acts = res.activations if res.activations is not None else res.values
    return res.images.detach().cpu(), res.values.detach().cpu().float(), acts.detach().cpu().float()
