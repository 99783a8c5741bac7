"""Universality: exact assignment, correlation matching on a planted shared feature, controls,
and the committed seed models."""

from __future__ import annotations

import itertools

import pytest
import torch

from vision_interp.universality.matching import (correlation_matrix, linear_assignment, match_layer, match_pair, partial_out,
                                                 patch_ink, shared_samples, weight_cosine_best)
from vision_interp.universality.seeds import random_model
from vision_interp.universality.study import UniversalityConfig, collect_samples, run_study


def brute_force(cost: torch.Tensor) -> float:
    n, m = cost.shape
    if n <= m:
        return min(sum(float(cost[i, p[i]]) for i in range(n)) for p in itertools.permutations(range(m), n))
    return min(sum(float(cost[p[j], j]) for j in range(m)) for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (5, 5), (3, 6), (6, 3)])
def test_linear_assignment_is_optimal(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    for _ in range(8):
        cost = torch.randn(*shape, generator=gen, dtype=torch.float64)
        rows, cols = linear_assignment(cost)
        k = min(shape)
        assert len(set(rows)) == len(set(cols)) == k
        assert abs(sum(float(cost[r, c]) for r, c in zip(rows, cols)) - brute_force(cost)) < 1e-9


def test_linear_assignment_recovers_a_permutation():
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    score = torch.rand(40, 40, generator=torch.Generator().manual_seed(1)) * 0.5
    score[torch.arange(40), perm] = 1.0
    rows, cols = linear_assignment(-score)
    assert cols == perm.tolist()


def test_correlation_matrix():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, generator=gen)
    b = torch.stack([2 * a[:, 1] + 1, -a[:, 0], torch.zeros(500)], 1)
    c = correlation_matrix(a, b)
    assert torch.allclose(c[1, 0], torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(c[0, 1], torch.tensor(-1.0, dtype=torch.float64))
    assert torch.all(c[:, 2] == 0)  # a constant (dead) unit matches nothing
    with pytest.raises(ValueError, match="same M"):
        correlation_matrix(a, b[:10])


def planted_pair():
    """Two random MNIST CNNs; model B's conv1 channel 5 is an exact copy of model A's channel 2."""
    a, b = random_model(11), random_model(12)
    with torch.no_grad():
        b.conv1.weight[5] = a.conv1.weight[2]
        b.conv1.bias[5] = a.conv1.bias[2]
    return a, b


def test_planted_shared_filter_is_matched(mnist_test, one_thread):
    a, b = planted_pair()
    c = random_model(13)
    images = mnist_test.images[:200]
    sa, sb, sc = (collect_samples(m, "conv1", images, None) for m in (a, b, c))
    ab = match_pair(sa, sb)
    assert int(ab.best_index[2]) == 5 and float(ab.best[2]) > 0.9999
    assert ab.assignment[2] == 5  # the one-to-one matching pairs them too
    others = torch.cat([ab.best[torch.arange(8) != 2], match_pair(sa, sc).best])
    assert float(others.max()) < 0.95  # unrelated random filters are not matched at ~1
    lm = match_layer({"a": sa, "b": sb, "c": sc}, layer="conv1")
    assert float(lm.best_in_all_others("a")[2]) < 0.95  # model c does not share it
    assert 0.0 <= lm.fraction_universal(0.5) <= 1.0


def test_study_on_planted_models(mnist_test, one_thread):
    a, b = planted_pair()
    config = UniversalityConfig(layers=("conv1",), feature_layer=None, images=100, max_samples=5000)
    res = run_study({"a": a, "b": b}, {"random": random_model(14)}, mnist_test.images, config, log=lambda _: None)
    lm = res.layers["conv1"]
    assert lm.n_samples == 5000 and res.comparisons["all"]["conv1"].n_samples == 5000
    assert float(lm.pairs[("a", "b")].best[2]) > 0.9999 and float(lm.pairs[("b", "a")].best[5]) > 0.9999
    assert float(lm.controls[("a", "random")].best.max()) < 0.95
    with pytest.raises(ValueError, match="at least two"):
        run_study({"a": a}, {}, mnist_test.images, config)
    with pytest.raises(ValueError, match="threshold"):
        UniversalityConfig(threshold=2.0).validate()


def test_patch_ink_finds_the_positions_that_see_ink():
    from vision_interp.data.examples import receptive_field

    images = torch.zeros(2, 1, 28, 28)
    images[1, 0, 10, 20] = 1.0  # one bright pixel in the second image
    peak, mean = patch_ink(images, receptive_field(random_model(0), "conv1"), (28, 28))
    seen = (peak > 0.5).reshape(2, 28, 28)
    assert not seen[0].any()  # a blank image has no informative position
    ys, xs = seen[1].nonzero().T
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8, 12, 18, 22)  # 5 x 5 receptive field around the pixel
    assert torch.allclose(mean.reshape(2, 28, 28)[1, 10, 20], torch.tensor(1 / 25))
    with pytest.raises(ValueError, match="blank"):
        shared_samples(1, 784, None, allowed=seen[0].reshape(-1))


def test_partial_out_removes_the_covariate():
    gen = torch.Generator().manual_seed(0)
    ink, own = torch.rand(1000, generator=gen), torch.randn(1000, generator=gen)
    res = partial_out(torch.stack([3 * ink + 1, 2 * ink + own], 1), ink)
    assert float(res[:, 0].abs().max()) < 1e-5  # a pure ink-amount unit has nothing left
    assert float(correlation_matrix(res[:, 1:], own[:, None])[0, 0]) > 0.99


def test_weight_cosine_matches_filters_up_to_sign():
    a, b = random_model(11), random_model(12)
    with torch.no_grad():
        b.conv1.weight[5] = -3 * a.conv1.weight[2]
    best = weight_cosine_best(a.conv1.weight, b.conv1.weight)
    assert abs(float(best[2]) - 1.0) < 1e-9 and float(best[torch.arange(8) != 2].max()) < 0.95


def test_feature_measure_separates_a_shared_feature_from_an_ink_detector(mnist_test, one_thread):
    """Model b shares model a's unit (an oriented stroke filter with a positive sum, slightly perturbed);
    the control's filters are random positive blobs that only follow the amount of ink. Over all
    positions the control scores almost as high as the true match (less than the verdict's margin
    apart); on inked positions with the ink amount partialled out it does not."""
    from vision_interp.universality.report import MARGIN

    gen = torch.Generator().manual_seed(0)
    edge = torch.zeros(5, 5)
    edge[:, :2], edge[:, 3:] = -1.0, 1.0
    noise = torch.randn(5, 5, generator=gen)
    noise -= noise.mean()
    a, b, c = random_model(11), random_model(12), random_model(13)
    stroke = (2 * torch.ones(5, 5) + edge) / 5
    with torch.no_grad():
        a.conv1.weight[2, 0] = stroke
        b.conv1.weight[5, 0] = stroke + 0.1 * noise
        c.conv1.weight.copy_(torch.rand(c.conv1.weight.shape, generator=gen) * 0.8)
    config = UniversalityConfig(layers=("conv1",), feature_layer=None, images=200, max_samples=None)
    res = run_study({"a": a, "b": b}, {"blobs": c}, mnist_test.images, config, log=lambda _: None)
    old, new = res.comparisons["all"]["conv1"], res.layers["conv1"]
    assert int(new.pairs[("a", "b")].best_index[2]) == 5 and int(old.pairs[("a", "b")].best_index[2]) == 5
    old_gap = float(old.pairs[("a", "b")].best[2] - old.controls[("a", "blobs")].best[2])
    new_gap = float(new.pairs[("a", "b")].best[2] - new.controls[("a", "blobs")].best[2])
    assert old_gap < MARGIN  # the former measure cannot tell the shared feature from an ink detector
    assert float(new.pairs[("a", "b")].best[2]) > 0.95 and new_gap > 2 * MARGIN
    assert new.n_samples < old.n_samples  # blank positions are left out


def test_committed_seed_models_differ_only_in_seed():
    from vision_interp import io as vio
    from vision_interp.universality.seeds import SEED_MODELS_DIR, load_control, load_seed_models

    models = load_seed_models()
    assert len(models) >= 4
    configs = []
    for name in models:
        card = vio.load_json(SEED_MODELS_DIR / f"{name}.json")
        assert card["labels"] == "true" and card["weights_sha256"] == vio.sha256_file(SEED_MODELS_DIR / f"{name}.safetensors")
        assert card["test_accuracy"] > 0.95
        cfg = dict(card["config"])
        cfg.pop("seed")
        configs.append(cfg)
    assert all(c == configs[0] for c in configs)
    weights = [m.conv1.weight for m in models.values()]
    assert not torch.equal(weights[0], weights[1])
    load_control()  # the shuffled-label control exists


def test_universality_command_registers_and_checks_arguments(capsys, tmp_path):
    from vision_interp.cli import main

    for argv, message in ((["--seeds", "0"], "at least two different seeds"), (["--seeds", "a,b"], "comma-separated integers"),
                          (["--threshold", "1.5"], "--threshold"), (["--images", "1"], "--images")):
        assert main(["universality", "--out", str(tmp_path / "u"), *argv]) == 2  # before any model is trained or loaded
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "u").exists()


def test_unit_picture_replaces_a_constant_visualization_and_says_so(mnist_test, one_thread):
    from vision_interp.data.examples import receptive_field, top_activating
    from vision_interp.universality.report import PICTURE_KINDS, unit_picture
    from vision_interp.universality.seeds import load_seed_models

    model = next(iter(load_seed_models().values()))
    images = mnist_test.images[:200]
    flat = torch.full((1, 28, 28), 0.5)
    flat[0, 13, 13] = 0.6  # nearly uniform: a faint dot is not something to compare
    textured = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0))
    for layer, constant_kind in (("conv1", "kernel"), ("conv2", "top-mean")):
        rf = receptive_field(model, layer)
        top = top_activating(model, layer, images, k=3, channels=[2]).for_channel(2)
        pic, kind, crops = unit_picture(model, layer, 2, textured, images, top)
        assert kind == "vis" and pic.shape[-2:] == (rf.height, rf.width)  # cropped to the receptive field
        assert crops.shape == (3, 1, rf.height, rf.width) and float(crops.abs().sum()) > 0
        pic, kind, _ = unit_picture(model, layer, 2, flat, images, top)
        assert kind == constant_kind and kind in PICTURE_KINDS and float(pic.std()) > 0.02
    k3, _, _ = unit_picture(model, "conv1", 3, flat, images, top_activating(model, "conv1", images, k=3, channels=[3]).for_channel(3))
    k2, _, _ = unit_picture(model, "conv1", 2, flat, images, top_activating(model, "conv1", images, k=3, channels=[2]).for_channel(2))
    assert not torch.equal(k2, k3)  # the replacement differs between units


def test_committed_universality_pictures_show_something_and_say_what():
    import json
    from pathlib import Path

    from PIL import Image, ImageStat

    from vision_interp.universality.report import PICTURE_KINDS

    root = Path(__file__).resolve().parents[1] / "galleries" / "universality"
    report = json.loads((root / "report.json").read_text())
    page = (root / "index.html").read_text()
    for layer, groups in report["groups"].items():
        slug = layer.replace("/", "_")
        for g_i, g in enumerate(groups):
            assert set(g["picture"]) == set(g["matches"]) and set(g["picture"].values()) <= set(PICTURE_KINDS)
            for name in g["matches"]:
                with Image.open(root / f"img/{slug}/g{g_i}-{name}-vis.png") as im:
                    assert ImageStat.Stat(im.convert("L")).stddev[0] > 10, f"{layer} group {g_i} {name}: a (nearly) uniform picture"
    assert all(PICTURE_KINDS[k].split(";")[0] in page for g in report["groups"]["conv1"] for k in g["picture"].values())
