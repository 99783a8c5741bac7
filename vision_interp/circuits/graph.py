"""The module-level dataflow graph of a model (read from its trace), and *linearized* sub-networks.

The graph is the model's :mod:`~vision_interp.trace` seen at module granularity: every leaf-module
call is a node, and a node's inputs are the calls whose outputs it reads verbatim. A channel
concatenation written inline (``torch.cat([a, b], 1)``) becomes a concatenation node of its own;
a tensor computed by any other plain function call in ``forward`` (``x * 255``, ``torch.relu``)
has no producing module, a path through it cannot be followed, and the error says so.

Linearization (the choices of "Visualizing Weights", Voss et al. 2021) is decided by duck typing,
never by a module's class:

* a module with a ``linearized(x)`` method is replaced by it (InceptionV1's LRN: the identity; its
  TF-SAME max pool: a zero-padded average pool over the same window);
* any other module is run with its own ``forward`` under a function mode that replaces ReLUs by
  the identity, max pooling by average pooling over the same window (padding counted, -inf pads
  read as zeros), drops biases and additive constants, reads eval-mode batch norm as its scale,
  and refuses everything that is not linear (a product of two inputs, a sigmoid, ...) with an
  error naming the module.

Receptive windows come from the same trace machinery (:func:`vision_interp.trace.track`) run on
the linearized sub-network, at the size it is evaluated at: run-time padding rules (TF "SAME")
are measured, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..trace import Call, Segment, TraceError, Window, track, trace
from ..units import default_input_shape, model_device_dtype, resolve_layer
from ..zoo.spec import model_spec

__all__ = ["CircuitError", "LinearizationError", "Node", "ModelGraph", "Geometry", "trace_graph", "LinearPath", "linear_path",
           "channel_map", "is_concat", "is_weighted", "has_weights", "linear_forward", "logits_layer"]

INPUT = -2  # producer id of the model's input tensor
EXTERNAL = -1  # producer id of a tensor made outside any module

Geometry = Window  # where a linearized unit looks in the source layer; see :class:`vision_interp.trace.Window`


class CircuitError(ValueError):
    """Two layers are not joined by a path that can be linearized; the message names the blocker."""


class LinearizationError(CircuitError):
    """A module on the path has no linear stand-in (a PReLU, a sigmoid gate, LayerNorm, ...).

    ``module`` / ``module_type`` name the blocker; ``alternatives`` are ``(src, dst)`` layer pairs near the
    requested ones whose path *does* linearize (checked, not guessed): typically the blocker's own output
    as the source, or the layer that feeds it as the destination. Each caller words them as its own call."""

    def __init__(self, message: str, *, module: str = "", module_type: str = "", reason: str = "",
                 alternatives: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.module, self.module_type, self.reason = module, module_type, reason
        self.alternatives = list(alternatives)

    def with_alternatives(self, head: str, alternatives: Sequence[tuple[str, str]],
                          fmt: Callable[[str, str], str]) -> "LinearizationError":
        """The same error, re-worded with ``head`` and the alternatives written by ``fmt(src, dst)``."""
        return LinearizationError(_blocked_message(head, self.module, self.module_type, self.reason, alternatives, fmt),
                                  module=self.module, module_type=self.module_type, reason=self.reason,
                                  alternatives=alternatives)


_WHAT_LINEARIZES = ("only convolutions (grouped and depthwise too), linear layers, ReLU-like activations (ReLU, ReLU6, "
                    "LeakyReLU, ELU, GELU, SiLU: read as the identity), max/average pooling, eval-mode batch norm, "
                    "additions (residual connections) and concatenations can be linearized")


def _blocked_message(head: str, module: str, module_type: str, reason: str, alternatives: Sequence[tuple[str, str]],
                     fmt: Callable[[str, str], str]) -> str:
    alt = ("; nearest layers that work: " + ", ".join(fmt(a, b) for a, b in alternatives)) if alternatives else \
        "; no nearby pair of layers avoids it"
    return (f"{head}: module {module!r} ({module_type}) cannot be linearized: {reason} ({_WHAT_LINEARIZES}){alt}. "
            f"Or give {module_type} a linearized(x) method that returns its linear stand-in.")


class ChannelConcat(nn.Module):
    """Stands for a ``torch.cat(..., dim=1)`` written inline in a model's ``forward``."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


@dataclass
class Node:
    """One module call in the forward pass (or an inline channel concatenation)."""

    index: int
    name: str
    module: nn.Module
    inputs: list[int]  # producer node index per tensor input (INPUT / EXTERNAL for the others)
    in_shapes: list[tuple[int, ...]]  # with batch
    out_shape: tuple[int, ...]  # with batch
    consumers: list[int] = field(default_factory=list)
    concat: bool = False  # the output is the channel concatenation of the inputs


@dataclass
class ModelGraph:
    nodes: list[Node]
    by_name: dict[str, list[int]]  # module path -> node indices (several if a module is reused)
    input_shape: tuple[int, ...]
    error: str | None = None  # why the recording forward pass stopped early, if it did

    def node_for(self, model: nn.Module, layer: str) -> Node:
        """The single call of ``layer`` (a module path or alias), with clear errors otherwise."""
        path = resolve_layer(model, layer)
        idx = self.by_name.get(path, [])
        if not idx:
            why = (f" (the forward pass on a zero input of shape {self.input_shape} stopped early: {self.error}; "
                   "pass input_shape=... for a size that reaches it)" if self.error else "")
            raise CircuitError(
                f"layer {layer!r} ({path}) does not run in the forward pass of {type(model).__name__} "
                f"or returns no tensor{why}; choose a layer on the computation path"
            )
        if len(idx) > 1:
            raise CircuitError(f"layer {layer!r} is called {len(idx)} times in one forward pass; its weights are ambiguous")
        return self.nodes[idx[0]]


def _leaf(m: nn.Module) -> bool:
    return next(m.children(), None) is None


def _parts(flow: tuple, calls: list[Call], n_channels: int) -> list[int] | None:
    """Producers (call indices, or INPUT) whose whole outputs, concatenated in order, make this
    tensor; None when the tensor is anything else (a function of them). A producer may be a leaf
    module or a container whose own ``forward`` computes its output (a residual block's ``x + f(x)``)."""
    segs = sorted(flow, key=lambda s: s.dst[0])
    out, at = [], 0
    for s in segs:
        if not (s.exact and s.direct) or s.dst[0] != at:
            return None
        width = calls[s.producer].n_channels if s.producer >= 0 else s.src[1]
        if s.src != (0, width):
            return None
        out.append(s.producer)
        at = s.dst[1]
    return out if out and at == n_channels else None


def trace_graph(model: nn.Module, input_shape: Sequence[int] | None = None) -> ModelGraph:
    """The module graph of ``model`` from its trace (cached there, per model and input shape)."""
    shape_in = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    try:
        tr = trace(model, shape_in)
    except TraceError as e:
        raise CircuitError(str(e)) from e.__cause__
    nodes: list[Node] = []
    node_of: dict[int, int] = {}  # trace call index -> node index

    def producer_node(p: int) -> int:
        return INPUT if p < 0 else node_of.get(p, EXTERNAL)

    for call in tr.calls:
        # leaf modules, and containers whose forward computes their output itself (the trace records a
        # container only then; one returning its last child's output is that child): a residual block is
        # one node, linearized by running its own forward under the linearizing mode
        if call.out_shape is None:
            continue
        inputs: list[int] = []
        for flow, shp in zip(call.inputs, call.in_shapes):
            parts = _parts(flow, tr.calls, shp[0] if shp else 1)
            if parts is None:
                inputs.append(EXTERNAL)
            elif len(parts) == 1:
                inputs.append(producer_node(parts[0]))
            else:  # an inline torch.cat(..., dim=1): a concatenation node of its own
                srcs = [producer_node(p) for p in parts]
                shapes = [(1, *(tr.calls[p].out_shape if p >= 0 else tr.input_shape)) for p in parts]
                cat = Node(len(nodes), f"{call.path}<cat>", ChannelConcat(), srcs, shapes, (1, *shp), concat=True)
                nodes.append(cat)
                inputs.append(cat.index)
        node = Node(len(nodes), call.path, call.module, inputs, [(1, *s) for s in call.in_shapes],
                    (1, *call.out_shape), concat=is_concat_call(call))
        nodes.append(node)
        node_of[call.index] = node.index
    for node in nodes:
        for p in node.inputs:
            if p >= 0:
                nodes[p].consumers.append(node.index)
    by_name: dict[str, list[int]] = {}
    for path, idx in tr.by_path.items():
        mapped = [node_of[i] for i in idx if i in node_of]
        if mapped:
            by_name[path] = mapped
    return ModelGraph(nodes, by_name, shape_in, tr.error)


def is_concat_call(call: Call) -> bool:
    """The call's output is its tensor inputs concatenated along channels (whatever its class)."""
    return len(call.inputs) > 1 and len({s.producer for s in call.deps}) == len(call.deps) > 1 \
        and all(s.exact and s.direct for s in call.deps)


def is_concat(node: Node) -> bool:
    return node.concat


def is_weighted(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.Linear))


def has_weights(node: Node) -> bool:
    """A weighted module, or a container node (a block computed by its own forward) holding one."""
    return is_weighted(node.module) or (not _leaf(node.module) and any(is_weighted(m) for m in node.module.modules()))


# --------------------------------------------------------------------------------------------
# Linearization
# --------------------------------------------------------------------------------------------

_IDENTITY = {"relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "elu", "gelu", "silu",
             "local_response_norm", "dropout", "dropout2d", "feature_dropout", "alpha_dropout"}
_MAXPOOL = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices"}
_ADAPTIVE_MAX = {"adaptive_max_pool2d", "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}
_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_SUB = {"sub", "__sub__", "__isub__", "sub_", "subtract"}
_RSUB = {"__rsub__", "rsub"}
_SCALE = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "div", "__truediv__", "__itruediv__", "div_", "true_divide"}
_LINEAR_SAFE = {
    "cat", "concat", "concatenate", "flatten", "view", "reshape", "mean", "sum", "avg_pool2d", "adaptive_avg_pool2d",
    "__getitem__", "permute", "transpose", "squeeze", "unsqueeze", "neg", "__neg__", "contiguous", "to", "float",
    "double", "clone", "interpolate", "upsample", "narrow", "split", "chunk", "unflatten", "expand", "pad",
    "conv2d", "conv1d", "conv_transpose2d", "linear", "batch_norm", "__get__", "dim", "size", "numel",
}


class _Nonlinear(Exception):
    pass


class _LinearMode(TorchFunctionMode):
    """Runs a module's own forward as its linear part (see the module docstring)."""

    def __init__(self, inputs: Sequence[torch.Tensor]):
        super().__init__()
        self.var = {id(t) for t in inputs}
        self._alive = list(inputs)

    def _is_var(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.var

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        flat = list(args) + list(kwargs.values())
        nvar = sum(self._is_var(a) for a in flat) + sum(self._is_var(t) for a in flat if isinstance(a, (list, tuple)) for t in a)
        if not nvar:
            return func(*args, **kwargs)
        out = self._linear(getattr(func, "__name__", str(func)), func, args, kwargs, nvar)
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.var.add(id(t))
                self._alive.append(t)
        return out

    def _linear(self, name: str, func: Callable, args: tuple, kwargs: dict, nvar: int) -> Any:
        x = args[0] if args else next(iter(kwargs.values()))
        if name in _IDENTITY:
            return x
        if name in _MAXPOOL:
            k = kwargs.get("kernel_size", args[1] if len(args) > 1 else None)
            s = kwargs.get("stride", args[2] if len(args) > 2 else None) or k
            p = kwargs.get("padding", args[3] if len(args) > 3 else 0)
            d = kwargs.get("dilation", args[4] if len(args) > 4 else 1)
            ceil = kwargs.get("ceil_mode", args[5] if len(args) > 5 else False)
            if d not in (1, (1, 1), [1, 1]):
                raise _Nonlinear("dilated max pooling has no average-pool stand-in")
            if kwargs.get("return_indices", args[6] if len(args) > 6 else False):
                raise _Nonlinear("max pooling that returns indices")
            return F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=True)
        if name in _ADAPTIVE_MAX:
            return F.adaptive_avg_pool2d(x, kwargs.get("output_size", args[1] if len(args) > 1 else None))
        if name == "pad":
            args = tuple(args[:3]) + (0.0,) if len(args) > 3 else args
            kwargs.pop("value", None)
        if name in ("conv2d", "conv1d", "conv_transpose2d", "linear"):
            args = tuple(args[:2]) + (None,) + tuple(args[3:]) if len(args) > 2 else args
            kwargs.pop("bias", None)
        if name == "batch_norm":
            rv, w = args[2], kwargs.get("weight", args[3] if len(args) > 3 else None)
            training = kwargs.get("training", args[5] if len(args) > 5 else False)
            eps = kwargs.get("eps", args[7] if len(args) > 7 else 1e-5)
            if training or rv is None:
                raise _Nonlinear("batch norm in training mode is not a fixed linear map; call model.eval()")
            scale = (w if w is not None else 1.0) / torch.sqrt(rv + eps)
            return x * scale.view(1, -1, *([1] * (x.ndim - 2)))
        if name in _ADD | _SUB | _RSUB:
            a, b = (args + (kwargs.get("other"),))[:2] if len(args) < 2 else args[:2]
            if self._is_var(a) and self._is_var(b):
                return func(*args, **kwargs)
            var = a if self._is_var(a) else b
            negate = (name in _SUB and var is b) or (name in _RSUB and var is a)
            return -var if negate else var  # an additive constant (a bias) is dropped
        if name in _SCALE:
            if nvar > 1:
                raise _Nonlinear(f"{name}() multiplies two values that both depend on the input")
            if name not in ("mul", "__mul__", "__rmul__", "__imul__", "mul_") and len(args) > 1 and self._is_var(args[1]):
                raise _Nonlinear(f"{name}() divides by a value that depends on the input")
            return func(*args, **kwargs)
        if name in _LINEAR_SAFE:
            return func(*args, **kwargs)
        raise _Nonlinear(f"{name}() is not linear and has no linear stand-in")


def linear_forward(node: Node, inputs: list[torch.Tensor | None]) -> torch.Tensor:
    """The linearized module applied to ``inputs`` (None = an input that does not depend on the source)."""
    ref = next(t for t in inputs if t is not None)
    xs = [t if t is not None else ref.new_zeros((ref.shape[0], shp[1], *ref.shape[2:]))
          for t, shp in zip(inputs, node.in_shapes)]
    m = node.module
    if callable(getattr(m, "linearized", None)):
        return m.linearized(*xs)
    if node.concat and isinstance(m, ChannelConcat):
        return torch.cat(xs, dim=1)
    try:
        with _LinearMode(xs):
            return m.forward(*xs)
    except _Nonlinear as e:
        raise LinearizationError(
            f"cannot linearize module {node.name!r} ({type(m).__name__}): {e} ({_WHAT_LINEARIZES})",
            module=node.name, module_type=type(m).__name__, reason=str(e)) from None


def channel_map(node: Node) -> list[Segment] | None:
    """How the linearized module routes channels: segments from input ``-(i+1)``; None if it mixes them."""
    p = next(node.module.parameters(), None)
    dtype, device = (p.dtype, p.device) if p is not None else (torch.float32, torch.device("cpu"))
    xs = [torch.zeros(s, dtype=dtype, device=device) for s in node.in_shapes]
    out, flows, _ = track(lambda *a: linear_forward(node, list(a)), *xs)
    flow = flows.get(id(out), ())
    if not flow or not all(s.exact for s in flow):
        return None
    return list(flow)


# --------------------------------------------------------------------------------------------
# The linear sub-network between two layers
# --------------------------------------------------------------------------------------------


@dataclass
class LinearPath:
    """The linearized sub-network from the output of ``src`` to the output of ``dst``."""

    graph: ModelGraph
    src: Node
    dst: Node
    nodes: list[Node]  # in execution order, ending with dst
    geometry: Window  # at the source's size in the traced forward pass

    @property
    def src_channels(self) -> int:
        return self.src.out_shape[1]

    @property
    def dst_channels(self) -> int:
        return self.dst.out_shape[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the linearized sub-network to a source-layer tensor (B, C_src, H, W)."""
        env: dict[int, torch.Tensor] = {self.src.index: x}
        for node in self.nodes:
            try:
                env[node.index] = linear_forward(node, [env.get(p) for p in node.inputs])
            except LinearizationError as e:
                raise LinearizationError(f"cannot expand weights from {self.src.name!r} to {self.dst.name!r}: {e}",
                                         module=e.module, module_type=e.module_type, reason=e.reason) from None
            except CircuitError as e:
                raise CircuitError(f"cannot expand weights from {self.src.name!r} to {self.dst.name!r}: {e}") from None
        return env[self.dst.index]

    def window_at(self, hw: Sequence[int]) -> tuple[Window, torch.Tensor]:
        """The window and the output of the path for a zero source of spatial size ``hw``."""
        dtype, device = path_dtype(self), path_device(self)
        x = torch.zeros((1, self.src_channels, *hw), dtype=dtype, device=device)
        with torch.no_grad():
            out, _, windows = track(self, x)
        win = windows.get(id(out))
        if isinstance(win, str) or win is None:
            raise CircuitError(f"the window of {self.dst.name!r} in {self.src.name!r} is unknown: {win}")
        return win, out


def _ancestors(graph: ModelGraph, start: int) -> set[int]:
    seen, stack = set(), [start]
    while stack:
        n = stack.pop()
        for p in graph.nodes[n].inputs:
            if p >= 0 and p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _descendants(graph: ModelGraph, start: int) -> set[int]:
    seen, stack = set(), [start]
    while stack:
        n = stack.pop()
        for c in graph.nodes[n].consumers:
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def path_nodes(model: nn.Module, graph: ModelGraph, src: str, dst: str) -> tuple[Node, Node, list[Node]]:
    """Nodes on any path from ``src``'s output to ``dst``'s output, or a CircuitError that says why none exists."""
    s, d = graph.node_for(model, src), graph.node_for(model, dst)
    if s.index == d.index:
        raise CircuitError(f"{src!r} and {dst!r} are the same layer; give two different layers")
    anc_d = _ancestors(graph, d.index)
    if s.index not in anc_d:
        if d.index in _ancestors(graph, s.index):
            raise CircuitError(f"{dst!r} comes before {src!r} in the network; swap the two layers (from -> to)")
        broken = sorted({graph.nodes[a].name for a in anc_d | {d.index}
                         if EXTERNAL in graph.nodes[a].inputs and a > s.index})
        why = (f" The input of {', '.join(broken)} is computed by a plain function call in forward() "
               "(not a module), which cannot be followed: circuits read modules only. Wrap that function in an "
               "nn.Module (a padding as nn.ZeroPad2d, a scaling as a module of its own), or measure the connection "
               "with unit_attribution(model, x, src_layer, 'dst_layer:channel'), which follows any function." if broken else
               f" {dst!r} does not depend on {src!r}.")
        raise CircuitError(f"no linear path of modules from {src!r} to {dst!r}.{why}")
    desc_s = _descendants(graph, s.index)
    nodes = [graph.nodes[i] for i in sorted((anc_d & desc_s) | {d.index})]
    return s, d, nodes


def linear_path(model: nn.Module, src: str, dst: str, input_shape: Sequence[int] | None = None) -> LinearPath:
    """Build and validate (one linearized pass at the traced size) the sub-network from ``src`` to ``dst``.

    A module without a linear stand-in raises :class:`LinearizationError` naming the module, its type and
    the nearest pairs of layers whose path does linearize (e.g. from the PReLU's own output on)."""
    try:
        return _linear_path(model, src, dst, input_shape)
    except LinearizationError as e:
        alternatives = working_alternatives(model, src, dst, e, input_shape)
        raise e.with_alternatives(f"cannot expand weights from {src!r} to {dst!r}", alternatives,
                                  lambda a, b: f"expanded_weights(model, {a!r}, {b!r})") from None


def _linear_path(model: nn.Module, src: str, dst: str, input_shape: Sequence[int] | None = None) -> LinearPath:
    graph = trace_graph(model, input_shape)
    s, d, nodes = path_nodes(model, graph, src, dst)
    if len(s.out_shape) not in (2, 4):
        raise CircuitError(f"source layer {src!r} has output shape {s.out_shape}; expected (N, C) or (N, C, H, W)")
    path = LinearPath(graph, s, d, nodes, Window(is_global=True))
    if len(s.out_shape) == 4:
        path.geometry, _ = path.window_at(s.out_shape[2:])
    else:
        path(torch.zeros((1, s.out_shape[1]), dtype=path_dtype(path), device=path_device(path)))  # validates every module
    return path


def _module_layer(graph: ModelGraph, index: int) -> str | None:
    """The module path of node ``index`` when it names one call of a real module (not an inline concatenation)."""
    node = graph.nodes[index]
    return node.name if not node.concat and len(graph.by_name.get(node.name, [])) == 1 else None


def working_alternatives(model: nn.Module, src: str, dst: str, error: LinearizationError,
                         input_shape: Sequence[int] | None = None,
                         attempt: Callable[[str, str], Any] | None = None) -> list[tuple[str, str]]:
    """Pairs of layers next to ``(src, dst)`` whose path avoids the module that blocked it, each checked.

    Tried in this order: from the blocker's own output to ``dst`` (the layer after a PReLU reads its output,
    which is where a linear path can start; a second blocker further on moves the source on again, up to 8
    times), then from ``src`` to each layer that feeds the blocker (the path that stops before it).
    ``attempt(a, b)`` computes the pair and raises when it fails (default: :func:`linear_path` without
    suggestions)."""
    if attempt is None:
        def attempt(a: str, b: str) -> Any:
            return _linear_path(model, a, b, input_shape)

    graph = trace_graph(model, input_shape)
    found: list[tuple[str, str]] = []
    idx = graph.by_name.get(error.module, [])
    if len(idx) != 1:
        return found
    b = idx[0]
    s_idx = graph.node_for(model, src).index
    d_idx = graph.node_for(model, dst).index
    start = b
    for _ in range(8):
        if start == d_idx or d_idx not in _descendants(graph, start):
            break
        a = _module_layer(graph, start)
        if a is None:
            break
        try:
            attempt(a, dst)
            found.append((a, dst))
            break
        except LinearizationError as e2:
            nxt = graph.by_name.get(e2.module, [])
            if len(nxt) != 1 or nxt[0] == start:
                break
            start = nxt[0]
        except (CircuitError, ValueError):
            break
    for p in graph.nodes[b].inputs:
        if p < 0 or p == s_idx or s_idx not in _ancestors(graph, p):
            continue
        name = _module_layer(graph, p)
        if name is None or (src, name) in found:
            continue
        try:
            attempt(src, name)
            found.append((src, name))
        except (CircuitError, ValueError):
            pass
    return found


def fit_window(path: LinearPath) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """A small source size, a destination position and the window start such that the window
    (the receptive field of that position) lies inside the source map, a stride away from its
    far border. Windows are measured at each candidate size (run-time padding may depend on it).

    Returns ``(src_hw, dst_pos, window_start)``.
    """
    g = path.geometry
    hw = [max(1, -g.offset[a]) + g.size[a] + 2 * g.stride[a] for a in range(2)]
    for _ in range(16):
        win, y = path.window_at(hw)
        pos = tuple(max(0, math.ceil(-win.offset[a] / win.stride[a])) for a in range(2))
        start = tuple(win.stride[a] * pos[a] + win.offset[a] for a in range(2))
        inside = all(start[a] + win.size[a] + win.stride[a] <= hw[a] for a in range(2))
        if inside and y.ndim == 4 and y.shape[2] > pos[0] and y.shape[3] > pos[1]:
            return (hw[0], hw[1]), pos, start  # type: ignore[return-value]
        hw = [hw[a] + g.stride[a] for a in range(2)]
    raise CircuitError(f"could not fit the receptive field of {path.dst.name!r} in {path.src.name!r} (geometry {g})")


def _path_device_dtype(path: LinearPath) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the first module on the path that has parameters (the one device helper)."""
    for node in path.nodes:
        if next(node.module.parameters(), None) is not None:
            return model_device_dtype(node.module)
    return model_device_dtype(path.src.module)


def path_device(path: LinearPath) -> torch.device:
    return _path_device_dtype(path)[0]


def path_dtype(path: LinearPath) -> torch.dtype:
    return _path_device_dtype(path)[1]


def logits_layer(model: nn.Module) -> str | None:
    """The model's declared logits layer (module path or alias), from its spec."""
    return model_spec(model).logits_layer

