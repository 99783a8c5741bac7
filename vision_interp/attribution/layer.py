"""Layer attribution (Building Blocks): how much each channel and position of a hidden layer
contributes to a class or to a later unit, for one input.

The result keeps the full (N, C, H, W) tensor; ``.spatial`` sums over channels (where in the
image the layer's contribution sits), ``.channels`` sums over positions (which detectors
matter), and ``.top_channels(k)`` ranks channels with their share of the total.

With integrated gradients the layer is interpolated from the baseline's activations to the
input's (Captum's ``LayerIntegratedGradients``), so the attributions over the whole layer add up
to ``f(x) - f(baseline)`` (exactly when the network after the layer is linear).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..units import Unit
from ..checks import InputError, check_finite_result
from ._model import TargetSpec, check_inputs, check_options, prepare, resolve_target, running
from . import guards
from .methods import _check_options, canonical_method, quiet_captum

__all__ = ["LAYER_METHODS", "LayerAttribution", "layer_attribution", "unit_attribution"]

LAYER_METHODS: dict[str, str] = {
    "integrated_gradients": "layer integrated gradients (baseline: the layer's activations on the input baseline); options: baselines, n_steps, method, internal_batch_size",
    "gradient_x_activation": "activation x gradient: the first-order (linear) estimate of each activation's contribution",
    "deeplift": "layer DeepLift (rules and refusal as for input DeepLift, see vision_interp.attribution.guards); options: baselines, unsupported",
    "conductance": "layer conductance (Dhamdhere et al. 2018); options: baselines, n_steps, internal_batch_size",
}
_LAYER_ALIASES = {
    "ig": "integrated_gradients",
    "input_x_gradient": "gradient_x_activation",
    "activation_x_gradient": "gradient_x_activation",
    "grad_x_act": "gradient_x_activation",
    "deep_lift": "deeplift",
}


@dataclass
class LayerAttribution:
    """Attribution of one target to every activation of a hidden layer, for a batch of inputs."""

    tensor: torch.Tensor  # (N, C, H, W), or (N, C) for a dense layer
    layer: str
    target: str
    method: str

    def __repr__(self) -> str:  # short; the pictures are in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)

    @property
    def channels(self) -> torch.Tensor:
        """(N, C): each channel's contribution, summed over positions."""
        return self.tensor.flatten(2).sum(2) if self.tensor.ndim > 2 else self.tensor

    @property
    def spatial(self) -> torch.Tensor:
        """(N, H, W): each position's contribution, summed over channels."""
        if self.tensor.ndim != 4:
            raise ValueError(f"layer {self.layer!r} has no spatial dimensions (shape {tuple(self.tensor.shape[1:])})")
        return self.tensor.sum(1)

    @property
    def total(self) -> torch.Tensor:
        """(N,): everything the layer contributes (for IG: ~ f(x) - f(baseline))."""
        return self.tensor.flatten(1).sum(1)

    def top_channels(self, k: int = 5, *, by: str = "value") -> list[list[tuple[int, float, float]]]:
        """Per input, the ``k`` channels with the largest contribution: ``(channel, value, share)``.

        ``share`` is ``value / sum(|channel values|)``: the fraction of all attribution mass, signed
        (it stays in [-1, 1] even when positive and negative contributions cancel). ``by="abs"``
        ranks by magnitude, so strongly inhibiting channels appear too.
        """
        if by not in ("value", "abs"):
            raise ValueError(f"by must be 'value' or 'abs', got {by!r}")
        ch = self.channels.double()
        k = min(int(k), ch.shape[1])
        mass = ch.abs().sum(1).clamp_min(1e-30)
        keys = ch.abs() if by == "abs" else ch
        order = keys.argsort(dim=1, descending=True)[:, :k]
        out = []
        for i in range(ch.shape[0]):
            out.append([(int(c), float(ch[i, c]), float(ch[i, c] / mass[i])) for c in order[i]])
        return out

    def describe(self, k: int = 5, index: int = 0) -> str:
        """A short table of the top channels of one input, for printing."""
        rows = [f"{self.method} attribution of {self.target} to layer {self.layer} (input {index}); total {float(self.total[index]):.4g}"]
        for c, v, s in self.top_channels(k)[index]:
            rows.append(f"  {self.layer}:{c:<5d} {v:+.4g}  ({100 * s:+.1f}% of |total|)")
        return "\n".join(rows)


def layer_attribution(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    target: TargetSpec = None,
    method: str = "integrated_gradients",
    **options: Any,
) -> LayerAttribution:
    """Attribution of ``target`` (class, label, ``None`` = predicted, or a later unit) to ``layer``'s activations.

    A unit target without position is its channel's spatial mean. ``layer`` must feed the target
    (for a unit, its channel) in the model's data flow; otherwise the error names layers that do.
    Options go to Captum's layer method (``baselines`` are *input* baselines, ``n_steps``, ...).
    """

    method = canonical_method(method, LAYER_METHODS, _LAYER_ALIASES)
    x, _ = check_inputs(model, inputs)
    options = check_options(options, x)
    with running(model, "layer_attribution()"):
        return _layer_attribution(model, x, inputs.device, layer, target, method, options)


def _layer_attribution(model: nn.Module, x: torch.Tensor, device: torch.device, layer: str, target: TargetSpec,
                       method: str, options: dict[str, Any]) -> LayerAttribution:
    import captum.attr as ca

    prep = prepare(model, x)
    resolved = resolve_target(prep, x, target)
    path = prep.layer(layer)
    prep.check_feeds(layer, path, resolved.unit)  # a layer off the target's data flow would give zeros
    fwd = resolved.forward_model(prep.model)
    module = prep.module(path)
    opts = dict(options)
    if method == "integrated_gradients":
        obj = ca.LayerIntegratedGradients(fwd, module, multiply_by_inputs=opts.pop("multiply_by_inputs", True))
    elif method == "gradient_x_activation":
        obj = ca.LayerGradientXActivation(fwd, module, multiply_by_inputs=opts.pop("multiply_by_inputs", True))
    elif method == "deeplift":
        unsupported = guards.check_unsupported_option(opts.pop("unsupported", "raise"))
        multiply = opts.pop("multiply_by_inputs", True)
        obj = guards.GuardedLayerDeepLift(fwd, module, multiply_by_inputs=multiply)
        fwd_path = f"model.{path}" if fwd is not prep.model else path
        findings = guards.deeplift_findings(fwd, x, layer=fwd_path,
                                            attribute_to_layer_input=bool(opts.get("attribute_to_layer_input", False)))
    else:
        obj = ca.LayerConductance(fwd, module)
    if "unsupported" in opts:
        raise InputError(f"unsupported: applies to method 'deeplift' only (its rules cover some modules); method {method!r} "
                         "has no such rules")
    _check_options(method, obj.attribute, opts)
    # captum's LayerDeepLift hooks the layer's input tensor, which needs a graph even when every
    # parameter is frozen (the committed models are): give the inputs one
    xin = x.detach().clone().requires_grad_(True) if method == "deeplift" else x
    with quiet_captum():
        attr = obj.attribute(xin, target=resolved.captum, **opts)
    if isinstance(attr, tuple):
        attr = attr[0]
    if method == "deeplift":
        _layer_deeplift_guard(prep, resolved, x, path, attr, opts, bool(multiply), findings, unsupported, layer)
    check_finite_result(attr, "layer attributions", f"{resolved.description}, layer {layer}")
    return LayerAttribution(attr.detach().to(device), path, resolved.description, method)


def _layer_deeplift_guard(prep: Any, resolved: Any, x: torch.Tensor, path: str, attr: torch.Tensor, opts: dict[str, Any],
                          multiply: bool, findings: list, unsupported: str, layer: str) -> None:
    """Layer DeepLift's attributions must add up to ``f(x) - f(baseline)`` too (:mod:`.guards`)."""
    b = guards.baseline_tensor(x, opts.get("baselines"))
    with torch.no_grad():
        extra = opts.get("additional_forward_args")
        fx = guards.explained_values(resolved, prep.model, x, extra)
        fb = guards.explained_values(resolved, prep.model, b, extra)
        if multiply:
            total = attr
        else:  # multipliers: times the layer's own difference
            where = "input" if opts.get("attribute_to_layer_input") else "output"
            acts = [_layer_value(prep.model, v, path, where, extra) for v in (x, b)]
            total = attr * (acts[0] - acts[1])
    gap = guards.measure_gap(total, x, b, fx, fb, True)
    guards.check_deeplift_completeness(findings, gap, f"layer DeepLift on {type(prep.original).__name__} "
                                       f"(layer {layer!r}, {resolved.description})", unsupported, stacklevel=6)


def _layer_value(model: nn.Module, x: torch.Tensor, path: str, where: str, extra_args: Any = None) -> torch.Tensor:
    """The layer's input or output on ``x`` (one forward pass with the call's extra forward arguments, hook
    removed afterwards)."""
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(path).register_forward_hook(
        lambda _m, inp, out: seen.append((inp[0] if where == "input" else out).detach()))
    extra = () if extra_args is None else extra_args if isinstance(extra_args, tuple) else (extra_args,)
    try:
        model(x, *extra)
    finally:
        handle.remove()
    return seen[0]


def unit_attribution(
    model: nn.Module,
    inputs: torch.Tensor,
    source_layer: str,
    target_unit: str,
    method: str = "integrated_gradients",
    **options: Any,
) -> LayerAttribution:
    """Which channels (and positions) of ``source_layer`` drive the later unit ``target_unit`` on these inputs.

    ``target_unit`` is ``"layer:channel"`` (spatial mean of the channel) or ``"layer:channel@y,x"``.
    """
    if isinstance(target_unit, Unit):
        if target_unit.channel is None:
            raise InputError(f"target_unit: must name one channel 'layer:channel[@y,x]', got {target_unit}")
    elif not isinstance(target_unit, str) or ":" not in target_unit:
        raise InputError(f"target_unit: must be a unit string 'layer:channel[@y,x]', got {target_unit!r}")
    return layer_attribution(model, inputs, source_layer, target_unit, method, **options)
