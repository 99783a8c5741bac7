"""Objectives: what a visualization maximises, as composable, self-describing pieces.

An :class:`Objective` maps the captured activations of a batch to **one value per batch
element** (shape ``(N,)``; higher is better). Keeping values per element, rather than one
scalar, is what lets one optimisation render many units at once (``channel("mixed4a", 3,
batch=0) + channel("mixed4a", 7, batch=1)``) and report how well each image did.

Objectives compose with ``+``, ``-``, ``*`` and ``/`` (by scalars or other objectives) and unary
``-``; each carries a readable description ("channel mixed4a:476") and declares the layers it
needs, so the renderer can stop the forward pass after the deepest one and validate names,
channels and positions before the first optimisation step.
"""

from __future__ import annotations

import operator
import weakref
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..checks import check_int, check_number, check_instance
from ..trace import trace
from ..units import Unit, UnitRangeError, UnitSpec, layer_shape, parse_unit, resolve_layer, resolve_unit
from ..zoo.spec import model_spec

__all__ = [
    "Objective",
    "as_objective",
    "channel",
    "neuron",
    "layer_l2",
    "deepdream",
    "direction",
    "class_logit",
    "diversity",
    "bound_layer",
    "logits_path",
    "LOGITS",
]

Acts = Mapping[str, torch.Tensor]
ValueFn = Callable[[Acts], torch.Tensor]
CheckFn = Callable[[nn.Module, tuple, int], None]


class Objective:
    """A function of activations returning ``(N,)`` values, plus the layers it reads and a description.

    ``check(model, input_shape, batch_size)`` validates it against a model before any work
    (unknown layer, channel or position out of range, batch index too large).
    """

    def __init__(self, fn: ValueFn, layers: Iterable[str], description: str, checks: Sequence[CheckFn] = (),
                 unit_objective: "Objective | None" = None, reads_position: bool = False):
        self.fn = fn
        self.reads_position = bool(reads_position)
        """True when a value depends on where in the image things are (a neuron at one position): such an
        objective has no meaning on a smaller tiled image, so render's coarse phases are refused for it."""
        self.layers = tuple(dict.fromkeys(layers))
        self.description = description
        self.checks = tuple(checks)
        self.unit_objective = unit_objective
        """The raw activation of the one unit this objective is built on (kept through negation and
        scalar arithmetic, None for combinations of several units); ``RenderResult.activations``
        reports it, so ``-channel(u)`` still reports u's activation with its own sign."""

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def check(self, model: nn.Module, input_shape: tuple, batch_size: int) -> None:
        for c in self.checks:
            c(model, tuple(input_shape), batch_size)

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    def __str__(self) -> str:
        return self.description

    # --- composition -------------------------------------------------------------------------
    def _combine(self, other: "Objective | float", op: Callable, symbol: str, reverse: bool = False) -> "Objective":
        if isinstance(other, Objective):
            a, b = (other, self) if reverse else (self, other)
            return Objective(
                lambda acts: op(a(acts), b(acts)),
                a.layers + b.layers,
                f"({a.description} {symbol} {b.description})",
                a.checks + b.checks,
                reads_position=a.reads_position or b.reads_position,
            )
        if isinstance(other, (int, float)) or (isinstance(other, torch.Tensor) and other.numel() == 1):
            k = float(other)
            u = self.unit_objective
            if reverse:
                return Objective(lambda acts: op(k, self(acts)), self.layers, f"{k:g} {symbol} {self.description}", self.checks, u,
                                 self.reads_position)
            return Objective(lambda acts: op(self(acts), k), self.layers, f"{self.description} {symbol} {k:g}", self.checks, u,
                             self.reads_position)
        return NotImplemented

    def __add__(self, other):
        return self._combine(other, operator.add, "+")

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # so sum([...]) works
            return self
        return self._combine(other, operator.add, "+", reverse=True)

    def __sub__(self, other):
        return self._combine(other, operator.sub, "-")

    def __rsub__(self, other):
        return self._combine(other, operator.sub, "-", reverse=True)

    def __mul__(self, other):
        return self._combine(other, operator.mul, "*")

    def __rmul__(self, other):
        return self._combine(other, operator.mul, "*", reverse=True)

    def __truediv__(self, other):
        return self._combine(other, operator.truediv, "/")

    def __rtruediv__(self, other):
        return self._combine(other, operator.truediv, "/", reverse=True)

    def __neg__(self):
        return Objective(lambda acts: -self(acts), self.layers, f"-{self.description}", self.checks, self.unit_objective,
                         self.reads_position)


def as_objective(obj: "Objective | UnitSpec") -> Objective:
    """An :class:`Objective` as is; a unit string ``"layer:c"`` as :func:`channel`; ``"layer"`` as :func:`layer_l2`."""
    if isinstance(obj, Objective):
        return obj
    unit = parse_unit(obj)
    if unit.channel is None:
        return layer_l2(unit.layer)
    if unit.position is not None:
        return neuron(unit)
    return channel(unit)


# --- helpers -----------------------------------------------------------------------------------


def _batch_mask(values: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Keep only element ``batch`` (others get 0), so a term optimises one image of the batch."""
    if batch is None:
        return values
    mask = torch.zeros_like(values)
    mask[batch] = 1.0
    return values * mask


def _check_batch(batch: int | None, what: str) -> CheckFn:
    """The batch index's range check against the batch size; its type is checked now (a float is refused)."""
    if batch is not None:
        check_int(batch, "batch", minimum=0)

    def check(_model: nn.Module, _shape: tuple, n: int) -> None:
        if batch is not None and not 0 <= batch < n:
            raise UnitRangeError(f"{what}: batch={batch} is out of range for a batch of {n} images (valid 0..{n - 1})")

    return check


_BOUND: "weakref.WeakKeyDictionary[nn.Module, dict[str, str]]" = weakref.WeakKeyDictionary()


def bound_layer(model: nn.Module, name: str) -> str:
    """``name``'s canonical module path in ``model``, resolved once per (model, name) and cached
    (:data:`LOGITS`: the model's logits layer, :func:`logits_path`)."""
    per_model = _BOUND.setdefault(model, {})
    if name not in per_model:
        per_model[name] = logits_path(model) if name == LOGITS else resolve_layer(model, name)
    return per_model[name]


def _check_unit(unit: Unit, require_channel: bool) -> CheckFn:
    """Range check of an already parsed unit against the model (its layer resolved once, via :func:`bound_layer`)."""

    def check(model: nn.Module, shape: tuple, _n: int) -> None:
        resolve_unit(model, unit.with_layer(bound_layer(model, unit.layer)), shape, require_channel=require_channel)

    return check


def _unit_from(unit_or_layer: UnitSpec, c: int | None) -> "tuple[str, int | None, tuple[int, int] | None]":
    unit = unit_or_layer if isinstance(unit_or_layer, Unit) else parse_unit(unit_or_layer)
    if c is not None:
        c = check_int(c, "channel c")
        if unit.channel is not None and unit.channel != c:
            raise ValueError(f"channel given twice: {unit_or_layer!r} and c={c}")
        return unit.layer, int(c), unit.position
    return unit.layer, unit.channel, unit.position


def _float_act(acts: Acts, layer: str) -> torch.Tensor:
    act = acts[layer]
    if not isinstance(act, torch.Tensor):
        raise ValueError(f"layer {layer!r} returned {type(act).__name__}, not a tensor")
    return act.float()


# --- objectives ----------------------------------------------------------------------------------


def channel(unit_or_layer: UnitSpec, c: int | None = None, batch: int | None = None) -> Objective:
    """Mean activation of one channel over all spatial positions: ``channel("mixed4a:476")``."""
    layer, ch, pos = _unit_from(unit_or_layer, c)
    if ch is None:
        raise ValueError(f"channel objective needs a channel: write '{layer}:C' or pass c=")
    if pos is not None:
        return neuron(layer, ch, y=pos[0], x=pos[1], batch=batch)
    desc = f"channel {layer}:{ch}" + (f" [batch {batch}]" if batch is not None else "")

    def fn(acts: Acts) -> torch.Tensor:
        a = _float_act(acts, layer)[:, ch]
        v = a.flatten(1).mean(1) if a.ndim > 1 else a
        return _batch_mask(v, batch)

    obj = Objective(fn, [layer], desc, [_check_unit(Unit(layer, ch), True), _check_batch(batch, desc)])
    obj.unit_objective = obj if batch is None else None
    return obj


def neuron(unit_or_layer: UnitSpec, c: int | None = None, y: int | None = None, x: int | None = None,
           batch: int | None = None) -> Objective:
    """One channel at one spatial position (default: the centre of the layer's map)."""
    layer, ch, pos = _unit_from(unit_or_layer, c)
    if ch is None:
        raise ValueError(f"neuron objective needs a channel: write '{layer}:C' or pass c=")
    if y is not None or x is not None:
        if y is None or x is None:
            raise ValueError("neuron objective: give both y and x, or neither (centre)")
        pos = (int(y), int(x))
    where = f"@{pos[0]},{pos[1]}" if pos is not None else " (centre)"
    desc = f"neuron {layer}:{ch}{where}" + (f" [batch {batch}]" if batch is not None else "")

    def fn(acts: Acts) -> torch.Tensor:
        a = _float_act(acts, layer)[:, ch]
        if a.ndim == 3:
            py, px = pos if pos is not None else (a.shape[1] // 2, a.shape[2] // 2)
            a = a[:, py, px]
        return _batch_mask(a, batch)

    obj = Objective(fn, [layer], desc, [_check_unit(Unit(layer, ch, pos), True), _check_batch(batch, desc)], reads_position=True)
    obj.unit_objective = obj if batch is None else None
    return obj


def layer_l2(layer: str, batch: int | None = None) -> Objective:
    """DeepDream: the mean squared activation of a whole layer (everything it detects, amplified)."""
    check_instance(layer, str, "layer")
    desc = f"deepdream {layer}" + (f" [batch {batch}]" if batch is not None else "")

    def fn(acts: Acts) -> torch.Tensor:
        return _batch_mask(_float_act(acts, layer).pow(2).flatten(1).mean(1), batch)

    return Objective(fn, [layer], desc, [_check_unit(Unit(layer), False), _check_batch(batch, desc)])


deepdream = layer_l2


def direction(layer: str, vec: torch.Tensor | Sequence[float], batch: int | None = None, *, cossim_pow: float = 0.0) -> Objective:
    """Mean over positions of the dot product of the activation vector with ``vec`` (a direction in channel space).

    With ``cossim_pow > 0`` the dot product is multiplied by ``cos_sim ** cossim_pow`` (Lucid's
    ``direction_neuron`` variant) to favour activations that point the same way, not only large ones.
    """
    v = torch.as_tensor(vec, dtype=torch.float32).flatten()
    if v.numel() == 0 or not bool(torch.isfinite(v).all()) or not bool(v.abs().sum() > 0):
        raise ValueError(f"vec: a direction needs at least one finite, non-zero entry; got {v.numel()} entries "
                         f"{v[:4].tolist()}")
    desc = f"direction {layer}[{v.numel()}]" + (f" [batch {batch}]" if batch is not None else "")

    def check_len(model: nn.Module, shape: tuple, _n: int) -> None:
        c = layer_shape(model, layer, shape)[0]
        if v.numel() != c:
            raise UnitRangeError(f"direction for layer {layer!r} has {v.numel()} entries; the layer has {c} channels")

    def fn(acts: Acts) -> torch.Tensor:
        a = _float_act(acts, layer)
        d = v.to(a.device).view(1, -1, *([1] * (a.ndim - 2)))
        dot = (a * d).sum(1)
        if cossim_pow:
            cos = dot / (a.norm(dim=1) * d.norm()).clamp_min(1e-8)
            dot = dot * cos.clamp_min(1e-1) ** cossim_pow
        return _batch_mask(dot.flatten(1).mean(1) if dot.ndim > 1 else dot, batch)

    return Objective(fn, [layer], desc, [_check_unit(Unit(layer), False), check_len, _check_batch(batch, desc)])


LOGITS = "<logits>"
"""The layer name :func:`class_logit` reads when none is given: the model's logits, resolved per model by
:func:`logits_path` (the spec's ``logits_layer``, else the module whose output is the model's output)."""


def logits_path(model: nn.Module) -> str:
    """The module path of ``model``'s class logits: the spec's ``logits_layer`` (a path or alias; zoo models
    declare it, and a ``"logits"`` alias declares it too), else the one module whose output *is* the model's
    output (the tensor ``attribute(model, x, target=c)`` reads column ``c`` of), read from the trace at the
    declared input shape. Anything else is an error that says what to declare."""
    spec = model_spec(model)
    if spec.logits_layer is not None:
        return resolve_layer(model, spec.logits_layer)
    why = f"{type(model).__name__} declares no logits layer (spec.logits_layer, or a 'logits' layer alias)"
    if spec.input_shape is None:
        raise ValueError(f"layer: {why} and no input_shape to find the module that returns its output; pass "
                         "class_logit(c, layer='<module path>') or declare spec.logits_layer")
    t = trace(model, tuple(int(v) for v in spec.input_shape))
    deps = t.output_deps
    if t.error is None and len(deps) == 1 and deps[0].producer >= 0 and deps[0].exact and deps[0].direct \
            and t.output_shape is not None and deps[0].src == deps[0].dst == (0, int(t.output_shape[0])):
        return t.calls[deps[0].producer].path
    raise ValueError(f"layer: {why}, and its output is not one module's output (computed after the last module, or "
                     "not a tensor); pass class_logit(c, layer='<module path>') or declare spec.logits_layer")


def class_logit(c: int | str, layer: str | None = None, batch: int | None = None) -> Objective:
    """A class logit (pre-softmax). ``c`` is an index or a name from the model's class names (its spec's
    ``class_names``, read by :meth:`ModelSpec.class_index`, like ``attribute(target="face")``).

    ``layer`` names the logits layer; by default the model's own (:func:`logits_path`: the spec's
    ``logits_layer``, else the module that returns the model's output), so ``class_logit(1)`` and
    ``attribute(model, x, target=1)`` read the same number.
    """
    if not isinstance(c, str):
        c = check_int(c, "class c")
    if layer is not None:
        check_instance(layer, str, "layer")
    if batch is not None:
        batch = check_int(batch, "batch", minimum=0)
    name = LOGITS if layer is None else layer
    desc_c = repr(c) if isinstance(c, str) else str(c)
    desc = f"class logit {desc_c}" + ("" if layer is None else f" of {layer}") + (f" [batch {batch}]" if batch is not None else "")
    index: list[int] = [c] if isinstance(c, int) else []

    def check(model: nn.Module, shape: tuple, n: int) -> None:
        path = bound_layer(model, name)
        if isinstance(c, str):
            index[:] = [model_spec(model).class_index(c, "class c")]
        n_cls = layer_shape(model, path, shape)[0]
        if not 0 <= index[0] < n_cls:
            raise UnitRangeError(f"class {index[0]} is out of range: valid classes are 0..{n_cls - 1} (the {n_cls} outputs of {path!r})")

    def fn(acts: Acts) -> torch.Tensor:
        if not index:
            raise ValueError(f"class_logit({c!r}) must be checked against a model first (render() does this)")
        a = _float_act(acts, name)[:, index[0]]
        return _batch_mask(a.flatten(1).mean(1) if a.ndim > 1 else a, batch)

    return Objective(fn, [name], desc, [check, _check_batch(batch, desc)])


def diversity(layer: str, weight: float = 1.0, group_size: int | None = None) -> Objective:
    """Reward batch elements for differing in *style*: minus the cosine similarity of their Gram matrices.

    Element i gets ``-weight * mean_j cos(G_i, G_j)`` over the other elements j of its group
    (consecutive blocks of ``group_size``; the whole batch by default). Gram matrices ignore
    where features are, so the images must differ in which features they combine, not just shift.
    """
    weight = check_number(weight, "weight")
    check_instance(layer, str, "layer")
    if group_size is not None:
        group_size = check_int(group_size, "group_size", minimum=1)
    desc = f"{weight:g} * diversity {layer}" + (f" (groups of {group_size})" if group_size else "")

    def fn(acts: Acts) -> torch.Tensor:
        a = _float_act(acts, layer)
        n, c = a.shape[0], a.shape[1]
        flat = a.reshape(n, c, -1)
        gram = flat @ flat.transpose(1, 2)
        g = torch.nn.functional.normalize(gram.reshape(n, -1), dim=1, eps=1e-10)
        sim = g @ g.t()
        g_size = group_size or n
        groups = torch.arange(n, device=a.device) // g_size
        same = (groups[:, None] == groups[None, :]) & ~torch.eye(n, dtype=torch.bool, device=a.device)
        counts = same.sum(1).clamp_min(1)
        return -weight * (sim * same).sum(1) / counts

    def check_groups(_model: nn.Module, _shape: tuple, n: int) -> None:
        if group_size is not None and (group_size < 1 or n % group_size):
            raise ValueError(f"diversity: batch of {n} images is not a whole number of groups of {group_size}")

    return Objective(fn, [layer], desc, [_check_unit(Unit(layer), False), check_groups])
