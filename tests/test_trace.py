"""The one model trace: data flow (with channel offsets), shapes, receptive fields, caching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision_interp.capture import capture
from vision_interp.trace import TraceError, Window, invalidate, trace
from vision_interp.zoo import MnistCNN, inceptionv1
from vision_interp.zoo.inceptionv1 import MIXED_BLOCKS


@pytest.fixture(scope="module")
def inc():
    torch.manual_seed(0)
    return inceptionv1()


@pytest.fixture(scope="module")
def inc_trace(inc):
    return trace(inc, (3, 224, 224))


def _edges_into(tr, consumer):
    return sorted((p, s, d, e) for p, c, s, d, e in tr.edges() if c == consumer)


def test_mnist_trace_is_the_sequential_chain():
    tr = trace(MnistCNN(), (1, 28, 28))
    chain = ["normalize", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc"]
    edges = [(p, c) for p, c, *_ in tr.edges()]
    assert edges == list(zip(["<input>"] + chain[:-1], chain))
    assert tr.order == chain and all(tr.call_counts[n] == 1 for n in chain)
    assert tr.shape("conv2") == (16, 14, 14) and tr.shape("fc") == (10,) and tr.output_shape == (10,)
    # channel-wise modules keep channels one to one; convolutions mix them
    kinds = {c: e for _p, c, _s, _d, e in tr.edges()}
    assert kinds["relu1"] and kinds["pool2"] and not kinds["conv2"] and not kinds["fc"]
    assert tr.channels_reaching("relu1", "pool1", 3) == [3]
    assert tr.channels_reaching("conv1", "conv2", 5) == list(range(8))


def test_inception_trace_has_the_branch_structure(inc, inc_trace):
    tr = inc_trace
    prev = "maxpool1"
    for name, (cin, c1, _c3r, c3, _c5r, c5, cp) in MIXED_BLOCKS.items():
        if name == "mixed4a":
            prev = "maxpool4"
        if name == "mixed5a":
            prev = "maxpool10"
        # the block output is the four branches, concatenated at these channel offsets
        offsets = [0, c1, c1 + c3, c1 + c3 + c5, c1 + c3 + c5 + cp]
        branches = [f"{name}_1x1", f"{name}_3x3", f"{name}_5x5", f"{name}_pool_reduce"]
        expected = sorted((b, (0, offsets[i + 1] - offsets[i]), (offsets[i], offsets[i + 1]), True)
                          for i, b in enumerate(branches))
        assert _edges_into(tr, name) == expected, name
        assert tr.shape(name)[0] == offsets[-1]
        # every branch starts from the block input
        for first in ("1x1_pre_relu_conv", "3x3_bottleneck_pre_relu_conv", "5x5_bottleneck_pre_relu_conv", "pool"):
            assert [p for p, *_ in _edges_into(tr, f"{name}_{first}")] == [prev], (name, first)
        assert [p for p, *_ in _edges_into(tr, f"{name}_3x3_pre_relu_conv")] == [f"{name}_3x3_bottleneck"]
        assert [p for p, *_ in _edges_into(tr, f"{name}_5x5_pre_relu_conv")] == [f"{name}_5x5_bottleneck"]
        assert [p for p, *_ in _edges_into(tr, f"{name}_pool_reduce_pre_relu_conv")] == [f"{name}_pool"]
        prev = name
    with torch.no_grad():
        cache = capture(inc, torch.zeros(1, 3, 224, 224), list(MIXED_BLOCKS), stop_early=False)
    assert all(tr.shape(n) == tuple(cache[n].shape[1:]) for n in MIXED_BLOCKS)


def test_channel_queries_follow_the_concat_offsets(inc_trace):
    tr = inc_trace
    # mixed4a: 1x1 0..191, 3x3 192..395, 5x5 396..443, pool 444..507
    assert tr.channels_reaching("mixed4a_1x1", "mixed4a", 10) == [10]
    assert tr.channels_reaching("mixed4a_pool_reduce", "mixed4a", 476) == [32]
    assert tr.channels_reaching("mixed4a_1x1", "mixed4a", 476) == []
    assert tr.is_upstream("mixed3b", "mixed4a") and not tr.is_upstream("mixed4a", "mixed3b")
    assert tr.is_upstream("mixed5b", None)  # reaches the logits through the functional mean
    feeding = tr.feeding_layers("mixed4a", 476)
    assert "mixed4a_pool_reduce" in feeding and "mixed4a_1x1" not in feeding and "mixed3b" in feeding
    with pytest.raises(TraceError, match="never ran"):
        tr.call("no_such_module")


class InlineCat(nn.Module):
    """A concatenation written as torch.cat in forward, not as a module."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 3, 1)
        self.c = nn.Conv2d(5, 4, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), torch.relu(self.b(x))], dim=1))


def test_inline_concat_is_found_generically():
    tr = trace(InlineCat(), (1, 8, 8))
    assert tr.channels_reaching("a", "c", 0) == [0, 1] and tr.channels_reaching("b", "c", 0) == [0, 1, 2]
    # the functional relu keeps channels, the cat shifts b's channels by a's width
    segs = sorted((tr.calls[s.producer].path, s.src, s.dst, s.exact) for s in tr.calls[tr.call("c").index].inputs[0])
    assert segs == [("a", (0, 2), (0, 2), True), ("b", (0, 3), (2, 5), True)]


def _measured_field(model, layer, shape_in, trials=2):
    """Independent reference: the input pixels whose gradient reaches the central position."""
    x = torch.rand((trials, *shape_in), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    act = capture(model, x, [layer])[layer]
    cy, cx = act.shape[-2] // 2, act.shape[-1] // 2
    act[:, :, cy, cx].abs().sum().backward()
    support = x.grad.abs().sum((0, 1)) > 0
    ys, xs = torch.nonzero(support.any(1)).flatten(), torch.nonzero(support.any(0)).flatten()
    return (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1), (cy, cx)


@pytest.mark.parametrize("size", [227, 236])
def test_receptive_fields_match_input_gradients(inc, size):
    tr = trace(inc, (3, size, size))
    for layer in ("conv2d0", "conv2d2", "mixed3a"):
        box, (cy, cx) = _measured_field(inc, layer, (3, size, size))
        y0, x0, y1, x1 = tr.receptive_field(layer).box(cy, cx)
        assert (max(y0, 0), max(x0, 0), min(y1, size), min(x1, size)) == box, layer
    assert tr.receptive_field("softmax2_pre_activation_matmul").is_global


def test_relative_window():
    tr = trace(MnistCNN(), (1, 28, 28))
    assert tr.relative_window("conv1", "conv2") == Window((10, 10), (2, 2), (-4, -4))
    assert tr.receptive_field("conv2") == Window((14, 14), (2, 2), (-6, -6))


def test_one_cache_invalidated_by_structure_changes():
    m = MnistCNN()
    t1 = trace(m, (1, 28, 28))
    assert trace(m, (1, 28, 28)) is t1
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert trace(seq, (1, 8, 8)).shape("1") == (4, 6, 6) and trace(seq, (1, 12, 12)).shape("1") == (4, 10, 10)
    m.add_module("conv2/sae", nn.Identity())  # a module attached later (e.g. a dictionary of features)
    assert trace(m, (1, 28, 28)) is not t1
    t2 = trace(m, (1, 28, 28))
    invalidate(m)
    assert trace(m, (1, 28, 28)) is not t2


def test_trace_runs_no_user_hooks_and_leaves_them_in_place():
    from vision_interp.capture import hooks

    m = MnistCNN()
    seen = []
    with hooks(m, {"conv2": lambda *a: seen.append(1), "fc": lambda _m, _i, out: out * 0}):
        tr = trace(m, (1, 28, 28))  # taken while the hooks are attached: neither runs
        assert seen == [] and tr.output_shape == (10,)
        m(torch.rand(1, 1, 28, 28))
        assert seen == [1]
    assert sum(len(x._forward_hooks) for x in m.modules()) == 0


def test_trace_keeps_partial_structure_when_the_head_fails(inc):
    tr = trace(inc, (3, 96, 96))
    assert tr.error and "too small" in tr.error
    assert tr.shape("mixed5b") == (1024, 3, 3)
