"""Measured feature labels: the stroke reading is right on known pictures, labels come from the data, dead
features are labelled dead, and each live label has a held-out simulation score in [-1, 1]."""

from __future__ import annotations

import pytest
import torch

from vision_interp import features
from vision_interp.checks import InputError
from vision_interp.features.labels import LABELS_FORMAT, _orientation, feature_labels


@pytest.mark.parametrize("kind", ["horizontal", "vertical", "diagonal \\", "diagonal /"])
def test_stroke_orientation_of_known_bars(kind):
    img = torch.zeros(11, 11)
    for k in range(11):
        y, x = {"horizontal": (5, k), "vertical": (k, 5), "diagonal \\": (k, k), "diagonal /": (10 - k, k)}[kind]
        img[y, x] = 1.0
    got, coherence = _orientation(img)
    assert got == kind and coherence > 0.25
    assert _orientation(torch.ones(5, 5) * 0.3)[0] == "blob"


def test_labels_of_the_mnist_conv1_transcoder(mnist_test):
    from vision_interp.zoo import mnist_cnn

    model = mnist_cnn()
    tc = features.load_transcoder("mnist_cnn_conv1_tc")
    x, y = mnist_test.images[:300], mnist_test.labels[:300]
    r = feature_labels(model, tc, x, y, features=range(12))
    assert r["format"] == LABELS_FORMAT and r["layer"] == "conv1/tc" and r["images"] == 150 and r["held_out"] == 150
    assert [f["feature"] for f in r["features"]] == list(range(12))
    for f in r["features"]:
        assert "writes" in f["label"] and f["writes"].split(" ch ")[0][1:] == "pool1"
        if not f["dead"]:
            assert -1 <= f["score"] <= 1 and f["region"] in f["label"]
            assert (f["digit"] is None) == ("digit" not in f["label"])
    assert r == feature_labels(model, tc, x, y, features=range(12))  # deterministic
    # a feature never active on these images is labelled dead, with no score
    blank = torch.zeros(8, 1, 28, 28)
    dead = feature_labels(model, tc, blank, [0] * 8, features=[0])
    assert dead["features"][0]["dead"] and dead["features"][0]["score"] is None or dead["features"][0]["frequency"] > 0
    with pytest.raises(InputError, match="labels"):
        feature_labels(model, tc, x, y[:10])
    with pytest.raises(InputError, match="images"):
        feature_labels(model, tc, x[:3], y[:3])
