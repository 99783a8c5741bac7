"""Top-activating dataset examples and receptive-field patches, per unit.

A unit's "dataset examples" are the images that excite its channel most. For a spatial layer
an image's score is its *largest* activation over positions, and the patch is the part of the
input that position can see (its receptive field). The dataset is streamed in batches and only a
running top-k per channel is kept, so memory stays bounded for any dataset and any layer size.

Receptive fields are measured, not derived from layer arithmetic: the input gradient of one
position's activations, over a few random inputs, marks the pixels that position depends on.
That works for any architecture that :mod:`vision_interp.capture` can run (branches, padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from ..capture import capture
from ..units import default_input_shape, layer_shape, model_device_dtype, resolve_layer, resolve_unit

__all__ = ["TopExamples", "ReceptiveField", "top_activating", "receptive_field", "crop_patches"]


@dataclass
class TopExamples:
    """The k most exciting dataset images for each requested channel of one layer.

    ``indices``/``values`` are (n_channels, k), best first; ``positions`` is (n_channels, k, 2)
    with the (y, x) of the maximum, or None for layers without spatial dimensions.
    """

    layer: str
    channels: list[int]
    indices: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor | None

    def for_channel(self, channel: int) -> list[dict]:
        """The examples of one channel as plain dicts (index, value, position)."""
        row = self.channels.index(channel)
        out = []
        for j in range(self.indices.shape[1]):
            if self.indices[row, j] < 0:  # fewer dataset images than k
                continue
            item = {"index": int(self.indices[row, j]), "value": float(self.values[row, j])}
            if self.positions is not None:
                item["position"] = [int(p) for p in self.positions[row, j]]
            out.append(item)
        return out


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for i in range(0, len(images), batch_size):
            yield images[i : i + batch_size]
    else:
        yield from images


@torch.no_grad()
def top_activating(
    model: nn.Module,
    layer: str,
    images: torch.Tensor | Iterable[torch.Tensor],
    *,
    k: int = 8,
    channels: Sequence[int] | None = None,
    batch_size: int = 500,
    progress: bool = False,
) -> TopExamples:
    """Stream ``images`` (a tensor (N, C, H, W) or an iterable of batches) through ``model`` and
    keep, per channel of ``layer``, the ``k`` images with the highest (spatial-max) activation.

    Ties keep the earlier dataset index, so the result is deterministic. Memory: one batch of
    activations plus (n_channels, k) running bests.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    path = resolve_layer(model, layer)
    if isinstance(images, torch.Tensor) and images.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}")
    shape_in = tuple(images.shape[1:]) if isinstance(images, torch.Tensor) else None
    n_ch = layer_shape(model, path, shape_in)[0]
    chans = list(range(n_ch)) if channels is None else [int(c) for c in channels]
    for c in chans:
        resolve_unit(model, (layer, c), shape_in)  # range errors come from units.py
    sel = torch.tensor(chans, dtype=torch.long)
    best_v = torch.full((len(chans), 0), float("-inf"))
    best_i = torch.zeros((len(chans), 0), dtype=torch.long)
    best_p: torch.Tensor | None = None
    spatial: bool | None = None
    offset = 0
    from tqdm.auto import tqdm

    total = len(images) if isinstance(images, torch.Tensor) else None
    device, dtype = model_device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=total, desc=f"examples {layer}", unit="img", disable=not progress, leave=False) as bar:
            for xb in _batches(images, batch_size):
                act = capture(model, xb.to(device=device, dtype=dtype), [path], detach=True)[path].float().cpu()
                act = act.index_select(1, sel)  # (B, n, ...)
                b = act.shape[0]
                if spatial is None:
                    spatial = act.ndim == 4
                    if spatial:
                        best_p = torch.zeros((len(chans), 0, 2), dtype=torch.long)
                if spatial:
                    w = act.shape[-1]
                    flat = act.flatten(2)
                    v, arg = flat.max(dim=2)  # first max on ties
                    pos = torch.stack([arg // w, arg % w], dim=-1).transpose(0, 1)  # (n, B, 2)
                else:
                    v = act.flatten(2).amax(2) if act.ndim > 2 else act
                    pos = None
                v = v.transpose(0, 1)  # (n, B)
                idx = torch.arange(offset, offset + b).expand(len(chans), b)
                cat_v = torch.cat([best_v, v], 1)
                cat_i = torch.cat([best_i, idx], 1)
                # stable sort by value descending keeps earlier indices first on ties
                order = torch.sort(cat_v, dim=1, descending=True, stable=True).indices[:, :k]
                best_v = cat_v.gather(1, order)
                best_i = cat_i.gather(1, order)
                if spatial:
                    cat_p = torch.cat([best_p, pos], 1)
                    best_p = cat_p.gather(1, order[..., None].expand(-1, -1, 2))
                offset += b
                bar.update(b)
    finally:
        model.train(was_training)
    if best_v.shape[1] < k:  # fewer images than k: pad with index -1
        pad = k - best_v.shape[1]
        best_v = torch.cat([best_v, torch.full((len(chans), pad), float("nan"))], 1)
        best_i = torch.cat([best_i, torch.full((len(chans), pad), -1, dtype=torch.long)], 1)
        if best_p is not None:
            best_p = torch.cat([best_p, torch.zeros((len(chans), pad, 2), dtype=torch.long)], 1)
    return TopExamples(layer=layer, channels=chans, indices=best_i, values=best_v, positions=best_p)


@dataclass(frozen=True)
class ReceptiveField:
    """Where a spatial layer's position (y, x) looks in the input.

    The box of position (y, x) is rows ``y*stride_y + top .. + height`` and columns
    ``x*stride_x + left .. + width`` (may extend past the image border; patches are zero-padded).
    """

    stride_y: int
    stride_x: int
    top: int
    left: int
    height: int
    width: int

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) in input pixels, end-exclusive, unclipped."""
        y0 = y * self.stride_y + self.top
        x0 = x * self.stride_x + self.left
        return y0, x0, y0 + self.height, x0 + self.width


def receptive_field(
    model: nn.Module,
    layer: str,
    input_shape: Sequence[int] | None = None,
    *,
    trials: int = 4,
    seed: int = 0,
) -> ReceptiveField:
    """Measure the receptive field of ``layer``'s positions from input gradients.

    The gradient of all channels at the central position, over ``trials`` random inputs (so that
    ReLUs and max-pool choices do not hide pixels), marks the pixels it depends on; the stride is
    the ratio of input to layer size. Raises ValueError for layers without spatial dimensions.
    """
    path = resolve_layer(model, layer)
    shape_in = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    shape = layer_shape(model, path, shape_in)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} has no spatial dimensions (shape {shape}); it has no receptive-field patches")
    _, h, w = shape
    in_h, in_w = shape_in[-2], shape_in[-1]
    sy, sx = max(1, round(in_h / h)), max(1, round(in_w / w))
    cy, cx = h // 2, w // 2
    gen = torch.Generator().manual_seed(seed)
    device, dtype = model_device_dtype(model)
    x = torch.rand((trials, *shape_in), generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            act = capture(model, x, [path])[path]
            # sum |act| so that both signs and every channel contribute a gradient
            act[:, :, cy, cx].abs().sum().backward()
    finally:
        model.train(was_training)
    support = (x.grad.abs().sum(dim=(0, 1)) > 0).cpu()  # (in_h, in_w)
    ys = torch.nonzero(support.any(1)).flatten()
    xs = torch.nonzero(support.any(0)).flatten()
    if len(ys) == 0:
        raise ValueError(f"layer {layer!r}: no input pixel reaches position ({cy}, {cx}); cannot measure its receptive field")
    y0, y1 = int(ys.min()), int(ys.max()) + 1
    x0, x1 = int(xs.min()), int(xs.max()) + 1
    # for a layer whose receptive field exceeds the input, the measured box is clipped by the borders
    height, width = y1 - y0, x1 - x0
    return ReceptiveField(sy, sx, y0 - cy * sy, x0 - cx * sx, height, width)


def crop_patches(images: torch.Tensor, positions: torch.Tensor, rf: ReceptiveField) -> torch.Tensor:
    """Cut the receptive-field patch of each (y, x) from each image (N, C, H, W), zero-padded
    where the box extends past the border, so every patch has the same size."""
    n, c, h, w = images.shape
    out = torch.zeros((n, c, rf.height, rf.width), dtype=images.dtype, device=images.device)
    for i in range(n):
        y0, x0, y1, x1 = rf.box(int(positions[i][0]), int(positions[i][1]))
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        out[i, :, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = images[i, :, sy0:sy1, sx0:sx1]
    return out
