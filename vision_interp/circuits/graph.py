"""The module-level dataflow graph of a model, and its *linearized* sub-networks.

Models here have hand-written ``forward`` methods (branches, concatenations), so the graph is
recorded rather than declared: one forward pass on zeros with a temporary hook on every module
(through :func:`vision_interp.capture.hooks`) notes which module call produced each tensor and
which calls consumed it. Tensors made by plain function calls inside ``forward`` (``x * 255``,
``torch.flatten``) have no producing module; a path through them cannot be followed, and the error
says so.

Linearization (the choices of "Visualizing Weights", Voss et al. 2021), per module type:

* ReLU, ReLU6, LeakyReLU      -> identity
* local response normalisation -> skipped (identity)
* max pooling                 -> average pooling over the same window, stride and padding, with
  *zero* padding counted in the average (``count_include_pad=True``). InceptionV1's
  ``MaxPoolSame`` pads with -inf for the max; its linear stand-in pads with zeros and always
  divides by 9, so every window is the same linear filter and the map stays translation-equivariant.
* convolutions, linear layers, eval-mode batch norm -> their linear part (bias dropped)
* average pooling, flatten, identity, dropout (eval) -> unchanged
* channel concatenation       -> concatenation; inputs that do not depend on the source are zero

Anything else (custom modules, attention, multiplications) raises :class:`CircuitError` naming the
module that blocks the expansion.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import hooks
from ..units import default_input_shape, model_device_dtype, resolve_layer
from ..zoo.inceptionv1 import Concat, LocalResponseNorm, MaxPoolSame, SamePadConv

__all__ = ["CircuitError", "Node", "ModelGraph", "Geometry", "trace_graph", "LinearPath", "linear_path"]

INPUT = -2  # producer id of the model's input tensor
EXTERNAL = -1  # producer id of a tensor made outside any module


class CircuitError(ValueError):
    """Two layers are not joined by a path that can be linearized; the message names the blocker."""


@dataclass
class Node:
    """One module call in the forward pass."""

    index: int
    name: str
    module: nn.Module
    inputs: list[int]  # producer node index per tensor input (INPUT / EXTERNAL for the others)
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]
    consumers: list[int] = field(default_factory=list)


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


_GRAPHS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class _Stop(Exception):
    pass


def trace_graph(model: nn.Module, input_shape: Sequence[int] | None = None) -> ModelGraph:
    """Record the module graph with one forward pass on zeros (cached per model and input shape).

    Every leaf module becomes a node; a container's name maps to the node that produced its output.
    """
    shape_in = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    cache = _GRAPHS.setdefault(model, {})
    if shape_in in cache:
        return cache[shape_in]
    named = [(n, m) for n, m in model.named_modules() if n]
    leaves = {n for n, m in named if not list(m.children())}
    nodes: list[Node] = []
    producer: dict[int, int] = {}
    keep: list[torch.Tensor] = []  # keep tensors alive so that id() stays unique during the pass
    container_out: dict[str, int] = {}
    modules = dict(named)

    def leaf_hook(name: str):
        def fn(_m: nn.Module, inputs: tuple, out) -> None:
            if not isinstance(out, torch.Tensor):
                return
            tens = [t for t in inputs if isinstance(t, torch.Tensor)]
            node = Node(len(nodes), name, modules[name], [producer.get(id(t), EXTERNAL) for t in tens],
                        [tuple(t.shape) for t in tens], tuple(out.shape))
            for p in node.inputs:
                if p >= 0:
                    nodes[p].consumers.append(node.index)
            nodes.append(node)
            producer[id(out)] = node.index
            keep.append(out)
            keep.extend(tens)

        return fn

    def container_hook(name: str):
        def fn(_m: nn.Module, _inputs: tuple, out) -> None:
            if isinstance(out, torch.Tensor) and id(out) in producer:
                container_out[name] = producer[id(out)]

        return fn

    device, dtype = model_device_dtype(model)
    x = torch.zeros((1, *shape_in), device=device, dtype=dtype)
    producer[id(x)] = INPUT
    error = None
    fns = {n: (leaf_hook(n) if n in leaves else container_hook(n)) for n, _ in named}
    was_training = model.training
    model.eval()
    try:
        with hooks(model, fns), torch.no_grad():
            try:
                model(x)
            except Exception as e:  # noqa: BLE001 - e.g. a head that rejects the size; the graph so far is kept
                if not nodes:
                    raise
                error = f"{type(e).__name__}: {e}"
    finally:
        model.train(was_training)
    by_name: dict[str, list[int]] = {}
    for node in nodes:
        by_name.setdefault(node.name, []).append(node.index)
    for name, idx in container_out.items():
        by_name.setdefault(name, [idx])
    graph = ModelGraph(nodes, by_name, shape_in, error)
    cache[shape_in] = graph
    return graph


# --------------------------------------------------------------------------------------------
# Per-module rules: linear stand-in, spatial geometry, and kind (for direct weights)
# --------------------------------------------------------------------------------------------

IDENTITY_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, LocalResponseNorm, nn.LocalResponseNorm,
                  nn.Identity, nn.Dropout, nn.Dropout2d)
POOL_TYPES = (MaxPoolSame, nn.MaxPool2d, nn.AvgPool2d)
GLOBAL_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)


def is_weighted(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.Linear))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def unsupported(node: Node) -> str | None:
    """Why ``node`` cannot be linearized, or None when it can."""
    m = node.module
    if isinstance(m, Concat):
        return None
    if len(node.inputs) != 1:
        return f"it takes {len(node.inputs)} tensor inputs and is not a channel concatenation"
    if isinstance(m, IDENTITY_TYPES + GLOBAL_TYPES + (nn.AvgPool2d, MaxPoolSame)):
        return None
    if isinstance(m, nn.MaxPool2d):
        return None if _pair(m.dilation) == (1, 1) else "dilated max pooling has no average-pool stand-in"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "batch norm in training mode is not a fixed linear map; call model.eval()" if m.training else None
    if isinstance(m, nn.Linear):
        return None
    if isinstance(m, nn.Conv2d):
        if type(m).forward is not nn.Conv2d.forward and not isinstance(m, SamePadConv):
            return "a Conv2d subclass with its own forward(), whose linear part is unknown"
        return None
    return ("it is not a convolution, linear layer, ReLU, pooling, normalisation or concatenation; "
            "only those can be linearized")


def linear_forward(node: Node, inputs: list[torch.Tensor | None]) -> torch.Tensor:
    """The linearized module applied to ``inputs`` (None = an input that does not depend on the source)."""
    m = node.module
    if isinstance(m, Concat):
        ref = next(t for t in inputs if t is not None)
        parts = [t if t is not None else ref.new_zeros((ref.shape[0], shp[1], *ref.shape[2:]))
                 for t, shp in zip(inputs, node.in_shapes)]
        return torch.cat(parts, dim=1)
    x = inputs[0]
    if isinstance(m, IDENTITY_TYPES):
        return x
    if isinstance(m, MaxPoolSame):
        return F.avg_pool2d(F.pad(x, m.pad), m.kernel_size, m.stride)
    if isinstance(m, nn.MaxPool2d):
        return F.avg_pool2d(x, m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode, count_include_pad=True)
    if isinstance(m, nn.AdaptiveMaxPool2d):
        return F.adaptive_avg_pool2d(x, m.output_size)
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
        return m(x)
    if isinstance(m, SamePadConv):
        return F.conv2d(F.pad(x, m.same_pad) if any(m.same_pad) else x, m.weight, None, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.Conv2d):
        return m._conv_forward(x, m.weight, None)
    if isinstance(m, nn.Linear):
        return F.linear(x, m.weight)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        scale = (m.weight if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
        return x * scale.view(1, -1, *([1] * (x.ndim - 2)))
    raise CircuitError(f"cannot linearize {node.name!r} ({type(m).__name__}): {unsupported(node)}")


@dataclass(frozen=True)
class Geometry:
    """Where a linearized unit looks in the source layer, per spatial axis (y, x).

    Position ``p`` of the destination depends on source rows ``stride*p + offset .. + size``
    (and likewise for columns). ``is_global`` marks destinations that see the whole source map
    (after a flatten/linear layer or adaptive pooling).
    """

    size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    offset: tuple[int, int] = (0, 0)
    is_global: bool = False

    def then(self, kernel: tuple[int, int], stride: tuple[int, int], pad_before: tuple[int, int]) -> "Geometry":
        """Compose with a sliding window (conv or pool) of the given kernel, stride and leading pad."""
        if self.is_global:
            return self
        size = tuple(self.size[a] + self.stride[a] * (kernel[a] - 1) for a in range(2))
        offset = tuple(self.offset[a] - self.stride[a] * pad_before[a] for a in range(2))
        st = tuple(self.stride[a] * stride[a] for a in range(2))
        return Geometry(size, st, offset)  # type: ignore[arg-type]


def node_geometry(node: Node, inputs: list[Geometry | None]) -> Geometry:
    m = node.module
    present = [g for g in inputs if g is not None]
    if isinstance(m, Concat):
        if any(g.is_global for g in present):
            return Geometry(is_global=True)
        if len({g.stride for g in present}) > 1:
            raise CircuitError(f"{node.name!r} concatenates branches with different strides; expand each branch separately")
        lo = tuple(min(g.offset[a] for g in present) for a in range(2))
        hi = tuple(max(g.offset[a] + g.size[a] for g in present) for a in range(2))
        return Geometry((hi[0] - lo[0], hi[1] - lo[1]), present[0].stride, lo)  # type: ignore[arg-type]
    g = present[0]
    if isinstance(m, GLOBAL_TYPES) or isinstance(m, nn.Linear) or len(node.out_shape) < 4:
        return Geometry(is_global=True)
    if isinstance(m, MaxPoolSame):
        return g.then((3, 3), (m.stride, m.stride), (m.pad[2], m.pad[0]))
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(m.kernel_size)
        s = _pair(m.stride if m.stride is not None else m.kernel_size)
        return g.then(k, s, _pair(m.padding))
    if isinstance(m, nn.Conv2d):
        k = tuple(_pair(m.dilation)[a] * (m.kernel_size[a] - 1) + 1 for a in range(2))
        pad = _pair(m.padding) if not isinstance(m.padding, str) else None
        if pad is None:  # padding="same"/"valid"
            pad = tuple((kk - 1) // 2 for kk in k) if m.padding == "same" else (0, 0)
        if isinstance(m, SamePadConv):
            pad = (pad[0] + m.same_pad[2], pad[1] + m.same_pad[0])
        return g.then(k, _pair(m.stride), pad)  # type: ignore[arg-type]
    return g  # pointwise


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
    geometry: Geometry

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
            env[node.index] = linear_forward(node, [env.get(p) for p in node.inputs])
        return env[self.dst.index]


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
               "(not a module), which cannot be followed." if broken else
               f" {dst!r} does not depend on {src!r}.")
        raise CircuitError(f"no linear path of modules from {src!r} to {dst!r}.{why}")
    desc_s = _descendants(graph, s.index)
    nodes = [graph.nodes[i] for i in sorted((anc_d & desc_s) | {d.index})]
    return s, d, nodes


def linear_path(model: nn.Module, src: str, dst: str, input_shape: Sequence[int] | None = None) -> LinearPath:
    """Build (and validate, before any heavy work) the linearized sub-network from ``src`` to ``dst``."""
    graph = trace_graph(model, input_shape)
    s, d, nodes = path_nodes(model, graph, src, dst)
    if len(s.out_shape) not in (2, 4):
        raise CircuitError(f"source layer {src!r} has output shape {s.out_shape}; expected (N, C) or (N, C, H, W)")
    geo: dict[int, Geometry] = {s.index: Geometry(is_global=len(s.out_shape) < 4)}
    for node in nodes:
        why = unsupported(node)
        if why is not None:
            raise CircuitError(
                f"cannot expand weights from {src!r} to {dst!r} through module {node.name!r} "
                f"({type(node.module).__name__}): {why}"
            )
        geo[node.index] = node_geometry(node, [geo.get(p) for p in node.inputs])
    return LinearPath(graph, s, d, nodes, geo[d.index])


def fit_window(path: LinearPath) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """A small source size, a destination position and the window start such that the window
    (the receptive field of that position) lies fully inside the source map, away from padding.

    Returns ``(src_hw, dst_pos, window_start)``.
    """
    g = path.geometry
    pos = tuple(max(0, math.ceil(-g.offset[a] / g.stride[a])) for a in range(2))
    start = tuple(g.stride[a] * pos[a] + g.offset[a] for a in range(2))
    hw = [start[a] + g.size[a] + g.stride[a] for a in range(2)]
    with torch.no_grad():
        for _ in range(8):  # grow until the destination map contains pos (ceil/floor of strided layers)
            y = path(torch.zeros((1, path.src_channels, *hw), dtype=path_dtype(path), device=path_device(path)))
            if y.ndim == 4 and y.shape[2] > pos[0] and y.shape[3] > pos[1]:
                return (hw[0], hw[1]), pos, start  # type: ignore[return-value]
            hw = [hw[a] + g.stride[a] for a in range(2)]
    raise CircuitError(f"could not fit the receptive field of {path.dst.name!r} in {path.src.name!r} (geometry {g})")


def path_device(path: LinearPath) -> torch.device:
    for node in path.nodes:
        for p in node.module.parameters():
            return p.device
    return torch.device("cpu")


def path_dtype(path: LinearPath) -> torch.dtype:
    for node in path.nodes:
        for p in node.module.parameters():
            return p.dtype
    return torch.float32
