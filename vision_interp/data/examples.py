"""Top-activating dataset examples and receptive-field patches, per unit.

A unit's "dataset examples" are the images that excite its channel most. For a spatial layer
an image's score is its *largest* activation over positions, and the patch is the part of the
input that position can see (its receptive field). The dataset is streamed in batches and only a
running top-k per channel is kept, so memory stays bounded for any dataset and any layer size.

Receptive fields come from the model's :mod:`~vision_interp.trace`, which composes the sliding
windows (padding, convolutions, pooling) the forward pass actually ran, through branches and
concatenations; the patch of a position is that window, clipped to what the image can hold.
Where the trace cannot give a window (a function it does not model) or every position sees the whole
input (global pooling, a squeeze-excite gate, a norm over the whole map), :func:`example_field` falls
back to the whole image and says so (``whole_image``, ``reason``): examples are then whole images,
never a refusal and never a crop that claims a window nobody measured.
The dataset is streamed by :func:`vision_interp.capture.capture_dataset`, the package's one
dataset loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from ..capture import capture_dataset
from ..checks import IdTypeError, InputError, check_instance, check_int, check_matrix
from ..trace import TraceError, trace
from ..units import default_input_shape, layer_shape, parse_channel_list, resolve_layer

__all__ = ["TopExamples", "ReceptiveField", "top_activating", "receptive_field", "example_field", "crop_patches"]


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

    def __repr__(self) -> str:  # short; the pictures are in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)

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
    k = check_int(k, "k")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    path = resolve_layer(model, layer)
    if isinstance(images, torch.Tensor) and images.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}")
    shape_in = tuple(images.shape[1:]) if isinstance(images, torch.Tensor) else None
    n_ch = layer_shape(model, path, shape_in)[0]
    chans = parse_channel_list(channels, n_ch, what=f"channels of layer {layer!r}")  # range errors from units.py
    sel = torch.tensor(chans, dtype=torch.long)
    best_v = torch.full((len(chans), 0), float("-inf"))
    best_i = torch.zeros((len(chans), 0), dtype=torch.long)
    best_p: torch.Tensor | None = None
    for offset, cache in capture_dataset(model, images, [path], batch_size=batch_size, progress=progress,
                                         desc=f"examples {layer}"):
        act = cache[path].float().cpu().index_select(1, sel)  # (B, n, ...)
        b = act.shape[0]
        if act.ndim == 4:
            w = act.shape[-1]
            v, arg = act.flatten(2).max(dim=2)  # first max on ties
            pos = torch.stack([arg // w, arg % w], dim=-1).transpose(0, 1)  # (n, B, 2)
            if best_p is None:
                best_p = torch.zeros((len(chans), 0, 2), dtype=torch.long)
        else:
            v = act.flatten(2).amax(2) if act.ndim > 2 else act
            pos = None
        v = v.transpose(0, 1)  # (n, B)
        cat_v = torch.cat([best_v, v], 1)
        cat_i = torch.cat([best_i, torch.arange(offset, offset + b).expand(len(chans), b)], 1)
        # stable sort by value descending keeps earlier indices first on ties
        order = torch.sort(cat_v, dim=1, descending=True, stable=True).indices[:, :k]
        best_v, best_i = cat_v.gather(1, order), cat_i.gather(1, order)
        if pos is not None and best_p is not None:
            best_p = torch.cat([best_p, pos], 1).gather(1, order[..., None].expand(-1, -1, 2))
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
    ``whole_image``: not a receptive field but the whole input (stride 0, the image's size), because
    ``reason`` (the trace's words: unknown, or every position sees the whole input); see
    :func:`example_field`.
    """

    stride_y: int
    stride_x: int
    top: int
    left: int
    height: int
    width: int
    whole_image: bool = False
    reason: str = ""

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) in input pixels, end-exclusive, unclipped."""
        y0 = y * self.stride_y + self.top
        x0 = x * self.stride_x + self.left
        return y0, x0, y0 + self.height, x0 + self.width


def receptive_field(
    model: nn.Module,
    layer: str,
    input_shape: Sequence[int] | None = None,
) -> ReceptiveField:
    """The receptive field of ``layer``'s positions in the input, from the model's trace.

    The stride is the layer's; the box is the window of the central position clipped to the
    input, expressed relative to that position (so a field larger than the image gives an
    image-sized patch). Raises ValueError for layers without spatial dimensions.
    """
    path = resolve_layer(model, layer)
    shape_in = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    shape = layer_shape(model, path, shape_in)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} has no spatial dimensions (shape {shape}); it has no receptive-field patches")
    try:
        win = trace(model, shape_in).receptive_field(path)
    except TraceError as e:
        raise ValueError(str(e)) from None
    if win.is_global:
        raise ValueError(f"every position of layer {layer!r} sees the whole input; it has no receptive-field patches")
    _, h, w = shape
    cy, cx = h // 2, w // 2
    y0, x0, y1, x1 = win.box(cy, cx)
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, shape_in[-2]), min(x1, shape_in[-1])
    return ReceptiveField(win.stride[0], win.stride[1], y0 - cy * win.stride[0], x0 - cx * win.stride[1], y1 - y0, x1 - x0)


def example_field(
    model: nn.Module,
    layer: str,
    input_shape: Sequence[int] | None = None,
) -> ReceptiveField:
    """The field dataset-example patches of ``layer`` are cut with: its :func:`receptive_field` where the
    trace knows it, else the whole input image, marked ``whole_image=True`` with the ``reason``.

    A gallery or an example view needs a picture per example, not a proof of geometry: a layer whose
    receptive field is unknown (a function the trace does not model) or global (every position sees the
    whole input) still gets its examples, as whole images, and the reason travels with them (a gallery
    records it in its manifest). Layers without spatial dimensions still raise: they have no positions."""
    path = resolve_layer(model, layer)
    shape_in = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    shape = layer_shape(model, path, shape_in)
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} has no spatial dimensions (shape {shape}); it has no receptive-field patches")
    try:
        return receptive_field(model, path, shape_in)
    except ValueError as e:  # TraceError is a ValueError too
        reason = str(e)
    return ReceptiveField(0, 0, 0, 0, int(shape_in[-2]), int(shape_in[-1]), whole_image=True,
                          reason=f"{reason}; examples are whole images")


def crop_patches(images: torch.Tensor, positions: torch.Tensor, rf: ReceptiveField) -> torch.Tensor:
    """Cut the receptive-field patch of each (y, x) from each image (N, C, H, W), zero-padded
    where the box extends past the border, so every patch has the same size."""
    check_matrix(images, "images", ndim=4)
    check_instance(rf, ReceptiveField, "rf")
    pos = torch.as_tensor(positions)
    if pos.is_floating_point() or pos.is_complex() or pos.dtype == torch.bool:
        raise IdTypeError(f"positions: dtype {pos.dtype}; positions are integer (y, x) pairs, never truncated")
    n, c, h, w = images.shape
    if tuple(pos.shape) != (n, 2):
        raise InputError(f"positions: shape {tuple(pos.shape)}; expected one (y, x) per image: ({n}, 2)")
    out = torch.zeros((n, c, rf.height, rf.width), dtype=images.dtype, device=images.device)
    for i in range(n):
        y0, x0, y1, x1 = rf.box(int(pos[i][0]), int(pos[i][1]))
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        if sy1 <= sy0 or sx1 <= sx0:
            continue
        out[i, :, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = images[i, :, sy0:sy1, sx0:sx1]
    return out
