"""The attachment contract for dictionaries and transcoders (issue 35, area "attach"): attaching copies
(the caller's objects never change), the consumer picks the gradient (``feature_gradients``), a block
from "input" reads what the model's first module receives, ``replaced`` does not depend on the list's
order, ``check_transcoder`` compares the receptive window and the block's layers, and after-ReLU figures
exist only where a ReLU follows."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vision_interp as vi
from vision_interp import features
from vision_interp.features.transcoder import ConvTranscoder, TranscoderConfig, block_geometry
from vision_interp.features.transcoders import (Transcoder, block_activations, block_window, input_reader,
                                                 load_transcoder, train_transcoder)

NAMES = ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc")


@pytest.fixture(scope="module")
def tcs():
    return [load_transcoder(n) for n in NAMES]


def _snapshot(tc: Transcoder) -> dict:
    m = tc.module
    return {"state": {k: v.clone() for k, v in m.state_dict().items()}, "dtypes": {k: v.dtype for k, v in m.state_dict().items()},
            "devices": {k: v.device for k, v in m.state_dict().items()}, "gradient": m.gradient, "training": m.training,
            "requires_grad": [p.requires_grad for p in m.parameters()], "layers": (tc.in_layer, tc.out_layer, tc.block),
            "card": json.dumps(tc.card, sort_keys=True, default=str)}


def _same(a: dict, b: dict) -> bool:
    return (a["state"].keys() == b["state"].keys() and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
            and all(a[k] == b[k] for k in a if k != "state"))


def _x(n: int = 4, shape=(1, 28, 28), seed: int = 3) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------- 1. attaching copies
def test_attach_on_a_float64_model_leaves_the_callers_transcoder_bit_identical(tcs, trained_mnist):
    m64 = copy.deepcopy(trained_mnist).double()
    tc = tcs[1]
    before = _snapshot(tc)
    with features.attached_transcoder(m64, tc, gradient="linear") as a:
        acts = vi.capture(m64, _x().double(), [a.name])[a.name]
        assert acts.dtype == torch.float64 and a.module is not tc.module and a.gradient == "linear"
    a = features.attach_transcoder(m64, tc, mode="replace", gradient="exact")
    a.remove()
    assert _same(before, _snapshot(tc))
    assert tc.module.W_enc.dtype == torch.float32 and tc.module.gradient == "exact"
    # the measurement that used to crash on the converted transcoder, on both models
    labels = torch.tensor([7, 2, 1, 0])
    for model in (trained_mnist, m64):
        out = features.measure_transcoders(model, [tc], _x(), labels)
        assert out["conv2/tc"]["fvu"] >= 0 and 0 <= out["accuracy_all_replaced"] <= 1
    assert _same(before, _snapshot(tc))


def test_attach_leaves_the_callers_dictionary_unchanged(trained_mnist):
    d = features.dictionary_from_directions(torch.randn(12, 16, generator=torch.Generator().manual_seed(0)), "conv2", k=3)
    state = {k: v.clone() for k, v in d.module.state_dict().items()}
    grad, req = d.module.gradient, [p.requires_grad for p in d.module.parameters()]
    m64 = copy.deepcopy(trained_mnist).double()
    with features.attached(m64, d, gradient="linear") as a:
        assert a.module is not d.module and a.module.W_enc.dtype == torch.float64 and a.gradient == "linear"
        vi.capture(m64, _x().double(), [a.name])
    assert d.module.W_enc.dtype == torch.float32 and d.module.gradient == grad
    assert [p.requires_grad for p in d.module.parameters()] == req
    assert all(torch.equal(v, d.module.state_dict()[k]) for k, v in state.items())


# ----------------------------------------------------------------------- the consumer's gradient
def test_feature_gradients_sets_and_restores_each_attachments_mode(tcs, trained_mnist):
    x = _x(1, seed=5)
    with features.attached_transcoder(trained_mnist, tcs[1], gradient="linear") as a:
        acts = vi.capture(trained_mnist, x, [a.name])[a.name][0]
        off = int((acts.flatten(1).amax(1) == 0).nonzero()[0])  # a feature inactive everywhere on this image

        def grad_of_inactive() -> torch.Tensor:
            xg = x.clone().requires_grad_(True)
            out = vi.capture(trained_mnist, xg, [a.name])[a.name]
            return torch.autograd.grad(out[0, off].sum(), xg)[0]

        assert grad_of_inactive().abs().sum() > 0  # straight-through: the attachment's default
        with features.feature_gradients(trained_mnist, "exact"):
            assert a.gradient == "exact"
            assert grad_of_inactive().abs().sum() == 0  # the true derivative of a feature that is 0
            with pytest.raises(RuntimeError, match="boom"):
                with features.feature_gradients(trained_mnist, "linear"):
                    assert a.gradient == "linear"
                    raise RuntimeError("boom")
            assert a.gradient == "exact"  # the inner block restored the outer one's mode, also on an error
        assert a.gradient == "linear" and grad_of_inactive().abs().sum() > 0
    assert tcs[1].module.gradient == "exact"  # the caller's transcoder was never involved
    with pytest.raises(ValueError, match="mode"):
        with features.feature_gradients(trained_mnist, "relu"):
            pass
    with pytest.raises(TypeError, match="model"):
        with features.feature_gradients("mnist_cnn", "exact"):
            pass


# ----------------------------------------------------------------------- 2. inline preprocessing
class InlineNet(nn.Module):
    """Preprocesses inside forward: ``relu(conv(x * 2 - 1))`` (no module sees the raw input)."""

    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x * 2 - 1))).flatten(1))


def _identity_block(model: InlineNet) -> Transcoder:
    """A transcoder that *is* the block input -> relu (k = every feature, identity decoder)."""
    m = ConvTranscoder(1, 3, 3, 3, (3, 3), (1, 1), (1, 1, 1, 1))
    with torch.no_grad():
        m.W_enc.copy_(model.conv.weight)
        m.b_enc.copy_(model.conv.bias)
        m.W_dec.copy_(torch.eye(3))
    m.eval()
    return Transcoder(m, "input", "relu", "conv", {})


def test_a_block_from_the_input_reads_what_the_first_module_receives():
    model = InlineNet().eval()
    x = _x(6, (1, 8, 8))
    with torch.no_grad():
        want = model(x)
    assert input_reader(model) == "conv"
    tc = _identity_block(model)
    with torch.no_grad(), features.replaced(model, [tc]):
        got = model(x)
    assert torch.allclose(got, want, atol=1e-6), float((got - want).abs().max())  # the raw input gave 3.0 off
    with features.attached_transcoder(model, tc, mode="replace"):
        with torch.no_grad():
            assert torch.allclose(model(x), want, atol=1e-6)
    a_in, a_out = block_activations(model, "input", "relu", x)
    assert torch.equal(a_in, x * 2 - 1) and float(a_in.min()) < 0  # the preprocessed tensor, not the raw one
    trained = train_transcoder(model, "input", "relu", x, TranscoderConfig(n_features=6, k=3, steps=20, batch_size=6), progress=False)
    assert float(trained.module.s_in) == pytest.approx(float((x * 2 - 1).norm(dim=1).mean()), rel=1e-6)
    assert trained.card["block_layers"] == [["conv", "Conv2d"], ["relu", "ReLU"]]
    measured = features.measure_transcoders(model, [trained], x, torch.zeros(6, dtype=torch.long))
    with torch.no_grad():
        pred = trained.module.predict(x * 2 - 1)
    manual = features.fvu(a_out.permute(0, 2, 3, 1).reshape(-1, 3), pred.permute(0, 2, 3, 1).reshape(-1, 3))
    assert measured["conv/tc"]["fvu"] == pytest.approx(manual, abs=1e-5)


def test_two_modules_reading_the_input_are_refused():
    class TwoStems(nn.Module):
        input_shape = (1, 6, 6)

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(torch.cat([self.a(x), self.b(-x)], 1))

    with pytest.raises(ValueError, match="several modules read the model input"):
        train_transcoder(TwoStems(), "input", "relu", _x(2, (1, 6, 6)), TranscoderConfig(steps=1), progress=False)


# ----------------------------------------------------------------------- 3. order and blocks
def test_replaced_does_not_depend_on_the_lists_order(tcs, trained_mnist):
    x = _x(8)
    with torch.no_grad():
        with features.replaced(trained_mnist, tcs):
            forward = trained_mnist(x)
        with features.replaced(trained_mnist, tcs[::-1]):
            backward = trained_mnist(x)
        own = trained_mnist(x)
    assert torch.equal(forward, backward) and not torch.allclose(forward, own)
    with pytest.raises(ValueError, match="second transcoder"):
        features.replaced(trained_mnist, [tcs[0], tcs[0]]).__enter__()


def _zero_transcoder(model: nn.Module, in_layer: str, out_layer: str, block: str, c_in: int, c_out: int) -> Transcoder:
    """A transcoder with the block's true geometry (read from the trace) and zero weights."""
    in_shape, out_shape = vi.layer_shape(model, in_layer), vi.layer_shape(model, out_layer)
    kernel, stride, pad = block_geometry(block_window(model, in_layer, out_layer), in_shape[1:], out_shape[1:])
    return Transcoder(ConvTranscoder(c_in, c_out, 4, 2, kernel, stride, pad).eval(), in_layer, out_layer, block, {})


def test_overlapping_blocks_are_refused(tcs, trained_mnist):
    overlap = _zero_transcoder(trained_mnist, "relu1", "pool2", "conv2", 8, 16)
    features.check_transcoder(overlap, trained_mnist)  # a valid block on its own ...
    with pytest.raises(ValueError, match="overlaps"):  # ... but it shares pool1 with input -> pool1
        features.replaced(trained_mnist, [tcs[0], overlap]).__enter__()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trained_mnist.modules())


def _edited_copy(tmp_path, name: str, **changes) -> Transcoder:
    src = features.FEATURES_DIR / name
    dst = tmp_path / f"{name}_edited"
    shutil.copy(src.with_suffix(".safetensors"), dst.with_suffix(".safetensors"))
    card = json.loads(src.with_suffix(".json").read_text())
    card.update(changes)
    dst.with_suffix(".json").write_text(json.dumps(card))
    return load_transcoder(dst)


def test_check_transcoder_compares_the_receptive_window(tcs, trained_mnist, tmp_path):
    features.check_transcoder(tcs[1], trained_mnist)  # the committed ones pass
    features.check_transcoder(tcs[0], trained_mnist)
    shifted = _edited_copy(tmp_path, "mnist_cnn_conv2_tc", pad=[1, 3, 2, 2])  # same output size, windows one pixel off
    with pytest.raises(ValueError, match="padding"):
        features.check_transcoder(shifted, trained_mnist)
    relabelled = _edited_copy(tmp_path, "mnist_cnn_conv2_tc", in_layer="relu1", out_layer="relu2")  # same channels and sizes
    assert vi.layer_shape(trained_mnist, "relu1")[0] == 8 and vi.layer_shape(trained_mnist, "relu2")[1:] == (14, 14)
    with pytest.raises(ValueError, match="kernel"):
        features.check_transcoder(relabelled, trained_mnist)
    with pytest.raises(ValueError, match="card says"):  # the object relabelled, the card not
        import dataclasses

        features.check_transcoder(dataclasses.replace(tcs[1], in_layer="relu1", out_layer="relu2"), trained_mnist)
    with pytest.raises(ValueError, match="block_layers|layers"):  # a card recording other layers
        features.check_transcoder(_edited_copy(tmp_path, "mnist_cnn_conv2_tc", block_layers=[["conv2", "Conv2d"]]),
                                  trained_mnist)


# ----------------------------------------------------------------------- 4. after-ReLU figures
class NoReluNet(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv2(self.act(self.conv(x)))).flatten(1))


def test_after_relu_figures_only_where_a_relu_follows(trained_mnist):
    from vision_interp.features.writeup import _after_relu_line

    assert features.relu_follows(trained_mnist, "conv2")[0] is True  # read only by relu2
    assert features.relu_follows(trained_mnist, "relu1")[0] is True  # a ReLU's output
    assert features.relu_follows(trained_mnist, "pool1") == (False, "pool1 is read by conv2 (Conv2d), not only by a ReLU")
    net = NoReluNet().eval()
    assert features.relu_follows(net, "conv")[0] is False  # PReLU follows
    ok, why = features.relu_follows(net, "conv2")  # an inline F.relu is not a module: not claimed
    assert not ok and "inline" in why
    x = _x(12, (1, 8, 8))
    d = features.dictionary_from_directions(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), "conv", k=2)
    samples = features.layer_samples(net, "conv", x)
    m = features.evaluate_dictionary(net, d, samples, x, torch.arange(12) % 3, top=2)
    assert "fvu_after_relu" not in m and "nmf_rank_k_fvu_after_relu" not in m and m["after_relu"]["reported"] is False
    line = _after_relu_line(d, m)
    assert line.startswith("- No after-ReLU figures") and "PReLU" in line
    d2 = features.dictionary_from_directions(torch.randn(6, 16, generator=torch.Generator().manual_seed(2)), "conv2", k=2)
    xm = _x(6)
    m2 = features.evaluate_dictionary(trained_mnist, d2, features.layer_samples(trained_mnist, "conv2", xm), xm,
                                      torch.arange(6), top=2)
    assert m2["after_relu"]["reported"] is True and m2["fvu_after_relu"] >= 0 and "nmf_rank_k_fvu_after_relu" in m2
    assert _after_relu_line(d2, m2).startswith("- After the ReLU that follows conv2")
    with pytest.raises(ValueError, match="negative"):
        features.nmf_baseline(torch.randn(20, 4), torch.randn(5, 4), 2)
