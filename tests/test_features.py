"""Sparse dictionary features: training quality on planted data, features as ordinary units,
feature circuits, save/load, and the committed conv2 dictionary."""

from __future__ import annotations

import copy

import pytest
import torch

import vision_interp as vi
from vision_interp import features
from vision_interp.features import SAEConfig, attach, attached, detach, dictionary_from_directions, fvu, pca_baseline, train_topk_sae


def planted_data(n: int, seed: int, d: int = 16, n_true: int = 32, k: int = 3):
    """Samples made of k of n_true known unit directions with positive magnitudes (a planted dictionary)."""
    gen = torch.Generator().manual_seed(1234)
    dirs = torch.randn(n_true, d, generator=gen)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(n, n_true, generator=g).argsort(1)[:, :k]
    mags = torch.rand(n, k, generator=g) * 2 + 0.5
    z = torch.zeros(n, n_true).scatter(1, idx, mags)
    return z @ dirs, dirs


@pytest.fixture(scope="module")
def planted(one_thread):
    torch.manual_seed(0)
    train, dirs = planted_data(20000, seed=0)
    test, _ = planted_data(4000, seed=1)
    sae = train_topk_sae(train, SAEConfig(n_features=32, k=3, steps=400, batch_size=256, lr=5e-3), progress=False)
    return train, test, dirs, sae


def test_planted_dictionary_is_recovered(planted):
    _, _, dirs, sae = planted
    learned = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    best = (dirs @ learned.T).max(dim=1).values
    assert float(best.mean()) >= 0.9, f"mean best cosine {float(best.mean()):.3f}"


def test_sae_beats_rank_matched_pca_on_held_out_data(planted):
    train, test, _, sae = planted
    z = sae.encode_flat(test)
    assert int((z > 0).sum(1).max()) <= 3  # equal L0: at most k = 3 codes per sample, PCA uses 3 coefficients
    sae_fvu = fvu(test, sae.decode_flat(z))
    pca_fvu = pca_baseline(train, test, 3)
    assert sae_fvu < pca_fvu, (sae_fvu, pca_fvu)
    assert sae_fvu < 0.5 * pca_fvu


def test_training_is_deterministic():
    x, _ = planted_data(3000, seed=2)
    cfg = SAEConfig(n_features=16, k=2, steps=40, batch_size=256, seed=7)
    a = train_topk_sae(x, cfg, progress=False)
    b = train_topk_sae(x, cfg, progress=False)
    c = train_topk_sae(x, SAEConfig(n_features=16, k=2, steps=40, batch_size=256, seed=8), progress=False)
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.W_enc, b.W_enc)
    assert not torch.equal(a.W_dec, c.W_dec)


def test_bad_config_is_refused():
    x, _ = planted_data(100, seed=3)
    with pytest.raises(ValueError, match="1 <= k <= n_features"):
        train_topk_sae(x, SAEConfig(n_features=8, k=9), progress=False)
    with pytest.raises(ValueError, match=r"samples \(M, C\)"):
        train_topk_sae(x[None], SAEConfig(n_features=8, k=2), progress=False)


# ------------------------------------------------------------------------- features are units
@pytest.fixture()
def model_and_dict():
    model = vi.mnist_cnn()
    gen = torch.Generator().manual_seed(0)
    d = dictionary_from_directions(torch.randn(48, 16, generator=gen), "conv2", k=4)
    return model, d


def test_attach_makes_an_ordinary_spatial_layer(model_and_dict):
    model, d = model_and_dict
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    before = model(x)
    with attached(model, d) as a:
        name = a.name
        assert name == "conv2/sae"
        assert vi.layer_shape(model, name) == (48, 14, 14)  # (F, H, W) like a conv layer
        assert str(vi.resolve_unit(model, f"{name}:17@3,4")) == "conv2/sae:17@3,4"
        cache = vi.capture(model, x, ["conv2", name])
        expected = d.module(cache["conv2"])
        assert torch.allclose(cache[name], expected)
        assert cache[f"{name}:17"].shape == (3, 14, 14)
        assert int((cache[name] > 0).sum(1).max()) <= 4
        assert torch.equal(model(x), before)  # observe mode leaves the model's outputs unchanged
        with pytest.raises(vi.UnitRangeError):
            vi.resolve_unit(model, f"{name}:48")
    assert "conv2/sae" not in dict(model.named_modules())
    assert not model.conv2._forward_hooks


def test_hooks_removed_on_errors_and_detach(model_and_dict):
    model, d = model_and_dict
    with pytest.raises(RuntimeError, match="boom"):
        with attached(model, d):
            raise RuntimeError("boom")
    assert not model.conv2._forward_hooks and "conv2/sae" not in dict(model.named_modules())
    a = attach(model, d, "conv2/dict")
    with pytest.raises(ValueError, match="already attached"):
        attach(model, d, "conv2/dict")
    assert features.attached_features(model) == {"conv2/dict": "observe"}
    assert detach(model) == ["conv2/dict"]
    with pytest.raises(ValueError, match="no dictionary"):
        a.remove()
    with pytest.raises(ValueError, match="mode"):
        attach(model, d, mode="bogus")
    with pytest.raises(ValueError, match="gradient"):
        attach(model, d, gradient="bogus")
    with pytest.raises(ValueError, match="name must be"):
        attach(model, d, "conv1/sae")
    with pytest.raises(vi.UnknownLayerError):
        attach(model, d, layer="conv9")


def test_replace_and_splice_modes(model_and_dict):
    model, d = model_and_dict
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    base = model(x)
    conv2 = vi.capture(model, x, ["conv2"])["conv2"]
    rec = d.decode(d.encode(conv2))
    with attached(model, d, mode="replace"):
        replaced = model(x)
    manual = model.fc(model.flatten(model.pool2(model.relu2(rec))))
    assert torch.allclose(replaced, manual, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    with attached(model, d, mode="splice") as a:
        out = vi.capture(model, xg, [a.name, "fc"], stop_early=False)
        assert torch.allclose(out["fc"], base, atol=1e-5)  # values exact
        feats = out[a.name]
        grad = torch.autograd.grad(out["fc"][:, 3].sum(), feats)[0]
    assert grad.abs().sum() > 0  # gradients reach the features


def test_deepcopy_keeps_its_own_features(model_and_dict):
    model, d = model_and_dict
    with attached(model, d):
        clone = copy.deepcopy(model)
    x = torch.rand(1, 1, 28, 28)
    assert vi.capture(clone, x, ["conv2/sae"])["conv2/sae"].shape == (1, 48, 14, 14)
    assert not model.conv2._forward_hooks


def test_features_pass_through_featvis_like_channels(model_and_dict, one_thread):
    from vision_interp.featvis import visualize, visualize_layer

    model, _ = model_and_dict
    d = features.load_dictionary("mnist_cnn_conv2_sae")  # a trained dictionary: features that mean something
    with attached(model, d):
        res = visualize_layer(model, "conv2/sae", [0, 1, 2, 3, 4, 5], steps=32, progress=False)
        chan = visualize(model, "conv2:5", steps=24, progress=False)
    assert res.images.shape == (6, 1, 28, 28) and chan.images.shape == (1, 1, 28, 28)
    assert bool((res.values > 0).all())  # every feature is driven active like a channel, none stuck at zero


def test_features_as_attribution_targets(model_and_dict):
    from vision_interp.attribution import attribute

    model, d = model_and_dict
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with attached(model, d, gradient="exact") as a:
        f = int(vi.capture(model, x, [a.name])[a.name].mean(dim=(0, 2, 3)).argmax())  # an active feature
        sal = attribute(model, x, target=f"{a.name}:{f}", method="saliency", abs=False)
    xg = x.clone().requires_grad_(True)
    d.module.gradient = "exact"
    value = d.module(vi.capture(model, xg, ["conv2"])["conv2"])[:, f].flatten(1).mean(1)
    manual = torch.autograd.grad(value.sum(), xg)[0]  # the feature computed by hand from conv2
    assert sal.abs().sum() > 0
    assert torch.allclose(sal, manual, atol=1e-6)


def test_feature_gradient_modes(model_and_dict):
    """Values are exact in both modes; 'linear' gives inactive features a gradient, equal where active."""
    model, d = model_and_dict
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    grads, values = {}, {}
    with attached(model, d, gradient="exact") as a:
        acts = vi.capture(model, x, [a.name])[a.name][0]
    inactive = int((acts.flatten(1).amax(1) == 0).nonzero()[0])  # a feature off at every position
    y, xx = divmod(int(acts[0].flatten().argmax()), acts.shape[-1])  # feature 0's most active position
    assert float(acts[0, y, xx]) > 0
    for mode in ("exact", "linear"):
        with attached(model, d, gradient=mode) as a:
            xg = x.clone().requires_grad_(True)
            out = vi.capture(model, xg, [a.name])[a.name]
            values[mode] = out.detach()
            grads[mode] = [torch.autograd.grad(out[0, inactive].mean(), xg, retain_graph=True)[0],
                           torch.autograd.grad(out[0, 0, y, xx], xg)[0]]
    assert torch.equal(values["exact"], values["linear"])
    assert grads["exact"][0].abs().sum() == 0 and grads["linear"][0].abs().sum() > 0
    assert torch.allclose(grads["exact"][1], grads["linear"][1], atol=1e-6)


def test_features_in_gallery(model_and_dict, tmp_path, one_thread):
    from vision_interp.gallery import make_gallery

    model, d = model_and_dict
    images = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with attached(model, d, name="conv2/sae") as a:
        res = make_gallery(model, f"{a.name}:0-3", tmp_path / "g", steps=4, batch=4, diverse=0, negative=False,
                           examples=3, dataset=images, connections=0, progress=False)
    assert res.complete
    units = res.manifest["units"] if "units" in res.manifest else res.manifest
    text = str(units)
    for c in range(4):
        assert f"conv2/sae:{c}" in text
    assert (res.out_dir / "index.html").is_file()


# ------------------------------------------------------------------------- feature circuits
def test_feature_circuits_reduce_to_channels_for_one_hot_directions():
    from vision_interp.circuits import classifier_view, expanded_weights

    model = vi.mnist_cnn()
    eye = torch.eye(16)
    d = dictionary_from_directions(eye, "conv2", k=1)
    view = classifier_view(model, "conv2")
    assert torch.allclose(features.feature_logit_weights(model, d, 5), view[:, 5], atol=1e-6)
    out = features.feature_output_weights(model, d, 5)
    assert torch.allclose(out, expanded_weights(model, "conv2", "fc")[:, 5], atol=1e-6)
    inp = features.feature_input_weights(model, d, 5)
    assert torch.allclose(inp, expanded_weights(model, "conv1", "conv2")[5], atol=1e-6)
    mix = dictionary_from_directions(torch.tensor([[3.0, 4.0] + [0.0] * 14]), "conv2", k=1)  # 0.6 e0 + 0.8 e1
    assert torch.allclose(features.feature_logit_weights(model, mix, 0), 0.6 * view[:, 0] + 0.8 * view[:, 1], atol=1e-6)
    top = features.feature_top_connections(model, d, 5, k=3, direction="outputs")
    assert top["unit"] == "conv2/sae:5" and len(top["excitatory"]) == 3
    with pytest.raises(vi.UnitRangeError):
        features.feature_logit_weights(model, d, 16)


def test_save_load_roundtrip(tmp_path):
    x, _ = planted_data(2000, seed=4)
    sae = train_topk_sae(x, SAEConfig(n_features=16, k=2, steps=20, batch_size=256), progress=False)
    d = features.Dictionary(sae, "conv2", {"format": "vision_interp.features/1", "layer": "conv2", "k": 2, "n_features": 16})
    features.save_dictionary(d, tmp_path / "dict")
    for suffix in (".safetensors", ".json", ".md"):
        assert (tmp_path / f"dict{suffix}").is_file()
    back = features.load_dictionary(tmp_path / "dict")
    assert back.layer == "conv2" and back.k == 2 and torch.equal(back.module.W_dec, sae.W_dec)
    assert torch.equal(back.module.scale, sae.scale)
    with pytest.raises(FileNotFoundError, match="known names"):
        features.load_dictionary("no_such_dictionary")


# ------------------------------------------------------------------------- committed dictionary
def test_committed_conv2_dictionary_card_and_reconstruction(mnist_test, one_thread):
    from vision_interp import io as vio

    d = features.load_dictionary("mnist_cnn_conv2_sae")
    assert d.layer == "conv2" and d.n_features >= 32 and d.k <= 8
    card = d.card
    assert vio.sha256_file(features.FEATURES_DIR / "mnist_cnn_conv2_sae.safetensors") == card["weights_sha256"]
    m = card["metrics"]
    for key in ("fvu", "mean_l0", "dead_features", "test_accuracy_reconstructed", "pca_fvu_rank_k", "monosemanticity"):
        assert key in m
    model = vi.mnist_cnn()
    samples = features.layer_samples(model, "conv2", mnist_test.images[:300])
    rec = features.reconstruction_metrics(d, samples)
    assert abs(rec["fvu"] - m["fvu"]) < 0.05  # the card's held-out FVU is reproduced on a subset
    assert rec["mean_l0"] <= d.k


def test_features_command_registers_and_checks_arguments(capsys):
    from vision_interp.cli import main

    for argv, message in ((["--k", "9", "--features", "8"], "at most --features"),
                          (["--gallery-steps", "0"], "--gallery-steps"), (["--lr", "nan"], "--lr")):
        assert main(["features", *argv]) == 2  # refused before loading data or training
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
