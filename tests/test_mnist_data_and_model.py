"""MNIST: IDX parsing of the real files, corrupt-file errors, training, the committed checkpoint, CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from vision_interp import cli
from vision_interp.data import load_mnist, read_idx
from vision_interp.data.paths import data_dir as resolve_data_dir
from vision_interp.io import CorruptFileError
from vision_interp.zoo.mnist_cnn import DEFAULT_CHECKPOINT, TrainConfig, evaluate, train_mnist_cnn

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_idx_real_files(data_dir):
    raw = data_dir / "mnist" / "raw"
    imgs = read_idx(raw / "train-images-idx3-ubyte")
    labels = read_idx(raw / "train-labels-idx1-ubyte")
    assert imgs.shape == (60000, 28, 28) and imgs.dtype == np.uint8
    assert np.bincount(labels).tolist() == TRAIN_COUNTS
    test = load_mnist("test", data_dir, download=False)
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.float32
    assert 0.0 <= float(test.images.min()) and float(test.images.max()) == 1.0
    assert torch.bincount(test.labels).tolist() == TEST_COUNTS


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_idx_errors_name_file_and_problem(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "good-idx3-ubyte"
    good.write_bytes(_idx_bytes(arr))
    assert np.array_equal(read_idx(good), arr)
    gz = tmp_path / "good-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(arr)))
    assert np.array_equal(read_idx(gz), arr)

    cases = {
        "truncated": (_idx_bytes(arr)[:-5], "truncated"),
        "magic": (b"\x08\x08" + _idx_bytes(arr)[2:], "magic"),
        "trailing": (_idx_bytes(arr) + b"xx", "trailing"),
        "header": (_idx_bytes(arr)[:9], "header truncated"),
    }
    for name, (blob, msg) in cases.items():
        p = tmp_path / f"{name}-idx"
        p.write_bytes(blob)
        with pytest.raises(CorruptFileError, match=msg) as e:
            read_idx(p)
        assert str(p) in str(e.value)
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(gzip.compress(_idx_bytes(arr))[:-10])
    with pytest.raises(CorruptFileError, match="gzip"):
        read_idx(bad_gz)
    with pytest.raises(CorruptFileError, match="does not match"):
        read_idx(good, expect_shape=(None, 28, 28))


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("VISION_INTERP_DATA", raising=False)
    monkeypatch.setenv("VISION_INTERP_CACHE", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "data"
    monkeypatch.setenv("VISION_INTERP_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    other = tmp_path / "explicit"
    other.mkdir()
    assert resolve_data_dir(other) == other
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")


def test_tiny_training_beats_chance(data_dir):
    train = load_mnist("train", data_dir, download=False, limit=4096)
    test = load_mnist("test", data_dir, download=False, limit=1000)
    model = train_mnist_cnn(train.images, train.labels, TrainConfig(epochs=2, batch_size=32, limit=4096), progress=False)
    acc = evaluate(model, test.images, test.labels)["accuracy"]
    assert acc > 0.85, acc  # 256 steps; chance is 0.10


def test_training_is_deterministic(data_dir):
    train = load_mnist("train", data_dir, download=False, limit=512)
    cfg = TrainConfig(epochs=1, batch_size=64, limit=512)
    a = train_mnist_cnn(train.images, train.labels, cfg, progress=False)
    b = train_mnist_cnn(train.images, train.labels, cfg, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_committed_checkpoint_reaches_99(trained_mnist, mnist_test):
    ev = evaluate(trained_mnist, mnist_test.images, mnist_test.labels)
    assert ev["accuracy"] >= 0.99, ev["accuracy"]
    card = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
    assert abs(card["test_accuracy"] - ev["accuracy"]) < 1e-4
    assert sum(sum(r) for r in ev["confusion"]) == 10000


def test_cli_train_layers_and_errors(tmp_path, data_dir, capsys):
    out = tmp_path / "m"
    rc = cli.main(["train-mnist", "--data-dir", str(data_dir), "--out", str(out), "--epochs", "1", "--limit", "256", "--no-progress"])
    assert rc == 0
    card = json.loads((out / "mnist_cnn.json").read_text())
    assert card["config"]["limit"] == 256 and len(card["data_sha256"]) == 64
    assert (out / "mnist_cnn.md").read_text().startswith("# Model card")
    assert cli.main(["layers", "--model", str(out / "mnist_cnn.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "conv2" in text and "16x14x14" in text
    assert cli.main(["layers", "--model", "mnist_cn"]) == 2
    assert "Did you mean mnist_cnn" in capsys.readouterr().err
    assert cli.main(["train-mnist", "--epochs", "0", "--data-dir", str(data_dir)]) == 2


def test_load_mnist_rejects_bad_limit(data_dir):
    with pytest.raises(ValueError, match="limit must be a positive"):
        load_mnist("test", data_dir, download=False, limit=-5)


def test_random_zoo_mnist_cnn_is_frozen_like_the_pretrained_one():
    from vision_interp.zoo import mnist_cnn

    model = mnist_cnn(pretrained=False)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_spec_names_the_checkpoint_the_zoo_loaded(tmp_path):
    """model_spec(...).weights_file is how a consumer (the gallery's checkpoint hash) learns the file
    without importing the zoo model module; random weights have none."""
    from vision_interp.zoo import load_model
    from vision_interp.zoo.mnist_cnn import DEFAULT_CHECKPOINT
    from vision_interp.zoo.spec import model_spec

    assert model_spec(load_model("mnist_cnn")).weights_file == str(DEFAULT_CHECKPOINT)
    assert model_spec(load_model("mnist_cnn", pretrained=False)).weights_file is None
