"""Measured labels for transcoder features, each with a simulation score on held-out images.

A label is built from measured properties only, on the first half of the images:

* **stroke**: the orientation of the activation-weighted mean of the feature's top receptive-field crops
  (input pixels), from its structure tensor (coherence below :data:`COHERENT` reads as a blob);
* **region**: the cell of a 3 x 3 grid holding the centroid of the feature's mean activation map;
* **digit**: the class whose images give the highest mean (per-image maximum) activation, named when it
  holds at least :data:`SELECTIVE` of the summed class means (twice the uniform share for 10 classes);
* **writes**: the block-output channel its decoder direction writes most to, with its sign;
* **dead**: never active on these images (labelled so, with no score).

The **score** asks how well the label alone predicts the feature's activations on the held-out half (in the
spirit of automated interpretability's explain -> simulate -> score): a simulator that knows only the
label's words predicts each position's activation as ``stroke match x region prior x digit factor`` (an
oriented-bar template of the labelled orientation, or ink mass for a blob, correlated with the position's
receptive field; a Gaussian around the labelled region; x3 on images of the labelled digit, which the
simulator is told), and the score is the Pearson correlation between simulated and true activations over
every held-out (image, position). 1 is a perfect description, 0 says nothing.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import InputError, check_images, check_int
from ..model_state import runs_model
from .transcoders import INPUT, Transcoder, check_transcoder

__all__ = ["feature_labels", "LABELS_FORMAT", "COHERENT", "SELECTIVE"]

LABELS_FORMAT = "vision_interp.feature_labels/1"
COHERENT = 0.25  # structure-tensor coherence under which a crop reads as a blob, not a stroke
SELECTIVE = 0.2  # class share that names a digit (uniform: 0.1)
REGIONS = (("top", "middle", "bottom"), ("left", "centre", "right"))
ORIENTATIONS = ("horizontal", "diagonal /", "vertical", "diagonal \\")


def _activations(model: nn.Module, tc: Transcoder, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    from ..capture import capture

    module = tc.module
    dev = next(module.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        a = x if tc.in_layer == INPUT else capture(model, x, [tc.in_layer], detach=True)[tc.in_layer]
        with torch.no_grad():
            out.append(module(a.to(dev, next(module.parameters()).dtype)).float().cpu())
    return torch.cat(out)


def _rf(model: nn.Module, tc: Transcoder, hw: tuple[int, int]):
    from ..data.examples import receptive_field

    return receptive_field(model, tc.out_layer)


def _shifted(images: torch.Tensor, rf, hw: tuple[int, int]) -> torch.Tensor:
    """Images padded and cropped so that a stride-``rf`` convolution with an ``rf``-sized kernel gives, at
    output (y, x), the receptive field of position (y, x) (zero outside the image)."""
    h, w = hw
    need_h = (h - 1) * rf.stride_y + rf.height
    need_w = (w - 1) * rf.stride_x + rf.width
    p = max(rf.height, rf.width) + abs(rf.top) + abs(rf.left)
    x = F.pad(images.mean(1, keepdim=True), (p, p + need_w, p, p + need_h))
    return x[:, :, p + rf.top:p + rf.top + need_h, p + rf.left:p + rf.left + need_w]


def _template(kind: str, hgt: int, wid: int) -> torch.Tensor:
    """An oriented bar through the crop's centre (zero mean), or uniform ink mass for a blob."""
    if kind == "blob":
        return torch.full((1, 1, hgt, wid), 1.0 / (hgt * wid))
    theta = {"horizontal": 0.0, "diagonal /": math.pi / 4, "vertical": math.pi / 2, "diagonal \\": 3 * math.pi / 4}[kind]
    yy, xx = torch.meshgrid(torch.arange(hgt) - (hgt - 1) / 2, torch.arange(wid) - (wid - 1) / 2, indexing="ij")
    # distance to the line through the centre at angle theta (y grows downwards, so "/" rises to the right)
    dist = (xx * math.sin(theta) + yy * math.cos(theta)).abs()
    bar = torch.exp(-dist ** 2 / (2 * (max(hgt, wid) / 12 + 0.6) ** 2))
    return (bar / bar.sum())[None, None]  # ink along the line (a zero-mean bar scores thin strokes only)


def _orientation(crop: torch.Tensor) -> tuple[str, float]:
    """(name, coherence) of the dominant stroke in a crop (H, W), from its structure tensor."""
    gy, gx = torch.gradient(crop.double())
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    tr = jxx + jyy
    if tr <= 1e-12:
        return "blob", 0.0
    coherence = math.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / tr
    if coherence < COHERENT:
        return "blob", coherence
    grad = 0.5 * math.atan2(2 * jxy, jxx - jyy)  # dominant gradient direction, in image axes (y down)
    stroke = (grad + math.pi / 2) % math.pi  # the stroke runs across the gradient
    # in image axes an angle a (from +x towards +y, i.e. downwards) of pi/4 is "\", 3pi/4 is "/"
    k = int(round(stroke / (math.pi / 4))) % 4
    return ("horizontal", "diagonal \\", "vertical", "diagonal /")[k], coherence


def _region(mean_map: torch.Tensor) -> tuple[str, tuple[float, float]]:
    h, w = mean_map.shape
    m = mean_map.double().clamp_min(0)
    tot = float(m.sum())
    if tot <= 0:
        return "middle centre", (0.5, 0.5)
    cy = float((m.sum(1) * (torch.arange(h, dtype=torch.float64) + 0.5)).sum()) / tot / h
    cx = float((m.sum(0) * (torch.arange(w, dtype=torch.float64) + 0.5)).sum()) / tot / w
    return f"{REGIONS[0][min(2, int(cy * 3))]} {REGIONS[1][min(2, int(cx * 3))]}", (cy, cx)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return round(float((a * b).sum()) / den, 4) if den > 0 else None


@runs_model
def feature_labels(model: nn.Module, tc: Transcoder, images: torch.Tensor, labels: torch.Tensor | Sequence[int], *,
                   top: int = 16, batch_size: int = 256, features: Sequence[int] | None = None) -> dict:
    """A measured label and a held-out simulation score for every feature of ``tc`` (or ``features``): see the
    module docstring for the rule. ``images`` (N, C, H, W) in [0, 1] with their class ``labels``; the first half
    measures, the second half scores. JSON-ready."""
    tc = check_transcoder(tc, model)
    x, _ = check_images(images, model, arg="images", allow_single=False)
    y = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels) if isinstance(labels, (list, tuple)) else None
    if y is None or len(y) != len(x):
        raise InputError(f"labels: give one class label per image ({len(x)} images)")
    y = torch.tensor([check_int(v, "labels", minimum=0) for v in y])
    if len(x) < 4:
        raise InputError(f"images: {len(x)}; at least 4 (half measure the label, half score it)")
    top = check_int(top, "top", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    feats = list(range(tc.n_features)) if features is None else [check_int(f, "features", minimum=0, maximum=tc.n_features - 1) for f in features]
    if not feats:
        raise InputError("features: empty; give feature indices or None for all")
    x = x.detach().cpu().float()
    z = _activations(model, tc, x, batch_size)  # (N, F, H, W)
    hw = tuple(z.shape[-2:])
    rf = _rf(model, tc, hw)
    half = len(x) // 2
    fit_x, test_x, fit_z, test_z, fit_y, test_y = x[:half], x[half:], z[:half], z[half:], y[:half], y[half:]
    fit_s, test_s = _shifted(fit_x, rf, hw), _shifted(test_x, rf, hw)
    n_classes = int(y.max()) + 1
    dirs = tc.module.directions.detach().cpu().float()
    yy, xx = torch.meshgrid((torch.arange(hw[0]) + 0.5) / hw[0], (torch.arange(hw[1]) + 0.5) / hw[1], indexing="ij")
    templates = {k: _template(k, rf.height, rf.width) for k in ("blob", *ORIENTATIONS)}
    responses = {k: F.conv2d(test_s, t, stride=(rf.stride_y, rf.stride_x))[:, 0, :hw[0], :hw[1]] for k, t in templates.items()}
    ink = responses["blob"]
    responses = {k: (r - 0.5 * ink).clamp_min(0) if k != "blob" else r for k, r in responses.items()}  # along the line, more than around it
    out = []
    for f in feats:
        a = fit_z[:, f]
        active = float((a > 0).float().mean())
        c = int(dirs[f].abs().argmax())
        writes = f"{'+' if dirs[f, c] > 0 else '-'}{tc.out_layer} ch {c}"
        rec = {"feature": f, "frequency": round(active, 5), "writes": writes}
        if active == 0.0:
            rec.update({"dead": True, "label": f"dead (never active on {half} images)", "score": None})
            out.append(rec)
            continue
        flat = a.flatten()
        k = min(top, int((flat > 0).sum()))
        vals, idx = flat.topk(k)
        n_i, rest = idx // (hw[0] * hw[1]), idx % (hw[0] * hw[1])
        pos_y, pos_x = rest // hw[1], rest % hw[1]
        crops = torch.stack([fit_s[n, 0, py * rf.stride_y:py * rf.stride_y + rf.height, px * rf.stride_x:px * rf.stride_x + rf.width]
                             for n, py, px in zip(n_i.tolist(), pos_y.tolist(), pos_x.tolist())])
        mean_crop = (crops * vals[:, None, None]).sum(0) / vals.sum()
        stroke, coherence = _orientation(mean_crop)
        on_ink = float(mean_crop.mean()) >= float(fit_s.mean())  # its top crops hold more ink than a typical field
        region, (cy, cx) = _region(a.mean(0))
        per_image = a.flatten(1).amax(1)
        means = torch.stack([per_image[fit_y == d].mean() if (fit_y == d).any() else torch.tensor(0.0) for d in range(n_classes)])
        share = means / means.sum().clamp_min(1e-12)
        d_top = int(share.argmax())
        digit = d_top if float(share[d_top]) >= SELECTIVE else None
        words = (f"{stroke} stroke" if stroke != "blob" else "ink blob") if on_ink else "background"
        label = f"{words}, {region}" + (f", digit {digit}" if digit is not None else "") + f"; writes {writes}"
        # the simulation: only the label's words -> predicted activations on the held-out half
        ry, rx = (REGIONS[0].index(region.split()[0]) + 0.5) / 3, (REGIONS[1].index(region.split()[1]) + 0.5) / 3
        prior = torch.exp(-((yy - ry) ** 2 + (xx - rx) ** 2) / (2 * 0.3 ** 2))
        factor = torch.ones(len(test_x)) if digit is None else 1.0 + 2.0 * (test_y == digit).float()
        local = responses[stroke] if on_ink else (1.0 - responses["blob"] / responses["blob"].max().clamp_min(1e-12))
        sim = local * prior[None] * factor[:, None, None]
        rec.update({"dead": False, "label": label, "stroke": stroke if on_ink else "background", "coherence": round(coherence, 4), "region": region,
                    "centroid": [round(cy, 4), round(cx, 4)], "digit": digit, "digit_share": round(float(share[d_top]), 4),
                    "score": _pearson(sim, test_z[:, f])})
        out.append(rec)
    live = [r["score"] for r in out if r.get("score") is not None]
    return {"format": LABELS_FORMAT, "layer": tc.feature_layer, "images": half, "held_out": len(x) - half,
            "dead": sum(1 for r in out if r["dead"]), "mean_score": round(sum(live) / len(live), 4) if live else None,
            "rule": "label from measured properties on the first half; score = Pearson r of a label-only simulator "
                    "(stroke template x region prior x digit factor) against the true activations on the second half",
            "features": out}
