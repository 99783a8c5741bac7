"""Attribution graphs, interventions and completeness on models other than the MNIST CNN, and their guards
(issue 35, area "graphs"): two threads, a chain that starts at a hidden layer, PReLU / LeakyReLU /
BatchNorm / ceil-mode pools / inline preprocessing, heads that are not affine, skip connections around the
last block, several output heads, and completeness() on a model in train mode."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

import vision_interp as vi
from vision_interp import features as F
from vision_interp.features.completeness import completeness
from vision_interp.features.graph import GraphBuilder
from vision_interp.features.transcoder import ConvTranscoder, TranscoderConfig
from vision_interp.features.transcoders import Transcoder, train_transcoder
from vision_interp.zoo.spec import ModelSpec

from hostile_support import _mixed, assert_same_state, full_state


class PNet(nn.Module):
    """Not the MNIST CNN: inline preprocessing, BatchNorm, per-channel PReLU, LeakyReLU, ceil-mode max pools
    (one with a 3x3 window, stride 2), 3 x 15 x 15 inputs; the head after pool2 is affine, or (``head="prelu"``)
    a 1x1 conv and a PReLU before the classifier."""

    input_shape = (3, 15, 15)

    def __init__(self, head: str = "affine") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = head
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.act1 = nn.PReLU(6, init=0.2)
        self.pool1 = nn.MaxPool2d(2, ceil_mode=True)  # 15 -> 8
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.act2 = nn.LeakyReLU(0.1)
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # 8 -> 4
        if head == "prelu":
            self.conv3 = nn.Conv2d(8, 8, 1)
            self.act3 = nn.PReLU(init=0.3)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 5)
        with torch.no_grad():
            self.bn1.running_mean.copy_(torch.linspace(-0.2, 0.3, 6))
            self.bn1.running_var.copy_(torch.linspace(0.5, 2.0, 6))
            self.act1.weight.copy_(torch.linspace(0.05, 0.4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1  # inline preprocessing: the first block reads conv1's input, not the raw pixels
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.conv2(x)))
        if self.head == "prelu":
            x = self.act3(self.conv3(x))
        return self.fc(self.flat(x))


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _images(n: int, seed: int) -> torch.Tensor:
    """Structured random images: smooth blobs plus noise, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(15, 15), mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(n, 3, 15, 15, generator=gen)).clamp(0, 1)


@pytest.fixture(scope="module")
def pnets():
    """Both heads share the blocks' weights; transcoders trained with the package's trainer (200 steps each)."""
    affine, prelu = _frozen(PNet("affine")), _frozen(PNet("prelu"))
    prelu.load_state_dict({**prelu.state_dict(), **affine.state_dict()}, strict=False)
    imgs = _images(64, 1)
    cfg = TranscoderConfig(n_features=24, k=4, steps=200, batch_size=16, seed=0)
    t1 = train_transcoder(affine, "input", "pool1", imgs, cfg, progress=False)
    t2 = train_transcoder(affine, "pool1", "pool2", imgs, TranscoderConfig(n_features=32, k=4, steps=200, batch_size=16, seed=1),
                          progress=False)
    return affine, prelu, [t1, t2], _images(4, 7)


def _last_block_check(model: nn.Module, tcs: list, graph, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    te = graph.total_effects()
    last = [i for i, n in enumerate(graph.nodes) if n["kind"] == "feature" and n["block"] == len(tcs) - 1]
    assert last
    return te, F.measure_interventions(model, tcs, image, graph, last, scale=1 + 1e-6), last


@pytest.mark.slow  # trains two transcoders (about 7 s at low load, a minute on the shared machine)
def test_graphs_on_prelu_leakyrelu_ceil_pool_and_inline_preprocessing(pnets):
    affine, prelu, tcs, imgs = pnets
    assert tcs[0].card["kernel"] == [4, 4] and tcs[0].card["pad"] == [1, 2, 1, 2]  # ceil mode: one more column/row at the end
    for model, is_affine in ((affine, True), (prelu, False)):
        dm = _frozen(PNet(model.head).double())
        dm.load_state_dict(model.state_dict())
        before = full_state(dm)
        builder = GraphBuilder(dm, tcs)
        for i in range(2):
            g = builder.build(imgs[i].double(), i)
            assert g.sum_rule_residual() < 1e-5
            assert g.meta["logit_reproduced_error"] < 1e-9
            assert g.meta["head_affine"] or not is_affine  # an affine head is recognised as such
            # the leaves are what conv1 receives (x * 2 - 1), so their values go below 0
            assert min(n["value"] for n in g.nodes if n["kind"] == "pixels") < 0
            # scaling a last-block feature by 1 + 1e-6 in the real model: the rest is (piecewise) linear, so exact
            te, measured, last = _last_block_check(dm, tcs, g, imgs[i].double())
            assert torch.allclose(measured, 1e-6 * te[last], rtol=1e-4, atol=1e-13)
            if is_affine:  # removal is exact too when the head is affine
                removed = F.measure_interventions(dm, tcs, imgs[i].double(), g, last, scale=0.0)
                assert torch.allclose(removed, -te[last], atol=1e-9)
        assert_same_state(before, full_state(dm), "graphs on PNet")


@pytest.mark.slow  # trains two transcoders (about 7 s at low load, a minute on the shared machine)
def test_chain_from_a_hidden_layer(pnets):
    affine, _, (t1, t2), imgs = pnets
    full = F.attribution_graph(affine, [t1, t2], imgs[0], 2)
    hidden = F.attribution_graph(affine, [t2], imgs[0], 2)
    assert hidden.sum_rule_residual() < 1e-5 and hidden.leaf_layer == "pool1"
    kinds = hidden.kinds()
    assert "pixels" not in kinds and kinds.count("activation") == 8 * 8  # one node per pool1 position (default group 1)
    assert abs(hidden.logit - full.logit) < 1e-9
    key = lambda g, b: {(n["feature"], n["y"], n["x"]): n["value"] for n in g.nodes if n["kind"] == "feature" and n["block"] == b}  # noqa: E731
    assert key(hidden, 0) == key(full, 1)  # the same conv2 features, read from the same pool1 values
    te, measured, last = _last_block_check(affine, [t2], hidden, imgs[0])
    assert torch.allclose(measured, 1e-6 * te[last], rtol=2e-2, atol=1e-7)  # float32 model
    grouped = F.attribution_graph(affine, [t2], imgs[0], 2, pixel_group=3)
    assert grouped.kinds().count("activation") == 9 and grouped.sum_rule_residual() < 1e-5


def test_mnist_chain_from_pool1_matches_the_full_chain():
    m = _frozen(vi.mnist_cnn(pretrained=True))
    t1, t2 = F.load_transcoder("mnist_cnn_conv1_tc"), F.load_transcoder("mnist_cnn_conv2_tc")
    x = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(4))
    full, hidden = F.attribution_graph(m, [t1, t2], x, 3), F.attribution_graph(m, [t2], x, 3)
    assert hidden.sum_rule_residual() < 1e-9 and hidden.meta["head_affine"]
    assert hidden.summary()["by_kind"] == {"activation": 14 * 14, "feature": hidden.kinds().count("feature"),
                                           "error": 49, "logit": 1}
    last_full = [n["value"] for n in full.nodes if n["kind"] == "feature" and n["block"] == 1]
    assert [n["value"] for n in hidden.nodes if n["kind"] == "feature"] == last_full
    feats = [i for i, n in enumerate(hidden.nodes) if n["kind"] == "feature"][:6]
    removed = F.measure_interventions(m, [t2], x, hidden, feats, 0.0)
    assert torch.allclose(removed, -hidden.total_effects()[feats], atol=1e-4)  # affine head: exact up to float32


def _hand_transcoder(c_in: int, c_out: int, in_layer: str, out_layer: str, block: str, seed: int) -> Transcoder:
    """A random transcoder for a 3x3 / stride 1 / padding 1 block (sum rules hold whatever its quality)."""
    gen = torch.Generator().manual_seed(seed)
    m = ConvTranscoder(c_in, c_out, 12, 3, (3, 3), (1, 1), (1, 1, 1, 1))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return Transcoder(_frozen(m), in_layer, out_layer, block, {})


class SkipNet(nn.Module):
    """The logits read relu_a as well as the last block's output relu_b (a skip connection around the block)."""

    input_shape = (2, 6, 6)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv_a, self.relu_a = nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()
        self.conv_b, self.relu_b = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.flat, self.fc = nn.Flatten(), nn.Linear(4 * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu_a(self.conv_a(x))
        return self.fc(self.flat(self.relu_b(self.conv_b(a)) + a))


class TwoHeads(nn.Module):
    """Returns (class logits, an auxiliary regression): three output heads' worth of trouble in two."""

    def __init__(self, declare: bool) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.spec = ModelSpec(input_shape=(2, 6, 6), logits_layer="fc" if declare else None)
        self.conv_a, self.relu_a = nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()
        self.flat, self.fc, self.aux = nn.Flatten(), nn.Linear(4 * 36, 3), nn.Linear(4 * 36, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.flat(self.relu_a(self.conv_a(x)))
        return self.fc(h), self.aux(h)


def test_refusals_instead_of_silent_wrong_graphs():
    x = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(0))
    skip = _frozen(SkipNet())
    tc_b = _hand_transcoder(4, 4, "relu_a", "relu_b", "conv_b", 3)
    with pytest.raises(ValueError, match="not a function of the last block's output 'relu_b'"):
        F.attribution_graph(skip, [tc_b], x, 0)
    tc_a = _hand_transcoder(2, 4, "input", "relu_a", "conv_a", 4)
    with pytest.raises(ValueError, match="model: .*tuple.*logits_layer"):
        F.attribution_graph(_frozen(TwoHeads(declare=False)), [tc_a], x, 0)
    two = _frozen(TwoHeads(declare=True))  # a declared logits layer: the graph explains that head
    g = F.attribution_graph(two, [tc_a], x, 2)
    assert g.sum_rule_residual() < 1e-9 and abs(g.logit - float(two(x[None].double().float())[0][0, 2])) < 1e-5
    with pytest.raises(IndexError, match="target: 3"):
        F.attribution_graph(two, [tc_a], x, 3)  # three logits in the declared head, not five outputs in all


class ReluHead(nn.Module):
    """After the block conv_a, a ReLU with no bias before it: f(2a) = 2 f(a), yet not affine."""

    input_shape = (2, 6, 6)

    def __init__(self, relu: bool = True) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv_a, self.flat, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 36, 3)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.relu(self.conv_a(x))))


def test_feature_logit_weights_refuse_a_homogeneous_nonlinear_head():
    model = _frozen(ReluHead())
    tc = _hand_transcoder(2, 4, "input", "conv_a", "conv_a", 6)
    with pytest.raises(ValueError, match="last: the layers after 'conv_a' are not affine"):
        F.feature_logit_weights_tc(model, tc)
    linear = _frozen(ReluHead(relu=False))  # an affine head gives its weights: the classifier read through the decoder
    w = F.feature_logit_weights_tc(linear, tc)
    expect = torch.einsum("kchw,fc->fkhw", linear.fc.weight.double().view(3, 4, 6, 6), tc.module.directions.double())
    assert w.shape == (12, 3, 6, 6) and torch.allclose(w, expect, atol=1e-12)


@pytest.mark.slow  # trains two transcoders (about 7 s at low load, a minute on the shared machine)
def test_completeness_on_a_train_mode_batchnorm_model(pnets):
    affine, _, tcs, _ = pnets
    imgs = _images(12, 9)
    with torch.no_grad():
        labels = affine(imgs).argmax(1)
    clauses = [{"digit": int(labels[0]), "channel": 1, "positions": [0, 5]}, {"digit": int(labels[1]), "channel": 3, "positions": [6]}]
    want = completeness(affine, tcs, clauses, imgs, labels, layer="pool2", graph_images=1)
    model = PNet("affine")
    model.load_state_dict(affine.state_dict())
    model.train()
    model.act1.eval()  # a mixed state: root and BatchNorm in train mode, one module in eval mode
    model.conv1.weight.requires_grad_(False)
    before = full_state(model)
    got = completeness(model, tcs, clauses, imgs, labels, layer="pool2", graph_images=1)
    assert_same_state(before, full_state(model), "completeness in train mode")  # BatchNorm statistics not updated
    assert got == want and got["model"]["accuracy"] == 1.0 and 0 <= got["replacement"]["mean_error_share"] <= 1


# ------------------------------------------------------------------------ two threads (real threads)


def test_graph_waits_for_another_threads_hooks():
    """A graph built while another thread's toolkit call has hooks on the model waits for it: without the
    model's lock the float64 copy would carry that call's hooks, and they would run inside the graph."""
    m = _mixed(vi.mnist_cnn(pretrained=True), "conv2")
    tcs = [F.load_transcoder("mnist_cnn_conv1_tc"), F.load_transcoder("mnist_cnn_conv2_tc")]
    x = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(8))
    expected = F.attribution_graph(m, tcs, x, 5)
    before = full_state(m)
    ran_in: list[str] = []
    holding, release = threading.Event(), threading.Event()
    out: dict = {}

    def other_call() -> None:  # another toolkit call: its hook is on the model while it runs
        with vi.hooks(m, {"conv2": lambda _m, _i, _o: ran_in.append(threading.current_thread().name)}):
            holding.set()
            release.wait(20)

    def grapher() -> None:
        try:
            out["graph"] = F.attribution_graph(m, tcs, x, 5)
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    a = threading.Thread(target=other_call, name="other")
    a.start()
    assert holding.wait(20)
    b = threading.Thread(target=grapher, name="grapher")
    start = time.perf_counter()
    b.start()
    time.sleep(0.5)
    release.set()
    a.join()
    b.join()
    assert "error" not in out, out.get("error")
    assert "grapher" not in ran_in  # the other call's hook never ran inside the graph's copy
    assert time.perf_counter() - start >= 0.5  # it waited for the other call
    assert torch.equal(out["graph"].edges, expected.edges)
    again = F.attribution_graph(m, tcs, x, 5)  # and later graphs of the same model are clean too
    assert torch.equal(again.edges, expected.edges) and "grapher" not in ran_in and "MainThread" not in ran_in
    assert_same_state(before, full_state(m), "graph + hooks threads")


def test_graphs_and_captures_in_two_threads_agree():
    m = _mixed(vi.mnist_cnn(pretrained=True), "conv2")
    tcs = [F.load_transcoder("mnist_cnn_conv2_tc")]
    xs = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    expected_graph = F.attribution_graph(m, tcs, xs[0], 1)
    expected_acts = vi.capture(m, xs, "conv2", detach=True)["conv2"]
    errors: list[BaseException] = []
    results: dict = {"graphs": [], "acts": []}

    def captures() -> None:
        try:
            for _ in range(20):
                results["acts"].append(torch.equal(vi.capture(m, xs, "conv2", detach=True)["conv2"], expected_acts))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def graphs() -> None:
        try:
            for _ in range(2):
                results["graphs"].append(torch.equal(F.attribution_graph(m, tcs, xs[0], 1).edges, expected_graph.edges))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=captures), threading.Thread(target=graphs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results["acts"]) and results["graphs"] == [True, True]
