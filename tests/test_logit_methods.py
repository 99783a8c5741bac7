"""The generic methods the MNIST exercise uses, on a model of another shape (3-channel 10x12 inputs,
4 classes, average pooling): class-contrastive direct logit attribution and closed-form ablation
(vision_interp.circuits), deletion/insertion curves (vision_interp.attribution)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision_interp.attribution import DeletionInsertion, deletion_insertion
from vision_interp.capture import capture, hooks
from vision_interp.circuits import (AblationResult, ContrastiveAttribution, closed_form_ablation,
                                    contrastive_logit_attribution)


class SmallNet(nn.Module):
    """conv(3->5) -> relu -> avg pool 2 -> flatten -> linear(5*5*6 -> 4): the logits are linear in ``pool``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(5 * 5 * 6, 4)
        self.input_shape = (3, 10, 12)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = SmallNet().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(120, 3, 10, 12, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model agrees with, so every class has images
    y[:8] = torch.arange(8) % 4  # and at least two of each class
    return model, x, y


def _real_ablation(model, x, channel, cells, value):
    """Logits with pool[:, channel] at flat ``cells`` replaced by ``value`` (a (C, P) tensor or a number)."""
    def replace(_m, _i, out):
        out = out.clone()
        flat = out.flatten(2)
        flat[:, channel, cells] = value[channel, cells] if isinstance(value, torch.Tensor) else value
        return flat.view_as(out)

    with torch.no_grad(), hooks(model, {"pool": replace}):
        return model(x)


def _margins(lg, y):
    own = lg.gather(1, y[:, None])[:, 0]
    return own - lg.scatter(1, y[:, None], float("-inf")).max(1).values


def test_contrastive_attribution_sums_to_the_class_logit_contrast(setup):
    model, x, y = setup
    res = contrastive_logit_attribution(model, "pool", x, y, 2)
    assert isinstance(res, ContrastiveAttribution) and res.layer == "pool" and res.logits_layer == "fc"
    assert res.contributions.shape == (5, 5, 6) and res.target == 2
    with torch.no_grad():
        lg = model(x)[:, 2]
    want = float(lg[y == 2].mean() - lg[y != 2].mean())  # the bias cancels: exact for a linear readout
    assert res.total == pytest.approx(want, abs=1e-4)
    assert float(res.channel_totals.sum()) == pytest.approx(want, abs=1e-4)
    assert res.top_channels(2)[0][1] == pytest.approx(float(res.channel_totals.max()))
    # a logit unit names the same class; precomputed activations give the same numbers
    acts = capture(model, x, ["pool"], detach=True)["pool"]
    same = contrastive_logit_attribution(model, "pool", x, y, "fc:2", activations=acts)
    assert torch.equal(same.contributions, res.contributions)


def test_contrastive_attribution_ignores_a_channel_equal_on_every_class(setup):
    model, x, y = setup
    acts = capture(model, x, ["pool"], detach=True)["pool"].clone()
    acts[:, 3] = 7.0  # large but class-independent
    with torch.no_grad():
        lg = model.fc(acts.flatten(1))
    res = contrastive_logit_attribution(model, "pool", x, y, 1, activations=acts, logits=lg)
    assert float(res.contributions[3].abs().max()) == 0.0


def test_closed_form_ablation_equals_the_real_ablation(setup):
    model, x, y = setup
    with torch.no_grad():
        clean = model(x)
        pool = capture(model, x, ["pool"], detach=True)["pool"]
    cells = [0, 7, 13, 29]
    for mode, value in (("mean", pool.flatten(2).mean(0)), ("zero", 0.0)):
        res = closed_form_ablation(model, "pool:3", x, y, 1, positions=cells, mode=mode)
        real = _real_ablation(model, x, 3, cells, value)
        drop = _margins(clean, y) - _margins(real, y)
        assert isinstance(res, AblationResult) and res.positions == cells and res.mode == mode
        assert res.margin_drop == pytest.approx(float(drop[y == 1].mean()), abs=1e-4)
        others = torch.stack([drop[y == k].mean() for k in (0, 2, 3)]).mean()
        assert res.others_margin_drop == pytest.approx(float(others), abs=1e-4)
    # (y, x) pairs and a unit position name the same cells
    pairs = closed_form_ablation(model, "pool:3", x, y, 1, positions=[(0, 0), (1, 1), (2, 1), (4, 5)])
    assert pairs.positions == cells
    one = closed_form_ablation(model, "pool:3@1,1", x, y, 1)
    assert one.positions == [7]


def test_controls_are_seeded_size_matched_and_avoid_named_channels(setup):
    model, x, y = setup
    run = lambda seed: closed_form_ablation(model, "pool:2", x, y, 0, positions=[3, 4, 9], controls=20,
                                            exclude=[4], generator=seed)
    a, b, c = run(0), run(0), run(1)
    assert a.control_drops == b.control_drops and a.control_drops != c.control_drops
    assert len(a.control_drops) == 20 and not {2, 4} & set(a.control_channels)
    assert a.control_size_ratio_max >= 1.0
    assert a.percentile == pytest.approx(100.0 * sum(d < a.margin_drop for d in a.control_drops) / 20)
    assert closed_form_ablation(model, "pool:2", x, y, 0).percentile is None


def test_bad_arguments_are_named_before_any_work(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="not linear in 'conv'"):
        contrastive_logit_attribution(model, "conv", x, y, 0)  # a ReLU lies between conv and the logits
    with pytest.raises(ValueError, match=r"target: class 9 .*0\.\.3"):
        contrastive_logit_attribution(model, "pool", x, y, 9)  # only 4 classes
    with pytest.raises(ValueError, match="pool"):
        closed_form_ablation(model, "pool:9", x, y, 0)  # 5 channels
    with pytest.raises(ValueError, match="mode"):
        closed_form_ablation(model, "pool:1", x, y, 0, mode="median")
    with pytest.raises(ValueError, match="outside"):
        closed_form_ablation(model, "pool:1", x, y, 0, positions=[(5, 0)])
    with pytest.raises(ValueError, match="labels"):
        contrastive_logit_attribution(model, "pool", x, y[:5], 0)
    with pytest.raises(ValueError, match="logits layer"):
        contrastive_logit_attribution(model, "pool", x, y, "conv:1")


def test_deletion_insertion_end_points_and_order(setup):
    model, x, y = setup
    xs, ys = x[:16], y[:16]
    with torch.no_grad():
        p_clean = float(torch.softmax(model(xs), 1).gather(1, ys[:, None]).mean())
        p_rep = float(torch.softmax(model(torch.full_like(xs, 0.5)), 1).gather(1, ys[:, None]).mean())
    attr = torch.randn(xs.shape, generator=torch.Generator().manual_seed(3))
    res = deletion_insertion(model, xs, ys, attr, replacement=0.5, fractions=(0.0, 0.3, 1.0))
    assert isinstance(res, DeletionInsertion) and res.fractions == [0.0, 0.3, 1.0]
    assert res.deletion[0] == pytest.approx(p_clean, abs=1e-6) and res.deletion[-1] == pytest.approx(p_rep, abs=1e-6)
    assert res.insertion[0] == pytest.approx(p_rep, abs=1e-6) and res.insertion[-1] == pytest.approx(p_clean, abs=1e-6)
    assert res.deletion_auc == pytest.approx(sum(res.deletion) / 3)
    order = torch.argsort(attr.flatten(1), 1, descending=True)
    same = deletion_insertion(model, xs, ys, order=order, replacement=0.5, fractions=(0.0, 0.3, 1.0))
    assert same == res
    with pytest.raises(ValueError, match="exactly one"):
        deletion_insertion(model, xs, ys)
    with pytest.raises(ValueError, match="targets"):
        deletion_insertion(model, xs, 4, attr)
    with pytest.raises(ValueError, match="fractions"):
        deletion_insertion(model, xs, ys, attr, fractions=(0.5, 1.5))
