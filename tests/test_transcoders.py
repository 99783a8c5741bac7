"""Transcoders, the replacement model, attribution graphs and intervention checks (vision_interp.features)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision_interp import features
from vision_interp.features.graph import GraphBuilder, check_chain
from vision_interp.features.interventions import intervention_check, measure_interventions
from vision_interp.features.replacement import attached_transcoder, replaced
from vision_interp.features.tc_circuits import feature_feature_weights, feature_logit_weights_tc, sparsity_comparison
from vision_interp.features.transcoder import ConvTranscoder, TranscoderConfig, train_conv_transcoder
from vision_interp.features.transcoders import Transcoder, load_transcoder, save_transcoder, train_transcoder


class SmallNet(nn.Module):
    """A conv net of another shape than the MNIST CNN: 3 x 12 x 12 input, 3x3 kernels, blocks end at a pool and a ReLU."""

    input_shape = (3, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.relu_a = nn.ReLU()
        self.pool_a = nn.MaxPool2d(2)
        self.conv_b = nn.Conv2d(4, 6, 3, padding=1)
        self.relu_b = nn.ReLU()
        self.flat = nn.Flatten()
        self.head = nn.Linear(6 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool_a(self.relu_a(self.conv_a(x)))
        return self.head(self.flat(self.relu_b(self.conv_b(x))))


def _images(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small():
    model = SmallNet().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    imgs = _images()
    cfg = TranscoderConfig(n_features=16, k=3, steps=150, batch_size=16, seed=0)
    t1 = train_transcoder(model, "input", "pool_a", imgs, cfg, progress=False)
    t2 = train_transcoder(model, "pool_a", "relu_b", imgs, TranscoderConfig(n_features=24, k=4, steps=150, batch_size=16, skip=True),
                          progress=False)
    return model, [t1, t2], imgs


def test_planted_sparse_block_is_recovered():
    gen = torch.Generator().manual_seed(3)
    planted = ConvTranscoder(2, 5, 6, 2, (3, 3), (1, 1), (1, 1, 1, 1))
    with torch.no_grad():
        planted.W_enc.copy_(torch.randn(planted.W_enc.shape, generator=gen))
        planted.b_enc.fill_(-1.0)
        planted.W_dec.copy_(torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=1))
    a_in = torch.randn(96, 2, 8, 8, generator=gen)
    with torch.no_grad():
        a_out = planted.predict(a_in)
    learned = train_conv_transcoder(a_in, a_out, ((3, 3), (1, 1), (1, 1, 1, 1)),
                                    TranscoderConfig(n_features=12, k=2, steps=600, batch_size=16, lr=1e-2), progress=False)
    pred = learned.predict(a_in)
    fvu = float(((a_out - pred) ** 2).sum() / ((a_out - a_out.mean((0, 2, 3), keepdim=True)) ** 2).sum())
    assert fvu < 0.05
    cos = torch.nn.functional.normalize(planted.W_dec, dim=1) @ torch.nn.functional.normalize(learned.W_dec, dim=1).T
    assert int((cos.max(1).values > 0.95).sum()) >= 5  # at least 5 of the 6 planted directions found


def test_training_is_deterministic_and_round_trips(tmp_path, small):
    model, (t1, _), imgs = small
    again = train_transcoder(model, "input", "pool_a", imgs, TranscoderConfig(n_features=16, k=3, steps=150, batch_size=16, seed=0),
                             progress=False)
    for name, v in t1.module.state_dict().items():
        assert torch.equal(v, again.module.state_dict()[name]), name
    save_transcoder(t1, tmp_path / "t1")
    back = load_transcoder(tmp_path / "t1.safetensors")
    assert (back.in_layer, back.out_layer, back.block) == ("input", "pool_a", "conv_a")
    assert torch.equal(back.module(imgs[:2]), t1.module(imgs[:2]))
    assert t1.card["kernel"] == [4, 4] and t1.card["stride"] == [2, 2]  # 3x3 conv then 2x2 pool


def test_graph_sum_rule_and_exact_local_replacement(small):
    model, tcs, imgs = small
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = GraphBuilder(model, tcs, pixel_group=3).build(imgs[5], 2)
    assert g.sum_rule_residual() < 1e-5
    assert g.meta["logit_reproduced_error"] < 1e-9 and g.meta["head_affine"]  # flatten + linear after relu_b
    kinds = g.kinds()
    assert kinds.count("pixels") == 16 and kinds.count("error") == 36 + 36 and kinds[-1] == "logit"
    p = g.prune(0.8)
    assert 0 < p["kept_nodes"] < len(g.nodes) and 0 <= p["error_share"] <= 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the user's model is untouched
    with pytest.raises(ValueError, match="chain"):
        check_chain([tcs[1], tcs[0]])
    with pytest.raises(ValueError, match="target"):
        GraphBuilder(model, tcs).build(imgs[0], 7)


def test_features_are_units_and_replacement_runs(small):
    from vision_interp.capture import capture

    model, tcs, imgs = small
    with attached_transcoder(model, tcs[1]) as a:
        assert a.name == "conv_b/tc"
        acts = capture(model, imgs[:3], ["conv_b/tc"])["conv_b/tc"]
        assert acts.shape == (3, 24, 6, 6) and int((acts > 0).sum(1).max()) <= 4  # at most k per position
        assert features.attached_features(model) == {"conv_b/tc": "observe"}
    assert features.attached_features(model) == {}
    with replaced(model, tcs):
        rep = model(imgs[:4])
    with attached_transcoder(model, tcs[0]), attached_transcoder(model, tcs[1], mode="replace"):
        pass
    out = model(imgs[:4])
    assert not torch.equal(rep, out)  # the replacement differs from the model ...
    with replaced(model, []):
        assert torch.equal(model(imgs[:4]), out)  # ... and nothing stays behind


def _exact_second_block(model: SmallNet) -> Transcoder:
    """A transcoder for pool_a -> relu_b that *is* the block (k = all features, identity decoder): no error."""
    m = ConvTranscoder(4, 6, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1))
    with torch.no_grad():
        m.W_enc.copy_(model.conv_b.weight)
        m.b_enc.copy_(model.conv_b.bias)
        m.W_dec.copy_(torch.eye(6))
    m.eval()
    return Transcoder(m, "pool_a", "relu_b", "conv_b", {})


def test_interventions_agree_exactly_where_the_block_is_exact(small):
    model, (t1, _), imgs = small
    dm = SmallNet().double().eval()
    dm.load_state_dict(model.state_dict())
    tcs = [Transcoder(t1.module.double(), t1.in_layer, t1.out_layer, t1.block, t1.card), _exact_second_block(dm)]
    tcs[1].module.double()
    img = imgs[7].double()
    g = GraphBuilder(dm, tcs).build(img, 1)
    errs2 = [n for n in g.nodes if n["kind"] == "error" and n["block"] == 1]
    assert max(n["value"] for n in errs2) < 1e-12  # the planted block has no error
    te = g.total_effects()
    feats = [i for i, n in enumerate(g.nodes) if n["kind"] == "feature"]
    eps = 1e-6  # small enough that no ReLU or TopK choice flips: the piecewise-linear model is exactly linear here
    measured = measure_interventions(dm, tcs, img, g, feats, scale=1 + eps)
    predicted = eps * te[feats]
    assert torch.allclose(measured, predicted, rtol=1e-5, atol=1e-12)
    last = [i for i in feats if g.nodes[i]["block"] == 1]  # removing a last-block feature: the head is affine, exact
    assert torch.allclose(measure_interventions(dm, tcs, img, g, last, scale=0.0), -te[last], atol=1e-9)
    report = intervention_check(dm, tcs, imgs[:3].double(), [0, 1, 2], top=5, scale=1 + eps)
    assert report["pearson_r"] > 0.99999 and report["cases"] == 15
    t1.module.float()


def test_global_weights_match_graph_edges(small):
    model, tcs, imgs = small
    t1, _ = tcs
    t2 = _exact_second_block(model)
    w = feature_feature_weights(t1, t2)  # (6, 16, 3, 3)
    g = GraphBuilder(model, [t1, t2]).build(imgs[3], 0)
    ids = {(n["block"], n["feature"], n["y"], n["x"]): i for i, n in enumerate(g.nodes) if n["kind"] == "feature"}
    (b, f, y, x), src = next(((k, i) for k, i in ids.items() if k[0] == 0 and 1 <= k[2] <= 4 and 1 <= k[3] <= 4))
    for (b2, f2, y2, x2), dst in ids.items():
        if b2 == 1 and abs(y2 - y) <= 1 and abs(x2 - x) <= 1:
            expect = g.nodes[src]["value"] * float(w[f2, f, y - y2 + 1, x - x2 + 1])
            assert abs(float(g.edges[dst, src]) - expect) < 1e-6
    flw = feature_logit_weights_tc(model, t2)
    assert flw.shape == (6, 5, 6, 6)
    comp = sparsity_comparison(model, [t1, t2])
    assert set(comp) == {"conv_a/tc -> conv_b/tc", "conv_b/tc -> logits"}
    assert 0 < comp["conv_a/tc -> conv_b/tc"]["features"]["top10_share_mean"] <= 1
