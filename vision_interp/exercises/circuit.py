"""Per-digit circuits read from the classifier weights, their clauses, and causal tests of each clause.

The classifier is one linear layer on pool2 (16 channels x 7x7), so logit d is exactly
sum_{c,p} W[d, c, p] * a[c, p] + b[d]. Channels and positions are selected by *class-contrastive*
direct logit attribution: W[d, c, p] * (E[a | digit d] - E[a | other digits]). A channel that is
equally active on every digit scores 0 however large its activation, so the selection does not
favour generally active channels; a negative weight where the channel is quieter on d than on
other digits scores positive (evidence from an absent feature: an "inhibitory" clause).

Ablating pool2 positions changes the logits exactly by W[:, c, P] @ (v - a[c, P]), so every
ablation (named or random control) is computed in closed form from cached activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


def contrastive_map(W: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor, digit: int) -> torch.Tensor:
    """(C, P) class-contrastive direct logit attribution of every pool2 cell to logit ``digit``."""
    a = acts.flatten(2)
    diff = a[labels == digit].mean(0) - a[labels != digit].mean(0)
    return W[digit].view_as(diff) * diff


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


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    own = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return own - other


def ablation_delta(W: torch.Tensor, acts: torch.Tensor, channel: int, positions: list[int], value: torch.Tensor | float) -> torch.Tensor:
    """(N, classes) exact change of the logits when pool2 ``channel`` at ``positions`` is set to ``value``."""
    a = acts.flatten(2)[:, channel, positions]  # (N, k)
    v = value[channel, positions] if isinstance(value, torch.Tensor) else torch.full_like(a[0], float(value))
    wc = W.view(W.shape[0], acts.shape[1], -1)[:, channel, positions]  # (classes, k)
    return (v - a) @ wc.T


def clause_effects(clean: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, digit: int) -> dict:
    """Margin drop on the digit's images, mean margin drop over the other digits' own images, accuracy drop."""
    m0 = margins(clean, labels)
    m1 = margins(clean + delta, labels)
    drop = m0 - m1
    per = torch.stack([drop[labels == k].mean() for k in range(int(clean.shape[1]))])
    sel = labels == digit
    acc0 = (clean[sel].argmax(1) == digit).float().mean()
    acc1 = ((clean + delta)[sel].argmax(1) == digit).float().mean()
    others = float(torch.cat([per[:digit], per[digit + 1 :]]).mean())
    d = float(per[digit])
    spec = d / others if others > 1e-9 else (float("inf") if d > 0 else 0.0)
    return {"margin_drop": d, "others_margin_drop": others, "specificity": spec, "accuracy_drop": float(acc0 - acc1)}


def random_controls(W: torch.Tensor, acts: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor, clause: Clause,
                    exclude: set[int], value: torch.Tensor, n: int, gen: torch.Generator, pool_factor: int = 3) -> dict:
    """``n`` random controls for a clause: same number of positions, a channel not in ``exclude``, and
    activation-matched: from ``pool_factor * n`` candidates, the ``n`` whose mean-ablation perturbation
    on the digit's images (mean |v - a| summed over positions) is closest to the clause's."""
    k = len(clause.positions)
    allowed = [c for c in range(acts.shape[1]) if c not in exclude]
    a = acts.flatten(2)[labels == clause.digit]
    per_cell = (value - a).abs().mean(0)  # (C, P): mean |v - a| on the digit's images

    def size(c: int, pos: list[int]) -> float:
        return float(per_cell[c, pos].sum())

    target = size(clause.channel, clause.positions)
    cands = []
    for i in range(pool_factor * n):
        c = allowed[int(torch.randint(len(allowed), (1,), generator=gen))]
        if i % 2:  # half the candidates favour cells that move a lot, so large named sets find matches
            pos = sorted(torch.multinomial(per_cell[c] + 1e-6, k, replacement=False, generator=gen).tolist())
        else:
            pos = sorted(torch.randperm(a.shape[2], generator=gen)[:k].tolist())
        cands.append((abs(np.log(max(size(c, pos), 1e-6) / max(target, 1e-6))), c, pos))
    cands.sort(key=lambda t: t[0])
    chosen = cands[:n]
    sel = labels == clause.digit
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
