"""Deletion and insertion curves: does an attribution's ranking of input values find what the model uses?

Values are taken in the ranking's order (most positive attribution first). *Deletion* replaces the
top fraction by a replacement image (black, grey, a blurred copy...) and records the mean
probability of the target class: a faithful ranking makes it fall fast. *Insertion* starts from the
replacement and puts the top fraction of the real values back: a faithful ranking makes it rise fast.
The area under each curve (mean over the fractions) summarises it; compare with a random ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..checks import check_images
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
    """
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty batch tensor (N, ...), got {getattr(images, 'shape', type(images).__name__)}")
    if (attributions is None) == (order is None):
        raise ValueError("give exactly one of attributions= (a map like the images) or order= (ranked value indices)")
    images, _ = check_images(images, model, arg="images", allow_single=False)
    n_img, n_val = len(images), images[0].numel()
    if attributions is not None:
        if tuple(attributions.shape) != tuple(images.shape):
            raise ValueError(f"attributions must have the images' shape {tuple(images.shape)}, got {tuple(attributions.shape)}")
        order = torch.argsort(attributions.flatten(1), 1, descending=True)
    elif tuple(order.shape) != (n_img, n_val):
        raise ValueError(f"order must be (images, values per image) = {(n_img, n_val)}, got {tuple(order.shape)}")
    fracs = [float(f) for f in fractions]
    if not fracs or any(not 0.0 <= f <= 1.0 for f in fracs):
        raise ValueError(f"fractions must be numbers in [0, 1], got {list(fractions)}")
    ys = _targets(model, images, targets)
    rep = replacement if isinstance(replacement, torch.Tensor) else torch.full_like(images, float(replacement))
    if tuple(rep.shape) != tuple(images.shape):
        raise ValueError(f"replacement must be a number or a tensor of the images' shape {tuple(images.shape)}, got {tuple(rep.shape)}")
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
    return DeletionInsertion(fracs, dele, ins)


def _targets(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int) -> torch.Tensor:
    """One class index per image, checked against the number of logits before the curves run."""
    ys = torch.as_tensor(targets, dtype=torch.long)
    ys = ys.expand(len(images)).clone() if ys.ndim == 0 else ys
    if ys.shape != (len(images),):
        raise ValueError(f"targets must be one class index or one per image ({len(images)}), got shape {tuple(ys.shape)}")
    with torch.no_grad():
        n_classes = int(model(images[:1]).shape[1])
    if int(ys.min()) < 0 or int(ys.max()) >= n_classes:
        raise ValueError(f"targets must be class indices 0-{n_classes - 1}, got {int(ys.min())}..{int(ys.max())}")
    return ys
