"""A unit's own weights and its connections, as the gallery shows them.

Weights picture, by the kind of unit:

- **first layer** (fed by the image): the conv kernel itself (RGB kernels as colour, 0.5 = zero;
  one-channel kernels red/blue);
- **deeper conv units**: the expanded kernel from each unit of the previous layer (circuit
  inspectors), one tile per input channel, red excites, blue inhibits, one scale per unit;
- **classifier units** (the class logits): the class weight map over the last spatial layer.

Connections are aggregated **per connected unit**: a spatial kernel usually has both signs, so a
unit is listed once with its net weight (sum), positive mass (sum of positive entries) and
negative mass (sum of negative entries), ranked by total mass, with a small kernel picture that
shows where it excites and inhibits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..images import diverging, make_grid, upscale
from ..units import resolve_layer
from ..zoo.spec import model_spec

__all__ = ["LayerWeights", "layer_weights", "unit_weight_picture", "aggregate_connections", "kernel_picture"]

_ERRORS = (ValueError, KeyError, IndexError, NotImplementedError, RuntimeError, TypeError)


@dataclass
class LayerWeights:
    inputs: torch.Tensor | None  # (C_layer, n_src, kh, kw) expanded weights from ``src``
    src: str | None
    outputs: torch.Tensor | None  # (n_dst, C_layer, kh, kw) expanded weights into ``dst``
    dst: str | None
    own: torch.Tensor | None  # first layer: the module's own kernel (C_out, C_in, kh, kw)
    classifier: torch.Tensor | None  # logits layer: (n_classes, C, H, W) over ``classifier_src``
    classifier_src: str | None
    notes: list[str]


def _display(model: nn.Module, name: str, paths_to_names: dict[str, str]) -> str:
    try:
        return paths_to_names.get(resolve_layer(model, name), name)
    except ValueError:
        return name


def layer_weights(model: nn.Module, path: str, paths_to_names: dict[str, str], want_connections: bool) -> LayerWeights:
    """Everything weight-shaped about one layer, computed once (expanded weights are the costly part)."""
    from ..circuits import classifier_view, expanded_weights, next_layer, previous_layer

    lw = LayerWeights(None, None, None, None, None, None, None, [])
    try:
        src = previous_layer(model, path)
        lw.inputs = expanded_weights(model, src, path).detach().float().cpu()
        lw.src = _display(model, src, paths_to_names)
    except _ERRORS as e:
        lw.notes.append(f"no inputs: {e}")
        conv = _producing_conv(model, path)
        if conv is not None:
            lw.own = conv.weight.detach().float().cpu()
    if want_connections:
        try:
            dst = next_layer(model, path)
            lw.outputs = expanded_weights(model, path, dst).detach().float().cpu()
            lw.dst = _display(model, dst, paths_to_names)
        except _ERRORS as e:
            lw.notes.append(f"no outputs: {e}")
    logits = model_spec(model).logits_layer
    try:
        if logits is not None and resolve_layer(model, logits) == path:
            view = classifier_view(model).detach().float().cpu()
            lw.classifier = view
            lw.classifier_src = "the last spatial layer before the classifier"
    except _ERRORS as e:
        lw.notes.append(f"no class weight map: {e}")
    return lw


def _producing_conv(model: nn.Module, path: str) -> nn.Conv2d | None:
    """The conv whose kernel a first-layer unit is: the layer itself, or the Conv2d that feeds it
    through weightless modules (InceptionV1's ``conv2d0`` is the ReLU after its conv)."""
    from ..circuits.graph import trace_graph

    module = dict(model.named_modules()).get(path)
    if isinstance(module, nn.Conv2d):
        return module
    try:
        graph = trace_graph(model)
        node = graph.node_for(model, path)
        while True:
            if isinstance(node.module, nn.Conv2d):
                return node.module
            if any(True for _ in node.module.parameters(recurse=False)) or len(node.inputs) != 1 or not isinstance(node.inputs[0], int) \
                    or node.inputs[0] < 0:
                return None
            node = graph.nodes[node.inputs[0]]
    except _ERRORS:
        return None


def _scale_for(kh: int, kw: int, target: int = 28) -> int:
    return max(1, target // max(kh, kw, 1))


def kernel_picture(kernel: torch.Tensor, vmax: float) -> torch.Tensor:
    """One (kh, kw) kernel on a diverging red/blue scale, enlarged to about 28 px."""
    k = kernel.reshape(1, *kernel.shape[-2:]) if kernel.ndim >= 2 else kernel.reshape(1, 1, 1)
    return upscale(diverging(k, vmax if vmax > 0 else 1.0), _scale_for(*k.shape[-2:]))[0]


def _tiles(kernels: torch.Tensor, target: int = 28) -> torch.Tensor:
    """(n, kh, kw) on one diverging scale -> a near-square grid image."""
    vmax = float(kernels.abs().max()) or 1.0
    tiles = upscale(diverging(kernels, vmax), _scale_for(*kernels.shape[-2:], target))
    return make_grid(tiles, ncols=max(1, math.ceil(math.sqrt(len(kernels)))), pad=1, pad_value=0.85)


def unit_weight_picture(lw: LayerWeights, channel: int) -> tuple[torch.Tensor, str] | None:
    """(picture (3, H, W), caption) of the unit's weights, or None when none apply."""
    if lw.classifier is not None:
        return _tiles(lw.classifier[channel]), (f"class weight map: how each channel and position of {lw.classifier_src} "
                                                 f"feeds this logit ({lw.classifier.shape[1]} channels, red +, blue -)")
    if lw.own is not None:
        w = lw.own[channel]
        if w.shape[0] == 3:
            vmax = float(w.abs().max()) or 1.0
            pic = upscale((0.5 + 0.5 * w / vmax).clamp(0, 1)[None], _scale_for(*w.shape[-2:], 64))[0]
            return pic, f"the unit's {w.shape[-2]}x{w.shape[-1]} RGB kernel (grey = 0)"
        return _tiles(w), f"the unit's kernel, one tile per input channel ({w.shape[0]}), red +, blue -"
    if lw.inputs is not None:
        k = lw.inputs[channel]
        return _tiles(k), (f"expanded kernel from each of the {k.shape[0]} units of {lw.src} "
                           f"({k.shape[-2]}x{k.shape[-1]}), one scale, red excites, blue inhibits")
    return None


def aggregate_connections(kernels: torch.Tensor, layer: str, k: int) -> list[dict]:
    """(n_other, kh, kw) -> the ``k`` connected units with the largest total mass, one row each."""
    flat = kernels.reshape(kernels.shape[0], -1).double()
    pos = flat.clamp_min(0).sum(1)
    neg = flat.clamp_max(0).sum(1)
    mass = pos - neg
    order = torch.sort(mass, descending=True, stable=True).indices[:k]
    return [{"unit": f"{layer}:{int(i)}", "net": float(flat[i].sum()), "positive": float(pos[i]), "negative": float(neg[i]),
             "index": int(i)} for i in order.tolist() if mass[i] > 0]
