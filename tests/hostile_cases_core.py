"""Hostile cases of the core area (circuits, display, resources, environment, units, checks, data examples)
for ``tests/test_api_hostile.py``, and the small hand-made nets with the activations and blocks of real
architectures that ``tests/test_core_guards.py`` checks circuits on (PReLU, LeakyReLU, ELU, GELU, SiLU,
ReLU6, BatchNorm, ceil-mode max pools, residual adds, depthwise convolutions, LayerNorm, squeeze-excite).

Every case on one of these nets also checks that the net comes back exactly as it was (the shared
``_models`` of the suite covers the MNIST CNN, the BatchNorm net and the toy GPT-2): :func:`_same` wraps
the call, compares the full state before and after, and lets the expected error through.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import vision_interp as vi
from vision_interp import checks, display, environment, resources
from vision_interp import circuits as C
from vision_interp.data import examples as DX
from vision_interp.units import UnitRangeError, UnknownLayerError

from hostile_support import Case, NF, TE, VE, _mixed, assert_same_state, full_state


def _seeded(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics: the scale must be read
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
    return net.eval()


class PReLUNet(nn.Module):
    """conv1 -> PReLU -> conv2 -> PReLU -> ceil-mode max pool -> conv3 -> fc (a face-net's shape, small)."""

    input_shape = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.PReLU(4)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.act2 = nn.PReLU()
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(5, 6, 3)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.fc(self.flat(self.conv3(x)))


class LeakyBNNet(nn.Module):
    """conv1 -> BatchNorm -> LeakyReLU -> ceil-mode max pool -> conv2 -> ELU -> conv3."""

    input_shape = (2, 20, 20)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.elu = nn.ELU()
        self.conv3 = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.elu(self.conv2(self.pool(self.act(self.bn(self.conv1(x)))))))


class Residual(nn.Module):
    """MobileNet-style: depthwise 3x3 -> BatchNorm -> ELU -> pointwise 1x1, plus the skip connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ELU()
        self.pw = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(self.act(self.bn(self.dw(x))))


class ResidualNet(nn.Module):
    """conv1 -> ReLU6 -> residual(depthwise, BN, ELU, pointwise) -> GELU -> conv3."""

    input_shape = (2, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.relu6 = nn.ReLU6()
        self.block = Residual(4)
        self.gelu = nn.GELU()
        self.conv3 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.gelu(self.block(self.relu6(self.conv1(x)))))


class LayerNorm2d(nn.Module):
    """ConvNeXt's channel LayerNorm on an (N, C, H, W) map."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LayerNormNet(nn.Module):
    """conv1 -> LayerNorm2d -> GELU -> conv2."""

    input_shape = (2, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = LayerNorm2d(4)
        self.gelu = nn.GELU()
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.gelu(self.norm(self.conv1(x))))


class SqueezeExcite(nn.Module):
    """EfficientNet's gate: x * sigmoid(fc(mean(x))) -- a product of two values that depend on x."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class GateNet(nn.Module):
    """conv1 -> SiLU -> squeeze-excite gate -> conv2."""

    input_shape = (2, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.silu = nn.SiLU()
        self.se = SqueezeExcite(4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.se(self.silu(self.conv1(x))))


def build(cls: type, seed: int = 0) -> nn.Module:
    return _seeded(cls(), seed)


# ----------------------------------------------------------------------------------- helpers


def _same(e: SimpleNamespace, name: str, fn: Callable[[nn.Module], Any]) -> Any:
    """``fn(net)`` on the mixed-state net ``e.core[name]``; its full state must be unchanged afterwards,
    also when ``fn`` raises (the error then goes on to the case's check)."""
    net = e.core[name]
    before = full_state(net)
    try:
        return fn(net)
    finally:
        assert_same_state(before, full_state(net), f"core net {name}")


def _png_of(view: Any) -> bytes:
    return view._repr_png_()


def _fixed_rand(*shape: int) -> torch.Tensor:
    """The same random tensor on every call (two pictures compared must be of the same values)."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def _labels(*ys: int) -> torch.Tensor:
    return torch.tensor(ys)


def extend_env(e: SimpleNamespace) -> None:
    """Mixed-state copies of the core nets, and a few results for the display cases."""
    from vision_interp.featvis import RenderResult

    e.core = {cls.__name__: _mixed(build(cls), child) for cls, child in (
        (PReLUNet, "act1"), (LeakyBNNet, "bn"), (ResidualNet, "block"), (LayerNormNet, "norm"), (GateNet, "se"))}
    e.u8 = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 255).to(torch.uint8)
    e.render = RenderResult(images=torch.rand(2, 1, 8, 8), values=torch.zeros(2), descriptions=["a", "b"])
    e.groups = C.neuron_groups(torch.rand(4, 8, 5, 5, generator=torch.Generator().manual_seed(3)), 2)
    e.conn = {"unit": "conv2:0", "layer": "conv1", "direction": "inputs", "excitatory": [("conv1:1", 0.5)],
              "inhibitory": [("conv1:2", -0.25)]}
    e.labels = _labels(3, 4)


def _top(e: SimpleNamespace) -> Any:
    if not hasattr(e, "top"):
        e.top = vi.top_activating(e.m, "conv2", e.x, k=2, channels=[0, 1])
    return e.top


def _la(e: SimpleNamespace) -> Any:
    if not hasattr(e, "la"):
        e.la = vi.layer_attribution(e.m, e.x, "conv2", 3)
    return e.la


def _u8_drawn_as_255(e: SimpleNamespace) -> bool:
    """uint8 pictures are 0..255: the same PNG as the float pictures / 255 (not saturated)."""
    return _png_of(display.images(e.u8)) == _png_of(display.images(e.u8.float() / 255))


# ----------------------------------------------------------------------------------- cases

P = "PReLUNet"
CASES: list[Case] = [
    # --- circuits on nets with other activations: refuse naming the module, its type, the layers that work
    Case(C.expanded_weights, "through a PReLU (names act1, PReLU, and the layer after it)",
         lambda e: _same(e, P, lambda n: C.expanded_weights(n, "conv1", "conv2")), C.LinearizationError,
         "expanded_weights(model, 'act1', 'conv2')", arg="src_layer"),
    Case(C.expanded_weights, "from the PReLU's output (the suggested call): conv2's own kernel",
         lambda e: _same(e, P, lambda n: torch.equal(C.expanded_weights(n, "act1", "conv2"), n.conv2.weight.detach())),
         lambda r: r is True, "equal to conv2.weight", arg="dst_layer"),
    Case(C.expanded_weights, "a float position", lambda e: C.expanded_weights(e.m, "pool2", "fc", position=(1.5, 2)),
         TE, "position"),
    Case(C.expanded_weights, "chunk_size 0", lambda e: C.expanded_weights(e.m, "conv1", "conv2", chunk_size=0), VE, "chunk_size"),
    Case(C.expanded_weights, "a float source channel", lambda e: C.expanded_weights(e.m, "conv1", "conv2", src_channels=[1.0]),
         TE, "src_channels"),
    Case(C.expanded_weights, "a float input_shape", lambda e: C.expanded_weights(e.m, "conv1", "conv2", input_shape=(1, 28.0, 28)),
         TE, "input_shape"),
    Case(C.direct_weights, "through a PReLU", lambda e: _same(e, P, lambda n: C.direct_weights(n, "conv1", "conv2")),
         C.LinearizationError, "direct_weights(model, 'act1', 'conv2')"),
    Case(C.direct_weights, "a depthwise convolution (names block)", lambda e: _same(
        e, "ResidualNet", lambda n: C.direct_weights(n, "conv1", "conv3")), VE, "block"),
    Case(C.top_connections, "inputs through a PReLU", lambda e: _same(e, P, lambda n: C.top_connections(n, "conv2:1")),
         C.LinearizationError, "layer='act1'"),
    Case(C.top_connections, "k = 2.5", lambda e: C.top_connections(e.m, "conv2:0", k=2.5), TE, "k"),
    Case(C.top_connections, "a float channel in a tuple unit", lambda e: C.top_connections(e.m, ("conv2", 1.0)), TE, "channel"),
    Case(C.layer_top_connections, "through a PReLU", lambda e: _same(e, P, lambda n: C.layer_top_connections(n, "conv2")),
         C.LinearizationError, "other='act1'"),
    Case(C.classifier_view, "through a PReLU", lambda e: _same(e, P, lambda n: C.classifier_view(n, "conv2")),
         C.LinearizationError, "classifier_view(model, 'act2')"),
    Case(C.classifier_view, "a net with PReLU, default layer: fc.weight", lambda e: _same(
        e, P, lambda n: torch.equal(C.classifier_view(n), n.fc.weight.detach().view(3, 6, 6, 6))),
         lambda r: r is True, "fc.weight reshaped"),
    Case(C.circuit_diagram, "through a PReLU", lambda e: _same(e, P, lambda n: C.circuit_diagram(n, "conv2:0", e.tmp / "cdp")),
         C.LinearizationError, "layer='act1'"),
    Case(C.circuit_diagram, "size 2.0", lambda e: C.circuit_diagram(e.m, "conv2:0", e.tmp / "cd2", size=2.0), TE, "size"),
    Case(C.expanded_weights, "through LayerNorm (names norm, LayerNorm2d)", lambda e: _same(
        e, "LayerNormNet", lambda n: C.expanded_weights(n, "conv1", "conv2")), C.LinearizationError, "'norm' (LayerNorm2d)"),
    Case(C.expanded_weights, "through a squeeze-excite gate (names se)", lambda e: _same(
        e, "GateNet", lambda n: C.expanded_weights(n, "conv1", "conv2")), C.LinearizationError, "'se' (SqueezeExcite)"),
    Case(C.expanded_weights, "BatchNorm + LeakyReLU + ceil-mode pool (train-mode net)", lambda e: _same(
        e, "LeakyBNNet", lambda n: C.expanded_weights(n, "conv1", "conv3").shape), lambda r: r == (2, 4, 10, 10), "(2, 4, 10, 10)"),
    Case(C.kernel_grid, "NaN weights", lambda e: C.kernel_grid(torch.full((2, 2, 3, 3), float("nan"))), VE, "weights"),
    Case(C.kernel_grid, "vmax 0", lambda e: C.kernel_grid(e.w, vmax=0.0), VE, "vmax"),
    # --- NMF: non-negative data only, never clamped
    Case(C.neuron_groups, "negative activations", lambda e: C.neuron_groups(torch.randn(8, 5, 5), 2), VE, "activations"),
    Case(C.neuron_groups, "seed 0.5", lambda e: C.neuron_groups(torch.rand(8, 5, 5), 2, seed=0.5), TE, "seed"),
    Case(C.layer_neuron_groups, "a conv layer (negative): names the ReLU after it",
         lambda e: C.layer_neuron_groups(e.m, e.x, "conv2", 2), VE, "relu2"),
    Case(C.nmf, "k 2.0", lambda e: C.nmf(torch.rand(5, 4), 2.0), TE, "k"),
    # --- contrastive attribution / closed-form ablation: every argument, and no NaN
    Case(C.contrastive_logit_attribution, "a class absent from the images", lambda e: C.contrastive_logit_attribution(
        e.m, "pool2", e.x, e.labels, 7), VE, "classes present: 3, 4", arg="target"),
    Case(C.contrastive_logit_attribution, "every image of the target class", lambda e: C.contrastive_logit_attribution(
        e.m, "pool2", e.x, _labels(3, 3), 3), VE, "labels"),
    Case(C.contrastive_logit_attribution, "float labels", lambda e: C.contrastive_logit_attribution(
        e.m, "pool2", e.x, torch.tensor([3.0, 4.0]), 3), TE, "labels"),
    Case(C.contrastive_logit_attribution, "target=np.float32(3)", lambda e: C.contrastive_logit_attribution(
        e.m, "pool2", e.x, e.labels, np.float32(3)), TE, "target"),
    Case(C.contrastive_logit_attribution, "a string instead of a model", lambda e: C.contrastive_logit_attribution(
        "mnist", "pool2", e.x, e.labels, 3), TE, "model"),
    Case(C.contrastive_logit_attribution, "an unknown layer", lambda e: C.contrastive_logit_attribution(
        e.m, "pool9", e.x, e.labels, 3), UnknownLayerError, "pool9", arg="layer"),
    Case(C.contrastive_logit_attribution, "NaN activations", lambda e: C.contrastive_logit_attribution(
        e.m, "pool2", e.x, e.labels, 3, activations=torch.full((2, 16, 7, 7), float("nan"))), NF, "activations"),
    Case(C.contrastive_logit_attribution, "logits of the wrong shape", lambda e: C.contrastive_logit_attribution(
        e.m, "pool2", e.x, e.labels, 3, logits=torch.zeros(2)), VE, "logits"),
    Case(C.contrastive_logit_attribution, "batch_size 0", lambda e: C.contrastive_logit_attribution(
        e.m, "pool2", e.x, e.labels, 3, batch_size=0), VE, "batch_size"),
    Case(C.closed_form_ablation, "a class absent from the images", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 7), VE, "classes present: 3, 4", arg="target"),
    Case(C.closed_form_ablation, "two classes of ten present: finite numbers", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3).as_dict(), lambda r: all(np.isfinite(r[k]) for k in (
            "margin_drop", "others_margin_drop", "specificity", "accuracy_drop")), "finite drops and specificity",
         arg="labels"),
    Case(C.closed_form_ablation, "target=3.0", lambda e: C.closed_form_ablation(e.m, "pool2:5", e.x, e.labels, 3.0), TE, "target"),
    Case(C.closed_form_ablation, "a string instead of a model", lambda e: C.closed_form_ablation(
        "mnist", "pool2:5", e.x, e.labels, 3), TE, "model"),
    Case(C.closed_form_ablation, "a unit without a channel", lambda e: C.closed_form_ablation(
        e.m, "pool2", e.x, e.labels, 3), VE, "unit", arg="unit"),
    Case(C.closed_form_ablation, "a float position", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3, positions=[1.5]), TE, "positions"),
    Case(C.closed_form_ablation, "a float channel to exclude", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3, exclude=[2.5], controls=2), TE, "exclude"),
    Case(C.closed_form_ablation, "a float seed", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3, generator=1.5, controls=2), TE, "generator"),
    Case(C.closed_form_ablation, "controls 2.5", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3, controls=2.5), TE, "controls"),
    Case(C.closed_form_ablation, "infinite activations", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3, activations=torch.full((2, 16, 7, 7), float("inf"))), NF, "activations"),
    Case(C.closed_form_ablation, "integer logits", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3, logits=torch.zeros(2, 10, dtype=torch.long)), TE, "logits"),
    Case(C.closed_form_ablation, "batch_size -1", lambda e: C.closed_form_ablation(
        e.m, "pool2:5", e.x, e.labels, 3, batch_size=-1), VE, "batch_size"),
    # --- units and ids: floats refused, never truncated
    Case(vi.parse_unit, "an integral float channel (2.0)", lambda e: vi.parse_unit(("conv2", 2.0)), TE, "channel"),
    Case(vi.parse_unit, "a float position", lambda e: vi.parse_unit(("conv2", 2, (1.5, 3))), VE, "position"),
    Case(vi.parse_channel_list, "a float in the list", lambda e: vi.parse_channel_list([0, 1.5], 16), TE, "channels"),
    Case(vi.parse_channel_list, "a float", lambda e: vi.parse_channel_list(2.5, 16), TE, "channels"),
    Case(vi.resolve_unit, "a float input_shape", lambda e: vi.resolve_unit(e.m, "conv2:3", (1, 28.0, 28)), TE, "input_shape"),
    Case(vi.layer_shape, "a float input_shape", lambda e: vi.layer_shape(e.m, "conv2", (1, 28.5, 28)), TE, "input_shape"),
    Case(vi.trace, "a bool in the input shape", lambda e: vi.trace(e.m, (True, 28, 28)), TE, "input_shape"),
    Case(vi.capture, "cache[('conv2', 2.0)]", lambda e: vi.capture(e.m, e.x, "conv2")[("conv2", 2.0)], TE, "channel"),
    Case(vi.top_activating, "k 2.0", lambda e: vi.top_activating(e.m, "conv2", e.x, k=2.0), TE, "k"),
    Case(vi.top_activating, "float channels", lambda e: vi.top_activating(e.m, "conv2", e.x, channels=[1.0]), TE, "channels"),
    Case(DX.crop_patches, "float positions", lambda e: DX.crop_patches(
        e.x, torch.tensor([[1.5, 2.0], [0.0, 0.0]]), DX.ReceptiveField(1, 1, 0, 0, 3, 3)), TE, "positions"),
    # --- display: every argument; uint8 is 0..255, nothing drawn saturated
    Case(display.images, "uint8 pictures (0..255)", _u8_drawn_as_255, lambda r: r is True, "the PNG of x / 255", arg="x"),
    Case(display.images, "float pictures in 0..255", lambda e: display.images(e.u8.float()), VE, "divide by 255", arg="x"),
    Case(display.images, "int64 pictures", lambda e: display.images(e.u8.long()), VE, "int64", arg="x"),
    Case(display.images, "a NaN pixel", lambda e: display.images(e.nan), NF, "images", arg="x"),
    Case(display.images, "3 captions for 2 images", lambda e: display.images(e.x, ["a", "b", "c"]), VE, "captions"),
    Case(display.images, "a title that is not a string", lambda e: display.images(e.x, title=5), TE, "title"),
    Case(display.as_pictures, "NumPy (H, W, C) uint8 as PIL gives it", lambda e: torch.equal(
        display.as_pictures(e.u8[0].permute(1, 2, 0).numpy()), e.u8[:1].float() / 255), lambda r: r is True,
         "(1, 3, 8, 8) in [0, 1]", arg="x"),
    Case(display.as_pictures, "a float picture with a named argument", lambda e: display.as_pictures(e.x * 3, arg="dataset"),
         VE, "dataset", arg="arg"),
    Case(display.as_pictures, "5 channels", lambda e: display.as_pictures(torch.rand(1, 5, 4, 4), channels=(1, 3)), VE,
         "channels", arg="channels"),
    Case(display.show, "uint8 pictures", lambda e: _png_of(display.show(e.u8)) == _png_of(display.show(e.u8.float() / 255)),
         lambda r: r is True, "drawn as 0..255", arg="obj"),
    Case(display.html, "a string", lambda e: display.html("x"), TE, "display", arg="obj"),
    Case(display.png, "a number", lambda e: display.png(3), TE, "display", arg="obj"),
    Case(display.text, "a list", lambda e: display.text([1]), TE, "display", arg="obj"),
    Case(display.featvis, "a string instead of a RenderResult", lambda e: display.featvis("r"), TE, "res"),
    Case(display.featvis, "max_images 0", lambda e: display.featvis(e.render, max_images=0), VE, "max_images"),
    Case(display.attribution, "uint8 inputs (0..255)", lambda e: _png_of(display.attribution(e.u8, _fixed_rand(2, 3, 8, 8)))
         == _png_of(display.attribution(e.u8.float() / 255, _fixed_rand(2, 3, 8, 8))), lambda r: r is True,
         "drawn as x / 255", arg="inputs"),
    Case(display.attribution, "NaN attributions", lambda e: display.attribution(e.x, e.nan), NF, "attributions"),
    Case(display.attribution, "a target label", lambda e: display.attribution(e.x, e.x - 0.5, target=7).html,
         lambda r: "target 7" in r, "title names target 7", arg="target"),
    Case(display.attribution, "a method that is not a string", lambda e: display.attribution(e.x, e.x, method=3), TE, "method"),
    Case(display.attribution, "shared_scale 'yes'", lambda e: display.attribution(e.x, e.x, shared_scale="yes"), TE, "shared_scale"),
    Case(display.attribution, "one label for two inputs", lambda e: display.attribution(e.x, e.x, labels=["a"]), VE, "labels"),
    Case(display.attribution, "alpha 1.5", lambda e: display.attribution(e.x, e.x, alpha=1.5), VE, "alpha"),
    Case(display.layer_attribution, "a string instead of a LayerAttribution", lambda e: display.layer_attribution("la"), TE, "la"),
    Case(display.layer_attribution, "3 inputs for 2 attributed", lambda e: display.layer_attribution(_la(e), torch.rand(3, 1, 28, 28)),
         VE, "inputs"),
    Case(display.layer_attribution, "k 0", lambda e: display.layer_attribution(_la(e), k=0), VE, "k"),
    Case(display.layer_attribution, "index 2 of 2", lambda e: display.layer_attribution(_la(e), index=2), VE, "index"),
    Case(display.layer_attribution, "a string model", lambda e: display.layer_attribution(_la(e), model="m"), TE, "model"),
    Case(display.layer_attribution, "pictures 5", lambda e: display.layer_attribution(_la(e), pictures=5), TE, "pictures"),
    Case(display.weights, "NaN weights", lambda e: display.weights(torch.full((2, 2, 3, 3), float("nan"))), NF, "w"),
    Case(display.weights, "src 3", lambda e: display.weights(e.w, src=3), TE, "src"),
    Case(display.weights, "dst 3", lambda e: display.weights(e.w, dst=3), TE, "dst"),
    Case(display.weights, "max_rows 0", lambda e: display.weights(e.w, max_rows=0), VE, "max_rows"),
    Case(display.weights, "max_cols 2.5", lambda e: display.weights(e.w, max_cols=2.5), TE, "max_cols"),
    Case(display.connections, "a list instead of the dict", lambda e: display.connections([1]), TE, "conn"),
    Case(display.connections, "a string model", lambda e: display.connections(e.conn, "m"), TE, "model"),
    Case(display.connections, "pictures 5", lambda e: display.connections(e.conn, pictures=5), TE, "pictures"),
    Case(display.connections, "a float input_shape", lambda e: display.connections(e.conn, e.m, input_shape=(1, 28.0, 28)),
         TE, "input_shape"),
    Case(display.dataset_examples, "a string instead of examples", lambda e: display.dataset_examples("t"), TE, "top"),
    Case(display.dataset_examples, "a dataset smaller than the examples", lambda e: display.dataset_examples(_top(e), e.x[:1]),
         VE, "dataset"),
    Case(display.dataset_examples, "a string model", lambda e: display.dataset_examples(_top(e), e.x, "m"), TE, "model"),
    Case(display.dataset_examples, "per_channel 0", lambda e: display.dataset_examples(_top(e), per_channel=0), VE, "per_channel"),
    Case(display.neuron_groups, "a string instead of groups", lambda e: display.neuron_groups("g"), TE, "groups"),
    Case(display.neuron_groups, "a uint8 image (0..255)", lambda e: display.neuron_groups(e.groups, e.u8[0]).html,
         lambda r: "<img" in r, "drawn", arg="image"),
    Case(display.neuron_groups, "k 0", lambda e: display.neuron_groups(e.groups, k=0), VE, "k"),
    Case(display.dictionary, "a string instead of a Dictionary", lambda e: display.dictionary("d"), TE, "d"),
    Case(display.dictionary_features, "a string instead of a Dictionary", lambda e: display.dictionary_features("d", e.m, e.x), TE, "d"),
    Case(display.dictionary_features, "a string model", lambda e: display.dictionary_features(e.d, "m", e.x), TE, "model"),
    Case(display.dictionary_features, "uint8 dataset", lambda e: display.dictionary_features(e.d, e.m, (e.x * 255).byte()), VE,
         "dataset"),
    Case(display.dictionary_features, "a float feature id", lambda e: display.dictionary_features(e.d, e.m, e.x, [1.5]), TE, "features"),
    Case(display.dictionary_features, "k 0", lambda e: display.dictionary_features(e.d, e.m, e.x, k=0), VE, "k"),
    Case(display.induction, "window 0", lambda e: display.induction("r", window=0), VE, "window"),
    Case(display.induction, "a string instead of a report", lambda e: display.induction("r"), TE, "report"),
    Case(display.completeness, "a string instead of a result", lambda e: display.completeness("r"), TE, "res"),
    Case(display.randomization, "a string instead of a result", lambda e: display.randomization("r"), TE, "res"),
    # --- resources: nothing outside the models folders
    Case(resources.list_model_files, "pattern '../*'", lambda e: resources.list_model_files(".", "../*"), VE, "pattern"),
    Case(resources.list_model_files, "an absolute pattern", lambda e: resources.list_model_files(".", "/etc/*"), VE, "pattern"),
    Case(resources.list_model_files, "subdir '..'", lambda e: resources.list_model_files("..", "*"), VE, "subdir"),
    Case(resources.list_model_files, "an int subdir", lambda e: resources.list_model_files(3), TE, "subdir"),
    Case(resources.find_model, "'../x'", lambda e: resources.find_model("../x"), VE, "relative"),
    Case(resources.find_model, "an int", lambda e: resources.find_model(5), TE, "relative"),
    Case(resources.model_path, "an absolute path", lambda e: resources.model_path("/etc/passwd"), VE, "relative"),
    # --- environment
    Case(environment.native_bf16, "'tpu'", lambda e: environment.native_bf16("tpu"), VE, "'cpu'", arg="device"),
    Case(environment.native_bf16, "an int", lambda e: environment.native_bf16(0), TE, "device"),
    Case(environment.environment_report, "browser 'no'", lambda e: environment.environment_report(browser="no"), TE, "browser"),
    Case(environment.format_report, "an empty dict", lambda e: environment.format_report({}), VE, "environment_report()", arg="r"),
    Case(environment.format_report, "a string", lambda e: environment.format_report("r"), TE, "environment_report()", arg="r"),
]
