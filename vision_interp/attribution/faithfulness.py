"""Deletion and insertion curves: does an attribution's ranking of input values find what the model uses?

Values are taken in the ranking's order (most positive attribution first). *Deletion* replaces the
top fraction by a replacement image (black, grey, a blurred copy...) and records the mean
probability of the target class: a faithful ranking makes it fall fast. *Insertion* starts from the
replacement and puts the top fraction of the real values back: a faithful ranking makes it rise fast.
The area under each curve (mean over the fractions) summarises it; compare with a random ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import (InputError, InputTypeError, NonFiniteError, TargetRangeError, check_class_target, check_finite, check_images,
                      check_matrix, check_model, check_number, is_integer_id)
from ..model_state import runs_model

__all__ = ["DeletionInsertion", "deletion_insertion", "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class DeletionInsertion:
    """Mean target-class probability after deleting / inserting each fraction of the ranked input values."""

    fractions: list[float]
    deletion: list[float]  # lower = more faithful
    insertion: list[float]  # higher = more faithful

    @property
    def deletion_auc(self) -> float:
        return float(np.mean(self.deletion))

    @property
    def insertion_auc(self) -> float:
        return float(np.mean(self.insertion))


@torch.no_grad()
@runs_model
def deletion_insertion(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int,
                       attributions: torch.Tensor | None = None, *, order: torch.Tensor | None = None,
                       replacement: torch.Tensor | float = 0.0,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS) -> DeletionInsertion:
    """Deletion and insertion curves of ``attributions`` (same shape as ``images``) for class ``targets``
    (one index, or one per image). Instead of attributions, pass ``order`` (N, values per image): each image's
    value indices, first = deleted first (e.g. a random ranking as the control). ``replacement``: what deleted
    values become (a number or a tensor like ``images``).

    Refused before any work: attributions with NaN or infinity (they would rank pixels arbitrarily), an
    ``order`` whose rows are not permutations (a repeated index deletes fewer values than the fraction
    says), float targets (never truncated), fractions outside [0, 1], a replacement that is not finite.
    """
    check_model(model)
    if not isinstance(images, torch.Tensor):
        raise InputTypeError(f"images: expected a torch.Tensor of images (N, C, H, W) in [0, 1], got {type(images).__name__}")
    if (attributions is None) == (order is None):
        raise InputError("order: give exactly one of attributions= (a map like the images) or order= (ranked value indices)")
    images, _ = check_images(images, model, arg="images", allow_single=False)
    n_img, n_val = len(images), images[0].numel()
    if attributions is not None:
        check_matrix(attributions, "attributions", ndim=images.ndim, finite=False)
        if tuple(attributions.shape) != tuple(images.shape):
            raise InputError(f"attributions: shape {tuple(attributions.shape)}; must be the images' shape {tuple(images.shape)}")
        if not (attributions.is_floating_point() or attributions.dtype in (torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise InputError(f"attributions: dtype {attributions.dtype}; give real numbers (an attribution map)")
        # NaN would sort as the largest value and rank pixels arbitrarily: refuse, never rank them
        check_finite(attributions, "attributions")
        order = torch.argsort(attributions.detach().flatten(1).to(images.device), 1, descending=True)
    else:
        order = _check_order(order, n_img, n_val).to(images.device)
    fracs = _check_fractions(fractions)
    ys = _targets(model, images, targets)
    if isinstance(replacement, torch.Tensor):
        rep = check_images(replacement, None, arg="replacement", allow_single=False, value_range=None)[0] \
            if replacement.ndim == images.ndim else replacement
        if tuple(rep.shape) != tuple(images.shape):
            raise InputError(f"replacement: shape {tuple(replacement.shape)}; must be a number or a tensor of the images' "
                             f"shape {tuple(images.shape)}")
        rep = rep.to(device=images.device, dtype=images.dtype)
    else:
        rep = torch.full_like(images, check_number(replacement, "replacement"))
    flat_x, flat_b = images.flatten(1), rep.flatten(1)
    dele, ins = [], []
    for f in fracs:
        n = int(round(f * n_val))
        mask = torch.zeros_like(flat_x, dtype=torch.bool)
        if n:
            mask.scatter_(1, order[:, :n], True)
        xd = torch.where(mask, flat_b, flat_x).view_as(images)
        xi = torch.where(mask, flat_x, flat_b).view_as(images)
        with torch.no_grad():
            dele.append(float(torch.softmax(model(xd), 1).gather(1, ys[:, None]).mean()))
            ins.append(float(torch.softmax(model(xi), 1).gather(1, ys[:, None]).mean()))
    if not all(np.isfinite(dele + ins)):
        raise NonFiniteError("deletion/insertion curves: the model's probabilities are not finite for the deleted or "
                             f"inserted images (deletion {dele}, insertion {ins}); check the model and replacement")
    return DeletionInsertion(fracs, dele, ins)


def _check_order(order: Any, n_img: int, n_val: int) -> torch.Tensor:
    """``order``: an integer tensor (images, values per image), each row a permutation of 0..values-1."""
    if not isinstance(order, torch.Tensor):
        raise InputTypeError(f"order: expected an integer tensor (images, values per image), got {type(order).__name__}")
    if order.is_floating_point() or order.is_complex() or order.dtype == torch.bool:
        raise InputTypeError(f"order: dtype {order.dtype}; value indices must be integers (e.g. order.long())")
    if tuple(order.shape) != (n_img, n_val):
        raise InputError(f"order: shape {tuple(order.shape)}; must be (images, values per image) = {(n_img, n_val)}")
    order = order.long()
    expected = torch.arange(n_val, device=order.device).expand(n_img, -1)
    bad = (order.sort(1).values != expected).any(1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        row = order[i]
        lo, hi = int(row.min()), int(row.max())
        what = (f"indices span {lo}..{hi}" if lo < 0 or hi >= n_val else
                f"{n_val - int(torch.unique(row).numel())} index(es) repeated")
        raise InputError(f"order: row {i} is not a permutation of 0..{n_val - 1} ({what}); each row must rank every value "
                         "of its image exactly once (e.g. torch.randperm(n) per image)")
    return order


def _check_fractions(fractions: Any) -> list[float]:
    """Fractions: a non-empty sequence of finite numbers in [0, 1]."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) and not isinstance(fractions, torch.Tensor):
        raise InputTypeError(f"fractions: expected a sequence of numbers in [0, 1], got {type(fractions).__name__}")
    values = fractions.tolist() if isinstance(fractions, torch.Tensor) else list(fractions)
    if not values:
        raise InputError("fractions: empty; give at least one fraction in [0, 1]")
    return [check_number(f, "fractions", minimum=0.0, maximum=1.0) for f in values]


def _targets(model: nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
    """One class index per image, checked against the number of logits before the curves run (floats are
    refused, never truncated: 3.5 is not class 3)."""
    check_class_target(targets, "targets")
    if isinstance(targets, (list, tuple)):
        if not all(is_integer_id(t) for t in targets):
            raise InputTypeError(f"targets: per-image class indices must be integers, got {list(targets)[:5]!r}")
        ys = torch.tensor([int(t) for t in targets], dtype=torch.long)
    elif isinstance(targets, torch.Tensor):
        ys = targets.detach().long().cpu()
    elif is_integer_id(targets):
        ys = torch.tensor(int(targets), dtype=torch.long)
    else:
        raise InputTypeError(f"targets: expected a class index or one per image, got {type(targets).__name__} {targets!r}")
    ys = ys.expand(len(images)).clone() if ys.ndim == 0 else ys
    if ys.shape != (len(images),):
        raise InputError(f"targets: shape {tuple(ys.shape)}; give one class index or one per image ({len(images)})")
    with torch.no_grad():
        out = model(images[:1])
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise InputError(f"targets: the model outputs {getattr(out, 'shape', type(out).__name__)}, not class scores (N, classes)")
    n_classes = int(out.shape[1])
    if int(ys.min()) < 0 or int(ys.max()) >= n_classes:
        raise TargetRangeError(f"targets: classes {int(ys.min())}..{int(ys.max())}; valid class indices are 0..{n_classes - 1}")
    return ys.to(images.device)
