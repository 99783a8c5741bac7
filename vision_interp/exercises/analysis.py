"""Analysis steps of the MNIST exercise that no other module owns.

These are small, measurable questions a researcher asks of a tiny CNN:

* what does each first-layer filter detect? (:func:`filter_orientation` from the weights,
  :func:`stimulus_tuning` / :func:`describe_filters` from responses to oriented bars, edges,
  dots and rings: orientation, selectivity, stroke width, on/off polarity);
* does a visualization look like what really excites the unit? (:func:`pearson` against the
  receptive-field patches of :mod:`vision_interp.data.examples`);
* do the channels an analysis names really matter? (:func:`ablated_logits`, :func:`ablation_effects`,
  :func:`random_channel_sets`), with ablations done through :func:`vision_interp.capture.hooks`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import InputError, NonFiniteError, check_int, check_number
from ..capture import capture, hooks
from ..units import resolve_layer, resolve_unit

__all__ = [
    "oriented_bar",
    "oriented_edge",
    "disk",
    "ring",
    "filter_orientation",
    "stimulus_tuning",
    "FilterProfile",
    "describe_filters",
    "pearson",
    "channel_means",
    "ablated_logits",
    "ablation_effects",
    "random_channel_sets",
    "summarize",
]


# --------------------------------------------------------------------------- stimuli

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to pixel ``size // 2`` (where the centre unit of a stride-1 layer
    looks), x to the right and y *up*."""
    c = float(size // 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return xx - c, c - yy


def oriented_bar(size: int, angle_deg: float, width: float = 2.0, length: float | None = None) -> np.ndarray:
    """A bright anti-aliased bar through the centre; ``angle_deg`` counter-clockwise from horizontal."""
    check_int(size, "size", minimum=1)
    check_number(angle_deg, "angle_deg")
    x, y = _grid(size)
    a = math.radians(angle_deg)
    along = x * math.cos(a) + y * math.sin(a)
    across = -x * math.sin(a) + y * math.cos(a)
    img = np.clip(width / 2.0 + 0.5 - np.abs(across), 0.0, 1.0)
    if length is not None:
        img *= np.clip(length / 2.0 + 0.5 - np.abs(along), 0.0, 1.0)
    return img


def oriented_edge(size: int, direction_deg: float) -> np.ndarray:
    """Half of the image bright: ink lies on the side the ``direction_deg`` normal points to."""
    x, y = _grid(size)
    a = math.radians(direction_deg)
    d = x * math.cos(a) + y * math.sin(a)
    return np.clip(d + 0.5, 0.0, 1.0)


def disk(size: int, radius: float) -> np.ndarray:
    x, y = _grid(size)
    return np.clip(radius + 0.5 - np.hypot(x, y), 0.0, 1.0)


def ring(size: int, inner: float, outer: float) -> np.ndarray:
    return np.clip(disk(size, outer) - disk(size, inner), 0.0, 1.0)


# --------------------------------------------------------------------------- first-layer filters

def filter_orientation(weights: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Orientation (degrees in [0, 180), counter-clockwise from horizontal) of the stripes/edges in a
    2-D filter, and the coherence in [0, 1] of that estimate.

    Uses the structure tensor of the filter's gradients: the dominant gradient direction is
    perpendicular to the stripes, so a horizontal bar filter returns ~0 degrees.
    """
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
    if w.ndim < 2 or min(w.shape[-2:]) < 2:
        raise InputError(f"weights: shape {w.shape}; a filter needs at least 2x2 spatial entries (kh, kw) or (..., kh, kw)")
    if not np.isfinite(w).all():
        raise NonFiniteError("weights: the filter has NaN or infinite entries; its orientation is undefined")
    while w.ndim > 2:
        w = w.sum(0)
    gy_down, gx = np.gradient(w)
    gy = -gy_down  # y up, so angles are counter-clockwise as on paper
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    grad_angle = 0.5 * math.degrees(math.atan2(2 * jxy, jxx - jyy))
    tr = jxx + jyy
    coherence = float(math.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / tr) if tr > 1e-12 else 0.0
    return float((grad_angle + 90.0) % 180.0), coherence


def _unit_response(model: nn.Module, images: np.ndarray, layer: str, batch_size: int = 256) -> torch.Tensor:
    """Pre-ReLU response (N, C) of ``layer`` at the spatial centre to each stimulus (N, H, W)."""
    x = torch.as_tensor(images, dtype=torch.float32)[:, None]
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            act = capture(model, x[i : i + batch_size], [layer], detach=True)[layer]
            h, w = act.shape[-2:]
            out.append(act[:, :, h // 2, w // 2])
    return torch.cat(out)


def stimulus_tuning(
    model: nn.Module,
    layer: str = "conv1",
    angles: Sequence[float] = tuple(range(0, 180, 15)),
    widths: Sequence[float] = (1, 2, 3, 4, 5),
    size: int | None = None,
) -> dict:
    """Responses of the centre unit of every channel to a battery of stimuli.

    Returns numpy arrays: ``bars`` (C, n_angles, n_widths), ``edges`` (C, 2 * n_angles) over
    directions 0..360, ``blank`` (C,), ``full`` (C,) (uniform ink), ``dot`` (C,), ``ring`` (C,).
    """
    if size is None:
        size = int(getattr(model, "input_shape", (1, 28, 28))[-1])
    bars = np.stack([oriented_bar(size, a, w, length=None) for a in angles for w in widths])
    edge_dirs = [a for a in angles] + [a + 180 for a in angles]
    edges = np.stack([oriented_edge(size, a) for a in edge_dirs])
    extra = np.stack([np.zeros((size, size)), np.ones((size, size)), disk(size, 1.0), ring(size, 2.0, 3.5)])
    r = _unit_response(model, np.concatenate([bars, edges, extra]), layer).numpy()
    nb, ne = len(bars), len(edges)
    c = r.shape[1]
    return {
        "angles": list(map(float, angles)),
        "widths": list(map(float, widths)),
        "edge_directions": list(map(float, edge_dirs)),
        "bars": r[:nb].T.reshape(c, len(angles), len(widths)),
        "edges": r[nb : nb + ne].T,
        "blank": r[nb + ne],
        "full": r[nb + ne + 1],
        "dot": r[nb + ne + 2],
        "ring": r[nb + ne + 3],
    }


@dataclass
class FilterProfile:
    """What one first-layer channel detects, with the numbers the verdict rests on."""

    channel: int
    kind: str
    preferred_angle: float  # degrees, from the bar responses
    weight_angle: float  # degrees, from the weights' structure tensor
    weight_coherence: float
    orientation_selectivity: float  # 0 = untuned, 1 = responds to one orientation only
    preferred_width: float  # bar width in pixels giving the largest response
    bar_response: float  # best bar response minus blank response (pre-ReLU)
    edge_response: float  # best edge response minus blank response
    best_edge_direction: float  # direction (degrees) the ink side faces for the best edge
    ink_polarity: float  # (full ink - blank) / scale: > 0 ink excites, < 0 ink suppresses
    centre_surround: float  # (dot - ring) / scale: > 0 on-centre, < 0 off-centre

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def describe_filters(model: nn.Module, layer: str = "conv1", osi_threshold: float = 0.3) -> list[FilterProfile]:
    """Measure every channel of a first conv layer and name the kind of detector it is.

    The kind is derived from the numbers only: oriented (bar or edge) when the orientation
    selectivity index of the rectified bar responses exceeds ``osi_threshold``; otherwise a
    centre-surround or uniform-ink detector, or an "ink-suppressed" (off) unit when no stimulus
    raises its response above the blank image.
    """
    path = resolve_layer(model, layer)
    module = model.get_submodule(path)
    if not isinstance(module, nn.Conv2d):
        raise InputError(f"layer: {layer!r} is a {type(module).__name__}, not a 2-D convolution; describe_filters measures "
                         "the filters of a conv layer (e.g. 'conv1')")
    weights = module.weight.detach()
    t = stimulus_tuning(model, path)
    angles = np.radians(np.asarray(t["angles"]))
    edge_dirs = np.radians(np.asarray(t["edge_directions"]))
    profiles = []
    for c in range(t["bars"].shape[0]):
        blank = float(t["blank"][c])
        bars = t["bars"][c] - blank  # (angles, widths)
        best_w = int(np.argmax(bars.max(0)))
        edges = t["edges"][c] - blank
        bar_resp, edge_resp = float(bars.max()), float(edges.max())
        is_edge = edge_resp > 1.2 * max(bar_resp, 0.0)
        if is_edge:  # orientation of the edge line = ink direction + 90 degrees
            tuning, theta = np.clip(edges, 0.0, None), edge_dirs + math.pi / 2
        else:
            tuning, theta = np.clip(bars[:, best_w], 0.0, None), angles
        total = tuning.sum()
        if total > 1e-9:
            vec = (tuning * np.exp(2j * theta)).sum() / total
            osi, pref = float(abs(vec)), float((math.degrees(np.angle(vec)) / 2.0) % 180.0)
        else:
            osi, pref = 0.0, float("nan")
        scale = max(abs(bar_resp), abs(edge_resp), abs(float(t["full"][c]) - blank), 1e-6)
        polarity = (float(t["full"][c]) - blank) / scale
        cs = (float(t["dot"][c]) - float(t["ring"][c])) / scale
        w_angle, coh = filter_orientation(weights[c])
        if max(bar_resp, edge_resp, float(t["full"][c]) - blank) <= 1e-6:
            kind = "ink-suppressed (off) unit: every stroke lowers it"
        elif osi > osi_threshold:
            shape = "edge" if is_edge else "bar/stroke"
            width = f", strokes ~{t['widths'][best_w]:g}px wide" if shape != "edge" else ""
            kind = f"oriented {shape} detector at {pref:.0f} deg{width}"
        elif cs > 0.25:
            kind = "on-centre spot detector"
        elif cs < -0.25:
            kind = "off-centre (surround) detector"
        else:
            kind = "untuned ink detector"
        profiles.append(FilterProfile(
            channel=c, kind=kind, preferred_angle=pref, weight_angle=w_angle, weight_coherence=coh,
            orientation_selectivity=osi, preferred_width=float(t["widths"][best_w]), bar_response=bar_resp,
            edge_response=edge_resp, best_edge_direction=float(t["edge_directions"][int(np.argmax(edges))]),
            ink_polarity=polarity, centre_surround=cs,
        ))
    return profiles


# --------------------------------------------------------------------------- comparisons

def pearson(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Pearson correlation of two arrays of equal size (0.0 when either is constant)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"pearson() needs arrays of equal size, got {x.size} and {y.size}")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 1e-12 else 0.0


# --------------------------------------------------------------------------- ablations

@torch.no_grad()
def channel_means(model: nn.Module, images: torch.Tensor, layer: str, batch_size: int = 1000) -> torch.Tensor:
    """Dataset mean activation (C, H, W) of ``layer``: the value mean-ablation substitutes."""
    total, n = None, 0
    for i in range(0, len(images), batch_size):
        act = capture(model, images[i : i + batch_size], [layer], detach=True)[layer]
        s = act.sum(0)
        total = s if total is None else total + s
        n += len(act)
    return total / n


@torch.no_grad()
def ablated_logits(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    channels: Sequence[int],
    mode: str = "mean",
    means: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> torch.Tensor:
    """Logits with ``channels`` of ``layer`` replaced by zero (``mode="zero"``) or by their dataset mean
    (``mode="mean"``; pass ``means`` from :func:`channel_means`). An empty channel list gives the clean logits.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode must be 'zero' or 'mean', got {mode!r}")
    channels = [int(c) for c in channels]
    for c in channels:
        resolve_unit(model, (layer, c), tuple(images.shape[1:]))  # range errors come from units.py
    if mode == "mean" and means is None and channels:
        raise ValueError("mean ablation needs the dataset means: pass means=channel_means(model, images, layer)")
    chs = torch.as_tensor(list(channels), dtype=torch.long)

    def replace(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, chs] = 0.0 if mode == "zero" else means[chs].to(out)
        return out

    outs = []
    with hooks(model, {layer: replace} if len(chs) else {}):
        for i in range(0, len(images), batch_size):
            outs.append(model(images[i : i + batch_size]))
    return torch.cat(outs)


def ablation_effects(clean: torch.Tensor, ablated: torch.Tensor, labels: torch.Tensor, n_classes: int = 10) -> dict:
    """Per-class effects of an ablation, measured on each class's own test images.

    ``accuracy_drop[d]`` (fraction of class-d images that stop being classified correctly, net),
    ``logit_drop[d]`` (mean fall of logit d on class-d images) and ``margin_drop[d]`` (mean fall of
    logit d minus the best other logit). Lists of length ``n_classes``.
    """
    def margin(lg: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        own = lg.gather(1, y[:, None])[:, 0]
        other = lg.scatter(1, y[:, None], float("-inf")).max(1).values
        return own - other

    acc_drop, logit_drop, margin_drop = [], [], []
    for d in range(n_classes):
        sel = labels == d
        if not sel.any():
            acc_drop.append(float("nan")); logit_drop.append(float("nan")); margin_drop.append(float("nan"))
            continue
        c, a, y = clean[sel], ablated[sel], labels[sel]
        acc_drop.append(float((c.argmax(1) == y).float().mean() - (a.argmax(1) == y).float().mean()))
        logit_drop.append(float((c[:, d] - a[:, d]).mean()))
        margin_drop.append(float((margin(c, y) - margin(a, y)).mean()))
    return {"accuracy_drop": acc_drop, "logit_drop": logit_drop, "margin_drop": margin_drop}


def random_channel_sets(n_channels: int, k: int, draws: int, seed: int) -> list[list[int]]:
    """``draws`` seeded random sets of ``k`` distinct channels (the control for a named set of size k)."""
    if not 0 < k <= n_channels:
        raise ValueError(f"cannot draw {k} of {n_channels} channels")
    gen = torch.Generator().manual_seed(seed)
    return [sorted(torch.randperm(n_channels, generator=gen)[:k].tolist()) for _ in range(draws)]


def summarize(values: Iterable[float]) -> dict:
    """Mean, standard deviation, min and max of a list of numbers (for control distributions)."""
    v = np.asarray(list(values), dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}  # n stays an int
