"""Circuits: NMF neuron groups, kernel grids, circuit diagrams (PNG + HTML), the CLI."""

from __future__ import annotations

import html
import json

import pytest
import torch
from PIL import Image

from vision_interp.circuits import (
    circuit_diagram,
    kernel_grid,
    layer_neuron_groups,
    neuron_groups,
    nmf,
    save_kernel_grid,
)
from vision_interp.cli import main
from vision_interp.zoo import MnistCNN

from test_circuits import Planted


def test_nmf_recovers_planted_rank_and_error_falls_with_groups():
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(200, 3, generator=gen)
    h = torch.rand(3, 12, generator=gen) ** 3  # sparse-ish non-negative loadings
    v = w @ h
    errs = [nmf(v, k, seed=0)[2] for k in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 5e-3
    w2, h2, _, _ = nmf(v, 3, seed=0)
    assert w2.min() >= 0 and h2.min() >= 0
    w3, h3, _, _ = nmf(v, 3, seed=0)
    assert torch.equal(w2, w3) and torch.equal(h2, h3)  # seeded


def test_neuron_groups_on_mnist_activations(trained_mnist, mnist_test, tmp_path):
    images = mnist_test.images[:4]
    errors = []
    for k in (1, 2, 4, 8):
        res = layer_neuron_groups(trained_mnist, images, "relu2", k)
        assert res.loadings.shape == (k, 16) and res.groups.shape == (4, k, 14, 14)
        assert res.loadings.min() >= 0 and res.groups.min() >= 0
        torch.testing.assert_close(res.loadings.norm(dim=1), torch.ones(k))
        errors.append(res.error)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # the reported error is the error of the returned factors
    from vision_interp.capture import capture

    act = capture(trained_mnist, images, ["relu2"], detach=True)["relu2"]
    rec = res.reconstruction()
    assert float((act - rec).norm() / act.norm()) == pytest.approx(res.error, rel=1e-3)
    one = neuron_groups(act[0], 3)
    assert one.groups.shape == (3, 14, 14)
    with pytest.raises(ValueError, match="non-negative"):
        neuron_groups(act[0] - 1.0, 2)
    with pytest.raises(ValueError, match="post-ReLU"):
        layer_neuron_groups(trained_mnist, images, "conv2", 2)


def test_kernel_grid_colours_follow_sign(tmp_path):
    w = torch.zeros(2, 3, 1, 1)
    w[0, 0], w[1, 2] = 1.0, -1.0
    grid = kernel_grid(w, scale=1, pad=1)
    assert grid.shape == (3, 2 * 2 + 1, 3 * 2 + 1)
    red, blue, white = grid[:, 1, 1], grid[:, 3, 5], grid[:, 1, 3]
    assert red[0] > red[2] and blue[2] > blue[0] and torch.allclose(white, torch.ones(3))
    path = save_kernel_grid(w, tmp_path / "k.png", scale=4)
    assert Image.open(path).size == (3 * 5 + 1, 2 * 5 + 1)  # 4x4 tiles, 1 px gaps


def test_circuit_diagram_png_html_escaped(tmp_path):
    net = Planted().eval()
    calls = []

    def thumbs(layer, chans):
        calls.append((layer, list(chans)))
        return torch.full((len(chans), 1, 12, 12), 0.5)

    paths = circuit_diagram(net, "b<i>:0", tmp_path, k=2, thumbnails=thumbs, size=32, progress=False)
    assert paths["png"].is_file() and paths["html"].is_file()
    assert sorted(calls) == [("a", [1, 0, 2]), ("b<i>", [0])]
    page = paths["html"].read_text()
    assert "<i>" not in page.replace("<img", "")  # the layer name is escaped everywhere
    assert html.escape("b<i>:0") in page and "a:1" in page and "a:2" in page
    meta = json.loads(paths["json"].read_text())
    assert [u for u, _ in meta["excitatory"]] == ["a:1", "a:0"] and meta["inhibitory"][0][0] == "a:2"
    img = Image.open(paths["png"])
    assert img.size[0] > img.size[1] > 64  # two rows, 4 inputs + target
    # kernels only (no thumbnails) works without featvis
    assert circuit_diagram(net, "b<i>:0", tmp_path / "plain", k=1, thumbnails=False)["png"].is_file()
    with pytest.raises(KeyError, match="a:1"):
        circuit_diagram(net, "b<i>:0", tmp_path / "m", k=1, thumbnails={"b<i>:0": torch.zeros(1, 4, 4)})


def test_cli_weights_and_circuit(tmp_path, capsys, monkeypatch):
    from vision_interp.zoo import registry

    torch.manual_seed(0)
    model = MnistCNN().eval()
    monkeypatch.setitem(registry.MODELS, "mnist_cnn", (lambda pretrained, **kw: model, "test"))
    assert main(["weights", "--model", "mnist_cnn", "--from", "conv1", "--to", "conv2", "--unit", "conv2:3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "direct weights conv1 -> conv2" in out and "excitatory" in out and "inhibitory" in out
    report = json.loads((tmp_path / "direct_conv1_to_conv2_conv2_3.json").read_text())
    assert report["shape"] == [1, 8, 5, 5]
    assert (tmp_path / "direct_conv1_to_conv2_conv2_3.png").is_file()
    assert main(["weights", "--model", "mnist_cnn", "--from", "conv1", "--to", "fc", "--out", str(tmp_path), "--max-units", "2"]) == 0
    assert json.loads((tmp_path / "expanded_conv1_to_fc.json").read_text())["shape"] == [10, 8, 28, 28]
    assert main(["circuit", "--model", "mnist_cnn", "--unit", "conv2:3", "--thumbnails", "none", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "circuit_conv2_3.png").is_file() and (tmp_path / "circuit_conv2_3.html").is_file()
    capsys.readouterr()
    assert main(["weights", "--model", "mnist_cnn", "--from", "conv1", "--to", "conv2", "--unit", "conv2:16", "--out", str(tmp_path)]) == 2
    assert "0..15" in capsys.readouterr().err
    assert main(["weights", "--model", "mnist_cnn", "--from", "conv1", "--to", "conv2", "--unit", "fc:1", "--out", str(tmp_path)]) == 2
    assert "neither" in capsys.readouterr().err
