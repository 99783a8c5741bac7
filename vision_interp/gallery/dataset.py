"""What a gallery shows from a dataset: per-unit top and bottom examples, an activation histogram
and the class histogram of the top activations, from ONE streamed pass per layer.

Scores: an image's score for a unit is its largest activation over positions (top examples, the
histogram, the layer page's range) and its smallest (bottom examples); positions of those extrema
give the receptive-field crops. Ties keep the lower dataset index, so results are deterministic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..capture import capture
from ..units import model_device_dtype

__all__ = ["GalleryDataset", "LayerStats", "layer_stats", "HIST_BINS", "CLASS_TOP"]

HIST_BINS = 24
CLASS_TOP = 100  # the class histogram counts the labels of this many top images


@dataclass
class GalleryDataset:
    """A dataset as the gallery needs it: a name, its size, batches, images by index, labels."""

    name: str
    size: int
    batches: Callable[[int], Iterator[torch.Tensor]]
    take: Callable[[Sequence[int]], torch.Tensor]
    labels: list[str] | None
    fingerprint: str

    @classmethod
    def from_tensor(cls, name: str, images: torch.Tensor, labels: Sequence[str] | None) -> "GalleryDataset":
        images = images.detach().cpu().float().contiguous()
        h = hashlib.sha256(str(tuple(images.shape)).encode())
        h.update(images.numpy().tobytes())
        if labels is not None:
            h.update("\n".join(map(str, labels)).encode())

        def batches(bs: int) -> Iterator[torch.Tensor]:
            for s in range(0, len(images), bs):
                yield images[s : s + bs]

        return cls(name, len(images), batches, lambda idx: images[list(idx)], list(map(str, labels)) if labels is not None else None, h.hexdigest())

    @classmethod
    def from_folder(cls, folder) -> "GalleryDataset":
        """From :class:`vision_interp.data.folder.ImageFolder` (fingerprint: relative paths and sizes)."""
        h = hashlib.sha256(str(folder.shape).encode())
        for p in folder.files:
            h.update(f"{p.relative_to(folder.root).as_posix()}\0{p.stat().st_size}\n".encode())
        return cls(folder.name, len(folder), folder.batches, folder.take, folder.labels, h.hexdigest())


@dataclass
class LayerStats:
    """Per-image extreme activations of some channels of one layer, over the whole dataset."""

    channels: list[int]
    max_val: torch.Tensor  # (N, C) largest activation over positions
    min_val: torch.Tensor  # (N, C)
    max_pos: torch.Tensor | None  # (N, C, 2) (y, x) of the maximum; None for layers without positions
    min_pos: torch.Tensor | None

    def _row(self, channel: int) -> int:
        return self.channels.index(channel)

    def top(self, channel: int, k: int) -> list[dict]:
        return self._pick(channel, k, descending=True)

    def bottom(self, channel: int, k: int) -> list[dict]:
        return self._pick(channel, k, descending=False)

    def _pick(self, channel: int, k: int, descending: bool) -> list[dict]:
        j = self._row(channel)
        vals = self.max_val[:, j] if descending else self.min_val[:, j]
        order = torch.sort(vals, descending=descending, stable=True).indices[:k]
        pos = self.max_pos if descending else self.min_pos
        out = []
        for i in order.tolist():
            item = {"index": int(i), "value": float(vals[i])}
            if pos is not None:
                item["position"] = [int(p) for p in pos[i, j]]
            out.append(item)
        return out

    def histogram(self, channel: int, bins: int = HIST_BINS) -> dict:
        """Counts of the per-image maxima in ``bins`` equal bins between their min and max."""
        v = self.max_val[:, self._row(channel)].double()
        lo, hi = float(v.min()), float(v.max())
        if hi <= lo:
            hi = lo + 1e-6
        counts = torch.histc(v, bins=bins, min=lo, max=hi).long().tolist()
        return {"min": lo, "max": float(v.max()), "counts": counts}

    def range(self, channel: int) -> list[float]:
        j = self._row(channel)
        return [float(self.min_val[:, j].min()), float(self.max_val[:, j].max())]

    def class_histogram(self, channel: int, labels: list[str] | None, top: int = CLASS_TOP) -> dict | None:
        if labels is None:
            return None
        idx = [e["index"] for e in self.top(channel, min(top, len(labels)))]
        counts: dict[str, int] = {}
        for i in idx:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {"of_top": len(idx), "counts": [[k, v] for k, v in ranked]}


def _extreme(act: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if act.ndim == 2:
        return act, None
    n, c, h, w = act.shape
    flat = act.reshape(n, c, h * w)
    val, idx = (flat.max(dim=2) if largest else flat.min(dim=2))  # first occurrence on ties
    pos = torch.stack([idx // w, idx % w], dim=-1)
    return val, pos


@torch.no_grad()
def layer_stats(model: nn.Module, layer_path: str, channels: Sequence[int], dataset: GalleryDataset, batch_size: int = 256) -> LayerStats:
    """Stream the dataset once through ``model`` and keep each image's extreme activations."""
    device, dtype = model_device_dtype(model)
    chans = list(channels)
    sel = torch.tensor(chans)
    maxv, minv, maxp, minp = [], [], [], []
    for x in dataset.batches(batch_size):
        act = capture(model, x.to(device=device, dtype=dtype), [layer_path])[layer_path]
        act = act.detach().float().cpu()
        if act.ndim == 4:
            act = act[:, sel]
        elif act.ndim == 2:
            act = act[:, sel]
        else:
            raise ValueError(f"layer {layer_path!r} has activations of shape {tuple(act.shape)}; galleries need (N, C) or (N, C, H, W)")
        v, p = _extreme(act, True)
        maxv.append(v), maxp.append(p)
        v, p = _extreme(act, False)
        minv.append(v), minp.append(p)
    spatial = maxp[0] is not None
    return LayerStats(chans, torch.cat(maxv), torch.cat(minv), torch.cat(maxp) if spatial else None, torch.cat(minp) if spatial else None)
