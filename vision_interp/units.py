"""The one grammar for addressing layers and units, and its validation against a model.

A *layer* is a module path from ``model.named_modules()`` (``"conv2"``, ``"features.3"``) or an
alias the model declares in ``model.layer_aliases`` (InceptionV1's Lucid names such as
``"mixed4a_3x3_pre_relu"``). A *unit* is ``"layer:channel"`` with an optional spatial position
``"@y,x"``: ``"mixed4a:476"``, ``"conv2:5@3,4"``. Tuples work too: ``("conv2", 5)`` or
``("conv2", 5, (3, 4))``.

Every error about names and ranges in the package comes from here, so users see one style of
message: what was wrong, and what would have been valid.
"""

from __future__ import annotations

import difflib
import re
import weakref
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch
from torch import nn

__all__ = [
    "Unit",
    "UnitSpec",
    "UnknownLayerError",
    "UnitRangeError",
    "parse_unit",
    "layer_names",
    "resolve_layer",
    "resolve_unit",
    "layer_shape",
    "default_input_shape",
    "close_names",
    "model_device_dtype",
]


class UnknownLayerError(KeyError, ValueError):
    """A layer name that the model does not have. The message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class UnitRangeError(IndexError, ValueError):
    """A channel or spatial position outside the layer's output. The message states the range."""


@dataclass(frozen=True)
class Unit:
    """A layer, optionally narrowed to one channel and one spatial position ``(y, x)``."""

    layer: str
    channel: int | None = None
    position: tuple[int, int] | None = None

    def __str__(self) -> str:
        s = self.layer
        if self.channel is not None:
            s += f":{self.channel}"
        if self.position is not None:
            s += f"@{self.position[0]},{self.position[1]}"
        return s

    def with_layer(self, layer: str) -> "Unit":
        return Unit(layer, self.channel, self.position)


UnitSpec = Union[str, Unit, Sequence]

_UNIT_RE = re.compile(r"^\s*(?P<layer>[^:@\s]+)\s*(?::\s*(?P<ch>-?\d+)\s*)?(?:@\s*(?P<y>-?\d+)\s*,\s*(?P<x>-?\d+)\s*)?$")


def parse_unit(spec: UnitSpec) -> Unit:
    """Parse ``"layer"``, ``"layer:c"``, ``"layer:c@y,x"``, a tuple, or a :class:`Unit`.

    Only syntax is checked here; :func:`resolve_unit` checks names and ranges against a model.
    """
    if isinstance(spec, Unit):
        return spec
    if isinstance(spec, str):
        m = _UNIT_RE.match(spec)
        if not m:
            raise ValueError(
                f"cannot parse unit {spec!r}: expected 'layer', 'layer:channel' or "
                "'layer:channel@y,x' (e.g. 'mixed4a:476', 'conv2:5@3,4')"
            )
        ch = int(m["ch"]) if m["ch"] is not None else None
        pos = (int(m["y"]), int(m["x"])) if m["y"] is not None else None
        if pos is not None and ch is None:
            raise ValueError(f"unit {spec!r} gives a position but no channel; write 'layer:channel@y,x'")
        return Unit(m["layer"], ch, pos)
    if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3 and isinstance(spec[0], str):
        layer = spec[0]
        ch = spec[1] if len(spec) > 1 else None
        pos = spec[2] if len(spec) > 2 else None
        if ch is not None and not isinstance(ch, int):
            if isinstance(ch, torch.Tensor) and ch.numel() == 1:
                ch = int(ch)
            else:
                raise ValueError(f"unit {spec!r}: channel must be an int, got {type(ch).__name__}")
        if pos is not None:
            if ch is None:
                raise ValueError(f"unit {spec!r} gives a position but no channel; write (layer, channel, (y, x))")
            if len(pos) != 2:
                raise ValueError(f"unit {spec!r}: position must be (y, x)")
            pos = (int(pos[0]), int(pos[1]))
        return Unit(layer, ch, pos)
    raise ValueError(
        f"cannot parse unit {spec!r}: give a string like 'conv2:5' or a tuple like ('conv2', 5)"
    )


def _aliases(model: nn.Module) -> dict[str, str]:
    return dict(getattr(model, "layer_aliases", {}) or {})


def layer_names(model: nn.Module, *, include_aliases: bool = True) -> list[str]:
    """Every addressable layer name: module paths in registration order, then aliases."""
    names = [n for n, _ in model.named_modules() if n]
    if include_aliases:
        names += [a for a in _aliases(model) if a not in names]
    return names


def close_names(name: str, candidates: Iterable[str], n: int = 6) -> list[str]:
    """Closest candidates to ``name``: fuzzy matches first, then those containing it."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    for c in candidates:
        if len(found) >= n:
            break
        if c not in found and (name.lower() in c.lower() or c.lower() in name.lower()):
            found.append(c)
    return found


def resolve_layer(model: nn.Module, name: str) -> str:
    """Map a layer name or alias to its module path, or raise with the closest valid names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return name
    aliases = _aliases(model)
    if name in aliases:
        return aliases[name]
    valid = layer_names(model)
    near = close_names(name, valid)
    hint = f" Closest: {', '.join(near)}." if near else ""
    preview = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    raise UnknownLayerError(
        f"unknown layer {name!r} in {type(model).__name__}.{hint} "
        f"Valid names ({len(valid)}): {preview}. List them all with vision_interp.layer_names(model)."
    )


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) a model expects, from its ``input_shape`` attribute (zoo models set it)."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(
            f"{type(model).__name__} has no 'input_shape' attribute; pass input_shape=(C, H, W) "
            "explicitly or set model.input_shape = (C, H, W)"
        )
    return tuple(int(s) for s in shape)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype to build probe inputs for ``model`` (CPU float32 for parameter-free models)."""
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


_SHAPE_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def layer_shape(model: nn.Module, layer: str, input_shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """Output shape (without batch) of ``layer`` for one input of ``input_shape`` (C, H, W).

    Runs the model once on zeros up to that layer (early exit) and caches the answer.
    """
    from .capture import capture  # local import: capture depends on units

    path = resolve_layer(model, layer)
    shape_in = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    cache = _SHAPE_CACHE.setdefault(model, {})
    key = (path, shape_in)
    if key not in cache:
        device, dtype = model_device_dtype(model)
        x = torch.zeros((1, *shape_in), device=device, dtype=dtype)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                acts = capture(model, x, [path])
        finally:
            model.train(was_training)
        out = acts[path]
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {path!r} returns {type(out).__name__}, not a tensor; choose a tensor-valued layer")
        cache[key] = tuple(out.shape[1:])
    return cache[key]


def resolve_unit(
    model: nn.Module,
    spec: UnitSpec,
    input_shape: Sequence[int] | None = None,
    *,
    require_channel: bool = False,
) -> Unit:
    """Parse ``spec`` and check it against ``model``: known layer, channel and position in range.

    Returns the unit with its layer replaced by the canonical module path.
    """
    unit = parse_unit(spec)
    path = resolve_layer(model, unit.layer)
    if require_channel and unit.channel is None:
        raise ValueError(f"{spec!r} names a layer, but a unit ('{unit.layer}:CHANNEL') is needed here")
    if unit.channel is None and unit.position is None:
        return unit.with_layer(path)
    shape = layer_shape(model, path, input_shape)
    n_ch = shape[0]
    if not 0 <= unit.channel < n_ch:
        raise UnitRangeError(
            f"channel {unit.channel} is out of range for layer {unit.layer!r}: "
            f"valid channels are 0..{n_ch - 1} ({n_ch} channels)"
        )
    if unit.position is not None:
        if len(shape) < 3:
            raise UnitRangeError(f"layer {unit.layer!r} has no spatial dimensions (shape {shape}); drop '@y,x'")
        h, w = shape[-2], shape[-1]
        y, x = unit.position
        if not (0 <= y < h and 0 <= x < w):
            raise UnitRangeError(
                f"position ({y}, {x}) is out of range for layer {unit.layer!r}: "
                f"valid y is 0..{h - 1}, x is 0..{w - 1} (spatial size {h}x{w})"
            )
    return unit.with_layer(path)
