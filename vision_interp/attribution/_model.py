"""Everything attribution needs to know about a model *before* any work: checks and repairs.

* :func:`check_inputs` rejects wrong shapes, channels and dtypes with a message that says what
  was expected.
* :func:`profile` runs the model once on a single example (through :func:`capture.hooks`) and
  records, per module, the execution order, how often it is called and its output shape. That
  answers "which is the last spatial layer?", "does source run before target?" and "is a ReLU
  module reused?" without guessing from the module tree. It is cached per model and input shape.
* :func:`prepare` returns the model to attribute on. Captum's DeepLift, guided backprop and layer
  methods assume every nonlinearity is its own module, called once, and not in-place; models
  that break this give silently wrong numbers or autograd errors. When that is detected we work
  on a deep copy with non-inplace, un-shared activations and say so in a warning. The user's
  model is never modified.
* :func:`resolve_target` turns a class index, a class label or a hidden unit into something
  Captum understands: a class target for the model, or ``target=0`` for a wrapper whose single
  output is the unit (channel mean over space unless a position is given).
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

import torch
from torch import nn

from .. import checks
from ..capture import _capture, select_unit
from ..features.attach import feature_gradients
from ..model_state import using
from ..trace import Trace, TraceError, trace
from ..units import Unit, UnitHandle, UnknownLayerError, close_names, resolve_layer, resolve_unit
from ..zoo.spec import model_spec

__all__ = [
    "ModelProfile",
    "PerCallCopies",
    "Prepared",
    "ResolvedTarget",
    "TargetSpec",
    "UnitOutput",
    "check_inputs",
    "check_options",
    "parse_target_string",
    "profile",
    "prepare",
    "resolve_target",
    "running",
]

TargetSpec = Union[int, str, Unit, Sequence[int], torch.Tensor, None]


# ------------------------------------------------------------------------------------ the run
@contextmanager
def running(model: nn.Module, what: str) -> Iterator[nn.Module]:
    """Hold ``model`` for one attribution run (:func:`..model_state.using`: eval mode, state restored,
    one call at a time) with every attached dictionary/transcoder feature passing back its *exact*
    gradient: an attachment's ``gradient="linear"`` default is a feature-visualization convenience
    (straight-through where a feature is off), and attribution to or through a feature would then
    not add up (``ig_completeness`` 15-25x off, saliency non-zero where a feature is 0)."""
    with using(model, what=what), feature_gradients(model, "exact"):
        yield model


# ----------------------------------------------------------------------------------------- inputs
def check_inputs(model: nn.Module, inputs: Any) -> tuple[torch.Tensor, bool]:
    """Validate ``inputs`` and return them as a detached (N, C, H, W) tensor on the model's device
    and in its dtype (:func:`..checks.check_images`: float, finite, in [0, 1], the model's channels).

    The second value says whether a single (C, H, W) image was given (results are squeezed back).
    """
    if not isinstance(model, nn.Module):
        raise checks.InputTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return checks.check_images(inputs, model, arg="inputs")


_INT_OPTIONS = {"n_steps": 1, "internal_batch_size": 1, "nt_samples": 1, "nt_samples_batch_size": 1,
                "perturbations_per_eval": 1, "patch_size": 1}


def check_options(options: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
    """Check the values of the Captum options every method shares, before any work: baselines
    (a finite number or a tensor shaped like the inputs), windows and strides that fit in an image,
    positive counts, a finite non-negative noise level. Returns the options with baselines as tensors."""
    opts = dict(options)
    if "baselines" in opts:
        opts["baselines"] = checks.check_baselines(opts["baselines"], x, arg="baselines")
        if opts["baselines"] is None:
            del opts["baselines"]
    for key in ("sliding_window_shapes", "strides"):
        if key in opts:
            opts[key] = checks.check_window(opts[key], x, key)
    for key, lo in _INT_OPTIONS.items():
        if key in opts and opts[key] is not None:
            opts[key] = checks.check_int(opts[key], key, minimum=lo)
    if "stdevs" in opts:
        checks.check_number(opts["stdevs"], "stdevs", minimum=0.0)
    return opts


# ---------------------------------------------------------------------------------------- profile
ModelProfile = Trace  # what attribution knows about a model *is* its trace (kept name for callers)


def profile(model: nn.Module, x: torch.Tensor) -> Trace:
    """The model's trace for inputs shaped like ``x``: call order and counts, shapes, data flow (cached)."""
    try:
        return trace(model, tuple(x.shape[1:]), x.dtype)
    except TraceError as e:
        raise ValueError(str(e)) from e.__cause__


# --------------------------------------------------------------------------------------- repairs
class PerCallCopies(nn.Module):
    """Stands in for a parameter-free module that forward() calls several times.

    Call k of a forward pass goes to its own copy, so hook-based methods (DeepLift, guided
    backprop, layer hooks) see each use separately. The root model resets the counter at the
    start of every forward pass (see :func:`_reset_calls_on_forward`).
    """

    def __init__(self, module: nn.Module, n_calls: int):
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(module) for _ in range(n_calls))
        self._next = 0

    def reset(self) -> None:
        self._next = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        module = self.copies[self._next % len(self.copies)]
        self._next += 1
        return module(*args, **kwargs)


def _reset_calls_on_forward(model: nn.Module) -> None:
    """Give the copy a subclass whose forward first resets every PerCallCopies counter."""
    cls = type(model)

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        for m in self.modules():
            if isinstance(m, PerCallCopies):
                m.reset()
        return cls.forward(self, *args, **kwargs)

    model.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__})


@dataclass
class Prepared:
    """The model to run Captum on (the user's, or a repaired copy) and what we know about it."""

    model: nn.Module
    original: nn.Module
    profile: ModelProfile  # of ``model`` (the repaired copy when there is one)
    repairs: list[str] = field(default_factory=list)

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def layer(self, name: str, *, spatial: bool = False, what: str = "this method") -> str:
        """Resolve a layer name to a path that runs exactly once (and is spatial if asked)."""
        path = resolve_layer(self.model, name)
        prof = self.profile
        n = prof.call_counts.get(path, 0)
        if n == 0:
            raise ValueError(f"layer {name!r} ({path}) is never called by the forward pass; choose a layer on the computation path")
        if n > 1:
            raise ValueError(
                f"layer {name!r} ({path}) is called {n} times per forward pass, so its output is ambiguous; "
                "choose a layer that runs once"
            )
        shape = prof.shapes[path]
        if shape is None:
            raise ValueError(f"layer {name!r} does not output a tensor; choose a tensor-valued layer")
        if spatial and (len(shape) != 3 or shape[1] * shape[2] < 2):
            raise ValueError(
                f"{what} needs a convolutional layer with a spatial output (C, H, W); "
                f"layer {name!r} outputs shape {shape}"
            )
        return path

    def _is_spatial(self, path: str) -> bool:
        shape = self.profile.shapes.get(path)
        return (shape is not None and len(shape) == 3 and shape[1] * shape[2] > 1
                and self.profile.call_counts.get(path) == 1
                and not isinstance(self.model.get_submodule(path), nn.ModuleList))

    def feeding(self, unit: Unit | None) -> list[str]:
        """Layers (module paths, call order) whose output reaches ``unit``'s channel, or the model output."""
        if unit is None:
            return self.profile.feeding_layers(None)
        return [p for p in self.profile.feeding_layers(unit.layer, unit.channel) if p != unit.layer]

    def check_feeds(self, name: str, path: str, unit: Unit | None) -> None:
        """Refuse a layer that does not feed the target (its attributions would be zero by construction)."""
        target = f"the target unit's layer {unit.layer!r}" if unit is not None else "the model output"
        if unit is not None and path == unit.layer:
            raise ValueError(f"layer {name!r} must run before {target}: it is the target's own layer")
        feeding = self.feeding(unit)
        if path in feeding:
            return
        if unit is not None and self.profile.is_upstream(unit.layer, path):
            raise ValueError(f"layer {name!r} must run before {target}; it runs after it (attribution flows from "
                             "earlier layers to later units)")
        near = [p for p in feeding if self._is_spatial(p) or p in self.profile.shapes][-8:]
        what = f"channel {unit.channel} of {unit.layer!r}" if unit is not None else "the model output"
        raise ValueError(
            f"layer {name!r} ({path}) does not feed {what}: no data flows from it to the target, so every attribution "
            f"would be zero. Layers that do feed it (nearest last): {', '.join(near) or 'none'}"
        )

    def last_spatial_layer(self, before: Unit | None = None, what: str = "this method") -> str:
        """The last module (in execution order) upstream of ``before`` (a unit; None = the model output)
        whose output is (C, H, W) larger than 1x1, runs once, and feeds the target."""
        feeding = set(self.feeding(before))
        for path in reversed(self.profile.order):
            if path in feeding and self._is_spatial(path):
                return path
        where = f" upstream of {before}" if before is not None else ""
        raise ValueError(
            f"{what} needs a convolutional layer with a spatial (C, H, W) output{where}; "
            f"{type(self.original).__name__} has none. Use saliency, integrated_gradients or occlusion instead."
        )


def _inplace_modules(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if getattr(m, "inplace", False) is True]


def _reused_modules(model: nn.Module, prof: ModelProfile) -> dict[str, int]:
    """Parameter-free leaf modules used more than once per forward pass: path -> number of calls."""
    reused: dict[str, int] = {}
    for path, m in model.named_modules():
        if not path or list(m.children()) or any(True for _ in m.parameters(recurse=False)):
            continue
        if prof.call_counts.get(path, 0) > 1:
            reused[path] = prof.call_counts[path]
    return reused


def prepare(model: nn.Module, x: torch.Tensor, *, warn: bool = True) -> Prepared:
    """Profile ``model`` and, if it has in-place or reused activations, repair a deep copy of it."""
    prof = profile(model, x)
    inplace = _inplace_modules(model)
    reused = _reused_modules(model, prof)
    if not inplace and not reused:
        return Prepared(model, model, prof)
    fixed = copy.deepcopy(model)
    repairs: list[str] = []
    for path in inplace:
        fixed.get_submodule(path).inplace = False
    if inplace:
        repairs.append(f"in-place activations made non-inplace ({', '.join(inplace)})")
    if reused:
        all_paths: dict[int, list[str]] = {}
        for name, m in fixed.named_modules(remove_duplicate=False):
            all_paths.setdefault(id(m), []).append(name)
        for path, n_calls in reused.items():
            shared = fixed.get_submodule(path)
            stand_in = PerCallCopies(shared, n_calls)
            for name in all_paths[id(shared)]:
                parent_name, _, attr = name.rpartition(".")
                parent = fixed.get_submodule(parent_name) if parent_name else fixed
                parent._modules[attr] = stand_in
        _reset_calls_on_forward(fixed)
        repairs.append("reused modules given one copy per call (" + ", ".join(f"{p} x{n}" for p, n in reused.items()) + ")")
    if warn:
        warnings.warn(
            f"{type(model).__name__}: " + "; ".join(repairs) + ". Captum's hook-based methods (DeepLift, guided "
            "backprop, Grad-CAM, layer attribution) are wrong or fail otherwise. Attributing on a repaired deep "
            "copy; your model is unchanged.",
            UserWarning,
            stacklevel=3,
        )
    # profile the repaired copy: each per-call copy is now a layer that runs once
    return Prepared(fixed, model, profile(fixed, x), repairs)


# ---------------------------------------------------------------------------------------- targets
class UnitOutput(nn.Module):
    """A model whose single output (N, 1) is one hidden unit: attribution targets it with ``target=0``.

    A channel without a position is summarised by its spatial mean; ``@y,x`` picks one position.
    The forward pass stops once the unit's layer has run (``capture``), so later layers cost nothing.
    """

    def __init__(self, model: nn.Module, unit: UnitHandle):
        super().__init__()
        self.model = model
        self.unit = unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = _capture(self.model, x, [self.unit.layer])[self.unit.layer]
        value = select_unit(act, self.unit)
        if value.ndim > 1:
            value = value.flatten(1).mean(1)
        return value[:, None]


@dataclass
class ResolvedTarget:
    """A target ready for Captum: ``forward`` is the model (or unit wrapper) and ``captum`` its target."""

    kind: str  # "class" or "unit"
    captum: Any  # int, a LongTensor of N classes (one per example), or 0 for a unit
    description: str
    unit: UnitHandle | None = None

    def forward_model(self, model: nn.Module) -> nn.Module:
        return UnitOutput(model, self.unit) if self.kind == "unit" else model

    def values(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The scalar being explained, per example (N,)."""
        out = self.forward_model(model)(x)
        if self.kind == "unit":
            return out[:, 0]
        idx = torch.as_tensor(self.captum, device=out.device).reshape(-1).expand(out.shape[0])
        return out.gather(1, idx[:, None])[:, 0]


def _n_classes(prep: Prepared) -> int:
    shape = prep.profile.output_shape
    if shape is None or len(shape) != 1:
        raise ValueError(
            f"{type(prep.original).__name__} outputs shape {shape}, not one vector of class scores per example; "
            "class targets need outputs (N, n_classes). Use a hidden-unit target like 'layer:channel'."
        )
    return shape[0]


def _class_index(prep: Prepared, value: int) -> int:
    n = _n_classes(prep)
    if not 0 <= value < n:
        raise checks.TargetRangeError(f"target: class {value} is out of range: valid classes are 0..{n - 1} ({n} outputs)")
    return value


def resolve_target(prep: Prepared, x: torch.Tensor, target: TargetSpec) -> ResolvedTarget:
    """Validate ``target`` against the model: a class (index or label), per-example classes, or a unit.

    ``None`` means each example's predicted class.
    """
    model = prep.original
    n = x.shape[0]
    checks.check_class_target(target)
    if target is None:
        _n_classes(prep)
        with torch.no_grad():
            pred = prep.model(x).argmax(1)
        return ResolvedTarget("class", pred, "predicted class")
    if isinstance(target, bool):
        raise TypeError("target must be a class index, a class label or a unit like 'conv2:5', not a bool")
    if isinstance(target, int) or checks.is_integer_id(target) and not isinstance(target, torch.Tensor):
        target = int(target)  # an int or a NumPy integer (floats were refused above, also 3.0)
        return ResolvedTarget("class", _class_index(prep, target), f"class {target}")
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        return resolve_target(prep, x, int(target))
    if isinstance(target, (torch.Tensor, list)) and not (isinstance(target, list) and target and isinstance(target[0], str)):
        idx = torch.as_tensor(target).reshape(-1).tolist() if isinstance(target, torch.Tensor) else list(target)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise checks.InputTypeError(f"target: per-example class indices must be integers, got {idx[:5]!r}")
        if len(idx) != n:
            raise checks.InputError(f"target: {len(idx)} per-example class indices for {n} input(s); give {n} integers "
                                    "(one per input) or a single class index")
        n_classes = _n_classes(prep)
        bad = [i for i in idx if not 0 <= i < n_classes]
        if bad:
            _class_index(prep, bad[0])  # raises with the valid range
        # a tensor, not a list: Captum expands list targets element by element in Python
        return ResolvedTarget("class", torch.tensor(idx, dtype=torch.long, device=x.device), "per-example classes")
    if isinstance(target, (str, Unit, tuple)):
        names = list(model_spec(model).class_names or ())
        if isinstance(target, str):
            label = target.strip()
            if names:  # the one class-name lookup (also used by featvis's class_logit): exact, else one case-insensitive match
                try:
                    return ResolvedTarget("class", _class_index(prep, model_spec(model).class_index(label, "target")),
                                          f"class {label!r}")
                except checks.InputError:
                    pass  # not a class name: a unit, or the error below
            if ":" not in label:
                # neither a class label nor a unit: say both what classes and what layers look like
                layer_hint = ""
                try:
                    resolve_layer(model, label)
                    layer_hint = f" {label!r} is a layer; name a unit in it, e.g. '{label}:0'."
                except UnknownLayerError:
                    pass
                near = close_names(label, names, n=5) if names else []
                raise ValueError(
                    f"target {label!r} is not a class label of {type(model).__name__} nor a unit 'layer:channel'."
                    + layer_hint
                    + (f" Closest class labels: {', '.join(repr(c) for c in near)}." if near else "")
                    + (f" Class indices are 0..{len(names) - 1}." if names else "")
                )
        unit = resolve_unit(model, target, tuple(x.shape[1:]), single_channel=True)
        if prep.profile.call_counts.get(unit.layer, 0) > 1:
            raise ValueError(f"unit layer {unit.layer!r} is called several times per forward pass; its unit is ambiguous")
        desc = f"unit {unit}" + ("" if unit.position is not None else " (spatial mean)")
        return ResolvedTarget("unit", 0, desc, unit=unit)
    raise TypeError(
        f"target must be a class index, a class label, per-example class indices or a unit like 'conv2:5'; "
        f"got {type(target).__name__}"
    )


def parse_target_string(text: str) -> TargetSpec:
    """CLI helper: '3' -> 3, anything else stays a string (a label or a unit)."""
    t = text.strip()
    return int(t) if t.lstrip("-").isdigit() else t

