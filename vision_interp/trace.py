"""ONE trace of a model per (model, input shape, dtype): the only place that learns model structure.

One forward pass on zeros records every module call in order, its output shape, how often each
module runs, where every tensor came from, and what part of the input each position sees:

* **Data flow** is followed through modules *and* plain function calls in ``forward`` (``x * 255``,
  ``torch.cat``, ``torch.flatten``): a :class:`~torch.overrides.TorchFunctionMode` labels every
  tensor with its provenance, a tuple of :class:`Segment` s that say which channels of which
  earlier call it holds. ``torch.cat`` along the channel axis keeps exact channel offsets, so a
  concatenation (a module or an inline ``torch.cat``) is recognised by what it computes, not by
  its class. Channel-wise functions (ReLU, pooling, padding, arithmetic between same-width tensors)
  keep channels one to one; everything else (convolutions, linear maps) mixes them.
* **Receptive fields** are composed from the sliding-window functions actually called (``pad``,
  ``conv2d``, ``max_pool2d``, ``avg_pool2d``), with their run-time arguments: a TF "SAME" padding
  computed from the input size is measured at that size. Functions that keep the spatial size are
  pointwise in space; ones that change it in an unknown way make the field unknown (with the
  function named in the error). Axis reorders (``permute``, ``transpose``, ``movedim``) are followed:
  each 4-d tensor carries the order of its axes relative to (N, C, H, W), so a block that moves
  channels last (ConvNeXt: ``permute(0, 2, 3, 1)``, LayerNorm and ``nn.Linear`` over channels, then
  ``permute(0, 3, 1, 2)``) keeps its spatial geometry, while a map that mixes positions is recognised
  by the axes it mixes: normalising over both spatial axes (GroupNorm, InstanceNorm, a LayerNorm over
  (C, H, W)) makes every position see the whole input; a linear map or softmax along one spatial axis
  makes the field unknown. Channel provenance is not followed through a reorder (it is kept as
  "mixed", the safe answer).

Answers: :meth:`Trace.shape`, :meth:`Trace.is_upstream`, :meth:`Trace.channels_reaching`,
:meth:`Trace.feeding_layers`, :meth:`Trace.receptive_field`, :meth:`Trace.relative_window`,
:meth:`Trace.edges`. Traces are cached per model in one place (:func:`trace`) and keyed by the
model's module structure too, so adding or replacing a module invalidates them automatically;
:func:`invalidate` drops them explicitly.

This module names layers by module path only; the unit grammar and aliases live in
:mod:`vision_interp.units`, which resolves names before asking here.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import check_input_shape
from .model_state import using

__all__ = [
    "INPUT",
    "Segment",
    "Window",
    "Call",
    "Trace",
    "TraceError",
    "LayerNotReachedError",
    "trace",
    "invalidate",
    "track",
    "model_device_dtype",
]

INPUT = -1  # producer index of the model's input


class TraceError(ValueError):
    """A structural question the trace cannot answer (layer never called, unknown receptive field, ...)."""


class LayerNotReachedError(TraceError, RuntimeError):
    """The forward pass ended without running a requested layer (e.g. a module that is never called)."""


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype to build inputs for ``model``: its first parameter's, else its first
    floating buffer's device, else CPU float32. The package's one device helper."""
    from .errors import check_model

    check_model(model)
    p = next(model.parameters(), None)
    if p is not None:
        return p.device, p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.float32


# --------------------------------------------------------------------------------- provenance
@dataclass(frozen=True)
class Segment:
    """Channels ``dst[0]..dst[1]-1`` of a tensor come from channels ``src`` of call ``producer``.

    ``exact``: one to one (``dst[0] + k`` <- ``src[0] + k``); otherwise every destination channel
    of the segment depends on every source channel of it. ``direct``: the channels are the
    producer's output verbatim, at most moved by a channel concatenation (no other function between).
    """

    producer: int
    src: tuple[int, int]
    dst: tuple[int, int]
    exact: bool = True
    direct: bool = True


Flow = tuple  # tuple[Segment, ...]


def _channels(t: torch.Tensor) -> int:
    return int(t.shape[1]) if t.ndim >= 2 else 1


def _mixed(flows: Iterable[Flow], n_out: int) -> Flow:
    segs = {Segment(s.producer, s.src, (0, n_out), False, False) for f in flows for s in f}
    return tuple(sorted(segs, key=lambda s: (s.producer, s.src)))


def _shift(flow: Flow, offset: int) -> Flow:
    return tuple(Segment(s.producer, s.src, (s.dst[0] + offset, s.dst[1] + offset), s.exact, s.direct) for s in flow)


# ------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class Window:
    """Where position ``p`` of a map looks in the reference map, per axis (y, x): rows
    ``stride*p + offset .. + size`` (may extend past the border, into padding).
    ``is_global``: every position sees the whole reference (after flatten, linear, global pooling).
    """

    size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    offset: tuple[int, int] = (0, 0)
    is_global: bool = False

    def then(self, kernel: tuple[int, int], stride: tuple[int, int], pad_before: tuple[int, int],
             dilation: tuple[int, int] = (1, 1)) -> "Window":
        """Compose with a sliding window (conv or pool) of the given kernel, stride, leading pad, dilation."""
        if self.is_global:
            return self
        k = tuple(dilation[a] * (kernel[a] - 1) + 1 for a in range(2))
        size = tuple(self.size[a] + self.stride[a] * (k[a] - 1) for a in range(2))
        offset = tuple(self.offset[a] - self.stride[a] * pad_before[a] for a in range(2))
        st = tuple(self.stride[a] * stride[a] for a in range(2))
        return Window(size, st, offset)  # type: ignore[arg-type]

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of position (y, x), end-exclusive, unclipped."""
        y0 = self.stride[0] * y + self.offset[0]
        x0 = self.stride[1] * x + self.offset[1]
        return y0, x0, y0 + self.size[0], x0 + self.size[1]


GLOBAL = Window(is_global=True)


def _hull(wins: Sequence[Window]) -> Window | str:
    if any(w.is_global for w in wins):
        return GLOBAL
    if len({w.stride for w in wins}) > 1:
        return "inputs with different strides are combined"
    lo = tuple(min(w.offset[a] for w in wins) for a in range(2))
    hi = tuple(max(w.offset[a] + w.size[a] for w in wins) for a in range(2))
    return Window((hi[0] - lo[0], hi[1] - lo[1]), wins[0].stride, lo)  # type: ignore[arg-type]


def _pair(v: Any, default: int = 0) -> tuple[int, int]:
    if v is None:
        return (default, default)
    if isinstance(v, (int, float)):
        return (int(v), int(v))
    v = list(v)
    if not v:
        return (default, default)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[-2]), int(v[-1]))


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


# function names (``func.__name__``) whose output channel c depends only on input channel c
_CHANNELWISE = {
    "add", "sub", "mul", "div", "true_divide", "neg", "pow", "abs", "exp", "log", "sqrt", "rsqrt", "square",
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__",
    "__truediv__", "__rtruediv__", "__itruediv__", "__neg__", "__pow__", "__rpow__", "add_", "sub_", "mul_", "div_",
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "sigmoid", "tanh", "gelu",
    "silu", "elu", "softplus", "clamp", "clamp_", "clamp_min", "clamp_max", "clip", "maximum", "minimum",
    "pad", "max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "lp_pool2d",
    "mean", "sum", "amax", "amin", "contiguous", "clone", "to", "float", "double", "half", "bfloat16", "type",
    "detach", "dropout", "dropout2d", "feature_dropout", "alpha_dropout", "interpolate", "upsample",
    "batch_norm", "instance_norm", "where", "nan_to_num",
}
_CAT = {"cat", "concat", "concatenate"}
_POOLS = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d"}
# functions that only reorder a tensor's axes (their effect is measured on a meta tensor)
_AXIS_OPS = {"permute", "transpose", "transpose_", "swapaxes", "swapaxes_", "swapdims", "swapdims_", "movedim",
             "moveaxis"}
_NCHW = (0, 1, 2, 3)  # logical axis of each physical axis: batch, channel, height, width
_PROBE = (2, 3, 5, 7)  # distinct sizes: an axis reorder of this shape reveals its permutation
# sliding-window functions that read their input as (N, C, H, W)
_GRID_OPS = {"conv2d", "conv_transpose2d"} | _POOLS | {"adaptive_avg_pool2d", "adaptive_max_pool2d",
                                                       "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
                                                       "interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle"}


class _Tracker(TorchFunctionMode):
    """Labels every tensor computed from tracked tensors with its provenance and window."""

    def __init__(self) -> None:
        super().__init__()
        self.flow: dict[int, Flow] = {}
        self.window: dict[int, Window | str] = {}  # str: why the window is unknown
        self.layout: dict[int, tuple[int, ...]] = {}  # 4-d tensors whose axes are not (N, C, H, W)
        self._alive: list[torch.Tensor] = []  # ids stay unique while the pass runs

    def label(self, t: torch.Tensor, flow: Flow, window: Window | str) -> None:
        self.flow[id(t)] = flow
        self.window[id(t)] = window
        self._alive.append(t)

    def tracked(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.flow

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [t for t in _tensors((args, kwargs)) if self.tracked(t)]
        if not ins:
            return out
        name = getattr(func, "__name__", "")
        outs = [out] if isinstance(out, torch.Tensor) else [t for t in (out if isinstance(out, (tuple, list)) else ()) if isinstance(t, torch.Tensor)]
        for i, o in enumerate(outs):
            if i > 0 and name in _POOLS:  # pooling indices carry no data
                continue
            layout = self._out_layout(func, name, args, kwargs, ins, o)
            if layout is not None and layout != _NCHW:
                self.layout[id(o)] = layout
            elif layout == _NCHW:  # an in-place reorder back to (N, C, H, W) returns the same tensor: forget its old order
                self.layout.pop(id(o), None)
            window = self._window(name, args, kwargs, ins, o) if layout is not None else \
                f"{name}() reorders the axes in a way the trace does not model"
            self.label(o, self._flow(name, args, kwargs, ins, o), window)
        return out

    # ------------------------------------------------------------------ axis order
    def axes(self, t: torch.Tensor) -> tuple[int, ...]:
        """The logical axis (0 batch, 1 channel, 2 height, 3 width) of each axis of the 4-d tensor ``t``."""
        return self.layout.get(id(t), _NCHW)

    def _hw(self, t: torch.Tensor) -> tuple[int, int]:
        """``t``'s height and width, wherever its axes put them."""
        ax = self.axes(t)
        return int(t.shape[ax.index(2)]), int(t.shape[ax.index(3)])

    def _out_layout(self, func: Callable, name: str, args: tuple, kwargs: dict, ins: list[torch.Tensor],
                    out: torch.Tensor) -> tuple[int, ...] | None:
        """The axis order of a 4-d result (None: an axis reorder the trace cannot follow)."""
        if out.ndim != 4:
            return _NCHW
        first = args[0] if args and isinstance(args[0], torch.Tensor) and self.tracked(args[0]) else None
        if name in _AXIS_OPS:
            if first is None or first.ndim != 4:
                return None
            try:  # the same call on a meta tensor of distinct sizes shows where each axis went
                probe = func(torch.empty(_PROBE, device="meta"), *args[1:], **kwargs)
            except Exception:  # noqa: BLE001 - any failure: not followed
                return None
            if not isinstance(probe, torch.Tensor) or sorted(probe.shape) != sorted(_PROBE):
                return None
            ax = self.axes(first)
            return tuple(ax[_PROBE.index(int(n))] for n in probe.shape)
        src = [t for t in ins if t.ndim == 4]
        return self.axes(src[0]) if src else _NCHW

    def _mixed_axes(self, name: str, args: tuple, kwargs: dict, first: torch.Tensor) -> set[int]:
        """The logical axes along which ``name`` combines values of its 4-d input ``first``."""
        if name in ("linear", "matmul", "mm", "bmm", "einsum", "bilinear"):
            phys = {3}
        elif name == "layer_norm":
            shape = _arg(args, kwargs, 1, "normalized_shape", ())
            k = 1 if isinstance(shape, int) else len(tuple(shape))
            phys = set(range(4 - k, 4))
        elif name == "group_norm":
            phys = {1, 2, 3}
        elif name == "instance_norm":
            phys = {2, 3}
        elif name in ("softmax", "log_softmax", "softmin", "cumsum", "cumprod", "logsumexp", "normalize"):
            # normalize(input, p, dim): its dim is the third argument (default 1); the others take dim second
            dim = _arg(args, kwargs, 2, "dim", 1) if name == "normalize" else _arg(args, kwargs, 1, "dim", None)
            if not isinstance(dim, int):
                return set()
            phys = {dim % 4}
        else:
            return set()
        ax = self.axes(first)
        return {ax[a] for a in phys}

    def _flow(self, name: str, args: tuple, kwargs: dict, ins: list[torch.Tensor], out: torch.Tensor) -> Flow:
        n_out = _channels(out)
        if name in _CAT and out.ndim >= 2:
            dim = _arg(args, kwargs, 1, "dim", 0)
            if dim in (1, 1 - out.ndim):
                flow, offset = [], 0
                for t in _arg(args, kwargs, 0, "tensors", ()):
                    if self.tracked(t):
                        flow += _shift(self.flow[id(t)], offset)
                    offset += _channels(t)
                return tuple(flow)
        same = out.ndim >= 2 and all(t.ndim >= 2 and t.shape[1] == out.shape[1] for t in ins)
        if name in _CHANNELWISE and same:
            return tuple(dict.fromkeys(Segment(s.producer, s.src, s.dst, s.exact, False) for t in ins for s in self.flow[id(t)]))
        return _mixed((self.flow[id(t)] for t in ins), n_out)

    def _window(self, name: str, args: tuple, kwargs: dict, ins: list[torch.Tensor], out: torch.Tensor) -> Window | str:
        if out.ndim != 4:
            return GLOBAL
        src = [t for t in ins if t.ndim == 4]
        if not src:  # a map made from non-spatial values (e.g. unflatten) sees everything
            return GLOBAL
        first = args[0] if args and isinstance(args[0], torch.Tensor) and self.tracked(args[0]) else None
        win = self.window.get(id(first)) if first is not None else None
        if isinstance(win, str):
            return win
        if first is not None and first.ndim == 4 and win is not None:
            if name in _AXIS_OPS:  # the window is kept per logical axis (height, width), wherever they go
                return win
            if name == "pad":
                pad = [int(v) for v in _arg(args, kwargs, 1, "pad", ())]
                before = [pad[2 * (3 - a)] if 2 * (3 - a) < len(pad) else 0 for a in range(4)]  # per physical axis
                ax = self.axes(first)
                return win.then((1, 1), (1, 1), (before[ax.index(2)], before[ax.index(3)]))
            if self.axes(first) != _NCHW and name in _GRID_OPS:
                return (f"{name}() reads a tensor whose axes are {self._axes_text(first)}, not (N, C, H, W), as an "
                        "image; the trace does not model it")
            mixed = self._mixed_axes(name, args, kwargs, first) & {2, 3}
            if mixed == {2, 3} and name not in ("linear", "matmul", "mm", "bmm", "einsum", "bilinear"):
                return GLOBAL  # every position depends on every position (a norm over the whole map)
            if mixed:
                return (f"{name}() combines positions along the {' and '.join('height' if a == 2 else 'width' for a in sorted(mixed))} "
                        "axis; the trace does not model it")
            if name == "conv2d":
                weight = _arg(args, kwargs, 1, "weight")
                pad = _arg(args, kwargs, 4, "padding", 0)
                dil = _pair(_arg(args, kwargs, 5, "dilation", 1), 1)
                kernel = tuple(int(k) for k in weight.shape[-2:])
                if isinstance(pad, str):
                    pad = tuple(dil[a] * (kernel[a] - 1) // 2 for a in range(2)) if pad == "same" else (0, 0)
                return win.then(kernel, _pair(_arg(args, kwargs, 3, "stride", 1), 1), _pair(pad), dil)  # type: ignore[arg-type]
            if name in _POOLS:
                kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
                stride = _arg(args, kwargs, 2, "stride", None)
                stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) else _pair(stride)
                dil = _pair(_arg(args, kwargs, 4, "dilation", 1), 1) if "max" in name else (1, 1)
                return win.then(kernel, stride, _pair(_arg(args, kwargs, 3, "padding", 0)), dil)
        return self._pointwise(name, src, out)

    def _axes_text(self, t: torch.Tensor) -> str:
        return "(" + ", ".join("NCHW"[a] for a in self.axes(t)) + ")"

    def _pointwise(self, name: str, src: list[torch.Tensor], out: torch.Tensor) -> Window | str:
        """The window of a result that keeps (or broadcasts) every input's spatial size: the hull of theirs."""
        hw, out_axes = self._hw(out), self.axes(out)
        # a (1, 1) map broadcast over the positions (a squeeze-excite gate) adds its own window to each
        same = [t for t in src if self._hw(t) == hw or (self._hw(t) == (1, 1) and t.ndim == out.ndim)]
        if len(same) == len(src):
            mixed = [t for t in src if self.axes(t) != out_axes and self._hw(t) != (1, 1)]
            if mixed:
                return (f"{name}() combines tensors whose axes are in different orders ({self._axes_text(mixed[0])} "
                        f"and {self._axes_text(out)}); the trace does not model it")
            wins = [self.window.get(id(t)) for t in src]
            bad = [w for w in wins if isinstance(w, str) or w is None]
            if bad:
                return bad[0] if isinstance(bad[0], str) else f"{name} reads an unlabelled tensor"
            return _hull(wins)  # type: ignore[arg-type]
        if hw == (1, 1) and ("adaptive" in name or name in ("mean", "sum", "amax", "amin")):
            return GLOBAL
        return f"{name}() changes the spatial size in a way the trace does not model"


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def track(fn: Callable[..., Any], *inputs: torch.Tensor) -> tuple[Any, dict[int, Flow], dict[int, Window | str]]:
    """Run ``fn(*inputs)`` labelling tensors: input ``i`` is producer ``-(i + 1)`` with window 1x1.

    Returns ``(output, flows, windows)`` keyed by ``id`` of the output tensors (valid while the
    output is alive). Used for sub-networks (circuits' linearised paths) at their own input size.
    """
    tracker = _Tracker()
    for i, x in enumerate(inputs):
        tracker.label(x, (Segment(-(i + 1), (0, _channels(x)), (0, _channels(x))),), Window())
    with tracker:
        out = fn(*inputs)
    return out, tracker.flow, tracker.window


# --------------------------------------------------------------------------------------- trace
@dataclass
class Call:
    """One module call (a leaf, or a container whose output is not simply a child's output)."""

    index: int
    path: str
    module: nn.Module
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...] | None  # without batch; None when the output is not a tensor
    inputs: list[Flow]  # provenance of each tensor input
    deps: Flow  # provenance of the output's channels (in terms of earlier calls / INPUT)
    window: Window | str  # receptive field in the model input (str: why unknown)

    @property
    def producers(self) -> list[int]:
        return sorted({s.producer for s in self.deps})

    @property
    def n_channels(self) -> int:
        return int(self.out_shape[0]) if self.out_shape else 1


@dataclass
class Trace:
    """Everything one forward pass on zeros revealed; see the module docstring."""

    calls: list[Call]
    by_path: dict[str, list[int]]  # module path -> call indices (a container may share its last child's)
    call_counts: dict[str, int]  # module path -> forward calls per pass (containers included)
    order: list[str]  # module paths in the order their forward finished (first call)
    shapes: dict[str, tuple[int, ...] | None]  # module path -> output shape without batch (first call)
    input_shape: tuple[int, ...]
    dtype: torch.dtype
    output_shape: tuple[int, ...] | None
    output_deps: Flow
    error: str | None = None  # why the pass stopped early, if it did (the trace so far is kept)
    model_name: str = "model"
    _consumers: dict[int, list[int]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ calls and shapes
    def calls_of(self, path: str) -> list[Call]:
        return [self.calls[i] for i in self.by_path.get(path, [])]

    def call(self, path: str) -> Call:
        """The single call of module ``path``; errors for modules never called or called several times."""
        idx = self.by_path.get(path, [])
        if not idx:
            why = (f" (the forward pass on zeros of shape {self.input_shape} stopped early: {self.error}; "
                   "pass input_shape=... for a size that reaches it)" if self.error else "")
            if path in self.call_counts:
                raise TraceError(f"layer {path!r} returns no tensor; choose a tensor-valued layer")
            raise LayerNotReachedError(
                f"the forward pass of {self.model_name} never ran layer {path!r}{why}: it is not called by "
                "forward() on this input; choose a layer on the computation path"
            )
        if len(set(idx)) > 1:
            raise TraceError(f"layer {path!r} is called {len(idx)} times in one forward pass; its output is ambiguous")
        return self.calls[idx[0]]

    def shape(self, path: str) -> tuple[int, ...]:
        """Output shape of module ``path`` without batch (its first call)."""
        if path not in self.shapes:
            self.call(path)  # raises the "never called" error
        shape = self.shapes[path]
        if shape is None:
            raise TraceError(f"layer {path!r} returns a non-tensor value; choose a tensor-valued layer")
        return shape

    # ------------------------------------------------------------------ data flow
    def edges(self, *, leaves_only: bool = True) -> list[tuple[str, str, tuple[int, int], tuple[int, int], bool]]:
        """``(producer, consumer, src_channels, dst_channels, exact)`` for every data-flow segment between
        module calls (``"<input>"`` for the model input). Channel ranges are ``[lo, hi)`` of the producer's
        output and of the consumer's output. With ``leaves_only``, container calls are looked through."""
        out = []
        for call in self.calls:
            if leaves_only and not _is_leaf(call.module):
                continue
            for seg in self._leaf_segments(call.deps) if leaves_only else call.deps:
                name = "<input>" if seg.producer < 0 else self.calls[seg.producer].path
                out.append((name, call.path, seg.src, seg.dst, seg.exact))
        return out

    def _leaf_segments(self, deps: Flow) -> list[Segment]:
        out: list[Segment] = []
        for s in deps:
            if s.producer >= 0 and not _is_leaf(self.calls[s.producer].module):
                out += [c for i in self._leaf_segments(self.calls[s.producer].deps) if (c := _compose(i, s)) is not None]
            else:
                out.append(s)
        return out

    def consumers(self, index: int) -> list[int]:
        if not self._consumers:
            for call in self.calls:
                for p in call.producers:
                    self._consumers.setdefault(p, []).append(call.index)
        return self._consumers.get(index, [])

    def ancestors(self, index: int) -> set[int]:
        """Call indices whose output reaches call ``index`` (INPUT excluded)."""
        seen: set[int] = set()
        stack = [index]
        while stack:
            for p in self.calls[stack.pop()].producers:
                if p >= 0 and p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    def descendants(self, index: int) -> set[int]:
        seen: set[int] = set()
        stack = [index]
        while stack:
            for c in self.consumers(stack.pop()):
                if c not in seen:
                    seen.add(c)
                    stack.append(c)
        return seen

    def is_upstream(self, src: str, dst: str | None) -> bool:
        """Whether the output of module ``src`` reaches module ``dst`` (``None``: the model output)."""
        s = self.call(src).index
        if dst is None:
            return any(s == p or s in self.ancestors(p) for p in {x.producer for x in self.output_deps} if p >= 0)
        return s in self.ancestors(self.call(dst).index)

    def channels_reaching(self, src: str, dst: str, channel: int | Iterable[int] | None = None) -> list[int]:
        """Channels of ``src`` whose values reach ``channel`` (or any channel) of ``dst`` along the data flow."""
        s, d = self.call(src).index, self.call(dst).index
        n = self.calls[d].n_channels
        want = set(range(n)) if channel is None else ({int(channel)} if isinstance(channel, int) else {int(c) for c in channel})
        found = self._backward(d, want).get(s, set())
        return sorted(found)

    def _backward(self, start: int, channels: set[int]) -> dict[int, set[int]]:
        """Per call, the channels that reach ``channels`` of call ``start`` (calls are in finish order)."""
        need: dict[int, set[int]] = {start: set(channels)}
        for i in range(start, -1, -1):
            wanted = need.get(i)
            if not wanted:
                continue
            for seg in self.calls[i].deps:
                if seg.producer < 0:
                    continue
                lo, hi = seg.dst
                hit = [c for c in wanted if lo <= c < hi]
                if not hit:
                    continue
                got = need.setdefault(seg.producer, set())
                if seg.exact:
                    got.update(seg.src[0] + c - lo for c in hit)
                else:
                    got.update(range(*seg.src))
        return need

    def feeding_layers(self, dst: str | None, channel: int | None = None) -> list[str]:
        """Module paths whose output reaches ``channel`` of ``dst`` (or the model output), in call order."""
        if dst is None:
            starts = {s.producer for s in self.output_deps if s.producer >= 0}
            idx = set(starts)
            for p in starts:
                idx |= self.ancestors(p)
        else:
            d = self.call(dst).index
            n = self.calls[d].n_channels
            need = self._backward(d, set(range(n)) if channel is None else {channel})
            idx = {i for i, c in need.items() if c and i != d}
        paths = [p for p, ids in self.by_path.items() if any(i in idx for i in ids)]
        return sorted(paths, key=lambda p: (min(self.by_path[p]), -len(p)))

    # ------------------------------------------------------------------ receptive fields
    def receptive_field(self, path: str) -> Window:
        """The window of the model input that each output position of ``path`` sees."""
        win = self.call(path).window
        if isinstance(win, str):
            raise TraceError(f"the receptive field of {path!r} is unknown: {win}")
        return win

    def relative_window(self, src: str, dst: str) -> Window:
        """The window of ``src``'s output map that each output position of ``dst`` sees."""
        a, b = self.receptive_field(src), self.receptive_field(dst)
        if b.is_global or a.is_global:
            return GLOBAL
        rel = []
        for ax in range(2):
            st, off, size = b.stride[ax] / a.stride[ax], (b.offset[ax] - a.offset[ax]) / a.stride[ax], (b.size[ax] - a.size[ax]) / a.stride[ax] + 1
            if not all(float(v).is_integer() for v in (st, off, size)):
                raise TraceError(f"{dst!r} does not sit on the grid of {src!r}; no window relative to it")
            rel.append((int(size), int(st), int(off)))
        return Window((rel[0][0], rel[1][0]), (rel[0][1], rel[1][1]), (rel[0][2], rel[1][2]))


def _compose(inner: Segment, outer: Segment) -> Segment | None:
    """``outer`` reads channels of a call whose own channels come from ``inner``: the segment from
    ``inner``'s producer straight to ``outer``'s consumer (None when they do not overlap)."""
    lo, hi = max(inner.dst[0], outer.src[0]), min(inner.dst[1], outer.src[1])
    if lo >= hi:
        return None
    exact = inner.exact and outer.exact
    src = (inner.src[0] + lo - inner.dst[0], inner.src[0] + hi - inner.dst[0]) if inner.exact else inner.src
    dst = (outer.dst[0] + lo - outer.src[0], outer.dst[0] + hi - outer.src[0]) if outer.exact else outer.dst
    return Segment(inner.producer, src, dst, exact, inner.direct and outer.direct)


def _is_leaf(m: nn.Module) -> bool:
    return next(m.children(), None) is None


_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs")


def _record(model: nn.Module, x: torch.Tensor) -> Trace:
    named = [(n, m) for n, m in model.named_modules() if n]
    tracker = _Tracker()
    tracker.label(x, (Segment(INPUT, (0, _channels(x)), (0, _channels(x))),), Window())
    calls: list[Call] = []
    by_path: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    order: list[str] = []
    shapes: dict[str, tuple[int, ...] | None] = {}

    def hook_for(path: str, leaf: bool) -> Callable:
        def hook(module: nn.Module, inputs: tuple, out: Any) -> None:
            counts[path] = counts.get(path, 0) + 1
            if path not in shapes:
                order.append(path)
                shapes[path] = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
            if not isinstance(out, torch.Tensor):
                return
            ins = [t for t in _tensors(inputs) if tracker.tracked(t)]
            deps = tracker.flow.get(id(out))
            window = tracker.window.get(id(out))
            if deps is None:  # computed without any function the tracker saw
                deps = _mixed((tracker.flow[id(t)] for t in ins), _channels(out))
                window = tracker._pointwise(type(module).__name__, [t for t in ins if t.ndim == 4], out) if out.ndim == 4 else GLOBAL
            if not leaf and len(deps) == 1 and deps[0].producer >= 0 and deps[0].exact \
                    and calls[deps[0].producer].path.startswith(path + ".") \
                    and deps[0].src == deps[0].dst == (0, _channels(out)):
                by_path.setdefault(path, []).append(deps[0].producer)  # a container returning its child's output
                return
            call = Call(len(calls), path, module, [tuple(t.shape[1:]) for t in ins],
                        tuple(out.shape[1:]), [tracker.flow[id(t)] for t in ins], deps, window)
            calls.append(call)
            by_path.setdefault(path, []).append(call.index)
            tracker.label(out, (Segment(call.index, (0, _channels(out)), (0, _channels(out))),), window)

        return hook

    handles = []
    error = None
    out = None
    was_training = model.training
    # the user's own hooks (ablations, counters, an enclosing capture) stay out of the trace: the
    # trace records the model itself, and a trace taken in passing must not run anyone's hooks.
    # Hooks that *are* part of the model (``hook.part_of_model = True``, e.g. an attached feature
    # dictionary whose module is called from its source layer's hook) stay.
    saved = [(m, {a: getattr(m, a) for a in _HOOK_DICTS if isinstance(getattr(m, a, None), dict)})
             for _, m in model.named_modules()]
    model.eval()
    try:
        for m, dicts in saved:
            kept = {k for a in ("_forward_hooks", "_forward_pre_hooks")
                    for k, h in dicts.get(a, {}).items() if getattr(h, "part_of_model", False)}
            for a, d in dicts.items():
                setattr(m, a, type(d)((k, v) for k, v in d.items() if k in kept))
        for n, m in named:
            handles.append(m.register_forward_hook(hook_for(n, _is_leaf(m))))
        with torch.no_grad(), tracker:
            try:
                out = model(x)
            except Exception as e:  # noqa: BLE001 - e.g. a head that rejects the size; the trace so far is kept
                if not calls:
                    raise
                error = f"{type(e).__name__}: {e}"
    finally:
        for h in handles:
            h.remove()
        for m, dicts in saved:
            for a, d in dicts.items():
                setattr(m, a, d)
        model.train(was_training)
    out_deps = tracker.flow.get(id(out), ()) if isinstance(out, torch.Tensor) else ()
    out_shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
    return Trace(calls, by_path, counts, order, shapes, tuple(x.shape[1:]), x.dtype, out_shape, out_deps,
                 error, type(model).__name__)


_TRACES: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, Trace]]" = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> tuple:
    """Identity of the module tree: adding, removing or replacing a module changes it."""
    return tuple(map(id, model.modules()))


def trace(model: nn.Module, input_shape: Sequence[int], dtype: torch.dtype | None = None) -> Trace:
    """The cached trace of ``model`` for one input of ``input_shape`` (C, H, W) in ``dtype``
    (default: the model's). Computed on first use with one forward pass on zeros."""
    shape = check_input_shape(input_shape)
    device, model_dtype = model_device_dtype(model)
    dtype = dtype or model_dtype
    key = (shape, dtype, _structure(model))
    cache = _TRACES.setdefault(model, {})
    if key not in cache:
        if len(cache) > 16:  # bounded: old input sizes are dropped first
            cache.pop(next(iter(cache)))
        x = torch.zeros((1, *key[0]), device=device, dtype=dtype)
        try:
            with using(model, what="trace()"):  # eval mode, every module's own flag restored, one thread at a time
                cache[key] = _record(model, x)
        except Exception as e:
            raise TraceError(f"{type(model).__name__} cannot run on inputs of shape {(1, *key[0])}: {e}") from e
    return cache[key]


def invalidate(model: nn.Module) -> None:
    """Forget every cached trace of ``model`` (the one place caches are dropped)."""
    _TRACES.pop(model, None)
