"""The committed MNIST CNN transcoders: cards, replacement accuracy, the sum rule on a real graph, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from vision_interp import features

NAMES = ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc")


@pytest.fixture(scope="module")
def tcs():
    return [features.load_transcoder(n) for n in NAMES]


def test_committed_cards_and_replacement_accuracy(tcs, trained_mnist, mnist_test, one_thread):
    c1, c2 = (tc.card for tc in tcs)
    assert (c1["in_layer"], c1["out_layer"], c1["feature_layer"]) == ("input", "pool1", "conv1/tc")
    assert (c2["in_layer"], c2["out_layer"], c2["feature_layer"]) == ("pool1", "pool2", "conv2/tc")
    assert c1["metrics"]["accuracy_all_replaced"] >= 0.98  # the goal, on the whole test set
    imgs, labels = mnist_test.images[:1000], mnist_test.labels[:1000]
    with features.replaced(trained_mnist, tcs):
        acc = float((trained_mnist(imgs).argmax(1) == labels).float().mean())
    assert abs(acc - c1["metrics"]["accuracy_all_replaced"]) < 0.02 and acc >= 0.97  # reproduced on a subset
    # the model is back: no hook stayed
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in trained_mnist.modules())


def test_sum_rule_on_the_committed_model(tcs, trained_mnist, mnist_test, one_thread):
    g = features.GraphBuilder(trained_mnist, tcs).build(mnist_test.images[0], int(mnist_test.labels[0]))
    assert g.sum_rule_residual() < 1e-5
    assert g.meta["logit_reproduced_error"] < 1e-9
    with torch.no_grad():
        assert abs(g.logit - float(trained_mnist(mnist_test.images[:1])[0, g.target])) < 1e-4  # float32 vs float64 model
    p = g.prune(0.8)
    assert p["kept_nodes"] < len(g.nodes) / 2 and 0 < p["error_share"] < 0.5


def test_graph_command_checks_and_resumes(tmp_path, capsys, data_dir, one_thread):
    from vision_interp.cli import main

    out = tmp_path / "g"
    for argv, message in ((["--index", "0", "--target", "x"], "--target"),
                          (["--image", str(tmp_path / "none.png"), "--target", "label"], "--target label needs"),
                          (["--index", "0", "--target", "1", "--transcoders", "nope"], "no transcoder"),
                          (["--index", "0", "--target", "10"], "logits 0..9")):
        assert main(["graph", "--data-dir", str(data_dir), "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    argv = ["graph", "--data-dir", str(data_dir), "--index", "3", "--target", "label", "--out", str(out)]
    assert main(argv) == 0 and "wrote" in capsys.readouterr().out
    assert (out / "index.html").is_file() and (out / "static" / "d3.min.js").is_file()  # the page with the d3 it loads
    doc = json.loads((out / "graph.json").read_text())
    assert doc["label"] == doc["target"] and doc["summary"]["sum_rule_residual"] < 1e-5
    assert doc["nodes"][-1]["kind"] == "logit" and len(doc["nodes"]) == doc["summary"]["pruned_kept_nodes"] + 1
    assert main(argv) == 0 and "kept existing" in capsys.readouterr().out


def test_transcoder_command_checks_arguments(capsys):
    from vision_interp.cli import main

    for argv, message in ((["--k", "9", "--features", "8"], "at most --features"), (["--model", "inceptionv1"], "--block"),
                          (["--block", "input", "pool1", "a", "--block", "pool2", "fc", "b", "--analysis", "/tmp/x"], "chained")):
        assert main(["transcoder", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_transcoder_features_are_units(tcs, trained_mnist, tmp_path, one_thread):
    import vision_interp as vi
    from vision_interp.attribution import attribute
    from vision_interp.featvis import visualize_layer
    from vision_interp.gallery import make_gallery

    model = trained_mnist
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    before = model(x)
    with features.attached_transcoder(model, tcs[0]) as a1, features.attached_transcoder(model, tcs[1], gradient="exact") as a2:
        assert (a1.name, a2.name) == ("conv1/tc", "conv2/tc")
        assert vi.layer_shape(model, "conv2/tc") == (128, 7, 7) and vi.layer_shape(model, "conv1/tc") == (64, 14, 14)
        cache = vi.capture(model, x, ["pool1", "conv2/tc"])
        assert torch.equal(cache["conv2/tc"], tcs[1].module(cache["pool1"]))
        assert cache["conv2/tc:17"].shape == (4, 7, 7)
        assert torch.equal(model(x), before)  # observe mode: outputs unchanged
        f = int(cache["conv2/tc"].mean(dim=(0, 2, 3)).argmax())
        sal = attribute(model, x, target=f"conv2/tc:{f}", method="saliency", abs=False)
        xg = x.clone().requires_grad_(True)
        manual = torch.autograd.grad(tcs[1].module(vi.capture(model, xg, ["pool1"])["pool1"])[:, f].flatten(1).mean(1).sum(), xg)[0]
        assert torch.allclose(sal, manual, atol=1e-6)
    assert features.attached_features(model) == {} and "conv2/tc" not in dict(model.named_modules())
    with features.attached_transcoder(model, tcs[1]) as a:  # straight-through gradients for featvis
        res = visualize_layer(model, a.name, [0, 1, 2], steps=16, progress=False)
        assert res.images.shape == (3, 1, 28, 28)
        g = make_gallery(model, f"{a.name}:0-1", tmp_path / "g", steps=4, batch=2, diverse=0, negative=False, examples=3,
                         dataset=torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(4)), connections=0, progress=False)
    assert g.complete and "conv2/tc:1" in str(g.manifest)
    with features.attached_transcoder(model, tcs[1], mode="replace"):
        rep = model(x)
    with features.replaced(model, [tcs[1]]):
        assert torch.allclose(model(x), rep, atol=1e-5)  # the attached replace mode is the replacement model's block


def test_completeness_figures(tcs, trained_mnist, mnist_test, one_thread):
    from vision_interp.features.completeness import completeness, completeness_markdown, margins, named_mask

    imgs, labels = mnist_test.images[:300], mnist_test.labels[:300]
    every = [{"digit": d, "channel": c, "positions": list(range(49))} for d in range(10) for c in range(16) if c % 10 == d or c >= 10]
    full = completeness(trained_mnist, tcs, every, imgs, labels, graph_images=2)
    assert full["named_cells"] == full["cells"] == 784
    assert full["named_parts_alone"] == full["model"] and full["model"]["margin_share"] == 1.0  # nothing ablated
    few = [{"digit": 0, "channel": 4, "positions": [23, 26]}, {"digit": 1, "channel": 6, "positions": [24]}]
    c = completeness(trained_mnist, tcs, few, imgs, labels, graph_images=2)
    assert c["named_cells"] == 3 and int(named_mask(few, (16, 7, 7)).sum()) == 3
    assert c["named_parts_alone"]["margin_share"] < 0.5 < c["replacement"]["margin_share"]  # 3 cells carry little
    assert c["replacement"]["accuracy"] > 0.95 and 0 < c["replacement"]["mean_error_share"] < 0.5
    assert set(c["replacement"]["per_digit"]) == set(range(10))
    text = completeness_markdown(c)
    assert f"{c['named_parts_alone']['accuracy']:.2%}" in text and "| 9 |" in text
    from pathlib import Path

    from vision_interp import io as vio
    from vision_interp.exercises.report import render_markdown

    results = vio.load_json(Path(__file__).resolve().parents[1] / "galleries" / "mnist_exercise" / "results.json")
    md = render_markdown({**results, "completeness": c})
    assert md.index("How much do the named parts explain?") < md.index("## The mechanism")  # at the top, before the mechanism figure
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    assert margins(logits, torch.tensor([1, 0])).tolist() == [3.0, -3.0]


def test_build_trains_then_resumes(tmp_path, trained_mnist, data_dir, one_thread):
    from vision_interp.features.tc_build import build_transcoders
    from vision_interp.features.transcoder import TranscoderConfig

    blocks = [("pool1", "pool2", str(tmp_path / "t2"), TranscoderConfig(n_features=16, k=2, steps=20, batch_size=8))]
    logs: list[str] = []
    kw = dict(data_dir=data_dir, train_images=100, test_images=100, progress=False, log=logs.append)
    first = build_transcoders(trained_mnist, blocks, **kw)[0]
    again = build_transcoders(trained_mnist, blocks, **kw)[0]
    assert logs[0].startswith("trained conv2/tc") and "already trained" in logs[1]
    assert torch.equal(first.module.W_enc, again.module.W_enc)
    m = again.card["metrics"]
    assert set(m) >= {"fvu", "mean_l0", "dead_features", "accuracy_replaced", "accuracy_all_replaced"} and m["mean_l0"] <= 2


def test_transcoder_command_trains_a_block(tmp_path, capsys, data_dir, one_thread):
    from vision_interp.cli import main

    argv = ["transcoder", "--data-dir", str(data_dir), "--block", "input", "pool1", str(tmp_path / "tc1"), "--features", "8", "--k", "2",
            "--steps", "5", "--train-images", "50", "--test-images", "50", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "conv1/tc: input -> pool1, 8 features, k = 2" in out and "accuracy_replaced" in out
    assert (tmp_path / "tc1.safetensors").is_file() and (tmp_path / "tc1.md").read_text().startswith("# Transcoder card")
    assert main(argv) == 0 and "already trained" in capsys.readouterr().out
