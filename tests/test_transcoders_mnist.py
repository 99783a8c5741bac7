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
