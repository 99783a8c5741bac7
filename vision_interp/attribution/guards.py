"""What each attribution method is correct on, checked on the call's own model and inputs.

Two methods rewrite backward passes module by module, so their numbers are only right where their
rules cover every nonlinearity. Here each one *declares* what it handles, a probe forward pass
lists what the model actually runs, and what is not covered is refused (or, when asked, warned
about), never returned silently.

**DeepLift** (rescale rule, Shrikumar et al. 2017). Handled: every op that is linear in the
activations (convolutions, linear layers, BatchNorm in eval, average pools, padding, sums,
concatenation, reshapes, scaling by constants), and, *as their own modules*, every elementwise
activation (:data:`DEEPLIFT_ELEMENTWISE`: captum's ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus,
and with the same rescale rule here PReLU, GELU, SiLU, Hardswish, ReLU6, Mish, ...) and max
pooling (:data:`DEEPLIFT_POOLS`). Captum 0.9 alone is silently incomplete in three places this
module corrects: (1) an activation module that feeds a pooling module directly loses the pool's
rule (ReLU -> MaxPool, as in the MNIST CNN: up to 25% off), fixed by a copy between the two; (2)
overlapping max-pool windows (kernel > stride) drop contributions (``max_unpool`` assigns, it does
not add), fixed by a scatter-add; (3) its zero-difference fallback reuses the first example's
gradient for the whole batch (captum issue 1276). Everything else -- LayerNorm/GroupNorm, a product
of two activations (squeeze-excite gates), activations called as functions inside ``forward``,
Softmax, attention -- is listed by the probe with its module path and type.

The rule, measured on the call's own inputs: DeepLift's attributions must add up to
``f(x) - f(baseline)`` (summation-to-delta) within :func:`completeness_tolerance` (0.1% of the difference
plus the rounding of the dtype; never a share of the outputs' size, which a large constant part of a logit
would turn into room for any gap). This measurement is the safety net: it runs on every call, whatever the
probe found, so a gap the module lists miss is refused all the same. When they do not,
the call is refused with :class:`UnsupportedModelError` naming the unhandled modules, the measured
sums and what to do (``integrated_gradients`` is complete on any differentiable model). With
``unsupported="warn"`` the numbers come back with a warning that states the same gap. When
unhandled modules run but the sums still agree on these inputs, the result comes back with a
warning that says so (the per-pixel split through those modules is the gradient's, not a rule's).

**Guided backprop / guided Grad-CAM** (captum) modify only ``nn.ReLU`` modules. An activation that is
not an ``nn.ReLU`` module (PReLU, GELU, ``F.relu`` in ``forward``, ...) passes its plain gradient, so
a model with such activations is refused (``unsupported="warn"``: returned with a warning naming
every activation that was not guided).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..checks import InputError, InputTypeError

__all__ = [
    "DEEPLIFT_ELEMENTWISE",
    "DEEPLIFT_POOLS",
    "UnsupportedModelError",
    "Finding",
    "probe",
    "deeplift_findings",
    "guided_findings",
    "check_unsupported_option",
    "completeness_tolerance",
    "check_deeplift_completeness",
    "explained_values",
    "measure_gap",
    "check_guided",
    "GuardedDeepLift",
    "GuardedLayerDeepLift",
]


class UnsupportedModelError(InputError):
    """The method's rules do not cover a module the model runs; the message names it and what to use."""


UNSUPPORTED_CHOICES = ("raise", "warn")

# ----------------------------------------------------------------------------- declared modules
def _captum_rules() -> dict[type, Any]:
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    return SUPPORTED_NON_LINEAR


#: Elementwise activations DeepLift's rescale rule (multiplier = delta out / delta in, per unit) handles
#: exactly when each is its own module, called once. The first six are captum's own; the rest get the
#: same rule here (captum would back-propagate their plain gradient).
DEEPLIFT_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.PReLU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.ReLU6, nn.Hardtanh, nn.SELU, nn.CELU,
    nn.Softsign, nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold, nn.RReLU,
)
_POOL_FUNCS: dict[type[nn.Module], Any] = {
    nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d,
    nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d, nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}
#: Max pooling modules, handled with a corrected routing rule (see the module docstring).
DEEPLIFT_POOLS: tuple[type[nn.Module], ...] = tuple(_POOL_FUNCS)
_DEEPLIFT_HANDLED = frozenset(DEEPLIFT_ELEMENTWISE) | frozenset(DEEPLIFT_POOLS)

# ------------------------------------------------------------------------------ op classes
# ops that are linear (affine) in every activation argument
_LINEAR_OPS = frozenset("""
conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d conv_tbc
add radd iadd sub rsub isub neg pos negative positive cat concat concatenate stack hstack vstack dstack
view view_as reshape reshape_as flatten unflatten permute transpose swapaxes swapdims t mT squeeze unsqueeze
expand expand_as contiguous clone getitem split split_with_sizes chunk tensor_split narrow select unbind repeat
tile flip fliplr flipud roll movedim moveaxis to type float double half bfloat16 cpu cuda pad avg_pool1d avg_pool2d
avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d mean sum nansum batch_norm dropout dropout1d
dropout2d dropout3d alpha_dropout feature_alpha_dropout interpolate upsample upsample_nearest upsample_bilinear
pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle identity diagonal cumsum diff fold unfold
index_select gather take_along_dim as_strided requires_grad detach_copy real trace
""".split())
# ops linear in each argument separately: linear when at most one argument carries activations
_BILINEAR_OPS = frozenset("mul rmul imul multiply matmul rmatmul mm bmm einsum linear bilinear tensordot outer dot "
                          "kron addmm baddbmm addbmm addcmul".split())
# elementwise activations (what guided backprop should guide)
_ACTIVATION_OPS = frozenset("""
relu relu6 hardtanh prelu leaky_relu rrelu elu selu celu gelu silu mish hardswish hardsigmoid sigmoid tanh softplus
softsign threshold logsigmoid tanhshrink softshrink hardshrink clamp clip clamp_min clamp_max glu
""".split())
# ops whose output does not depend on an activation's value
_CONSTANT_OPS = frozenset("zeros_like ones_like empty_like full_like rand_like randn_like new_zeros new_ones new_empty "
                          "new_full new_tensor size dim numel shape".split())


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or repr(func)
    if name == "__get__":  # a property such as Tensor.shape
        return "shape"
    name = name.strip("_")
    if name.endswith("_") and name[:-1]:
        name = name[:-1]  # in-place variant
    if name.startswith("r") and name[1:] in ("add", "sub", "mul", "truediv", "matmul", "div", "pow"):
        return name
    return name


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


def _flatten(obj: Any) -> Iterable[Any]:
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _flatten(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _flatten(o)
    else:
        yield obj


@dataclass(frozen=True)
class Finding:
    """One nonlinearity a method does not handle: where it runs and what it is."""

    path: str  # module path in the model attributed ('' = the model's own forward)
    type: str  # that module's class name
    op: str  # the torch op (e.g. 'prelu', 'mul of two activations', 'layer_norm')

    def __str__(self) -> str:
        where = self.path or "forward() of the model itself"
        return f"{where} ({self.type}: {self.op})"


@dataclass(frozen=True)
class _Op:
    index: int
    op: str
    kind: str  # "linear", "activation", "nonlinear"
    stack: tuple[str, ...]  # module paths from the outermost to the innermost running module
    types: tuple[type, ...]


class _Recorder(TorchFunctionMode):
    """Records every torch op of one forward pass that touches the input's descendants ("activations"),
    with the stack of modules running it. Values pass through unchanged."""

    def __init__(self, names: dict[int, str], start: torch.Tensor):
        super().__init__()
        self.names = names
        self.tainted: dict[int, torch.Tensor] = {id(start): start}
        self.ops: list[_Op] = []
        self._impl = {nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__}

    def _stack(self) -> tuple[tuple[str, ...], tuple[type, ...]]:
        paths: list[str] = []
        types: list[type] = []
        frame = sys._getframe(2)
        seen: set[int] = set()
        while frame is not None:
            if frame.f_code in self._impl:
                mod = frame.f_locals.get("self")
                if isinstance(mod, nn.Module) and id(mod) not in seen and id(mod) in self.names:
                    seen.add(id(mod))
                    paths.append(self.names[id(mod)])
                    types.append(type(mod))
            frame = frame.f_back
        return tuple(reversed(paths)), tuple(reversed(types))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in = [a for a in _flatten((args, kwargs)) if _is_tensor(a)]
        hot = [a for a in flat_in if id(a) in self.tainted]
        name = _op_name(func)
        if hot and name not in _CONSTANT_OPS:
            for o in _flatten(out):
                if _is_tensor(o):
                    self.tainted[id(o)] = o
            if any(_is_tensor(o) for o in _flatten(out)):
                kind = self._classify(name, args, kwargs, hot)
                stack, mtypes = self._stack()
                self.ops.append(_Op(len(self.ops), name if kind != "product" else f"{name} of two activations",
                                    "nonlinear" if kind == "product" else kind, stack, mtypes))
        return out

    def _classify(self, name: str, args: tuple, kwargs: dict, hot: list) -> str:
        if name in _ACTIVATION_OPS:
            return "activation"
        if name in _LINEAR_OPS:
            return "linear"
        if name in _BILINEAR_OPS:
            return "product" if len({id(h) for h in hot}) > 1 else "linear"
        if name in ("div", "truediv", "true_divide", "divide"):
            denominator = args[1] if len(args) > 1 else kwargs.get("other")
            return "nonlinear" if _is_tensor(denominator) and id(denominator) in self.tainted else "linear"
        return "nonlinear"


def probe(model: nn.Module, x: torch.Tensor) -> list[_Op]:
    """Every op of one forward pass of ``model`` on ``x[:1]`` that reads activations (no grad, no hooks)."""
    from ..features.attach import observing_modules

    names = {id(m): n for n, m in model.named_modules()}
    start = x[:1].detach().clone()
    rec = _Recorder(names, start)
    with torch.no_grad(), rec:
        model(start)
    # features attached in "observe" mode run beside the model and never reach its output: not the model's ops
    beside = {names[id(m)] for m in observing_modules(model) if id(m) in names}
    return [op for op in rec.ops if not beside.intersection(op.stack)]


def _innermost(op: _Op) -> tuple[str, type | None]:
    return (op.stack[-1], op.types[-1]) if op.stack else ("", None)


def _after(ops: list[_Op], layer: str | None, include_layer: bool) -> list[_Op]:
    """The ops that run after ``layer`` has produced its output (all ops when ``layer`` is None)."""
    if layer is None:
        return ops
    inside = [o.index for o in ops if layer in o.stack]
    if not inside:
        return ops
    first, last = min(inside), max(inside)
    return [o for o in ops if o.index > last or include_layer and first <= o.index <= last]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    out: list[Finding] = []
    for f in findings:
        if f not in out:
            out.append(f)
    return out


def _finding(op: _Op, root: nn.Module) -> Finding:
    path, typ = _innermost(op)
    # the forward wrapper of a unit target is not the user's model: strip its prefix
    if path.startswith("model.") and type(root).__name__ == "UnitOutput":
        path = path[len("model."):]
    elif path == "model" and type(root).__name__ == "UnitOutput":
        path = ""
    return Finding(path, (typ or type(root)).__name__ if path or typ is not None else type(root).__name__, op.op)


def deeplift_findings(fwd: nn.Module, x: torch.Tensor, *, layer: str | None = None,
                      attribute_to_layer_input: bool = False) -> list[Finding]:
    """The nonlinearities of ``fwd`` that DeepLift's rules (as corrected here) do not cover.

    An op is covered when it is linear in the activations or runs inside a module whose exact type is
    in :data:`DEEPLIFT_ELEMENTWISE` or :data:`DEEPLIFT_POOLS`. For layer DeepLift only the ops after
    ``layer`` matter (``fwd`` module path)."""
    ops = _after(probe(fwd, x), layer, attribute_to_layer_input)
    out = []
    for op in ops:
        if op.kind == "linear":
            continue
        if any(t in _DEEPLIFT_HANDLED for t in op.types):
            continue
        out.append(_finding(op, fwd))
    return _dedupe(out)


def guided_findings(fwd: nn.Module, x: torch.Tensor) -> tuple[list[Finding], int]:
    """Activations of ``fwd`` that guided backprop does not guide (not inside an ``nn.ReLU`` module), and
    how many activation ops it does guide."""
    ops = probe(fwd, x)
    unguided, guided = [], 0
    for op in ops:
        if op.kind != "activation":
            continue
        if any(issubclass(t, nn.ReLU) for t in op.types):
            guided += 1
        else:
            unguided.append(_finding(op, fwd))
    return _dedupe(unguided), guided


def check_unsupported_option(value: Any) -> str:
    """The ``unsupported=`` option: ``"raise"`` (default) or ``"warn"``."""
    if not isinstance(value, str):
        raise InputTypeError(f"unsupported: expected 'raise' or 'warn', got {type(value).__name__} {value!r}")
    if value not in UNSUPPORTED_CHOICES:
        raise InputError(f"unsupported: {value!r}; must be 'raise' (refuse a model the method's rules do not cover) "
                         "or 'warn' (return the numbers with a warning that states the measured gap)")
    return value


def _names(findings: list[Finding], limit: int = 8) -> str:
    shown = ", ".join(str(f) for f in findings[:limit])
    return shown + (f" and {len(findings) - limit} more" if len(findings) > limit else "")


# --------------------------------------------------------------------------------- completeness
#: Rounding allowance, in units of the attributions' dtype precision (``torch.finfo(dtype).eps``), times the
#: size of the numbers that are subtracted and summed (measured: float32 forward passes of the conformance
#: nets put f(x) - f(b) within 1.5 eps x (|f(x)| + |f(b)|) of the float64 value; 16 leaves a 10x margin).
ROUNDING_EPS = 16.0
#: The relative gap DeepLift may have: 0.1% of f(x) - f(baseline).
RELATIVE_TOLERANCE = 1e-3


def completeness_tolerance(fx: torch.Tensor, fb: torch.Tensor, magnitude: torch.Tensor | None = None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Allowed ``|sum(attributions) - (f(x) - f(b))|`` per example: 0.1% of the difference plus the
    rounding of the computation in ``dtype``, :data:`ROUNDING_EPS` x eps x (``|f(x)| + |f(b)|`` +
    ``magnitude``, the sum of the attributions' absolute values).

    The allowance is the precision the inputs' dtype really has, never a share of the outputs' size: a
    logit with a large input-independent part (EfficientNet's ~2209 where f(x) - f(0) is ~1) must not
    hide a 10% gap (a floor of 0.01% of the outputs did: 0.44 against a gap of 0.066)."""
    fx, fb = fx.double(), fb.double()
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps
    size = fx.abs() + fb.abs() + (0.0 if magnitude is None else magnitude.double())
    return RELATIVE_TOLERANCE * (fx - fb).abs() + ROUNDING_EPS * eps * size + 1e-12


@dataclass(frozen=True)
class Gap:
    """Summation-to-delta on the call's inputs: per example, the attributions' sum and f(x) - f(b)."""

    sums: torch.Tensor
    differences: torch.Tensor
    tolerance: torch.Tensor

    @property
    def off(self) -> torch.Tensor:
        return (self.sums - self.differences).abs() > self.tolerance

    @property
    def relative(self) -> torch.Tensor:
        return (self.sums - self.differences).abs() / self.differences.abs().clamp_min(1e-12)

    def describe(self) -> str:
        n = len(self.sums)
        worst = int(self.relative.argmax())
        shown = ", ".join(f"{float(s):.4g} vs {float(d):.4g}" for s, d in zip(self.sums[:4], self.differences[:4]))
        more = f" (first 4 of {n})" if n > 4 else ""
        return (f"sum of attributions vs f(x) - f(baseline) per input: {shown}{more}; worst input {worst}: "
                f"{100 * float(self.relative[worst]):.3g}% off; {int(self.off.sum())} of {n} input(s) outside the "
                f"tolerance (0.1% of f(x) - f(baseline) plus float rounding; {float(self.tolerance[worst]):.3g} for "
                f"input {worst})")


def measure_gap(attr: torch.Tensor, x: torch.Tensor, baselines: torch.Tensor, fx: torch.Tensor, fb: torch.Tensor,
                multiply_by_inputs: bool) -> Gap:
    """How far ``attr`` is from summing to ``f(x) - f(b)`` on these inputs (summed in float64, so the sum's
    own rounding does not enter; the tolerance is :func:`completeness_tolerance` for ``attr``'s dtype)."""
    a = attr if multiply_by_inputs else attr * (x - baselines)
    a, fx, fb = a.detach(), fx.detach(), fb.detach()
    terms = a.flatten(1).double()
    tol = completeness_tolerance(fx, fb, terms.abs().sum(1), a.dtype)
    return Gap(terms.sum(1).cpu(), (fx.double() - fb.double()).cpu(), tol.cpu())


def explained_values(resolved: Any, model: nn.Module, x: torch.Tensor, extra_args: Any = None) -> torch.Tensor:
    """The scalar DeepLift explains, per example, computed as captum computes it: with the call's
    ``additional_forward_args`` when it has them (without them the check would compare with another f)."""
    if extra_args is None:
        return resolved.values(model, x)
    from captum._utils.common import _run_forward

    out = _run_forward(resolved.forward_model(model), x, resolved.captum, extra_args)
    return out.reshape(x.shape[0], -1)[:, 0]


def check_deeplift_completeness(findings: list[Finding], gap: Gap, what: str, unsupported: str,
                                stacklevel: int = 4) -> None:
    """Refuse (or warn about) DeepLift attributions that do not add up, naming what is not covered."""
    bad = bool(gap.off.any())
    if not findings and not bad:
        return
    if findings:
        cause = (f"captum's DeepLift rules do not cover {_names(findings)}: it back-propagates their plain gradient "
                 "instead of a DeepLift multiplier")
    else:
        cause = "no unhandled module was found, yet the attributions do not add up"
    if not bad:
        warnings.warn(f"{what}: {cause}. On these inputs the attributions still add up ({gap.describe()}), "
                      "but how they split through those modules is not DeepLift's rule. integrated_gradients is "
                      "exact on any differentiable model.", UserWarning, stacklevel=stacklevel)
        return
    advice = ("Use method='integrated_gradients' (complete on any differentiable model; check it with "
              "ig_completeness()), or occlusion / feature_ablation; DeepLift covers linear ops, elementwise activation "
              "modules (" + ", ".join(t.__name__ for t in DEEPLIFT_ELEMENTWISE[:10]) + ", ...) and max-pool modules. "
              "unsupported='warn' returns DeepLift's numbers anyway, with this warning.")
    msg = f"{what}: {cause}, and on these inputs DeepLift is incomplete: {gap.describe()}. {advice}"
    if unsupported == "warn":
        warnings.warn(msg, UserWarning, stacklevel=stacklevel)
        return
    raise UnsupportedModelError(msg)


def check_guided(unguided: list[Finding], n_guided: int, what: str, unsupported: str, stacklevel: int = 4) -> None:
    """Refuse (or warn about) guided backprop on a model with activations that are not ``nn.ReLU`` modules."""
    if not unguided:
        return
    lead = (f"{what}: guided backprop modifies only nn.ReLU modules; this model runs none"
            if n_guided == 0 else f"{what}: guided backprop modifies only nn.ReLU modules ({n_guided} guided here)")
    msg = (f"{lead}, and these activations would pass their plain gradient, unguided: {_names(unguided)}. "
           + ("The result would be the plain gradient labelled as guided. " if n_guided == 0 else "")
           + "Use method='gradcam' (no activation rules), saliency or integrated_gradients; or make the activations "
           "nn.ReLU modules. unsupported='warn' returns the partly guided result with this warning.")
    if unsupported == "warn":
        warnings.warn(msg, UserWarning, stacklevel=stacklevel)
        return
    raise UnsupportedModelError(msg)


# ------------------------------------------------------------------------- corrected DeepLift
def _maxpool_multipliers(module: nn.Module, grad_input: torch.Tensor, grad_output: torch.Tensor, eps: float) -> torch.Tensor:
    """DeepLift multipliers through a max pool, for the stacked (inputs, baselines) batch.

    Each window's change ``max(x) - max(b)`` is split as captum does -- ``max(o, o_b) - o_b`` to the input's
    argmax, ``o - max(o, o_b)`` to the baseline's -- but accumulated (overlapping windows share positions)
    and with each example's own gradient where an input does not change."""
    inp, out = module.input, module.output
    with torch.no_grad():
        x, ref = inp.chunk(2)
        o, o_ref = out.chunk(2)
        delta_in = torch.cat(2 * [x - ref])
        top = torch.max(o, o_ref)
        delta_out = torch.cat([top - o_ref, o - top])
        pool = _POOL_FUNCS[type(module)]
        if type(module) in (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d):
            _, idx = pool(inp, module.output_size, True)
        else:
            _, idx = pool(inp, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode, True)
        flat = torch.zeros_like(inp).flatten(2)
        flat.scatter_add_(2, idx.flatten(2), (grad_output * delta_out).flatten(2))
        a, b = flat.view_as(inp).chunk(2)
        routed = torch.cat(2 * [a + b])
        small = delta_in.abs() < eps
        safe = torch.where(small, torch.ones_like(delta_in), delta_in)
        return torch.where(small, grad_input, routed / safe)


class _Corrected:
    """Mixin for captum's DeepLift classes: the rescale rule on every elementwise activation module, the
    corrected max-pool rule, and a copy in front of every hooked module so that two hooked modules in a
    row (ReLU -> MaxPool) each keep their rule."""

    def _is_non_linear(self, module: nn.Module) -> bool:
        return type(module) in _DEEPLIFT_HANDLED or type(module) in _captum_rules()

    def _register_hooks(self, module: nn.Module, attribute_to_layer_input: bool = True) -> None:
        layer = getattr(self, "layer", None)
        if self._can_register_hook(module) and not (not attribute_to_layer_input and module is layer):
            handle = module.register_forward_pre_hook(_copy_inputs)
            self.forward_handles.append(handle)
        super()._register_hooks(module, attribute_to_layer_input)  # type: ignore[misc]

    def _backward_hook(self, module: nn.Module, grad_input: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        kind = type(module)
        if kind not in _DEEPLIFT_HANDLED:  # captum's own rule (Softmax)
            return super()._backward_hook(module, grad_input, grad_output)  # type: ignore[misc]
        if not self.satisfies_attribute_criteria(module):  # type: ignore[attr-defined]
            return super()._backward_hook(module, grad_input, grad_output)  # type: ignore[misc]  # captum's error
        if kind in DEEPLIFT_POOLS:
            mult = _maxpool_multipliers(module, grad_input, grad_output, self.eps)  # type: ignore[attr-defined]
        else:
            from captum.attr._core.deep_lift import nonlinear

            mult = nonlinear(module, module.input, module.output, grad_input, grad_output, eps=self.eps)  # type: ignore[attr-defined]
        del module.input
        del module.output
        return mult


def _copy_inputs(_module: nn.Module, args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _deeplift_classes() -> tuple[type, type]:
    import captum.attr as ca

    global _CLASSES
    if _CLASSES is None:
        dl = type("GuardedDeepLift", (_Corrected, ca.DeepLift), {"__module__": __name__,
                                                                  "__doc__": "captum's DeepLift with the corrections of this module."})
        ldl = type("GuardedLayerDeepLift", (_Corrected, ca.LayerDeepLift), {"__module__": __name__,
                                                                            "__doc__": "captum's LayerDeepLift with the corrections of this module."})
        _CLASSES = (dl, ldl)
    return _CLASSES


_CLASSES: tuple[type, type] | None = None


def GuardedDeepLift(model: nn.Module, **kwargs: Any):  # noqa: N802 - a class factory (captum is imported lazily)
    """captum's ``DeepLift`` with the rules and corrections of this module."""
    return _deeplift_classes()[0](model, **kwargs)


def GuardedLayerDeepLift(model: nn.Module, layer: nn.Module, **kwargs: Any):  # noqa: N802
    """captum's ``LayerDeepLift`` with the rules and corrections of this module."""
    return _deeplift_classes()[1](model, layer, **kwargs)


def baseline_tensor(x: torch.Tensor, baselines: Any) -> torch.Tensor:
    """The baselines as a tensor like ``x`` (None = zeros; a number = that constant)."""
    if baselines is None:
        return torch.zeros_like(x)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        if not math.isfinite(float(baselines)):
            raise InputError(f"baselines: {baselines}; must be finite")
        return torch.full_like(x, float(baselines))
    b = torch.as_tensor(baselines, dtype=x.dtype, device=x.device)
    return b.expand_as(x) if b.shape != x.shape else b
