"""What the MNIST CNN's conv units detect: conv1 exactly (it is linear in pixels), conv2 from evidence.

* :func:`conv1_optimum` - the exact maximiser of a conv1 unit over [0, 1] patches (a linear
  function on a box is maximised at a vertex: x = 1[w > 0]), taking the model's normalisation
  into account;
* :func:`conv1_tuning` / :func:`label_conv1` / :func:`check_conv1_label` - responses to synthetic
  bright and dark strokes and half-plane edges; a label is derived from them and a separate check
  refuses any label its own tuning contradicts;
* :func:`stroke_stimuli` / :func:`conv2_stimulus_tuning` - strokes, arcs, loops and stroke ends
  placed at controlled offsets around the conv2 centre unit's receptive field;
* :func:`class_histogram`, :func:`polysemanticity` - which digits drive a unit's top activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


__all__ = [
    "conv1_optimum",
    "conv1_optimum_value",
    "brute_force_binary_max",
    "conv1_tuning",
    "label_conv1",
    "check_conv1_label",
    "Conv1Label",
    "stroke_stimuli",
    "conv2_stimulus_tuning",
    "class_histogram",
    "polysemanticity",
]


# =============================================================================== conv1, exactly

def _norm(model: nn.Module) -> tuple[float, float]:
    n = getattr(model, "normalize", None)
    return (float(n.mean), float(n.std)) if n is not None else (0.0, 1.0)


def conv1_optimum(weight: torch.Tensor) -> torch.Tensor:
    """The pixel patch in [0, 1] that maximises ``sum(w * (x - m) / s) + b`` (any m, any s > 0).

    The objective is linear in x, so each pixel independently goes to 1 where its weight is
    positive and to 0 where it is negative (a zero weight is indifferent; 0 is chosen).
    """
    return (weight > 0).to(weight.dtype)


def conv1_optimum_value(weight: torch.Tensor, bias: float, mean: float, std: float) -> float:
    """Pre-ReLU conv1 response to :func:`conv1_optimum` (the unit's global maximum over [0, 1])."""
    x = conv1_optimum(weight)
    return float((weight * (x - mean)).sum() / std + bias)


def brute_force_binary_max(weight: torch.Tensor, bias: float, mean: float, std: float) -> float:
    """Maximum over all 2^n binary patches (n = weight.numel() <= 16): the check of the closed form."""
    n = weight.numel()
    if n > 16:
        raise ValueError(f"brute force over 2^{n} patches is too large; use a filter with at most 16 weights")
    codes = torch.arange(2**n)
    bits = ((codes[:, None] >> torch.arange(n)) & 1).to(weight.dtype)
    vals = ((bits - mean) * weight.flatten()).sum(1) / std + bias
    return float(vals.max())


ANGLES = tuple(range(0, 180, 15))
WIDTHS = (1, 2, 3, 4)
OFFSETS = (-3, -2, -1, 0, 1, 2, 3)  # bar shifted perpendicular to itself, in pixels


def _centre_response(model: nn.Module, layer: str, images: np.ndarray, pos: tuple[int, int] | None = None) -> np.ndarray:
    from ..capture import capture

    x = torch.as_tensor(images, dtype=torch.float32)[:, None]
    with torch.no_grad():
        act = capture(model, x, [layer], detach=True)[layer]
    h, w = act.shape[-2:]
    y0, x0 = pos if pos is not None else (h // 2, w // 2)
    return act[:, :, y0, x0].numpy().T  # (C, N)


def _shifted_bar(size: int, angle: float, width: float, offset: float) -> np.ndarray:
    a = math.radians(angle)
    c = float(size // 2)
    return _segment(size, c - offset * math.cos(a), c - offset * math.sin(a), angle, 4 * size, width)


def conv1_tuning(model: nn.Module, size: int = 28) -> dict:
    """Pre-ReLU centre responses of every conv1 channel to bright strokes (angle x width x perpendicular
    offset, so one-sided "edge of a stroke" units are found too) and dark lines on white.

    Arrays: ``bright`` / ``dark`` (C, angles, widths, offsets); ``blank``, ``white`` (C,).
    """
    bars = [_shifted_bar(size, a, w, o) for a in ANGLES for w in WIDTHS for o in OFFSETS]
    imgs = np.stack(bars + [1.0 - b for b in bars] + [np.zeros((size, size)), np.ones((size, size))])
    r = _centre_response(model, "conv1", imgs)
    nb, c = len(bars), r.shape[0]
    shape = (c, len(ANGLES), len(WIDTHS), len(OFFSETS))
    return {
        "angles": list(ANGLES), "widths": list(WIDTHS), "offsets": list(OFFSETS),
        "bright": r[:, :nb].reshape(shape), "dark": r[:, nb : 2 * nb].reshape(shape),
        "blank": r[:, -2], "white": r[:, -1],
    }


@dataclass
class Conv1Label:
    """A conv1 label with the claim it makes: a kind, and the stimulus that should drive it."""

    channel: int
    kind: str  # "stroke" (centred bright bar), "stroke edge" (bar beside the centre), "off", "blob"
    angle: float | None
    width: float | None
    offset: float | None
    selectivity: float
    text: str

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _osi(resp: np.ndarray, angles: np.ndarray) -> tuple[float, float]:
    r = np.clip(resp, 0, None)
    if r.sum() <= 1e-9:
        return 0.0, float("nan")
    v = (r * np.exp(2j * np.radians(angles))).sum() / r.sum()
    return float(abs(v)), float((math.degrees(np.angle(v)) / 2) % 180)


def _orientation_word(angle: float) -> str:
    a = angle % 180
    if a < 22.5 or a >= 157.5:
        return "horizontal"
    if a < 67.5:
        return "rising diagonal (/)"
    if a < 112.5:
        return "vertical"
    return "falling diagonal (\\)"


def _side_word(angle: float, offset: float) -> str:
    """Where a bar shifted by ``offset`` along its normal lies, seen from the centre."""
    a = math.radians(angle)
    dx, dy = -math.sin(a) * offset, math.cos(a) * offset  # as _shifted_bar places it (x right, y up)
    if abs(dx) >= abs(dy):
        return "right of" if dx > 0 else "left of"
    return "above" if dy > 0 else "below"


def _meaningful(bright: np.ndarray) -> float:
    return 0.1 * float(np.abs(bright).max())


def label_conv1(t: dict, channel: int, osi_threshold: float = 0.3) -> Conv1Label:
    """Name a conv1 channel from its responses to bright strokes (MNIST has strokes on black)."""
    c, ang = channel, np.asarray(t["angles"], float)
    bright = t["bright"][c] - t["blank"][c]
    through = bright[:, :, t["offsets"].index(0)]
    if t["blank"][c] > 0 and through.max() <= _meaningful(bright) and -through.min() > bright.max():
        ai, wi = np.unravel_index(int(np.argmin(through)), through.shape)
        bi = np.unravel_index(int(np.argmax(bright)), bright.shape)
        extra = (f"; a stroke {abs(t['offsets'][bi[2]]):g}px {_side_word(ang[bi[0]], t['offsets'][bi[2]])} centre raises it "
                 f"({bright.max():+.1f})") if bright.max() > _meaningful(bright) else ""
        return Conv1Label(c, "off", float(ang[ai]), float(t["widths"][wi]), 0.0, 0.0,
                          f"off unit: fires on blank paper ({t['blank'][c]:+.2f}); a stroke through the centre lowers it, a "
                          f"{_orientation_word(ang[ai])} one most ({through.min():+.1f}){extra}")
    ai, wi, oi = np.unravel_index(int(np.argmax(bright)), bright.shape)
    osi, _ = _osi(bright[:, wi, :].max(1), ang)
    a, w, off = float(ang[ai]), float(t["widths"][wi]), float(t["offsets"][oi])
    centred = float(bright[ai, wi, t["offsets"].index(0)])
    if osi < osi_threshold:
        return Conv1Label(c, "blob", None, w, off, osi, f"unoriented ink detector (strokes ~{w:g}px)")
    if off != 0 and centred < 0.5 * float(bright.max()):
        return Conv1Label(c, "stroke edge", a, w, off, osi,
                          f"edge: a {_orientation_word(a)} stroke ({a:.0f} deg) {abs(off):g}px {_side_word(a, off)} centre")
    return Conv1Label(c, "stroke", a, w, off, osi, f"{_orientation_word(a)} stroke ({a:.0f} deg), ~{w:g}px wide")


def check_conv1_label(t: dict, label: Conv1Label, tol: float = 0.8) -> list[str]:
    """Contradictions between a label and the tuning it claims (empty list = label accepted)."""
    c = label.channel
    ang = list(t["angles"])
    bright = t["bright"][c] - t["blank"][c]
    problems = []
    if label.kind in ("stroke", "stroke edge", "edge"):
        if label.angle is None or label.width is None:
            return [f"a {label.kind} label needs an angle and a width"]
        ai = int(np.argmin([abs(((a - label.angle + 90) % 180) - 90) for a in ang]))
        wi = int(np.argmin([abs(w - label.width) for w in t["widths"]]))
        oi = int(np.argmin([abs(o - (label.offset or 0)) for o in t["offsets"]]))
        r = float(bright[ai, wi, oi])
        if r <= _meaningful(bright):
            problems.append(f"the claimed stroke ({ang[ai]} deg, {t['widths'][wi]}px, offset {t['offsets'][oi]}) does not raise the unit ({r:+.2f} vs blank)")
        elif r < tol * float(bright.max()):
            problems.append(f"the claimed stroke gives {r:.2f}, under {tol:.0%} of the best stroke ({bright.max():.2f})")
        orth = float(bright[(ai + len(ang) // 2) % len(ang), wi].max())
        if r <= orth:
            problems.append(f"the orthogonal stroke drives it as much ({orth:.2f} >= {r:.2f})")
    elif label.kind == "off":
        through = bright[:, :, t["offsets"].index(0)]
        if through.max() > _meaningful(bright):
            problems.append(f"a stroke through the centre raises it (best {through.max():+.2f}), so it is not an off unit")
        if t["blank"][c] <= 0:
            problems.append(f"it does not fire on blank paper ({t['blank'][c]:+.2f})")
    elif label.kind == "blob":
        if bright.max() <= _meaningful(bright):
            problems.append("no stroke raises it")
    else:
        problems.append(f"unknown label kind {label.kind!r}")
    return problems


# =============================================================================== conv2 stimuli

def _coords(size: int, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return xx - cx, cy - yy  # x right, y up


def _segment(size: int, cy: float, cx: float, angle: float, length: float, width: float, start_at_centre: bool = False) -> np.ndarray:
    x, y = _coords(size, cy, cx)
    a = math.radians(angle)
    along = x * math.cos(a) + y * math.sin(a)
    across = -x * math.sin(a) + y * math.cos(a)
    img = np.clip(width / 2 + 0.5 - np.abs(across), 0, 1)
    if start_at_centre:
        return img * np.clip(along + 0.5, 0, 1) * np.clip(length + 0.5 - along, 0, 1)
    return img * np.clip(length / 2 + 0.5 - np.abs(along), 0, 1)


def _arc(size: int, cy: float, cx: float, radius: float, opening: float, width: float, span: float = 200.0) -> np.ndarray:
    """An arc of a circle centred at (cy, cx) whose gap faces ``opening`` degrees (0 = opens right)."""
    x, y = _coords(size, cy, cx)
    ring = np.clip(width / 2 + 0.5 - np.abs(np.hypot(x, y) - radius), 0, 1)
    ang = np.degrees(np.arctan2(y, x))
    off = np.abs(((ang - (opening + 180)) + 180) % 360 - 180)  # distance from the arc's middle
    return ring * np.clip((span / 2 - off) / 15 + 0.5, 0, 1)


_OPEN_WORD = {0: "opening right (a left arc, like C)", 90: "opening up (a bowl bottom, like U)",
              180: "opening left (a right arc, like reversed C)", 270: "opening down (an arch top, like n)"}
_END_WORD = {0: "pointing left (stroke comes from the right)", 90: "pointing down (stroke comes from above)",
             180: "pointing right (stroke comes from the left)", 270: "pointing up (stroke comes from below)"}


def stroke_stimuli(size: int = 28, centre: tuple[float, float] = (14.0, 14.0), width: float = 2.5) -> list[dict]:
    """Synthetic digit parts around ``centre`` (pixel y, x): strokes, arcs, loops, stroke ends, each a dict
    with ``family``, ``name`` and ``image`` (H, W) in [0, 1]."""
    cy, cx = centre
    out = []
    for a in range(0, 180, 15):
        out.append({"family": "stroke", "name": f"{_orientation_word(a)} stroke ({a} deg)", "param": a,
                    "image": _segment(size, cy, cx, a, 10, width)})
    for o in (0, 90, 180, 270):
        for r in (3.0, 4.5, 6.0):
            # the arc's middle (opposite its gap) sits at the centre: circle centre = centre + r * opening direction
            out.append({"family": "arc", "name": f"arc {_OPEN_WORD[o]}, radius {r:g}", "param": o,
                        "image": _arc(size, cy - r * math.sin(math.radians(o)), cx + r * math.cos(math.radians(o)), r, o, width)})
    for r in (2.5, 3.5, 5.0):
        out.append({"family": "loop", "name": f"closed loop, radius {r:g}", "param": r, "image": _arc(size, cy, cx, r, 0, width, span=360)})
    for d in (0, 90, 180, 270, 45, 135, 225, 315):
        word = _END_WORD.get(d, f"pointing {(d + 180) % 360} deg")
        out.append({"family": "end", "name": f"stroke end {word}", "param": d,
                    "image": _segment(size, cy, cx, d, 8, width, start_at_centre=True)})
    return out


def conv2_stimulus_tuning(model: nn.Module, offsets: tuple[int, ...] = (-3, 0, 3)) -> dict:
    """Pre-ReLU response of every conv2 channel's centre unit to each stimulus of :func:`stroke_stimuli`,
    placed at each (dy, dx) offset in ``offsets`` around the unit's receptive-field centre.

    Returns ``stimuli`` (list of dicts without images), ``images`` (n_offsets^2, S, H, W), ``response``
    (C, S, n_offsets^2), ``best_shift`` (C, S): the offset index where each channel responds most, and ``offsets``.
    """
    from ..units import layer_shape

    h, w = layer_shape(model, "conv2")[-2:]
    cy_in, cx_in = (h // 2) * 2 + 0.5, (w // 2) * 2 + 0.5  # pool1 cell (7, 7) covers input pixels 14-15
    size = int(getattr(model, "input_shape", (1, 28, 28))[-1])
    shifts = [(dy, dx) for dy in offsets for dx in offsets]
    stims, imgs = None, []
    for dy, dx in shifts:
        s = stroke_stimuli(size, (cy_in + dy, cx_in + dx))
        stims = stims or s
        imgs += [st["image"] for st in s]
    r = _centre_response(model, "conv2", np.stack(imgs))  # (C, shifts * S)
    n = len(stims)
    resp = r.reshape(r.shape[0], len(shifts), n).transpose(0, 2, 1)  # (C, S, shifts)
    all_images = np.stack(imgs).reshape(len(shifts), n, size, size)
    return {"stimuli": [{k: v for k, v in st.items() if k != "image"} for st in stims], "images": all_images,
            "response": resp, "best_shift": resp.argmax(2), "offsets": shifts}


# =============================================================================== class evidence

def class_histogram(labels_of_top: torch.Tensor, n_classes: int = 10) -> np.ndarray:
    """Fraction of a unit's top-activating images that belong to each class."""
    h = torch.bincount(labels_of_top, minlength=n_classes).double()
    return (h / h.sum().clamp_min(1)).numpy()


def polysemanticity(hist: np.ndarray, base_rates: np.ndarray | None = None) -> float:
    """Effective number of classes among the top activations, exp(entropy) of the histogram divided
    by the class base rates (1 = one class only, 10 = as mixed as the data set)."""
    p = np.asarray(hist, float)
    if base_rates is not None:
        p = p / np.maximum(base_rates, 1e-9)
        p = p / p.sum()
    nz = p[p > 0]
    return float(np.exp(-(nz * np.log(nz)).sum()))
