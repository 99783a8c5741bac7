"""Unit tests for the MNIST exercise's own analysis steps (no dataset needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision_interp.exercises import analysis as A
from vision_interp.zoo import MnistCNN


def _angle_error(a: float, b: float) -> float:
    return abs(((a - b + 90) % 180) - 90)


@pytest.mark.parametrize("angle", [0, 30, 45, 60, 90, 120, 150])
def test_filter_orientation_recovers_hand_made_bar(angle):
    w = A.oriented_bar(5, angle, width=1.5) - 0.3  # a zero-mean-ish 5x5 bar filter
    got, coherence = A.filter_orientation(torch.tensor(w))
    assert _angle_error(got, angle) < 5, (angle, got)
    assert coherence > 0.5


def test_filter_orientation_of_an_edge_and_of_a_blob():
    edge = A.oriented_edge(7, 0.0) - 0.5  # ink on the right: a vertical edge
    got, _ = A.filter_orientation(edge)
    assert _angle_error(got, 90) < 5
    _, coherence = A.filter_orientation(A.disk(7, 2.0))  # isotropic: no dominant direction
    assert coherence < 0.2


def _model_with_filters(filters: list[np.ndarray], bias: list[float]) -> MnistCNN:
    m = MnistCNN(c1=len(filters), c2=4)
    with torch.no_grad():
        m.conv1.weight.copy_(torch.tensor(np.stack(filters), dtype=torch.float32)[:, None])
        m.conv1.bias.copy_(torch.tensor(bias))
    return m.eval()


def test_describe_filters_names_oriented_and_off_units():
    bars = [A.oriented_bar(5, a, width=1.0) - A.oriented_bar(5, a, width=1.0).mean() for a in (0, 45, 90, 135)]
    off = -np.ones((5, 5)) / 25.0
    model = _model_with_filters(bars + [off], [0.0] * 4 + [0.5])
    profiles = A.describe_filters(model, "conv1")
    for p, a in zip(profiles[:4], (0, 45, 90, 135)):
        assert "oriented" in p.kind, p
        assert p.orientation_selectivity > 0.3
        assert _angle_error(p.preferred_angle, a) <= 10, (a, p.preferred_angle)
        assert _angle_error(p.weight_angle, a) <= 10
    assert "off" in profiles[4].kind and profiles[4].ink_polarity < 0


def test_describe_filters_measures_stroke_width():
    thin, thick = A.oriented_bar(7, 0, width=1.0), A.oriented_bar(7, 0, width=3.0)
    model = MnistCNN(c1=2, c2=4).eval()
    model.conv1 = torch.nn.Conv2d(1, 2, 7, padding=3)  # a 7x7 field leaves room for a 3 px stroke
    with torch.no_grad():
        model.conv1.weight.copy_(torch.tensor(np.stack([thin - thin.mean(), thick - thick.mean()]), dtype=torch.float32)[:, None])
        model.conv1.bias.zero_()
    p_thin, p_thick = A.describe_filters(model, "conv1")
    assert p_thin.preferred_width == 1 and p_thick.preferred_width == 3
    assert _angle_error(p_thin.preferred_angle, 0) <= 5 and _angle_error(p_thick.preferred_angle, 0) <= 5


def test_stimuli_are_in_range_and_oriented():
    bar = A.oriented_bar(28, 90, width=3)
    assert bar.min() >= 0 and bar.max() <= 1
    assert bar[:, 14].sum() > 20 and bar[14, :].sum() < 5  # a vertical bar: a full column, a short row


def test_pearson():
    a = np.arange(10.0)
    assert A.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert A.pearson(a, -a) == pytest.approx(-1.0)
    assert A.pearson(a, np.ones(10)) == 0.0
    with pytest.raises(ValueError, match="equal size"):
        A.pearson(a, np.ones(9))


def test_ablation_replaces_channels_and_removes_hooks():
    torch.manual_seed(0)
    m = MnistCNN().eval()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        clean = m(x)
    assert torch.allclose(A.ablated_logits(m, x, "pool2", []), clean)
    # zero-ablating every pool2 channel leaves only the classifier's bias
    all_zero = A.ablated_logits(m, x, "pool2", range(16), "zero")
    assert torch.allclose(all_zero, m.fc.bias.expand(6, -1), atol=1e-6)
    # mean ablation with the batch's own mean of a single image is the identity
    means = A.channel_means(m, x[:1], "pool2")
    assert torch.allclose(A.ablated_logits(m, x[:1], "pool2", range(16), "mean", means), clean[:1], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(m(x), clean)  # hooks are gone
    assert not any(mod._forward_hooks for mod in m.modules())
    with pytest.raises(ValueError, match="0..15"):
        A.ablated_logits(m, x, "pool2", [16])
    with pytest.raises(ValueError, match="means"):
        A.ablated_logits(m, x, "pool2", [1], "mean")
    with pytest.raises(ValueError, match="zero' or 'mean"):
        A.ablated_logits(m, x, "pool2", [1], "resample")


def test_ablation_effects_numbers():
    labels = torch.tensor([0, 0, 1, 1])
    clean = torch.tensor([[3.0, 1.0], [2.0, 0.0], [0.0, 2.0], [1.0, 4.0]])
    ablated = clean.clone()
    ablated[:, 0] -= 2.5  # class 0 loses 2.5 everywhere: both 0s flip to 1
    eff = A.ablation_effects(clean, ablated, labels, n_classes=2)
    assert eff["logit_drop"] == [pytest.approx(2.5), pytest.approx(0.0)]
    assert eff["accuracy_drop"][0] == pytest.approx(1.0)
    assert eff["accuracy_drop"][1] == pytest.approx(0.0)
    assert eff["margin_drop"][0] == pytest.approx(2.5)
    assert eff["margin_drop"][1] == pytest.approx(-2.5)  # class 1's competitor got weaker


def test_random_channel_sets_are_seeded_and_distinct():
    a = A.random_channel_sets(16, 3, 10, seed=1)
    assert a == A.random_channel_sets(16, 3, 10, seed=1)
    assert a != A.random_channel_sets(16, 3, 10, seed=2)
    assert all(len(set(s)) == 3 and all(0 <= c < 16 for c in s) for s in a)
    with pytest.raises(ValueError):
        A.random_channel_sets(4, 5, 1, seed=0)


def test_summarize():
    s = A.summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3

