"""Class-contrastive direct logit attribution and closed-form ablation of a layer the logits read linearly.

When the logits are a linear function of a layer (``logits = W a + b``: a classifier on a pooled
conv layer, through flatten / average pooling / linear modules), two questions have exact answers
from one capture of the layer:

* **which channels and positions speak for a class** -- *class-contrastive* direct logit
  attribution ``W[t, c, p] * (E[a | class t] - E[a | other classes])`` (:func:`contrastive_logit_attribution`).
  A channel equally active on every class scores 0 however large its activation, so the selection
  does not favour generally active channels; a negative weight where the channel is quieter on the
  class scores positive (evidence from an absent feature). Summed over channels and positions it
  is exactly the class's mean logit on its own images minus that on the others.
* **what removing them does** -- setting a channel at some positions to its dataset mean (or 0)
  changes the logits exactly by ``W[:, c, P] @ (v - a[c, P])`` (:func:`closed_form_ablation`), so an
  ablation and any number of size-matched random controls cost no forward pass.

``W`` is :func:`~vision_interp.circuits.classifier_view` of the layer; the linearity is checked on
the captured activations and logits before any number is reported (a max pool or ReLU between the
layer and the logits is refused, not approximated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..capture import capture
from ..checks import InputError, TargetRangeError, check_class_target, check_finite, check_images, check_index, check_int
from ..model_state import runs_model
from ..units import UnitSpec, resolve_unit
from .graph import trace_graph
from .weights import _logits_node, classifier_view

__all__ = ["ContrastiveAttribution", "AblationResult", "contrastive_logit_attribution", "closed_form_ablation",
           "contrastive_map", "ablation_delta", "margins", "ablation_effects", "size_matched_controls", "ABLATION_MODES"]

ABLATION_MODES = ("mean", "zero")
_LINEARITY_IMAGES = 8  # images whose logit differences must match W @ (activation differences)


# ----------------------------------------------------------------------------- tensor-level math

def contrastive_map(W: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor, target: int) -> torch.Tensor:
    """(C, P) class-contrastive direct logit attribution of every cell of ``acts`` (N, C, ...) to logit ``target``;
    ``W`` holds the logits' weights on the flattened layer (classes, C*P) or (classes, C, ...)."""
    _check_classes_present(labels, target, "class-contrastive attribution compares them with the other classes' images")
    a = acts.flatten(2)
    diff = a[labels == target].mean(0) - a[labels != target].mean(0)
    return W[target].view_as(diff) * diff


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each image's own-class logit minus its best other logit."""
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return own - other


def ablation_delta(W: torch.Tensor, acts: torch.Tensor, channel: int, positions: list[int], value: torch.Tensor | float) -> torch.Tensor:
    """(N, classes) exact change of the logits when ``channel`` at ``positions`` (flat cells) is set to ``value``
    (a (C, P) tensor of per-cell values, e.g. dataset means, or one number)."""
    a = acts.flatten(2)[:, channel, positions]  # (N, k)
    v = value[channel, positions] if isinstance(value, torch.Tensor) else torch.full_like(a[0], float(value))
    wc = W.view(W.shape[0], acts.shape[1], -1)[:, channel, positions]  # (classes, k)
    return (v - a) @ wc.T


def ablation_effects(clean: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, target: int) -> dict:
    """Margin drop on the target class's images, mean margin drop over the other classes' own images (each
    class present in ``labels`` counted once; a class with no image is left out, never averaged as NaN),
    their ratio (specificity) and the target's accuracy drop."""
    m0 = margins(clean, labels)
    m1 = margins(clean + delta, labels)
    drop = m0 - m1
    present = [k for k in range(int(clean.shape[1])) if bool((labels == k).any())]
    if target not in present or len(present) < 2:
        raise ValueError(f"target: class {target} needs images of its own and of another class among the labels "
                         f"(classes present: {', '.join(map(str, present)) or 'none'})")
    per = {k: drop[labels == k].mean() for k in present}
    sel = labels == target
    acc0 = (clean[sel].argmax(1) == target).float().mean()
    acc1 = ((clean + delta)[sel].argmax(1) == target).float().mean()
    others = float(torch.stack([v for k, v in per.items() if k != target]).mean())  # over the classes present
    d = float(per[target])
    spec = d / others if others > 1e-9 else (float("inf") if d > 0 else 0.0)
    return {"margin_drop": d, "others_margin_drop": others, "specificity": spec, "accuracy_drop": float(acc0 - acc1)}


def size_matched_controls(W: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor, target: int,
                          channel: int, positions: list[int], exclude: set[int], value: torch.Tensor, n: int,
                          gen: torch.Generator, pool_factor: int = 3) -> dict:
    """``n`` random controls for ablating ``channel`` at ``positions``: the same number of positions, a channel not
    in ``exclude``, and size-matched: from ``pool_factor * n`` candidates, the ``n`` whose perturbation on the
    target's images (mean |v - a| summed over positions) is closest to the named one's."""
    k = len(positions)
    _check_classes_present(labels, target, "controls are measured on the target's images")
    allowed = [c for c in range(acts.shape[1]) if c not in exclude]
    if not allowed:
        raise ValueError(f"exclude: every channel of the layer ({acts.shape[1]}) is excluded; no channel is left for controls")
    a = acts.flatten(2)[labels == target]
    per_cell = (value - a).abs().mean(0)  # (C, P): mean |v - a| on the target's images

    def size(c: int, pos: list[int]) -> float:
        return float(per_cell[c, pos].sum())

    goal = size(channel, positions)
    cands = []
    for i in range(pool_factor * n):
        c = allowed[int(torch.randint(len(allowed), (1,), generator=gen))]
        if i % 2:  # half the candidates favour cells that move a lot, so large named sets find matches
            pos = sorted(torch.multinomial(per_cell[c] + 1e-6, k, replacement=False, generator=gen).tolist())
        else:
            pos = sorted(torch.randperm(a.shape[2], generator=gen)[:k].tolist())
        cands.append((abs(np.log(max(size(c, pos), 1e-6) / max(goal, 1e-6))), c, pos))
    cands.sort(key=lambda t: t[0])
    chosen = cands[:n]
    sel = labels == target
    acts_d = acts[sel]
    deltas = torch.stack([ablation_delta(W, acts_d, c, pos, value) for _, c, pos in chosen])  # (n, N_d, classes)
    m0 = margins(clean[sel], labels[sel])
    lg = clean[sel][None] + deltas
    y = labels[sel][None, :, None].expand(len(chosen), -1, 1)
    own = lg.gather(2, y)[..., 0]
    other = lg.scatter(2, y, float("-inf")).max(2).values
    drops = (m0[None] - (own - other)).mean(1)
    return {"margin_drops": drops.tolist(), "size_ratio_max": float(np.exp(chosen[-1][0])), "n": len(chosen),
            "channels_used": sorted({c for _, c, _ in chosen})}


# ----------------------------------------------------------------------------- results

@dataclass(frozen=True)
class ContrastiveAttribution:
    """Class-contrastive direct logit attribution of one layer to one class."""

    layer: str  # module path of the attributed layer
    logits_layer: str  # module path of the logits
    target: int  # class index
    contributions: torch.Tensor = field(repr=False)  # (C, H, W): W[t] * (E[a | t] - E[a | not t])
    weights: torch.Tensor = field(repr=False)  # (C, H, W): how the layer feeds logit t

    @property
    def channel_totals(self) -> torch.Tensor:
        """(C,) each channel's contribution summed over positions."""
        return self.contributions.flatten(1).sum(1)

    @property
    def total(self) -> float:
        """Mean logit t on class-t images minus mean logit t on the others (exactly, for a linear readout)."""
        return float(self.contributions.sum())

    def top_channels(self, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` channels with the most positive contribution, as (channel, contribution)."""
        totals = self.channel_totals
        order = torch.argsort(totals, descending=True)[:k]
        return [(int(c), float(totals[c])) for c in order]


@dataclass(frozen=True)
class AblationResult:
    """One closed-form ablation of a channel at some positions, measured on the target class's images,
    with its size-matched random controls."""

    unit: str  # "layer:channel" as the user named it
    layer: str  # module path
    channel: int
    positions: list[int]  # flat cells y * W + x
    mode: str  # "mean" or "zero"
    target: int
    margin_drop: float  # mean fall of (own logit - best other) on the target's images
    others_margin_drop: float  # the same, averaged over the other classes present in the labels (each on its own images)
    specificity: float  # margin_drop / others_margin_drop
    accuracy_drop: float  # on the target's images
    control_drops: list[float] = field(default_factory=list)  # margin drops of the random controls
    control_channels: list[int] = field(default_factory=list)
    control_size_ratio_max: float | None = None  # worst perturbation-size ratio among the controls (1 = exact)

    @property
    def percentile(self) -> float | None:
        """Percentage of controls whose margin drop is below this ablation's (None without controls)."""
        if not self.control_drops:
            return None
        return 100.0 * float(np.mean(np.asarray(self.control_drops) < self.margin_drop))

    def as_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "percentile": self.percentile}


# ----------------------------------------------------------------------------- public API

@runs_model
def contrastive_logit_attribution(model: nn.Module, layer: UnitSpec, images: torch.Tensor, labels: torch.Tensor,
                                  target: int | UnitSpec, *, activations: torch.Tensor | None = None,
                                  logits: torch.Tensor | None = None, batch_size: int = 1000) -> ContrastiveAttribution:
    """Class-contrastive direct logit attribution of ``layer`` (a layer name or handle) to class ``target``
    (an index, or a logit unit such as ``"fc:3"``) over ``images`` (N, C, H, W) with class ``labels`` (N,).

    ``activations`` / ``logits``: the layer's output and the model's logits on ``images`` if already
    computed (they are captured otherwise). Raises ``ValueError`` when the logits are not linear in the layer.
    """
    path, acts, clean, W, labels = _linear_readout(model, layer, images, labels, activations, logits, batch_size)
    t = _target_class(model, target, W.shape[0])
    _check_classes_present(labels, t, "class-contrastive attribution compares them with the other classes' images")
    contrib = contrastive_map(W, acts, labels, t)
    return ContrastiveAttribution(path, _logits_path(model), t, contrib.view(acts.shape[1:]),
                                  W[t].view(acts.shape[1:]).clone())


@runs_model
def closed_form_ablation(model: nn.Module, unit: UnitSpec, images: torch.Tensor, labels: torch.Tensor,
                         target: int | UnitSpec, *, positions: Sequence[int] | Sequence[tuple[int, int]] | None = None,
                         mode: str = "mean", controls: int = 0, exclude: Sequence[int] = (),
                         generator: torch.Generator | int = 0, activations: torch.Tensor | None = None,
                         logits: torch.Tensor | None = None, batch_size: int = 1000) -> AblationResult:
    """Ablate ``unit`` (``"pool2:5"``; ``"pool2:5@3,4"`` for one position) at ``positions`` (flat cells or (y, x)
    pairs; default: the unit's position, else every position) by its dataset mean over ``images`` (``mode="mean"``)
    or by 0 (``"zero"``), exactly and without a forward pass, and measure the effect on class ``target``.

    ``controls``: number of random controls (same number of positions, a channel other than the unit's and
    ``exclude``, closest in perturbation size), drawn from ``generator`` (a ``torch.Generator`` or a seed).
    """
    if mode not in ABLATION_MODES:
        raise ValueError(f"mode must be one of {', '.join(ABLATION_MODES)}, got {mode!r}")
    controls = check_int(controls, "controls", minimum=0)
    exclude = [check_index(c, f"exclude: item {i}", minimum=0) for i, c in enumerate(_items(exclude, "exclude"))]
    if not isinstance(generator, torch.Generator):
        generator = check_int(generator, "generator (a torch.Generator or an integer seed)")
    images, _ = check_images(images, model, arg="images", allow_single=False)
    h = resolve_unit(model, unit, tuple(images.shape[1:]), single_channel=True)
    path, acts, clean, W, labels = _linear_readout(model, h, images, labels, activations, logits, batch_size)
    t = _target_class(model, target, W.shape[0])
    _check_classes_present(labels, t, "its specificity compares the target's margin drop with the other classes'")
    cells = _flat_positions(h, positions, tuple(acts.shape[2:]))
    value = acts.flatten(2).mean(0) if mode == "mean" else 0.0
    eff = ablation_effects(clean, labels, ablation_delta(W, acts, h.channel, cells, value), t)
    extra: dict = {}
    if controls:
        gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator))
        ctrl_value = value if isinstance(value, torch.Tensor) else torch.zeros_like(acts.flatten(2)[0])
        rc = size_matched_controls(W, acts, labels, clean, t, h.channel, cells, {h.channel, *map(int, exclude)},
                                   ctrl_value, int(controls), gen)
        extra = {"control_drops": rc["margin_drops"], "control_channels": rc["channels_used"],
                 "control_size_ratio_max": rc["size_ratio_max"]}
    return AblationResult(f"{h.name or path}:{h.channel}", path, h.channel, cells, mode, t, **eff, **extra)


# ----------------------------------------------------------------------------- checks and helpers

def _logits_path(model: nn.Module) -> str:
    return _logits_node(model, trace_graph(model)).name


def _target_class(model: nn.Module, target: int | UnitSpec, n_classes: int) -> int:
    """A class index, checked (as a unit of the logits layer) by units.py."""
    logits_path = _logits_path(model)
    check_class_target(target, "target")
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < n_classes:
            raise TargetRangeError(f"target: class {int(target)} is out of range; valid classes are 0..{n_classes - 1}")
        return int(target)
    h = resolve_unit(model, target, single_channel=True)
    if h.layer != logits_path:
        raise ValueError(f"target {target!r} is a unit of {h.layer!r}; give a class index (0-{n_classes - 1}) "
                         f"or a unit of the logits layer {logits_path!r}")
    return h.channel


def _items(value, arg: str) -> list:
    """A list / tuple / 1-D tensor or array of items (a string or a single number is refused)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 1:
            raise ValueError(f"{arg}: shape {tuple(value.shape)}; give a 1-D list")
        return list(value)
    if isinstance(value, (list, tuple, range)):
        return list(value)
    raise TypeError(f"{arg}: expected a list or tuple, got {type(value).__name__} {value!r}")


def _check_classes_present(labels: torch.Tensor, target: int, why: str) -> None:
    """The target class and at least one other class have images: an empty class would make a mean of
    nothing (NaN), which is refused here rather than returned."""
    present = sorted(int(c) for c in torch.unique(labels))
    shown = ", ".join(map(str, present[:20])) + (", ..." if len(present) > 20 else "")
    if target not in present:
        raise InputError(f"target: class {target} has no image among the {len(labels)} labels (classes present: "
                         f"{shown}); give images of class {target}, or a target from the classes present")
    if len(present) < 2:
        raise InputError(f"labels: every image is of class {target}; {why}, so give images of at least one other class")


def _flat_positions(h, positions, spatial: tuple[int, ...]) -> list[int]:
    """Flat cell indices (y * W + x) from the unit's position or the ``positions`` argument, range-checked."""
    if len(spatial) != 2:
        raise ValueError(f"{h.layer!r} has no (H, W) positions (output shape {tuple(spatial)}); ablation needs a spatial layer")
    H, Wd = spatial
    if positions is None:
        return [h.position[0] * Wd + h.position[1]] if h.position is not None else list(range(H * Wd))
    if h.position is not None:
        raise ValueError(f"unit {h.display()} names a position; do not pass positions= too")
    cells = []
    for i, p in enumerate(_items(positions, "positions")):
        if isinstance(p, (tuple, list)):
            if len(p) != 2:
                raise ValueError(f"positions: item {i} is {p!r}; a position is a flat cell or a pair (y, x)")
            y, x = (check_index(v, f"positions: item {i}") for v in p)
            if not (0 <= y < H and 0 <= x < Wd):
                raise ValueError(f"positions: position {tuple(p)} is outside {h.layer!r}'s {H}x{Wd} grid")
            cells.append(y * Wd + x)
        else:
            c = check_index(p, f"positions: item {i}")
            if not 0 <= c < H * Wd:
                raise ValueError(f"positions: cell {c} is outside 0-{H * Wd - 1} (flat cells of {h.layer!r}'s {H}x{Wd} grid)")
            cells.append(c)
    if not cells or len(set(cells)) != len(cells):
        raise ValueError(f"positions must be a non-empty list of distinct cells, got {list(positions)}")
    return cells


@torch.no_grad()
def _linear_readout(model: nn.Module, layer: UnitSpec, images: torch.Tensor, labels: torch.Tensor,
                    activations: torch.Tensor | None, logits: torch.Tensor | None, batch_size: int
                    ) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(layer path, activations, logits, W, labels) with W the logits' weights on the layer, checked to be exact,
    and the labels as a long tensor."""
    images, _ = check_images(images, model, arg="images", allow_single=False)
    check_int(batch_size, "batch_size", minimum=1)
    if not isinstance(labels, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"labels: expected one class index per image (a tensor or list of ints), got {type(labels).__name__}")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: dtype {labels.dtype}; class labels must be integers (e.g. labels.long()), never "
                        "truncated from floats")
    labels = labels.long().to(images.device)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be one class index per image ({len(images)}), got shape {tuple(labels.shape)}")
    path = resolve_unit(model, layer, tuple(images.shape[1:])).layer
    if activations is None:
        activations = torch.cat([capture(model, images[i : i + batch_size], [path], detach=True)[path]
                                 for i in range(0, len(images), batch_size)])
    if logits is None:
        with torch.no_grad():
            logits = torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    for arg, t in (("activations", activations), ("logits", logits)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{arg}: expected a float tensor (the model's own output on images), got "
                            f"{type(t).__name__}{' ' + str(t.dtype) if isinstance(t, torch.Tensor) else ''}")
        check_finite(t, arg)
    if logits.ndim != 2:
        raise ValueError(f"logits: shape {tuple(logits.shape)}; expected (N, classes)")
    if len(activations) != len(images) or len(logits) != len(images):
        raise ValueError(f"activations ({len(activations)}) and logits ({len(logits)}) must cover the {len(images)} images")
    W = classifier_view(model, path, input_shape=tuple(images.shape[1:])).reshape(logits.shape[1], -1)
    if W.shape[1] != activations[0].numel():
        raise ValueError(f"{path!r} has {activations[0].numel()} values per image but the logits read {W.shape[1]}")
    _check_linear(path, W, activations, logits)
    if labels.min() < 0 or labels.max() >= W.shape[0]:
        raise ValueError(f"labels must be class indices 0-{W.shape[0] - 1}, got {int(labels.min())}..{int(labels.max())}")
    return path, activations, logits, W, labels


def _check_linear(path: str, W: torch.Tensor, acts: torch.Tensor, logits: torch.Tensor) -> None:
    """Logit differences between images must equal W @ activation differences: else nothing here is exact."""
    n = min(_LINEARITY_IMAGES, len(acts))
    if n < 2:
        return
    da = (acts[1:n] - acts[:1]).flatten(1).double()
    dl = (logits[1:n] - logits[:1]).double()
    err = float((da @ W.double().T - dl).abs().max())
    scale = float(dl.abs().max()) + 1e-6
    if err > 1e-3 * scale + 1e-4:
        raise ValueError(f"the logits are not linear in {path!r} (error {err:.3g} vs logit differences up to {scale:.3g}): "
                         "a ReLU or max pool lies between them, so direct attribution and closed-form ablation would not "
                         "be exact; use the last layer before the classifier")
