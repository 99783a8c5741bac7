"""Circuits: direct/expanded weights against independent references, top connections on a planted
circuit, classifier view, error cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vision_interp.circuits import (
    CircuitError,
    classifier_view,
    connection_weights,
    direct_weights,
    expanded_weights,
    layer_top_connections,
    next_layer,
    previous_layer,
    receptive_geometry,
    top_connections,
)
from vision_interp.units import UnitRangeError, UnknownLayerError
from vision_interp.zoo import MnistCNN, inceptionv1


def _jac(fn, x: torch.Tensor) -> torch.Tensor:
    """Reference Jacobian by autograd: d fn(x)[rows] / d x, rows over the output's first axis."""
    return torch.autograd.functional.jacobian(fn, x, vectorize=True)


@pytest.fixture(scope="module")
def mnist() -> MnistCNN:
    torch.manual_seed(1)
    m = MnistCNN().eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def inc():
    torch.manual_seed(2)
    m = inceptionv1(pretrained=False)
    m.input_shape = (3, 96, 96)  # smaller trace; the graph does not depend on the size
    return m


# ------------------------------------------------------------------------------------------
# Expanded weights == exact Jacobian of the linearized sub-network
# ------------------------------------------------------------------------------------------


def test_expanded_mnist_conv1_to_conv2_is_linearized_jacobian(mnist):
    e = expanded_weights(mnist, "conv1", "conv2")
    g = receptive_geometry(mnist, "conv1", "conv2")
    assert (g.size, g.stride, g.offset) == ((10, 10), (2, 2), (-4, -4))
    assert e.shape == (16, 8, 10, 10)

    def lin(x):  # relu -> identity, 2x2 max pool -> 2x2 average pool, no biases
        return F.conv2d(F.avg_pool2d(x, 2), mnist.conv2.weight, None, padding=2)[0, :, 7, 7]

    j = _jac(lin, torch.zeros(1, 8, 28, 28))[:, 0]  # (16, 8, 28, 28)
    y0 = 2 * 7 - 4
    torch.testing.assert_close(e, j[:, :, y0 : y0 + 10, y0 : y0 + 10], rtol=1e-5, atol=1e-7)
    outside = j.clone()
    outside[:, :, y0 : y0 + 10, y0 : y0 + 10] = 0
    assert outside.abs().max() == 0  # the window is the whole receptive field
    fwd = expanded_weights(mnist, "conv1", "conv2", mode="forward")
    torch.testing.assert_close(fwd, e, rtol=1e-5, atol=1e-7)


def test_expanded_mnist_conv2_to_fc_and_classifier_view(mnist):
    e = expanded_weights(mnist, "conv2", "fc")
    assert e.shape == (10, 16, 14, 14)
    j = _jac(lambda x: F.linear(F.avg_pool2d(x, 2).flatten(1), mnist.fc.weight)[0], torch.zeros(1, 16, 14, 14))[:, 0]
    torch.testing.assert_close(e, j, rtol=1e-5, atol=1e-8)
    # relative to pool2 the classifier view is exactly the fc weight reshaped
    view = classifier_view(mnist)
    assert torch.equal(view, mnist.fc.weight.view(10, 16, 7, 7))
    torch.testing.assert_close(classifier_view(mnist, "conv2"), e)
    # through the 2x2 average: each pooled weight is spread over its 4 inputs, divided by 4
    torch.testing.assert_close(e, view.repeat_interleave(2, -2).repeat_interleave(2, -1) / 4)
    # conv1 -> fc composes both pools and conv2 (spans the whole 28x28 input of conv1's grid)
    assert expanded_weights(mnist, "conv1", "logits", dst_channels=[3]).shape == (1, 8, 28, 28)


def _lin_mixed(m, name: str, x: torch.Tensor) -> torch.Tensor:
    """An independent, hand-written linearization of one InceptionV1 mixed block."""
    w = lambda n: getattr(m, f"{name}_{n}_pre_relu_conv").weight  # noqa: E731
    b1 = F.conv2d(x, w("1x1"))
    b3 = F.conv2d(F.conv2d(x, w("3x3_bottleneck")), w("3x3"), padding=1)
    b5 = F.conv2d(F.conv2d(x, w("5x5_bottleneck")), w("5x5"), padding=2)
    bp = F.conv2d(F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 1), w("pool_reduce"))
    return torch.cat([b1, b3, b5, bp], 1)


DST_3B = [0, 127, 128, 200, 319, 320, 415, 416, 479]  # every branch of mixed3b, both ends


def test_expanded_inception_mixed3a_to_mixed3b_is_linearized_jacobian(inc):
    e = expanded_weights(inc, "mixed3a", "mixed3b", dst_channels=DST_3B)
    assert e.shape == (len(DST_3B), 256, 5, 5)
    j = _jac(lambda x: _lin_mixed(inc, "mixed3b", x)[0, DST_3B, 3, 3], torch.zeros(1, 256, 7, 7))[:, 0]
    torch.testing.assert_close(e, j[:, :, 1:6, 1:6], rtol=1e-4, atol=1e-6)
    assert j[:, :, [0, 6]].abs().max() == 0 and j[:, :, :, [0, 6]].abs().max() == 0
    # analytic checks: the 1x1 branch is its raw kernel at the centre tap, the 3x3 branch is the
    # 3x3 kernel composed with its bottleneck
    w1 = inc.mixed3b_1x1_pre_relu_conv.weight
    torch.testing.assert_close(e[0, :, 2, 2], w1[0, :, 0, 0])
    off_centre = e[0].clone()
    off_centre[:, 2, 2] = 0
    assert off_centre.abs().max() == 0
    comp = torch.einsum("chw,ci->ihw", inc.mixed3b_3x3_pre_relu_conv.weight[72], inc.mixed3b_3x3_bottleneck_pre_relu_conv.weight[:, :, 0, 0])
    torch.testing.assert_close(e[3, :, 1:4, 1:4], comp, rtol=1e-4, atol=1e-6)
    # forward mode (impulses) agrees with reverse mode (gradients)
    fwd = expanded_weights(inc, "mixed3a", "mixed3b", dst_channels=DST_3B, src_channels=[0, 100, 255], mode="forward")
    torch.testing.assert_close(fwd, e[:, [0, 100, 255]], rtol=1e-4, atol=1e-6)


def test_expanded_inception_conv2d2_to_mixed3a_through_pool_and_lrn(inc):
    g = receptive_geometry(inc, "conv2d2", "mixed3a")
    assert (g.size, g.stride, g.offset) == ((11, 11), (2, 2), (-4, -4))
    g2 = receptive_geometry(inc, "conv2d2", "mixed3b")
    assert (g2.size, g2.stride, g2.offset) == ((19, 19), (2, 2), (-8, -8))
    dst = [0, 70, 200, 230, 255]
    e = expanded_weights(inc, "conv2d2", "mixed3a", dst_channels=dst)

    def lin(x):  # LRN skipped; MaxPoolSame(2) -> zero-padded 3x3 average, stride 2
        pooled = F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 3, 2)
        return _lin_mixed(inc, "mixed3a", pooled)[0, dst, 6, 6]

    j = _jac(lin, torch.zeros(1, 192, 24, 24))[:, 0]
    torch.testing.assert_close(e, j[:, :, 8:19, 8:19], rtol=1e-4, atol=1e-6)
    assert float(j.abs().sum()) == pytest.approx(float(j[:, :, 8:19, 8:19].abs().sum()), rel=1e-6)


# ------------------------------------------------------------------------------------------
# Direct weights: slices of the module weights, routed through concatenations
# ------------------------------------------------------------------------------------------


def test_direct_weights_are_weight_slices(mnist, inc):
    assert torch.equal(direct_weights(mnist, "conv1", "conv2"), mnist.conv2.weight)
    assert torch.equal(direct_weights(mnist, "relu1", "conv2"), mnist.conv2.weight)
    assert torch.equal(direct_weights(mnist, "pool2", "fc"), mnist.fc.weight.view(10, 16, 7, 7))
    # destination through the mixed3a concatenation: channel 64 + k is the 3x3 branch's k-th output
    d = direct_weights(inc, "mixed3a_3x3_bottleneck", "mixed3a")
    assert d.shape == (256, 96, 3, 3)
    assert torch.equal(d[64:192], inc.mixed3a_3x3_pre_relu_conv.weight)
    assert d[:64].abs().max() == 0 and d[192:].abs().max() == 0
    # source through the concatenation: mixed3a's 5x5 branch is channels 192..223 of mixed3a
    d = direct_weights(inc, "mixed3a_5x5", "mixed3b_1x1_pre_relu")
    assert torch.equal(d, inc.mixed3b_1x1_pre_relu_conv.weight[:, 192:224])
    # the pool branch: max pooling routes channels, the projection holds the weights
    d = direct_weights(inc, "mixed3a", "mixed3b_pool_reduce")
    assert torch.equal(d, inc.mixed3b_pool_reduce_pre_relu_conv.weight)
    with pytest.raises(CircuitError, match="bottleneck"):
        direct_weights(inc, "mixed3a", "mixed3b")
    # by unit name: a 1x1-branch unit is direct; a 3x3-branch unit expands through the bottleneck
    assert torch.equal(connection_weights(inc, "mixed3a:5", "mixed3b_1x1:7"), inc.mixed3b_1x1_pre_relu_conv.weight[7, 5])
    k = connection_weights(inc, "mixed3a:5", "mixed3b:200")
    torch.testing.assert_close(k, expanded_weights(inc, "mixed3a", "mixed3b", dst_channels=[200], src_channels=[5])[0, 0])


def test_neighbour_layers(mnist, inc):
    assert previous_layer(mnist, "conv2") == "conv1" and next_layer(mnist, "conv1") == "conv2"
    assert previous_layer(mnist, "fc") == "conv2" and next_layer(mnist, "relu2") == "fc"
    assert previous_layer(inc, "mixed3b") == "mixed3a" and next_layer(inc, "mixed3a") == "mixed3b"
    assert previous_layer(inc, "conv2d2") == "conv2d1" and previous_layer(inc, "mixed3a") == "conv2d2"


# ------------------------------------------------------------------------------------------
# Top connections on a planted circuit
# ------------------------------------------------------------------------------------------


class Planted(nn.Module):
    """B0 = +A1 (strong) - A2 (weaker) + a weak mixed-sign A0; B1 = -A1 only."""

    input_shape = (1, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.add_module("b<i>", nn.Conv2d(3, 2, 3, padding=1))
        b = getattr(self, "b<i>")
        with torch.no_grad():
            b.weight.zero_()
            b.weight[0, 1] = 1.0  # |.|_2 = 3
            b.weight[0, 2] = -0.5  # 1.5
            b.weight[0, 0] = torch.tensor([[0.1, -0.1, 0.1], [-0.1, 0.1, -0.1], [0.1, -0.1, 0.1]])
            b.weight[1, 1] = -2.0
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return getattr(self, "b<i>")(self.relu(self.a(x)))


def test_planted_circuit_top_connections():
    net = Planted().eval()
    tc = top_connections(net, "b<i>:0", k=3)
    assert tc["layer"] == "a"
    assert [u for u, _ in tc["excitatory"]] == ["a:1", "a:0"]
    assert [u for u, _ in tc["inhibitory"]] == ["a:2", "a:0"]
    assert tc["excitatory"][0][1] == pytest.approx(3.0) and tc["inhibitory"][0][1] == pytest.approx(-1.5)
    assert tc["excitatory"][1][1] == pytest.approx((5 * 0.01) ** 0.5)  # five +0.1 taps
    out = top_connections(net, "a:1", direction="outputs")
    assert out["layer"] == "b<i>"
    assert out["excitatory"] == [("b<i>:0", pytest.approx(3.0))]
    assert out["inhibitory"] == [("b<i>:1", pytest.approx(-6.0))]
    whole = layer_top_connections(net, "b<i>", k=3)
    assert whole[0]["excitatory"] == tc["excitatory"] and whole[1]["inhibitory"] == [("a:1", pytest.approx(-6.0))]


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


class Gated(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3, padding=1)
        self.gate = nn.Sigmoid()
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.c2(self.gate(self.c1(x)))


class FunctionalRelu(Gated):
    def forward(self, x):
        return self.c2(torch.relu(self.c1(x)))  # a function call, not a module: the path is invisible


def test_errors_name_the_problem(mnist, inc):
    with pytest.raises(UnknownLayerError, match="conv2"):
        expanded_weights(mnist, "conv1", "conv3")
    with pytest.raises(UnitRangeError, match=r"0\.\.15"):
        top_connections(mnist, "conv2:16")
    with pytest.raises(UnitRangeError, match=r"0\.\.7"):
        expanded_weights(mnist, "conv1", "conv2", src_channels=[8])
    with pytest.raises(CircuitError, match="swap"):
        expanded_weights(mnist, "conv2", "conv1")
    with pytest.raises(CircuitError, match="'gate'.*Sigmoid"):
        expanded_weights(Gated(), "c1", "c2")
    with pytest.raises(CircuitError, match="c2.*function call"):
        expanded_weights(FunctionalRelu(), "c1", "c2")
    with pytest.raises(CircuitError, match="stopped early.*too small"):  # the 96x96 trace never reaches the head
        expanded_weights(inc, "mixed5b", "logits")
    with pytest.raises(CircuitError, match="two weighted layers"):
        direct_weights(mnist, "conv1", "fc")
    with pytest.raises(CircuitError, match="no later layer"):
        top_connections(mnist, "fc:3", direction="outputs")
    with pytest.raises(ValueError, match="direction"):
        top_connections(mnist, "conv2:3", direction="sideways")


# ------------------------------------------------------------------------------------------
# Run-time padding: expanded weights and windows at odd and even input sizes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [227, 236])
def test_expanded_weights_follow_runtime_same_padding(inc, size):
    """At each input size, the expanded kernel equals the autograd Jacobian of the whole linearised
    sub-network at full size, inside the window the trace reports (and is zero outside it)."""
    from vision_interp.circuits.graph import linear_path
    from vision_interp.trace import trace

    shape = (3, size, size)
    for src, dst, chans in [("conv2d1", "mixed3a", [0, 100, 250]), ("mixed3b", "mixed4a", [0, 300, 500])]:
        e = expanded_weights(inc, src, dst, dst_channels=chans, input_shape=shape)
        path = linear_path(inc, src, dst, input_shape=shape)
        assert path.geometry == trace(inc, shape).relative_window(src, dst)  # one receptive-field calculation
        x = torch.zeros((1, path.src_channels, *path.src.out_shape[2:]), requires_grad=True)
        y = path(x)
        p = (path.dst.out_shape[2] // 2, path.dst.out_shape[3] // 2)
        y0, x0, y1, x1 = path.geometry.box(*p)
        for i, c in enumerate(chans):
            (g,) = torch.autograd.grad(y[0, c, p[0], p[1]], x, retain_graph=True)
            torch.testing.assert_close(e[i], g[0, :, y0:y1, x0:x1], rtol=1e-4, atol=1e-7)
            g[0, :, y0:y1, x0:x1] = 0
            assert g.abs().max() == 0
    # the stride-2 pool pads differently at odd and even sizes: the window moves, the kernel does not
    off = {s: trace(inc, (3, s, s)).relative_window("mixed3b", "mixed4a").offset for s in (227, 236)}
    assert off == {227: (-5, -5), 236: (-4, -4)}


class InlineCatNet(nn.Module):
    """A third-party style model: branches joined by torch.cat in forward, no zoo classes."""

    input_shape = (2, 10, 10)

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 1)
        self.b = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.head = nn.Conv2d(7, 5, 1)

    def forward(self, x):
        return self.head(self.pool(torch.cat([self.a(x), self.b(x)], dim=1)))


def test_circuits_through_an_inline_concatenation():
    torch.manual_seed(0)
    m = InlineCatNet().eval()
    d = direct_weights(m, "b", "head")  # b's channels sit at offset 3 of the concatenation
    assert torch.equal(d, m.head.weight[:, 3:7])
    e = expanded_weights(m, "a", "head")

    def lin(x):  # max pool -> zero-padded average, no biases
        return F.conv2d(F.avg_pool2d(torch.cat([x, torch.zeros(1, 4, 10, 10)], 1), 3, 1, 1), m.head.weight)[0, :, 5, 5]

    j = _jac(lin, torch.zeros(1, 3, 10, 10))[:, 0]
    torch.testing.assert_close(e, j[:, :, 4:7, 4:7], rtol=1e-5, atol=1e-7)


def test_units_and_handles_select_channels(inc):
    from vision_interp.units import resolve_unit

    e = expanded_weights(inc, "mixed3a", "mixed3b", dst_channels=[0, 1, 2])
    torch.testing.assert_close(expanded_weights(inc, "mixed3a", "mixed3b:0-2"), e)
    torch.testing.assert_close(expanded_weights(inc, "mixed3a", resolve_unit(inc, "mixed3b:0-2")), e)
    torch.testing.assert_close(expanded_weights(inc, "mixed3a", "mixed3b", dst_channels="0-2"), e)
    with pytest.raises(ValueError, match="already selects"):
        expanded_weights(inc, "mixed3a", "mixed3b:0-2", dst_channels=[0])
