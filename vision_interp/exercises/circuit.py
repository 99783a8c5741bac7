"""Per-digit circuits read from the classifier weights, their clauses, and causal tests of each clause.

The classifier is one linear layer on pool2 (16 channels x 7x7), so logit d is exactly
sum_{c,p} W[d, c, p] * a[c, p] + b[d]. Channels and positions are selected by *class-contrastive*
direct logit attribution: W[d, c, p] * (E[a | digit d] - E[a | other digits]). A channel that is
equally active on every digit scores 0 however large its activation, so the selection does not
favour generally active channels; a negative weight where the channel is quieter on d than on
other digits scores positive (evidence from an absent feature: an "inhibitory" clause).

Ablating pool2 positions changes the logits exactly by W[:, c, P] @ (v - a[c, P]), so every
ablation (named or random control) is computed in closed form from cached activations.

The methods themselves are the library's (:mod:`vision_interp.circuits.logit_attribution`:
:func:`~vision_interp.circuits.contrastive_logit_attribution`,
:func:`~vision_interp.circuits.closed_form_ablation`); this module holds what is the exercise's own:
clauses, their selection and wording, and the verdict rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# the generic methods live in the library (any CNN whose logits read a layer linearly); re-exported here
from ..circuits.logit_attribution import ablation_delta, contrastive_map, margins, size_matched_controls
from ..circuits.logit_attribution import ablation_effects as clause_effects

__all__ = ["Clause", "contrastive_map", "select_clauses", "ablation_delta", "margins", "clause_effects", "verdict",
           "VERDICT_RULE", "PERCENTILE_MIN", "SPECIFICITY_MIN", "random_controls", "region_word"]

PERCENTILE_MIN = 95.0
SPECIFICITY_MIN = 1.5
VERDICT_RULE = (f"A clause is **supported** when mean-ablating exactly the channel and positions it names lowers the digit's "
                f"margin by more than at least {PERCENTILE_MIN:.0f}% of its random controls (percentile >= {PERCENTILE_MIN:.0f}) AND "
                f"lowers it at least {SPECIFICITY_MIN:g}x as much as it lowers the other digits' margins on average "
                f"(specificity >= {SPECIFICITY_MIN:g}); **refuted** when the ablation does not lower the digit's margin or beats "
                f"fewer than half of its controls (percentile < 50); otherwise **not established**.")


def verdict(effect: float, percentile: float, specificity: float) -> str:
    """The one verdict rule (see :data:`VERDICT_RULE`). Specificity below 1 can never be supported."""
    if not effect > 0 or percentile < 50:
        return "refuted"
    if percentile >= PERCENTILE_MIN and specificity >= SPECIFICITY_MIN:
        return "supported"
    return "not established"


@dataclass
class Clause:
    """One statement of a digit's mechanism: channel ``channel`` at ``positions`` (pool2 cells, y*7+x)."""

    digit: int
    channel: int
    positions: list[int]
    sign: str  # "present" (excitatory weights, more active on the digit) or "absent" (inhibitory weights, quieter on it)
    contrastive_logit: float  # sum of the class-contrastive direct logit contribution over the positions
    share: float  # of the digit's total positive contrastive evidence

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def select_clauses(W: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor, digit: int, n_clauses: int = 3,
                   coverage: float = 0.7, max_positions: int = 12) -> list[Clause]:
    """The ``n_clauses`` (channel, sign) groups with the most positive contrastive evidence for ``digit``.

    Within a group the positions are the fewest cells (at most ``max_positions``) covering ``coverage``
    of the group's evidence.
    """
    m = contrastive_map(W, acts, labels, digit)
    w = W[digit].view_as(m)
    pos = m.clamp_min(0)
    total = float(pos.sum())
    groups = []
    for c in range(m.shape[0]):
        for sign, mask in (("present", w[c] > 0), ("absent", w[c] < 0)):
            vals = pos[c] * mask
            if float(vals.sum()) > 0:
                groups.append((float(vals.sum()), c, sign, vals))
    groups.sort(key=lambda g: -g[0])
    out = []
    for mass, c, sign, vals in groups[:n_clauses]:
        order = torch.argsort(vals, descending=True)
        cum = torch.cumsum(vals[order], 0) / mass
        k = min(int((cum < coverage).sum()) + 1, max_positions)
        out.append(Clause(digit, c, sorted(order[:k].tolist()), sign, float(vals[order[:k]].sum()), mass / max(total, 1e-12)))
    return out


def region_word(positions: list[int], side: int = 7) -> str:
    """'top left', 'centre', 'bottom' ... from the centroid of pool2 cells (each covers 4x4 input pixels)."""
    ys = np.array([p // side for p in positions], float)
    xs = np.array([p % side for p in positions], float)
    cy, cx = ys.mean(), xs.mean()
    v = "top" if cy < 2.5 else ("bottom" if cy > 3.5 else "middle")
    h = "left" if cx < 2.5 else ("right" if cx > 3.5 else "centre")
    spread = (ys.max() - ys.min() >= 4, xs.max() - xs.min() >= 4)
    if v == "middle" and h == "centre":
        word = "centre"
    elif v == "middle":
        word = f"{h} side"
    elif h == "centre":
        word = v
    else:
        word = f"{v} {h}"
    if spread[0] and not spread[1]:
        word += " (a vertical band)"
    elif spread[1] and not spread[0]:
        word += " (a horizontal band)"
    return word


def random_controls(W: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor, clause: Clause,
                    exclude: set[int], value: torch.Tensor, n: int, gen: torch.Generator, pool_factor: int = 3) -> dict:
    """``n`` random controls for a clause: same number of positions, a channel not in ``exclude``, and
    activation-matched: from ``pool_factor * n`` candidates, the ``n`` whose mean-ablation perturbation
    on the digit's images (mean |v - a| summed over positions) is closest to the clause's."""
    return size_matched_controls(W, acts, labels, clean, clause.digit, clause.channel, clause.positions, exclude, value, n,
                                 gen, pool_factor)
