"""The one grammar for addressing layers and units, resolved once into model-bound handles.

A *layer* is a module path from ``model.named_modules()`` (``"conv2"``, ``"features.3"``,
``"conv2/sae"``) or an alias the model declares in its spec (InceptionV1's Lucid names such as
``"mixed4a_3x3_pre_relu"``). A *unit* is ``"layer:channel"`` with an optional spatial position
``"@y,x"``: ``"mixed4a:476"``, ``"conv2:5@3,4"``; a channel range is ``"conv2:0-7"`` (both ends
included). Tuples work too: ``("conv2", 5)``, ``("conv2", 5, (3, 4))``, ``("conv2", range(8))``.

:func:`parse_unit` checks syntax only; :func:`resolve_unit` checks the unit against a model and
returns a :class:`UnitHandle` (canonical module path, channel(s), position, output shape from the
model's :mod:`~vision_interp.trace`). Public functions accept strings, tuples or handles and
resolve them once at the boundary; everything below works with handles.

Every error about names and ranges in the package comes from here, so users see one style of
message: what was wrong, and what would have been valid.
"""

from __future__ import annotations

import difflib
import re
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import trace as _trace
from .errors import check_input_shape
from .trace import model_device_dtype
from .zoo.spec import model_spec

__all__ = [
    "Unit",
    "UnitHandle",
    "UnitSpec",
    "UnknownLayerError",
    "UnitRangeError",
    "LayerNameCollisionError",
    "parse_unit",
    "parse_channel_list",
    "layer_names",
    "resolve_layer",
    "resolve_unit",
    "resolve_units",
    "layer_shape",
    "default_input_shape",
    "close_names",
    "check_unit_range",
    "model_device_dtype",
]


class UnknownLayerError(KeyError, ValueError):
    """A layer name that the model does not have. The message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class UnitRangeError(IndexError, ValueError):
    """A channel or spatial position outside the layer's output. The message states the range."""


class LayerNameCollisionError(ValueError):
    """Two names for one module were used together, or an alias shadows a different module's path."""


@dataclass(frozen=True, eq=False)
class Unit:
    """A layer, optionally narrowed to one channel (or a channel range) and a position ``(y, x)``.

    ``channels`` is a ``range`` for ``"layer:lo-hi"`` (then ``channel`` is None); ranges stay lazy
    so that an absurd range is rejected by its bounds, never by allocating it.
    """

    layer: str
    channel: int | None = None
    position: tuple[int, int] | None = None
    channels: range | None = None

    def _key(self) -> tuple:
        rng = (self.channels.start, self.channels.stop) if self.channels is not None else None
        return (self.layer, self.channel, self.position, rng)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unit) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        s = self.layer
        if self.channel is not None:
            s += f":{self.channel}"
        elif self.channels is not None:
            s += f":{self.channels.start}-{self.channels.stop - 1}"
        if self.position is not None:
            s += f"@{self.position[0]},{self.position[1]}"
        return s

    @property
    def has_channel(self) -> bool:
        """True when one channel or a channel range is selected."""
        return self.channel is not None or self.channels is not None

    def channel_list(self, n_channels: int | None = None) -> list[int]:
        """The selected channels (all ``n_channels`` for a whole layer)."""
        if self.channel is not None:
            return [self.channel]
        if self.channels is not None:
            return list(self.channels)
        if n_channels is None:
            raise ValueError(f"{self} selects a whole layer; pass n_channels")
        return list(range(n_channels))

    def with_layer(self, layer: str) -> "Unit":
        return Unit(layer, self.channel, self.position, self.channels)


@dataclass(frozen=True, eq=False)
class UnitHandle(Unit):
    """A unit resolved against one model: ``layer`` is the canonical module path, channels and
    position are checked, and ``shape`` is the layer's output shape (without batch) for
    ``input_shape``. Compares equal to the :class:`Unit` with the same path and selection.
    """

    input_shape: tuple[int, ...] | None = None
    name: str | None = None  # the user's spelling of the layer (alias or path)
    _model: "weakref.ref[nn.Module] | None" = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return self.layer

    @property
    def model(self) -> nn.Module:
        model = self._model() if self._model is not None else None
        if model is None:
            raise ReferenceError(f"the model of unit handle {self} no longer exists")
        return model

    @cached_property
    def shape(self) -> tuple[int, ...]:
        """Output shape of the layer (without batch), from the model's trace."""
        return layer_shape(self.model, self.layer, self.input_shape)

    @property
    def n_channels(self) -> int:
        return int(self.shape[0])

    def bound_to(self, model: nn.Module) -> bool:
        return self._model is not None and self._model() is model

    def display(self) -> str:
        """The unit as the user spelled its layer (alias kept)."""
        return str(self.with_layer(self.name or self.layer))


UnitSpec = Union[str, Unit, Sequence]

_D = r"[0-9]+"  # ASCII digits only: int() would also accept '٣' or '３'
_UNIT_RE = re.compile(
    rf"^\s*(?P<layer>[^:@\s]+)\s*"
    rf"(?::\s*(?:(?P<lo>{_D})\s*-\s*(?P<hi>{_D})|(?P<ch>-?{_D}))\s*)?"
    rf"(?:@\s*(?P<y>-?{_D})\s*,\s*(?P<x>-?{_D})\s*)?$",
    re.ASCII,
)


def _range(lo: int, hi: int, spec: object) -> range:
    if lo > hi:
        raise ValueError(f"unit {spec!r}: channel range {lo}-{hi} is empty; write 'layer:LOW-HIGH' with LOW <= HIGH")
    return range(lo, hi + 1)


def parse_unit(spec: UnitSpec) -> Unit:
    """Parse ``"layer"``, ``"layer:c"``, ``"layer:lo-hi"``, ``"layer:c@y,x"``, a tuple, or a :class:`Unit`.

    Only syntax is checked here; :func:`resolve_unit` checks names and ranges against a model.
    """
    if isinstance(spec, Unit):
        return spec
    if isinstance(spec, str):
        m = _UNIT_RE.match(spec)
        if not m:
            raise ValueError(
                f"cannot parse unit {spec!r}: expected 'layer', 'layer:channel', 'layer:LOW-HIGH' or "
                "'layer:channel@y,x' with ASCII digits (e.g. 'mixed4a:476', 'conv2:0-7', 'conv2:5@3,4')"
            )
        ch = int(m["ch"]) if m["ch"] is not None else None
        rng = _range(int(m["lo"]), int(m["hi"]), spec) if m["lo"] is not None else None
        pos = (int(m["y"]), int(m["x"])) if m["y"] is not None else None
        if pos is not None and ch is None and rng is None:
            raise ValueError(f"unit {spec!r} gives a position but no channel; write 'layer:channel@y,x'")
        return Unit(m["layer"], ch, pos, rng)
    if isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3 and isinstance(spec[0], str):
        return _parse_tuple(spec)
    raise ValueError(
        f"cannot parse unit {spec!r}: give a string like 'conv2:5' or a tuple like ('conv2', 5)"
    )


def _id(value: object, what: str, spec: object) -> int:
    """An integer id inside a unit (channel, position coordinate): floats, also ``3.0``, and bools are refused
    (the rule of :mod:`.checks`), never truncated."""
    from .checks import check_index

    return check_index(value, f"unit {spec!r}: {what}", what="an integer")


def _parse_tuple(spec: Sequence) -> Unit:
    layer = spec[0]
    ch = spec[1] if len(spec) > 1 else None
    pos = spec[2] if len(spec) > 2 else None
    rng = None
    if isinstance(ch, range):
        if ch.step != 1 or len(ch) == 0:
            raise ValueError(f"unit {spec!r}: a channel range must be non-empty with step 1")
        ch, rng = None, ch
    elif ch is not None:
        ch = _id(ch, "channel (an int or a range)", spec)
    if pos is not None:
        if ch is None and rng is None:
            raise ValueError(f"unit {spec!r} gives a position but no channel; write (layer, channel, (y, x))")
        if not isinstance(pos, (tuple, list)) or len(pos) != 2:
            raise ValueError(f"unit {spec!r}: position must be (y, x), got {pos!r}")
        pos = (_id(pos[0], "position y", spec), _id(pos[1], "position x", spec))
    return Unit(layer, ch, pos, rng)


def parse_channel_list(spec: str | int | Iterable[int] | None, n_channels: int, *, what: str = "channels") -> list[int]:
    """Channels from ``"0-7,9"``, an int, an iterable of ints, or None (all ``n_channels``).

    Every number and range is checked against ``n_channels`` before any list is built. Numbers must be
    integers (a float, also ``3.0``, or a bool is an :class:`~vision_interp.errors.IdTypeError`, never truncated).
    """
    from .checks import check_index, is_integer_id

    if spec is None:
        return list(range(n_channels))
    if is_integer_id(spec):
        c = check_index(spec, what)
        parts: list[range] = [range(c, c + 1)]
    elif isinstance(spec, str):
        parts = []
        for item in spec.split(","):
            m = re.fullmatch(rf"\s*(?P<lo>{_D})\s*(?:-\s*(?P<hi>{_D})\s*)?", item, re.ASCII)
            if not m:
                raise ValueError(f"{what} {spec!r}: expected numbers and ranges like '0-7,9' (ASCII digits)")
            lo = int(m["lo"])
            parts.append(_range(lo, int(m["hi"]) if m["hi"] is not None else lo, spec))
    elif isinstance(spec, range):
        if spec.step != 1:
            raise ValueError(f"{what} {spec!r}: a channel range must have step 1")
        parts = [spec] if len(spec) else []
    elif isinstance(spec, Iterable) and not isinstance(spec, (bytes, Unit)) and not (
            isinstance(spec, (torch.Tensor, np.ndarray)) and spec.ndim != 1):
        parts = [range(c, c + 1) for c in (check_index(v, f"{what}: item {i}") for i, v in enumerate(spec))]
    else:
        from .checks import IdTypeError

        raise IdTypeError(f"{what}: expected channel numbers (an int, a list of ints, a range or a string like "
                          f"'0-7,9'), got {type(spec).__name__} {spec!r}")
    for r in parts:
        if r.start < 0 or r.stop > n_channels:
            raise UnitRangeError(
                f"{what} {r.start}-{r.stop - 1} out of range: valid channels are 0..{n_channels - 1} ({n_channels} channels)"
            )
    out = [c for r in parts for c in r]
    if not out:
        raise ValueError(f"empty {what} selection")
    return out


def _aliases(model: nn.Module) -> dict[str, str]:
    return dict(model_spec(model).layer_aliases or {})


def layer_names(model: nn.Module, *, include_aliases: bool = True) -> list[str]:
    """Every addressable layer name: module paths in registration order, then aliases."""
    from .checks import check_model

    check_model(model)
    names = [n for n, _ in model.named_modules() if n]
    if include_aliases:
        seen = set(names)
        names += [a for a in _aliases(model) if a not in seen]
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


def _has_module(model: nn.Module, path: str) -> bool:
    """Whether ``path`` names a submodule (walks the path; no listing of every module)."""
    if not isinstance(path, str) or not path:
        return False
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def resolve_layer(model: nn.Module, name: str) -> str:
    """Map a layer name or alias to its module path, or raise with the closest valid names.

    An alias that is also the path of a *different* module is ambiguous and raises
    :class:`LayerNameCollisionError`.
    """
    if isinstance(name, Unit):
        name = name.layer
    aliases = _aliases(model)
    if name in aliases:
        target = aliases[name]
        if target != name and _has_module(model, name):
            raise LayerNameCollisionError(
                f"{type(model).__name__} declares alias {name!r} -> {target!r}, but {name!r} is also the path of "
                "another module; rename the alias"
            )
        if not _has_module(model, target):
            raise UnknownLayerError(
                f"alias {name!r} of {type(model).__name__} points to {target!r}, which is not a module path"
            )
        return target
    if _has_module(model, name):
        return name
    valid = layer_names(model)
    near = close_names(name, valid)
    hint = f" Closest: {', '.join(near)}." if near else ""
    preview = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    raise UnknownLayerError(
        f"unknown layer {name!r} in {type(model).__name__}.{hint} "
        f"Valid names ({len(valid)}): {preview}. List them all with vision_interp.layer_names(model)."
    )


def resolve_layers(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """``{name: path}`` for several names; two different names of one module raise a collision error."""
    out: dict[str, str] = {}
    by_path: dict[str, str] = {}
    for name in names:
        path = resolve_layer(model, name)
        if path in by_path and by_path[path] != name:
            raise LayerNameCollisionError(
                f"{by_path[path]!r} and {name!r} both name module {path!r}; give each module once"
            )
        by_path[path] = name
        out[name] = path
    return out


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The (C, H, W) a model expects, from its spec (``input_shape``; zoo models declare it)."""
    shape = model_spec(model).input_shape
    if shape is None:
        raise ValueError(
            f"{type(model).__name__} has no 'input_shape' attribute; pass input_shape=(C, H, W) "
            "explicitly or set model.input_shape = (C, H, W)"
        )
    return tuple(int(s) for s in shape)


def layer_shape(model: nn.Module, layer: str, input_shape: Sequence[int] | None = None) -> tuple[int, ...]:
    """Output shape (without batch) of ``layer`` for one input of ``input_shape`` (C, H, W), from the trace."""
    path = resolve_layer(model, layer)
    shape_in = check_input_shape(input_shape) if input_shape is not None else default_input_shape(model)
    return _trace.trace(model, shape_in).shape(path)


def check_unit_range(unit: Unit, shape: Sequence[int]) -> None:
    """Channel(s) and position of ``unit`` inside a layer output of ``shape`` (C, ...) without batch.

    The one range check: :func:`resolve_unit` and cached lookups (``cache["conv2:5@3,4"]``) both use it,
    so a negative or too large channel or position is the same :class:`UnitRangeError` everywhere.
    """
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise UnitRangeError(f"layer {unit.layer!r} outputs a scalar per example; it has no channels to select")
    n_ch = shape[0]
    if unit.channel is not None and not 0 <= unit.channel < n_ch:
        raise UnitRangeError(
            f"channel {unit.channel} is out of range for layer {unit.layer!r}: "
            f"valid channels are 0..{n_ch - 1} ({n_ch} channels)"
        )
    if unit.channels is not None and not (unit.channels.start >= 0 and unit.channels.stop <= n_ch):
        raise UnitRangeError(
            f"channel range {unit.channels.start}-{unit.channels.stop - 1} is out of range for layer {unit.layer!r}: "
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


def resolve_unit(
    model: nn.Module,
    spec: UnitSpec,
    input_shape: Sequence[int] | None = None,
    *,
    require_channel: bool = False,
    single_channel: bool = False,
) -> UnitHandle:
    """Parse ``spec`` and check it against ``model`` once: known layer, channel(s) and position in range.

    Returns a :class:`UnitHandle` bound to ``model`` whose ``layer`` is the canonical module path.
    A handle already bound to ``model`` (and the same input shape) is returned as it is.
    ``require_channel`` refuses a bare layer; ``single_channel`` also refuses a channel range.
    """
    shape_in = check_input_shape(input_shape) if input_shape is not None else None
    bound = isinstance(spec, UnitHandle) and spec.bound_to(model) and (shape_in is None or shape_in == spec.input_shape)
    if bound and (spec.channel is not None or not single_channel) and (spec.has_channel or not require_channel):
        return spec  # type: ignore[return-value]  # checked against this model and size already: resolved once
    unit = parse_unit(spec)
    name = unit.name if isinstance(unit, UnitHandle) else unit.layer
    path = resolve_layer(model, unit.layer)
    if (require_channel or single_channel) and not unit.has_channel:
        raise ValueError(f"{spec!r} names a layer, but a unit ('{unit.layer}:CHANNEL') is needed here")
    if single_channel and unit.channel is None:
        raise ValueError(f"{spec!r} selects a channel range; one channel ('{unit.layer}:CHANNEL') is needed here")
    if shape_in is None and (unit.has_channel or unit.position is not None):
        shape_in = default_input_shape(model)
    handle = UnitHandle(path, unit.channel, unit.position, unit.channels, shape_in, name, weakref.ref(model))
    if unit.has_channel or unit.position is not None:
        check_unit_range(handle, handle.shape)
    return handle


def resolve_units(model: nn.Module, specs: Iterable[UnitSpec], input_shape: Sequence[int] | None = None,
                  **kwargs: bool) -> list[UnitHandle]:
    """:func:`resolve_unit` for several specs."""
    return [resolve_unit(model, s, input_shape, **kwargs) for s in specs]
