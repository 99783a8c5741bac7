"""Rich display (vision_interp.display): every result renders self-contained HTML whose pictures decode and
show what the numbers say; plain reprs stay one short line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vision_interp as vi
from vision_interp import display
from vision_interp.attribution import LayerAttribution
from vision_interp.attribution.sanity import CompletenessResult, RandomizationResult
from vision_interp.circuits import NeuronGroups, direct_weights, top_connections
from vision_interp.data.examples import top_activating
from vision_interp.featvis import RenderResult
from vision_interp.zoo import MnistCNN

from display_checks import check_html, decode_png

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MnistCNN().eval()


@pytest.fixture(scope="module")
def batch():
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _short(r: str) -> None:
    assert "\n" not in r and len(r) < 240 and "tensor(" not in r, r


def _rgb(im, x: int, y: int) -> tuple[int, int, int]:
    return im.convert("RGB").getpixel((x, y))


def test_featvis_result_shows_each_image_with_its_unit_and_value():
    imgs = torch.zeros(3, 3, 16, 16)
    imgs[0, 0] = 1.0  # pure red picture
    res = RenderResult(images=imgs, values=torch.tensor([1.5, -2.25, 3.0]), descriptions=["a", "b", "c"],
                       activations=torch.tensor([0.5, 0.25, 0.125]), units=["conv2:0", "conv2:1", "conv2:2"], steps=7, seed=3)
    pics, text = check_html(res._repr_html_())
    assert [p.size for p in pics] == [(112, 112)] * 3  # 16 px enlarged 7x to at least 112
    assert _rgb(pics[0], 50, 50) == (255, 0, 0) and _rgb(pics[1], 50, 50) == (0, 0, 0)
    for s in ("conv2:0", "conv2:2", "objective 1.5", "objective -2.25", "activation 0.125", "7 steps", "seed 3"):
        assert s in text
    grid = decode_png(res._repr_png_())
    assert grid.width > 3 * 112 and grid.height >= 112
    _short(repr(res))
    assert "conv2:0" in repr(res) and "3 images" in repr(res)


def test_featvis_grid_says_how_many_are_left_out():
    res = RenderResult(images=torch.rand(5, 1, 8, 8), values=torch.zeros(5), descriptions=list("abcde"))
    pics, text = check_html(display.featvis(res, max_images=2).html)
    assert len(pics) == 2 and "showing 2 of 5 images" in text


def test_attribution_overlay_is_signed_and_the_colour_bar_states_the_scale():
    x = torch.full((2, 1, 28, 28), 0.5)
    a = torch.zeros(2, 1, 28, 28)
    a[:, :, :14, :14] = 2.0   # raises the target: red
    a[:, :, 14:, 14:] = -1.0  # lowers it: blue
    a[1] *= 4
    view = vi.show(x, a, method="saliency", target=7)
    pics, text = check_html(view._repr_html_())
    # per input: input, overlay, heatmap, colour bar
    assert len(pics) == 8
    heat = pics[2]
    r, g, b = _rgb(heat, 10, 10)
    assert r > 200 and b < 100  # full red where the maximum is
    r, g, b = _rgb(heat, 100, 100)
    assert b > r  # blue where negative (half strength)
    assert _rgb(heat, 10, 100) == (255, 255, 255)  # zero is white
    assert "-2 0 +2" in text and "-8 0 +8" in text  # each row's own scale
    assert "saliency of target 7" in text
    shared = check_html(display.attribution(x, a, shared_scale=True).html)[1]
    assert shared.count("-8 0 +8") == 2
    decode_png(view._repr_png_())
    with pytest.raises(ValueError, match="same N, H and W"):
        display.attribution(x, a[:1])


def test_layer_attribution_lists_top_channels_by_magnitude_with_pictures():
    t = torch.zeros(1, 4, 3, 3)
    t[0, 2] = -1.0   # total -9: the largest magnitude
    t[0, 0, 0, 0] = 5.0
    la = LayerAttribution(t, "pool2", "class 7", "integrated_gradients")
    pics, text = check_html(la._repr_html_())
    assert text.index("pool2:2") < text.index("pool2:0") and "-9" in text and "+5" not in text.split("pool2:0")[0]
    _short(repr(la))
    thumbs = {f"pool2:{c}": torch.rand(3, 20, 20) for c in range(4)}
    pics2, _ = check_html(display.layer_attribution(la, torch.rand(1, 1, 12, 12), k=2, pictures=thumbs).html)
    assert len(pics2) == len(pics) + 2  # two channel pictures added
    with pytest.raises(ValueError, match="index"):
        display.layer_attribution(la, index=3)


def test_weights_and_connections(model):
    w = direct_weights(model, "conv1", "conv2")
    pics, text = check_html(display.weights(w, src="conv1", dst="conv2").html)
    vmax = float(w.abs().max())
    assert f"+{vmax:.3g}" in text and "rows: conv2 channels 0..15; columns: conv1 channels 0..7" in text
    conn = top_connections(model, "conv2:3", k=3)
    assert isinstance(conn, dict) and conn["unit"] == "conv2:3"
    pics, text = check_html(conn._repr_html_())
    assert len(pics) == 0 and all(u in text for u, _ in conn["excitatory"] + conn["inhibitory"])
    thumbs = {f"conv1:{c}": torch.rand(1, 9, 9) for c in range(8)}
    pics, text = check_html(vi.show(conn, model, pictures=thumbs).html)
    assert len(pics) == 6 + 6 + 1  # a kernel and a picture per connection, one colour bar
    html = display.connections(conn).html
    assert html.count("background:#3b5bd0") == 3 and html.count("background:#d03b3b") == 3  # inhibitory blue
    with pytest.raises(ValueError, match="needs the dict top_connections"):
        display.connections({"unit": "conv2:3"})


def test_dataset_examples_crop_receptive_fields(model, batch):
    top = top_activating(model, "conv2", batch, k=3, channels=[0, 5])
    pics, text = check_html(top._repr_html_())  # numbers only: no dataset given
    assert not pics and f"#{int(top.indices[0, 0])}" in text
    pics, text = check_html(display.dataset_examples(top, batch, model).html)
    assert len(pics) == 6 and all(p.size == (56, 56) for p in pics)  # 14 px receptive field, enlarged 4x
    assert "receptive-field patches" in text
    _short(repr(top))


def test_neuron_groups_and_sanity_results():
    g = NeuronGroups(groups=torch.rand(3, 5, 5), loadings=torch.eye(3, 8), error=0.125, iterations=40)
    pics, text = check_html(g._repr_html_())
    assert len(pics) == 3 and "error 0.1250 after 40" in text and "channels 1 (1.00)" in text
    decode_png(g._repr_png_())
    _short(repr(g))
    c = CompletenessResult(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), 16)
    _, text = check_html(c._repr_html_())
    assert "20.000%" in text and "IG completeness (16 steps)" in text
    r = RandomizationResult(["fc", "conv2"], torch.tensor([[0.5, 0.3], [0.1, -0.1]]), "saliency")
    _, text = check_html(r._repr_html_())
    assert "+0.400" in text and "+0.000" in text
    assert str(c).startswith("IG completeness")  # str stays the text summary


def test_dictionary_card_and_features(model, batch):
    d = vi.load_dictionary("mnist_cnn_conv2_sae")
    pics, text = check_html(d._repr_html_())
    assert "64 features" in text and "0.08899" in text and len(pics) == 2  # directions + colour bar
    assert pics[0].size == (64 * 8, 16 * 8)
    _short(repr(d))
    pics, text = check_html(display.dictionary_features(d, model, batch, features=[0, 3], k=2).html)
    assert "conv2/sae:0" in text and "conv2/sae:3" in text and len(pics) == 4
    assert not vi.features.attached_features(model)  # detached again


def test_induction_report_shows_grids_and_attention_with_tokens():
    gpt = vi.load_gpt2("induction_2l")
    rep = vi.analyze_induction(gpt, model_name="toy", seq_len=6, batch=2, ablation=(), composition=False,
                               attribution=False, progress=False)
    html = rep._repr_html_()
    pics, text = check_html(html)
    assert len(pics) >= 2  # induction and previous-token grids
    best = rep.top("induction", 1)[0]
    assert f"head {best[0]}.{best[1]}" in text and "BOS" in text
    T = rep.example_patterns.shape[-1]
    assert html.count("<td") == 2 * T * T or html.count("<td") == T * T  # one or two heads, every query x key
    _short(repr(rep))


def test_show_dispatch_and_saving(tmp_path):
    v = vi.show(torch.rand(2, 3, 10, 10), captions=["a", "b"])
    assert vi.show(v) is v and len(check_html(v.html)[0]) == 2
    p = v.save(tmp_path / "v.html")
    assert p.read_text().startswith("<!doctype html>")
    with pytest.raises(TypeError, match="no display for"):
        vi.show(object())
    with pytest.raises(ValueError, match="display.weights"):
        vi.show(torch.rand(4, 8, 5, 5))


def test_progress_bars_use_tqdm_auto_and_switch_off(model, batch, capsys):
    plain = [p for p in (REPO / "vision_interp").rglob("*.py")
             if re.search(r"^\s*(from tqdm import|import tqdm\b|from tqdm\.(std|notebook|rich) import)", p.read_text(), re.M)]
    assert not plain, f"use tqdm.auto (a widget in notebooks, a bar in terminals): {plain}"
    top_activating(model, "conv2", batch, k=1, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
    top_activating(model, "conv2", batch, k=1, batch_size=2, progress=True)
    assert "examples conv2" in capsys.readouterr().err


def test_attribution_graph_shows_its_pruned_drawing_and_figures():
    """A graph on a tiny two-block chain: the SVG has one circle per kept node, edges of both signs are
    coloured by sign, and the sentence carries the graph's own measured figures."""
    from vision_interp.features import load_transcoder, attribution_graph

    m = vi.mnist_cnn()
    x = vi.data.load_mnist("test", limit=1).images
    tcs = [load_transcoder("mnist_cnn_conv1_tc"), load_transcoder("mnist_cnn_conv2_tc")]
    g = attribution_graph(m, tcs, x[0], target=int(m(x).argmax()))
    html = g._repr_html_()
    _, text = check_html(html)
    kept = g.prune(0.8)["kept_nodes"]
    assert html.count("<circle") == kept + 1  # the kept nodes and the logit
    assert 'stroke="#2166ac"' in html and f"{g.summary()['nodes']} nodes" in text
    _short(repr(g))
    assert f"target {g.target}" in repr(g) and "sum-rule residual" in repr(g)


def test_gallery_result_shows_what_the_call_did_and_its_pictures(tmp_path):
    """A GalleryResult (hand-made manifest, two real PNG files) shows its counts, its layers, each unit's picture
    embedded (the view travels without the folder) with its label, and says when the gallery is incomplete."""
    from vision_interp.gallery.plan import GalleryResult
    from vision_interp.images import save_png

    torch.manual_seed(0)
    for c in (0, 1):
        save_png(torch.rand(1, 28, 28), tmp_path / f"img/{c}.png")
    manifest = {"layers": [{"name": "conv2", "units": 2, "shape": [64, 14, 14]}], "labels": {"conv2:1": {"name": "loops"}},
                "units": {f"conv2:{c}": {"files": {"main": f"img/{c}.png"}} for c in (0, 1)}}
    res = GalleryResult(tmp_path, True, 2, 3, 1.25, manifest)
    html = display.html(res)
    _, text = check_html(html)
    assert html.count("data:image/png;base64,") == 2 and "loops" in text and "conv2:0" in text
    assert "2 units rendered by this call, 3 already there" in text and "64 x 14 x 14" in text
    assert "incomplete" not in text
    assert "incomplete" in display.html(GalleryResult(tmp_path, False, 0, 0, 0.0, manifest))
    t = display.text(res)
    _short(t)
    assert "2 units" in t and "complete" in t
    assert display.html(GalleryResult(tmp_path, True, 0, 0, 0.0, None)).count("<img") == 0  # no manifest: no pictures


def test_universality_result_shows_matches_against_controls():
    """Two models that share units and one control that does not: the table shows the median best match (near
    1 for copies), the control's median (low) and the verdict by the report's margin rule."""
    from vision_interp.universality.matching import match_layer
    from vision_interp.universality.study import UniversalityConfig, UniversalityResult

    torch.manual_seed(0)
    a = torch.randn(500, 6)
    b = a[:, torch.randperm(6)] + 0.05 * torch.randn(500, 6)  # the same units, permuted
    lm = match_layer({"A": a, "B": b}, controls={"random": torch.randn(500, 6)}, layer="conv1")
    res = UniversalityResult(UniversalityConfig(layers=("conv1",), feature_layer=None, images=50), {"conv1": lm}, {}, {})
    html = res._repr_html_()
    _, text = check_html(html)
    med = float(lm.best_match_values().median())
    ctrl = float(lm.control_best_values("random").median())
    assert med > 0.95 and ctrl < 0.3
    assert f"{med:.3f}" in text and f"random {ctrl:.3f}" in text and "above chance (margin" in text
    assert "100.0%" in text  # every unit matched in the other model
    _short(repr(res))
    assert "conv1 median best match" in repr(res)
