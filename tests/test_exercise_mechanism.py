"""The MNIST exercise's mechanism analysis: verdict rule, exact conv1 optimum, label check, clause
selection, exact ablations, feature visualizations vs the test set, and the hand-written conv2:4."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vision_interp.capture import capture, hooks
from vision_interp.exercises import circuit as CI
from vision_interp.exercises import conv_units as CU
from vision_interp.exercises import stages as S
from vision_interp.zoo.mnist_cnn import mnist_cnn

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model():
    return mnist_cnn()


@pytest.fixture(scope="module")
def test_set(data_dir):
    from vision_interp.data import load_mnist

    t = load_mnist("test", data_dir)
    return t.images, t.labels


# ----------------------------------------------------------------------------- verdict rule

def test_verdict_never_supports_specificity_below_one():
    for eff, pct, spec in itertools.product([-1.0, 0.0, 0.3, 5.0], [0, 40, 60, 94.9, 95, 100], [0.0, 0.5, 0.99, 1.0, 1.49, 1.5, 3.0, float("inf")]):
        v = CI.verdict(eff, pct, spec)
        assert v in {"supported", "not established", "refuted"}
        if spec < 1:
            assert v != "supported"
        if v == "supported":
            assert eff > 0 and pct >= CI.PERCENTILE_MIN and spec >= CI.SPECIFICITY_MIN
    assert CI.verdict(2.0, 100, 3.0) == "supported"
    assert CI.verdict(2.0, 100, 0.9) == "not established"
    assert CI.verdict(2.0, 30, 9.0) == "refuted"
    assert CI.verdict(-0.1, 100, 9.0) == "refuted"


# ----------------------------------------------------------------------------- conv1, exactly

@pytest.mark.parametrize("seed", range(6))
def test_conv1_optimum_equals_brute_force_over_binary_patches(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 4, generator=g)
    b, mean, std = float(torch.randn(1, generator=g)), 0.13, 0.31
    exact = CU.conv1_optimum_value(w, b, mean, std)
    assert exact == pytest.approx(CU.brute_force_binary_max(w, b, mean, std), abs=1e-5)
    # and no continuous patch in [0, 1] does better
    x = torch.rand(2000, 3, 4, generator=g)
    assert float((((x - mean) * w).sum((1, 2)) / std + b).max()) <= exact + 1e-5


def test_conv1_optimum_beats_every_test_patch(model, test_set):
    x, _ = test_set
    with torch.no_grad():
        act = capture(model, x, ["conv1"], detach=True)["conv1"]
    mean, std = CU._norm(model)
    w = model.conv1.weight.detach()[:, 0]
    for c in range(model.c1):
        opt = CU.conv1_optimum_value(w[c], float(model.conv1.bias[c]), mean, std)
        assert opt >= float(act[:, c].max()) - 1e-4, c
        # the closed form really is the unit's response to that patch in the model
        img = torch.zeros(1, 1, 28, 28)
        img[0, 0, 12:17, 12:17] = CU.conv1_optimum(w[c])
        with torch.no_grad():
            got = capture(model, img, ["conv1"], detach=True)["conv1"][0, c, 14, 14]
        assert float(got) == pytest.approx(opt, abs=1e-4)


def test_conv1_label_check_refuses_contradicted_labels(model):
    t = CU.conv1_tuning(model)
    for c in range(model.c1):
        lab = CU.label_conv1(t, c)
        assert CU.check_conv1_label(t, lab) == [], (c, lab.text)
    off = [c for c in range(model.c1) if CU.label_conv1(t, c).kind == "off"]
    assert off, "the committed model has off units (conv1:1, conv1:6)"
    for c in off:  # the old report's "edge at 163 deg" style label for an off unit is refused
        bad = CU.Conv1Label(c, "stroke", 165.0, 1.0, 0.0, 0.8, "edge at 163 deg")
        assert CU.check_conv1_label(t, bad)
    on = next(c for c in range(model.c1) if CU.label_conv1(t, c).kind != "off")
    assert CU.check_conv1_label(t, CU.Conv1Label(on, "off", 0.0, 1.0, 0.0, 0.0, "off"))


# ----------------------------------------------------------------------------- circuits

def test_contrastive_selection_ignores_channels_active_on_every_digit():
    g = torch.Generator().manual_seed(0)
    n, C = 400, 3
    y = torch.arange(n) % 4
    acts = torch.rand(n, C, 7, 7, generator=g) * 0.1
    acts[:, 0] += 10.0  # generally active, identical on every digit
    acts[y == 2, 1, 3, 3] += 2.0  # digit-2 specific
    W = torch.ones(4, C * 49)
    cl = CI.select_clauses(W, acts, y, 2, n_clauses=1)
    assert cl[0].channel == 1 and 3 * 7 + 3 in cl[0].positions
    assert float(CI.contrastive_map(W, acts, y, 2)[0].abs().max()) < 0.1


def test_ablation_delta_is_exact(model, test_set):
    x = test_set[0][:300]
    with torch.no_grad():
        a = capture(model, x, ["pool2"], detach=True)["pool2"]
        clean = model(x)
    W = model.fc.weight.detach()
    pos = [3, 10, 24]
    value = a.flatten(2).mean(0)

    def set_cells(_m, _i, out):
        out = out.clone().flatten(2)
        out[:, 5, pos] = value[5, pos]
        return out.view(-1, 16, 7, 7)

    with hooks(model, {"pool2": set_cells}), torch.no_grad():
        real = model(x)
    assert torch.allclose(clean + CI.ablation_delta(W, a, 5, pos, value), real, atol=1e-4)


# ----------------------------------------------------------------------------- feature visualization (the real property)

@pytest.mark.slow
def test_default_visualizations_beat_every_test_image(model, test_set):
    """For every conv1 and conv2 centre neuron, vision_interp.featvis.visualize with defaults must beat
    the best activation of that neuron on the 10000 test images."""
    from vision_interp.featvis import visualize

    x, _ = test_set
    with torch.no_grad():
        acts = capture(model, x, ["conv1", "conv2"], detach=True)
    failures = []
    for layer, n in (("conv1", model.c1), ("conv2", model.c2)):
        a = acts[layer]
        cy, cx = a.shape[-2] // 2, a.shape[-1] // 2
        for c in range(n):
            v = float(visualize(model, f"{layer}:{c}@{cy},{cx}", progress=False).activations[0])
            best = float(a[:, c, cy, cx].max())
            if not v > best:
                failures.append(f"{layer}:{c} vis {v:.2f} <= best test {best:.2f}")
    assert not failures, failures


# ----------------------------------------------------------------------------- deep dive

def test_hand_written_conv2_4_correlates_with_the_real_unit(model, test_set):
    x = test_set[0][:3000]
    with torch.no_grad():
        acts = capture(model, x, ["pool1", "conv2"], detach=True)
    hand = F.conv2d(acts["pool1"], S.hand_kernel(model.c1), padding=2)[:, 0]
    r = np.corrcoef(hand.flatten().numpy(), acts["conv2"][:, S.DEEP_UNIT].flatten().numpy())[0, 1]
    assert r >= S.HAND_R_THRESHOLD, r
    # the hand kernel is a handful of constants, not a copy of the weights
    assert len(torch.unique(S.hand_kernel(model.c1))) <= 6


def test_clause_tests_are_deterministic(model, test_set, tmp_path):
    """Two runs of the circuit stage with the same seed give identical numbers (controls are seeded)."""
    from types import SimpleNamespace

    x, y = test_set[0][:1000], test_set[1][:1000]
    sel_x, sel_y = test_set[0][1000:2000], test_set[1][1000:2000]  # clauses are chosen on other images than the tests use
    with torch.no_grad():
        clean = model(x)

    def run() -> dict:
        ex = SimpleNamespace(model=model, x=x, y=y, clean_logits=clean, conv2_names={}, results={}, sel_x=sel_x, sel_y=sel_y,
                             cfg=SimpleNamespace(seed=0, circuit_classes=(4,), k_channels=2, random_draws=100),
                             fig_dir=tmp_path, add_figure=lambda *a, **k: None)
        S.stage_circuits(ex)
        return ex.results["circuits"]

    a, b = run(), run()
    assert a == b
    for c in a["digits"][0]["clauses"]:
        assert c["controls"]["n"] == 100
        named = {k["channel"] for k in a["digits"][0]["clauses"]}
        assert set(c["controls"]["excluded_channels"]) == named
        assert c["controls"]["channels_used"] and not set(c["controls"]["channels_used"]) & named
