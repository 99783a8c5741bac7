"""Sanity checks for attributions that return numbers, not pictures.

* :func:`ig_completeness`: integrated gradients must add up to ``f(x) - f(baseline)``; the error
  shows whether ``n_steps`` is enough for this model and input.
* :func:`randomization_test` (Adebayo et al. 2018, "Sanity Checks for Saliency Maps"): re-initialise
  the model's layers one by one from the top and compare each attribution map with the trained
  model's by Spearman rank correlation. A method that explains the *model* loses correlation as
  layers are randomised; one that stays correlated mostly reflects the input (an edge detector).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..units import resolve_layer
from ..checks import InputError, InputTypeError, check_finite_result, check_int, check_matrix
from ._model import Prepared, ResolvedTarget, TargetSpec, check_inputs, check_options, prepare, resolve_target, running
from .methods import _run, canonical_method

__all__ = ["CompletenessResult", "RandomizationResult", "ig_completeness", "randomization_test", "spearman"]


@dataclass
class CompletenessResult:
    """Per input: sum of IG attributions, ``f(x) - f(baseline)``, and the (relative) gap between them."""

    attribution_sum: torch.Tensor
    output_difference: torch.Tensor
    n_steps: int

    def _repr_html_(self) -> str:  # notebook display (vision_interp.display); str() stays the text summary
        from ..display import html
        return html(self)

    @property
    def error(self) -> torch.Tensor:
        return (self.attribution_sum - self.output_difference).abs()

    @property
    def relative_error(self) -> torch.Tensor:
        return self.error / self.output_difference.abs().clamp_min(1e-12)

    @property
    def max_relative_error(self) -> float:
        return float(self.relative_error.max())

    def __str__(self) -> str:
        return (
            f"IG completeness ({self.n_steps} steps, {len(self.error)} inputs): max |sum - (f(x) - f(b))| = "
            f"{float(self.error.max()):.4g}, max relative error {100 * self.max_relative_error:.3f}%"
        )


def _baseline_tensor(x: torch.Tensor, baselines: Any) -> torch.Tensor:
    if baselines is None:
        return torch.zeros_like(x)
    if isinstance(baselines, (int, float)):
        return torch.full_like(x, float(baselines))
    b = torch.as_tensor(baselines, dtype=x.dtype, device=x.device)
    return b.expand_as(x) if b.shape != x.shape else b


_IG_RULES = ("gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid")


def ig_completeness(
    model: nn.Module,
    inputs: torch.Tensor,
    target: TargetSpec = None,
    *,
    baselines: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> CompletenessResult:
    """Compare the sum of integrated-gradients attributions with ``f(x) - f(baseline)`` per input.

    ``f`` is the target's score (class logit, or the unit's value). Baseline default: black (zeros).
    """
    x, _ = check_inputs(model, inputs)
    if method not in _IG_RULES:
        raise InputError(f"method: {method!r}; integrated gradients' integration rule must be one of {', '.join(_IG_RULES)}")
    opts: dict[str, Any] = {"n_steps": n_steps, "method": method}
    if baselines is not None:
        opts["baselines"] = baselines
    if internal_batch_size is not None:
        opts["internal_batch_size"] = internal_batch_size
    opts = check_options(opts, x)
    with running(model, "ig_completeness()"):
        prep = prepare(model, x)
        resolved = resolve_target(prep, x, target)
        attr = _run("integrated_gradients", prep, x, resolved, opts)
        with torch.no_grad():
            fx = resolved.values(prep.model, x)
            fb = resolved.values(prep.model, _baseline_tensor(x, opts.get("baselines")))
    check_finite_result(fx - fb, "f(x) - f(baseline)", resolved.description)
    check_finite_result(attr, "attributions", resolved.description)
    return CompletenessResult(attr.flatten(1).sum(1).double().cpu(), (fx - fb).double().cpu(), n_steps)


def _rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata), for one 1-D array."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg = ends - (counts - 1) / 2.0
    return avg[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between matching rows of ``a`` and ``b`` (flattened per example)."""
    for arg, t in (("a", a), ("b", b)):
        check_matrix(t, arg, ndim=tuple(range(1, 9)))
    if a.shape != b.shape:
        raise InputError(f"b: shape {tuple(b.shape)}; must match a's shape {tuple(a.shape)} (one map per example in both)")
    if a.ndim == 1:
        a, b = a[None], b[None]
    a2 = a.detach().double().cpu().flatten(1).numpy()
    b2 = b.detach().double().cpu().flatten(1).numpy()
    out = []
    for u, v in zip(a2, b2):
        ru, rv = _rankdata(u), _rankdata(v)
        ru, rv = ru - ru.mean(), rv - rv.mean()
        denom = np.sqrt((ru**2).sum() * (rv**2).sum())
        out.append(float((ru * rv).sum() / denom) if denom > 0 else 0.0)
    return torch.tensor(out, dtype=torch.float64)


@dataclass
class RandomizationResult:
    """``correlations[i, n]``: rank correlation for input n after randomising ``layers[: i + 1]``."""

    layers: list[str]
    correlations: torch.Tensor
    method: str

    def _repr_html_(self) -> str:  # notebook display (vision_interp.display); str() stays the text summary
        from ..display import html
        return html(self)

    @property
    def mean(self) -> list[float]:
        return [float(c) for c in self.correlations.mean(1)]

    def __str__(self) -> str:
        rows = [f"cascading randomization ({self.method}): mean Spearman rank correlation with the trained model"]
        for name, c in zip(self.layers, self.mean):
            rows.append(f"  up to {name:<40s} {c:+.3f}")
        return "\n".join(rows)


def _parameter_layers(prep: Prepared) -> list[str]:
    """Modules with their own parameters, in reverse execution order (the top first)."""
    out = []
    for path in reversed(prep.profile.order):
        if any(True for _ in prep.model.get_submodule(path).parameters(recurse=False)):
            out.append(path)
    return out


@torch.no_grad()
def _reinitialize(module: nn.Module, seed: int) -> None:
    """Fresh initial weights: the module's own ``reset_parameters`` under a fixed seed, else a normal draw of the same scale."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for p in module.parameters(recurse=False):
            scale = float(p.std()) if p.numel() > 1 else 0.1
            p.copy_(torch.randn_like(p) * (scale if scale > 0 else 0.1))


def randomization_test(
    model: nn.Module,
    inputs: torch.Tensor,
    target: TargetSpec = None,
    method: str = "saliency",
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    absolute: bool = True,
    **options: Any,
) -> RandomizationResult:
    """Cascading model-parameter randomization (Adebayo et al. 2018), top layer first.

    Works on a deep copy; ``model`` is never changed. Attribution maps are summed over input
    channels (and taken in absolute value with ``absolute=True``, as in the paper) before ranking.
    ``target=None`` fixes each input's class to the *trained* model's prediction.
    """
    method = canonical_method(method)
    x, _ = check_inputs(model, inputs)
    if layers is not None:
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers):
            raise InputTypeError(f"layers: expected a list of layer names (e.g. ['fc', 'conv2']) or None, got {layers!r}")
        if not layers:
            raise InputError("layers: an empty list; give the layers to randomize (top first) or None for all")
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(absolute, bool):
        raise InputTypeError(f"absolute: expected True or False, got {type(absolute).__name__} {absolute!r}")
    options = check_options(options, x)
    with running(model, "randomization_test()"):
        return _randomization(model, x, target, method, layers, seed, absolute, options)


def _randomization(model: nn.Module, x: torch.Tensor, target: TargetSpec, method: str, layers: Sequence[str] | None,
                   seed: int, absolute: bool, options: dict[str, Any]) -> RandomizationResult:
    prep = prepare(model, x)
    resolved = resolve_target(prep, x, target)  # predicted classes come from the trained model
    if layers is None:
        names = _parameter_layers(prep)
    else:
        names = [resolve_layer(model, n) for n in layers]
        for n in names:
            if not any(True for _ in prep.original.get_submodule(n).parameters()):
                raise ValueError(f"layer {n!r} has no parameters to randomize")
    if not names:
        raise ValueError(f"{type(model).__name__} has no layers with parameters to randomize")

    def heat(p: Prepared, r: ResolvedTarget) -> torch.Tensor:
        a = _run(method, p, x, r, options).sum(1)
        return a.abs() if absolute else a

    reference = heat(prep, resolved)
    randomized = copy.deepcopy(prep.model)
    rand_prep = Prepared(randomized, prep.original, prep.profile, prep.repairs)
    rows = []
    for i, name in enumerate(names):
        _reinitialize(randomized.get_submodule(name), seed + i)
        rows.append(spearman(reference, heat(rand_prep, resolved)))
    return RandomizationResult(names, torch.stack(rows), method)
