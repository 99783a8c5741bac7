"""Weights between units: direct weights, expanded weights, top connections, the classifier view.

Definitions (all tensors are ``(C_dst, C_src, kh, kw)``, row = destination channel):

* **Direct weights** are the weights of the *one* weighted layer (conv or linear) on every path
  between two layers, sliced by channel: ReLUs, pooling, LRN and concatenations in between only
  route channels (a ``mixed*`` concatenation shifts channel numbers by the branch offsets). The
  kernel is expressed on the grid of the tensor the weighted layer reads, so pooling between the
  layers is *not* folded in (that is what expanded weights do). Branches with different kernel
  sizes are centred in the largest one.
* **Expanded weights** are the Jacobian of the *linearized* sub-network (see
  :mod:`vision_interp.circuits.graph`: ReLU -> identity, max pool -> average pool with zero padding,
  LRN skipped, biases dropped) between the two layers:
  ``E[j, i, u, v] = d dst[j, p] / d src[i, stride*p + offset + (u, v)]`` for a destination position
  ``p`` whose receptive field lies inside the source map. The window ``(kh, kw)`` is that receptive
  field. A composition of (strided) convolutions and pools is itself a strided convolution, so this
  kernel is the same for every such interior ``p`` (:func:`receptive_geometry` gives stride and
  offset). When the destination sees the whole source map (a flatten + linear classifier), the
  window is the whole source map at the model's input size.

Expanded weights are computed exactly with autograd on a small source crop that just holds the
receptive field: reverse mode (one backward per destination channel) or forward mode (one
impulse per source channel and tap), whichever needs fewer passes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn

from ..checks import check_index, check_int
from ..model_state import runs_model
from ..units import UnitRangeError, parse_channel_list, resolve_layer, resolve_unit
from .graph import (
    EXTERNAL,
    INPUT,
    CircuitError,
    LinearizationError,
    Geometry,
    LinearPath,
    ModelGraph,
    Node,
    _ancestors,
    _descendants,
    channel_map,
    fit_window,
    has_weights,
    is_concat,
    is_weighted,
    linear_path,
    logits_layer,
    path_device,
    path_dtype,
    path_nodes,
    trace_graph,
    working_alternatives,
)

__all__ = [
    "direct_weights",
    "expanded_weights",
    "connection_weights",
    "receptive_geometry",
    "top_connections",
    "layer_top_connections",
    "rank_connections",
    "classifier_view",
    "previous_layer",
    "next_layer",
]

def _channels(sel: Sequence[int] | str | None, n: int, what: str, layer: str) -> list[int]:
    arg = {"source": "src_channels", "destination": "dst_channels"}.get(what, what)
    return parse_channel_list(sel, n, what=f"{arg} ({what} channel(s) of layer {layer!r})")


def _routed(node: Node, ins: list, src_layer: str, dst_layer: str) -> list:
    """Provenance of ``node``'s output channels when its linearization only moves channels
    (ReLU, pooling, LRN, concatenation ...), found by tracing it; else a CircuitError."""
    try:
        segments = channel_map(node)
    except LinearizationError:
        raise  # not a router and not linear: direct_weights() names the module and the layers that work
    except CircuitError:
        segments = None
    if segments is None:
        raise CircuitError(
            f"direct weights from {src_layer!r} to {dst_layer!r} cannot pass module {node.name!r} "
            f"({type(node.module).__name__}); use expanded_weights()"
        )
    out: list = [None] * node.out_shape[1]
    for seg in segments:
        pr = ins[-(seg.producer + 1)]
        if pr is None:
            continue
        if isinstance(pr, tuple):
            raise CircuitError(f"{node.name!r} routes a flattened tensor; cannot route channels")
        for k in range(seg.dst[1] - seg.dst[0]):
            if out[seg.dst[0] + k] is not None:
                raise CircuitError(f"{node.name!r} adds several paths into one channel; use expanded_weights()")
            out[seg.dst[0] + k] = pr[seg.src[0] + k]
    return out


# --------------------------------------------------------------------------------------------
# Direct weights
# --------------------------------------------------------------------------------------------


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The module's weight as a dense ``(C_out, C_in, ...)`` kernel (detached).

    A grouped or depthwise convolution (``groups > 1``: ConvNeXt's, MobileNet's and EfficientNet's depthwise
    convs, RegNet's grouped ones) stores ``(C_out, C_in / groups, kh, kw)``; output channel ``j`` of group
    ``g = j // (C_out / groups)`` reads input channels ``g * C_in/groups ... (g + 1) * C_in/groups - 1``. The
    dense kernel is block-diagonal: those weights in place, exact zeros for every channel of another group
    (the output does not read it), so ``conv2d(x, dense)`` equals the grouped convolution."""
    w = module.weight.detach()
    groups = getattr(module, "groups", 1)
    if not isinstance(module, nn.Conv2d) or groups == 1:
        return w
    c_out, per_in = w.shape[:2]
    per_out = c_out // groups
    dense = w.new_zeros((c_out, per_in * groups, *w.shape[2:]))
    for g in range(groups):
        dense[g * per_out:(g + 1) * per_out, g * per_in:(g + 1) * per_in] = w[g * per_out:(g + 1) * per_out]
    return dense


@runs_model
def direct_weights(
    model: nn.Module,
    src_layer: str,
    dst_layer: str,
    *,
    input_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """The weights of the single weighted layer between ``src_layer`` and ``dst_layer``, as
    ``(C_dst, C_src, kh, kw)``; zero where a destination channel does not read that source channel.

    A grouped or depthwise convolution gives its dense block-diagonal kernel (:func:`dense_weight`): the
    stored weights where a channel reads its own group, exact zeros between groups.

    Raises :class:`CircuitError` when some path has no weighted layer or more than one (use
    :func:`expanded_weights` then), or passes a module that is not a pure channel router; a module with
    no linear stand-in (PReLU, ...) is a :class:`~.graph.LinearizationError` naming it, its type and the
    nearest layers whose direct weights exist (e.g. from the PReLU's output).
    """
    try:
        return _direct_weights(model, src_layer, dst_layer, input_shape)
    except LinearizationError as e:
        alternatives = working_alternatives(model, src_layer, dst_layer, e, input_shape,
                                            attempt=lambda a, b: _direct_weights(model, a, b, input_shape))
        raise e.with_alternatives(f"direct weights from {src_layer!r} to {dst_layer!r}", alternatives,
                                  lambda a, b: f"direct_weights(model, {a!r}, {b!r})") from None


def _direct_weights(model: nn.Module, src_layer: str, dst_layer: str, input_shape: Sequence[int] | None) -> torch.Tensor:
    graph = trace_graph(model, input_shape)
    s, d, nodes = path_nodes(model, graph, src_layer, dst_layer)
    n_src = s.out_shape[1]
    # provenance of each channel: ("in", src_channel) | ("w", node_index, out_channel) | None
    prov: dict[int, object] = {s.index: [("in", c) for c in range(n_src)]}
    reads: dict[int, object] = {}  # weighted node -> provenance of its input channels
    for node in nodes:
        m = node.module
        ins = [prov.get(p) for p in node.inputs]
        x = ins[0]
        if is_weighted(m) and len(ins) == 1:
            flat = x if isinstance(x, tuple) else None
            chans = flat[1] if flat else x
            earlier = [p for p in chans if p is not None and p[0] == "w"]
            if earlier:
                raise CircuitError(
                    f"{src_layer!r} -> {dst_layer!r} is not one layer of weights: the path through "
                    f"{graph.nodes[earlier[0][1]].name!r} and {node.name!r} has two weighted layers; "
                    "use expanded_weights() to multiply through them"
                )
            reads[node.index] = x
            prov[node.index] = [("w", node.index, o) for o in range(node.out_shape[1])]
        elif isinstance(m, nn.Flatten) and not isinstance(x, tuple) and len(node.in_shapes[0]) == 4:
            prov[node.index] = ("flat", x, tuple(node.in_shapes[0][2:]))
        else:
            prov[node.index] = _routed(node, ins, src_layer, dst_layer)
    final = prov[d.index]
    if isinstance(final, tuple):
        raise CircuitError(f"{dst_layer!r} is a flattened tensor, not a layer of units")
    unweighted = [c for c, p in enumerate(final) if p is not None and p[0] == "in"]
    if unweighted:
        raise CircuitError(
            f"{dst_layer!r} channel {unweighted[0]} is {src_layer!r} channel {final[unweighted[0]][1]} "
            "without any weighted layer in between (only ReLU/pooling); there are no weights to show"
        )
    kernels = {}
    for wi, x in reads.items():
        w = dense_weight(graph.nodes[wi].module)
        if isinstance(x, tuple):  # flatten -> linear: features are (channel, y, x)
            _, chans, hw = x
            w = w.view(w.shape[0], len(chans), *hw)
        elif w.ndim == 2:
            w = w[:, :, None, None]
        kernels[wi] = w
    kh = max(w.shape[-2] for w in kernels.values())
    kw = max(w.shape[-1] for w in kernels.values())
    ref = next(iter(kernels.values()))
    result = torch.zeros((d.out_shape[1], n_src, kh, kw), dtype=ref.dtype, device=ref.device)
    for wi, x in reads.items():
        w = kernels[wi]
        chans = x[1] if isinstance(x, tuple) else x
        in_pairs = [(ic, p[1]) for ic, p in enumerate(chans) if p is not None and p[0] == "in"]
        out_pairs = [(dc, p[2]) for dc, p in enumerate(final) if p is not None and p[1] == wi]
        if not in_pairs or not out_pairs:
            continue
        ic, sc = (torch.tensor(v) for v in zip(*in_pairs))
        dc, oc = (torch.tensor(v) for v in zip(*out_pairs))
        y0, x0 = (kh - w.shape[-2]) // 2, (kw - w.shape[-1]) // 2
        block = w[oc][:, ic]
        result[dc[:, None], sc[None, :], y0 : y0 + w.shape[-2], x0 : x0 + w.shape[-1]] = block
    return result


# --------------------------------------------------------------------------------------------
# Expanded weights
# --------------------------------------------------------------------------------------------


@runs_model
def receptive_geometry(model: nn.Module, src_layer: str, dst_layer: str, *, input_shape: Sequence[int] | None = None) -> Geometry:
    """Size, stride and offset of the expanded-weight window (see :class:`~.graph.Geometry`)."""
    return linear_path(model, src_layer, dst_layer, input_shape).geometry


def _layer_and_channels(model: nn.Module, spec, channels, input_shape) -> tuple[str, object]:
    """A layer given as a name, or as a unit (handle) whose channel or range selects channels."""
    unit = resolve_unit(model, spec, input_shape)
    if unit.has_channel:
        if channels is not None:
            raise ValueError(f"{spec!s} already selects channels; drop the separate channel argument")
        channels = unit.channel_list()
    return unit.name or unit.layer, channels


@runs_model
def expanded_weights(
    model: nn.Module,
    src_layer: str,
    dst_layer: str,
    *,
    dst_channels: Sequence[int] | str | None = None,
    src_channels: Sequence[int] | str | None = None,
    position: tuple[int, int] | None = None,
    input_shape: Sequence[int] | None = None,
    mode: str = "auto",
    chunk_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """The effective linear kernel from ``src_layer`` to ``dst_layer``: ``(n_dst, n_src, kh, kw)``.

    ``dst_channels`` / ``src_channels`` select rows / columns (default: all; ``"0-7,9"`` works);
    the layers may also be units or handles that carry the selection (``"mixed3b:0-7"``).
    ``position`` only matters when the destination sees the whole source (global geometry) and
    still has a spatial map; it defaults to the centre. ``mode`` is "reverse", "forward" or "auto".
    """
    if mode not in ("auto", "reverse", "forward"):
        raise ValueError(f"mode must be 'auto', 'reverse' or 'forward', got {mode!r}")
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected True or False, got {type(progress).__name__}")
    if position is not None:
        if not isinstance(position, (tuple, list)) or len(position) != 2:
            raise TypeError(f"position: expected (y, x), got {position!r}")
        position = (check_index(position[0], "position: y"), check_index(position[1], "position: x"))
    src_layer, src_channels = _layer_and_channels(model, src_layer, src_channels, input_shape)
    dst_layer, dst_channels = _layer_and_channels(model, dst_layer, dst_channels, input_shape)
    path = linear_path(model, src_layer, dst_layer, input_shape)
    dst = _channels(dst_channels, path.dst_channels, "destination", dst_layer)
    src = _channels(src_channels, path.src_channels, "source", src_layer)
    if mode not in ("auto", "reverse", "forward"):
        raise ValueError(f"mode must be 'auto', 'reverse' or 'forward', got {mode!r}")
    g = path.geometry
    if g.is_global:
        src_hw = tuple(path.src.out_shape[2:]) if len(path.src.out_shape) == 4 else ()
        start = (0, 0)
        size = src_hw if src_hw else ()
        dst_pos = None
        if len(path.dst.out_shape) == 4:
            h, w = path.dst.out_shape[2:]
            dst_pos = position if position is not None else (h // 2, w // 2)
            if not (0 <= dst_pos[0] < h and 0 <= dst_pos[1] < w):
                raise UnitRangeError(f"position {dst_pos} out of range for {dst_layer!r}: valid y 0..{h - 1}, x 0..{w - 1}")
    else:
        src_hw, dst_pos, start = fit_window(path)
        size = g.size
    out = _jacobian(path, src_hw, dst_pos, start, size, dst, src, mode, chunk_size, progress)
    return out if out.ndim == 4 else out.reshape(len(dst), len(src), 1, 1)


def _jacobian(path: LinearPath, src_hw: tuple, dst_pos, start, size, dst: list[int], src: list[int],
              mode: str, chunk_size: int | None, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    dtype, device = path_dtype(path), path_device(path)
    c_in = path.src_channels
    taps = 1
    for s in size:
        taps *= s
    if mode == "auto":
        mode = "reverse" if len(dst) <= len(src) * taps else "forward"
    area = 1
    for s in src_hw:
        area *= s
    per_item = (c_in + sum(n.out_shape[1] for n in path.nodes)) * area * (3 if mode == "reverse" else 1)
    chunk = chunk_size or max(1, min(256, int(6e7 // max(per_item, 1))))
    window = tuple(slice(start[a], start[a] + size[a]) for a in range(len(size)))

    def pick(y: torch.Tensor, rows: torch.Tensor | slice, chans) -> torch.Tensor:
        y = y[rows, chans] if isinstance(rows, torch.Tensor) else y[:, chans]
        if dst_pos is not None:
            y = y[..., dst_pos[0], dst_pos[1]]
        return y

    if mode == "reverse":
        out = torch.empty((len(dst), len(src), *size), dtype=dtype, device=device)
        sel = torch.tensor(src, device=device)
        bar = tqdm(total=len(dst), desc="expanded weights", disable=not progress, leave=False)
        for i in range(0, len(dst), chunk):
            cs = torch.tensor(dst[i : i + chunk], device=device)
            x = torch.zeros((len(cs), c_in, *src_hw), dtype=dtype, device=device, requires_grad=True)
            with torch.enable_grad():
                y = path(x)
                (grad,) = torch.autograd.grad(pick(y, torch.arange(len(cs), device=device), cs).sum(), x)
            out[i : i + len(cs)] = grad.index_select(1, sel)[(slice(None), slice(None), *window)]
            bar.update(len(cs))
        bar.close()
        return out
    # forward mode: one unit impulse per (source channel, tap); the map is linear, so the output is the Jacobian column
    items = torch.cartesian_prod(torch.tensor(src), *[torch.arange(s) for s in size]) if size else torch.tensor(src)[:, None]
    if items.ndim == 1:
        items = items[:, None]
    cols = torch.empty((len(items), len(dst)), dtype=dtype, device=device)
    dsel = torch.tensor(dst, device=device)
    bar = tqdm(total=len(items), desc="expanded weights", disable=not progress, leave=False)
    with torch.no_grad():
        for i in range(0, len(items), chunk):
            it = items[i : i + chunk]
            x = torch.zeros((len(it), c_in, *src_hw), dtype=dtype, device=device)
            idx = [torch.arange(len(it)), it[:, 0]] + [it[:, 1 + a] + start[a] for a in range(len(size))]
            x[tuple(idx)] = 1.0
            cols[i : i + len(it)] = pick(path(x), slice(None), dsel)
            bar.update(len(it))
    bar.close()
    return cols.view(len(src), *size, len(dst)).permute(len(size) + 1, 0, *range(1, len(size) + 1)).contiguous().view(len(dst), len(src), *size)


@runs_model
def connection_weights(model: nn.Module, src_unit, dst_unit, *, kind: str = "auto",
                       input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """The kernel ``(kh, kw)`` from one unit to another, e.g. ``("mixed3a:5", "mixed3b:17")``.

    ``kind``: "direct", "expanded", or "auto" (direct when one weighted layer separates them,
    else expanded -- e.g. through a mixed block's bottleneck).
    """
    if kind not in ("auto", "direct", "expanded"):
        raise ValueError(f"kind must be 'auto', 'direct' or 'expanded', got {kind!r}")
    s = resolve_unit(model, src_unit, input_shape, single_channel=True)
    d = resolve_unit(model, dst_unit, input_shape, single_channel=True)
    if kind not in ("auto", "direct", "expanded"):
        raise ValueError(f"kind must be 'auto', 'direct' or 'expanded', got {kind!r}")
    if kind in ("auto", "direct"):
        try:
            return direct_weights(model, s.layer, d.layer, input_shape=input_shape)[d.channel, s.channel]
        except CircuitError:
            if kind == "direct":
                raise
    return expanded_weights(model, s.layer, d.layer, dst_channels=[d.channel], src_channels=[s.channel],
                            input_shape=input_shape)[0, 0]


# --------------------------------------------------------------------------------------------
# Neighbouring layers, top connections
# --------------------------------------------------------------------------------------------


def _display_name(graph: ModelGraph, node: Node) -> str:
    """A conv named after its activation (Lucid: ``X_pre_relu_conv`` -> ``X``) is shown by the activation's name."""
    if is_weighted(node.module) and len(node.consumers) == 1:
        nxt = graph.nodes[node.consumers[0]]
        if isinstance(nxt.module, (nn.ReLU, nn.ReLU6, nn.LeakyReLU)) and node.name.startswith(nxt.name + "_"):
            return nxt.name
    return node.name


def _dominates(graph: ModelGraph, d: int, n: int) -> bool:
    """Every path from the network input to ``n`` passes through ``d``."""
    seen, stack = {n}, [n]
    while stack:
        v = stack.pop()
        for p in graph.nodes[v].inputs:
            if p == d:
                continue
            if p < 0:
                return False
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return True


def _post_dominates(graph: ModelGraph, d: int, n: int) -> bool:
    """Every path from ``n`` to an output of the graph passes through ``d``."""
    seen, stack = {n}, [n]
    while stack:
        v = stack.pop()
        if not graph.nodes[v].consumers:
            return False
        for c in graph.nodes[v].consumers:
            if c != d and c not in seen:
                seen.add(c)
                stack.append(c)
    return True


def _weightless_path(graph: ModelGraph, a: int, b: int) -> bool:
    """Whether some path a -> b has no weighted module after ``a`` (b included)."""
    stack, seen = [a], {a}
    while stack:
        v = stack.pop()
        for c in graph.nodes[v].consumers:
            if c in seen or c > b or has_weights(graph.nodes[c]):
                continue
            if c == b:
                return True
            seen.add(c)
            stack.append(c)
    return False


def _is_unit_layer(node: Node) -> bool:
    return has_weights(node) or is_concat(node)


@runs_model
def previous_layer(model: nn.Module, layer: str, *, input_shape: Sequence[int] | None = None) -> str:
    """The layer of units that feeds ``layer`` through one layer of weights (or one mixed block):
    conv1 for MnistCNN's conv2, mixed3a for mixed3b, conv2d1 for conv2d2."""
    graph = trace_graph(model, input_shape)
    n = graph.node_for(model, layer)
    for d in sorted(_ancestors(graph, n.index), reverse=True):
        node = graph.nodes[d]
        if _is_unit_layer(node) and _dominates(graph, d, n.index) and not _weightless_path(graph, d, n.index):
            return _display_name(graph, node)
    raise CircuitError(f"no earlier layer of units feeds {layer!r} through a linear path; pass the source layer explicitly")


@runs_model
def next_layer(model: nn.Module, layer: str, *, input_shape: Sequence[int] | None = None) -> str:
    """The layer of units that ``layer`` feeds through one layer of weights (or one mixed block)."""
    graph = trace_graph(model, input_shape)
    n = graph.node_for(model, layer)
    for d in sorted(_descendants(graph, n.index)):
        node = graph.nodes[d]
        if _is_unit_layer(node) and _post_dominates(graph, d, n.index) and not _weightless_path(graph, n.index, d):
            return _display_name(graph, node)
    raise CircuitError(f"no later layer of units is fed by {layer!r} through a linear path; pass the destination layer explicitly")


def rank_connections(kernels: torch.Tensor, layer: str, k: int = 8) -> dict[str, list[tuple[str, float]]]:
    """Rank per-channel kernels ``(n, kh, kw)`` (or ``(n,)``) by the L2 norm of their positive part
    (excitatory) and of their negative part (inhibitory, reported as a negative strength).

    A kernel with both signs can appear in both lists; ties keep the lower channel first.
    """
    check_int(k, "k", minimum=1)
    flat = kernels.detach().float().reshape(kernels.shape[0], -1).cpu()
    pos = flat.clamp_min(0).norm(dim=1)
    neg = (-flat).clamp_min(0).norm(dim=1)

    def top(score: torch.Tensor, sign: float) -> list[tuple[str, float]]:
        order = torch.sort(score, descending=True, stable=True).indices
        return [(f"{layer}:{int(c)}", sign * float(score[c])) for c in order[:k] if score[c] > 0]

    return {"excitatory": top(pos, 1.0), "inhibitory": top(neg, -1.0)}


@runs_model
def top_connections(
    model: nn.Module,
    unit,
    k: int = 8,
    direction: str = "inputs",
    layer: str | None = None,
    *,
    input_shape: Sequence[int] | None = None,
) -> dict:
    """The strongest input (or output) channels of ``unit`` by expanded-weight norm, split into
    excitatory (positive part) and inhibitory (negative part).

    ``layer`` is the other layer (default: :func:`previous_layer` / :func:`next_layer`). Returns
    ``{"unit", "layer", "direction", "excitatory": [(unit, strength)], "inhibitory": [...]}``.
    """
    check_int(k, "k", minimum=1)
    if direction not in ("inputs", "outputs"):
        raise ValueError(f"direction must be 'inputs' or 'outputs', got {direction!r}")
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer: expected a layer name (str) or None, got {type(layer).__name__}")
    u = resolve_unit(model, unit, input_shape, single_channel=True)
    name = u.name or u.layer  # keep the user's spelling (alias or path) in the report
    if direction == "inputs":
        other = layer or previous_layer(model, u.layer, input_shape=input_shape)
        resolve_layer(model, other)
        with _reworded(model, unit, u.layer, "inputs", f"top_connections of {name}:{u.channel} from {other!r}"):
            kernels = expanded_weights(model, other, u.layer, dst_channels=[u.channel], input_shape=input_shape)[0]
    else:
        other = layer or next_layer(model, u.layer, input_shape=input_shape)
        resolve_layer(model, other)
        with _reworded(model, unit, u.layer, "outputs", f"top_connections of {name}:{u.channel} to {other!r}"):
            kernels = expanded_weights(model, u.layer, other, src_channels=[u.channel], input_shape=input_shape)[:, 0]
    ranked = rank_connections(kernels, other, k)
    return Connections({"unit": f"{name}:{u.channel}", "layer": other, "direction": direction, **ranked})


@contextmanager
def _reworded(model: nn.Module, unit, layer_path: str, direction: str, head: str):
    """Re-word a :class:`LinearizationError` from expanded weights as calls of the caller's own function:
    an alternative that keeps the unit's layer is ``top_connections(..., layer=OTHER)``."""
    try:
        yield
    except LinearizationError as e:
        def same(a: str) -> bool:
            try:
                return resolve_layer(model, a) == layer_path
            except ValueError:
                return False

        def fmt(a: str, b: str) -> str:
            if direction == "inputs" and same(b):
                return f"top_connections(model, {str(unit)!r}, layer={a!r})"
            if direction == "outputs" and same(a):
                return f"top_connections(model, {str(unit)!r}, direction='outputs', layer={b!r})"
            if direction == "layer-inputs" and same(b):
                return f"layer_top_connections(model, {unit!r}, other={a!r})"
            if direction == "layer-outputs" and same(a):
                return f"layer_top_connections(model, {unit!r}, direction='outputs', other={b!r})"
            if direction == "classifier":
                return f"classifier_view(model, {a!r})"
            return f"expanded_weights(model, {a!r}, {b!r})"

        raise e.with_alternatives(head, e.alternatives, fmt) from None


class Connections(dict):
    """The plain dict :func:`top_connections` returns, plus a notebook display (strengths as bars)."""

    def _repr_html_(self) -> str:
        from ..display import connections
        return connections(self).html


@runs_model
def layer_top_connections(
    model: nn.Module,
    layer: str,
    k: int = 8,
    direction: str = "inputs",
    other: str | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    progress: bool = False,
) -> list[dict]:
    """:func:`top_connections` for every channel of ``layer``, from one expanded-weight tensor."""
    check_int(k, "k", minimum=1)
    if direction not in ("inputs", "outputs"):
        raise ValueError(f"direction must be 'inputs' or 'outputs', got {direction!r}")
    path = resolve_layer(model, layer)
    if direction == "inputs":
        other = other or previous_layer(model, layer, input_shape=input_shape)
        with _reworded(model, layer, path, "layer-inputs", f"layer_top_connections of {layer!r} from {other!r}"):
            e = expanded_weights(model, other, layer, input_shape=input_shape, progress=progress)
    else:
        other = other or next_layer(model, layer, input_shape=input_shape)
        with _reworded(model, layer, path, "layer-outputs", f"layer_top_connections of {layer!r} to {other!r}"):
            e = expanded_weights(model, layer, other, input_shape=input_shape, progress=progress).transpose(0, 1)
    return [{"unit": f"{layer}:{c}", "layer": other, "direction": direction, **rank_connections(e[c], other, k)}
            for c in range(e.shape[0])]


# --------------------------------------------------------------------------------------------
# Classifier view
# --------------------------------------------------------------------------------------------


def _logits_node(model: nn.Module, graph: ModelGraph) -> Node:
    declared = logits_layer(model)
    if declared is not None:
        return graph.node_for(model, declared)
    linears = [n for n in graph.nodes if isinstance(n.module, nn.Linear)]
    if not linears:
        raise CircuitError(f"{type(model).__name__} has no linear classifier layer")
    return linears[-1]


@runs_model
def classifier_view(model: nn.Module, layer: str | None = None, *, input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """How each channel and position of ``layer`` feeds each class logit: ``(n_classes, C, H, W)``.

    Default ``layer``: the last spatial layer before the classifier (MnistCNN: ``pool2``, where this
    is exactly ``fc.weight`` reshaped). An earlier layer (``conv2``) gives the expanded weights back
    through the pooling, with max pooling read as average pooling.
    """
    graph = trace_graph(model, input_shape)
    logits = _logits_node(model, graph)
    if layer is None:
        node = logits
        while True:
            p = node.inputs[0]
            if p in (EXTERNAL, INPUT):
                raise CircuitError(
                    f"the input of {logits.name!r} is computed outside modules; pass layer=... explicitly"
                )
            node = graph.nodes[p]
            if not isinstance(node.module, (nn.Flatten, nn.Identity, nn.Dropout)):
                break
        layer = node.name
    with _reworded(model, layer, logits.name, "classifier", f"classifier_view of {layer!r}"):
        view = expanded_weights(model, layer, logits.name, input_shape=input_shape)
    if view.ndim != 4:
        raise CircuitError(f"{layer!r} is not a spatial layer; the classifier view needs (C, H, W) maps")
    return view
