"""Hostile input for the dictionary side of ``vision_interp.features`` (area "dictionary"): SAEConfig's
fields, train_topk_sae / train_conv_transcoder (config, progress, on_step), fvu, pca_baseline,
reconstruction_metrics, label_purity, evaluate_dictionary and build_transcoders. Every refusal happens
before any work (no training step, no MNIST read); the correct-result cases are planted so the answer is
known exactly (FVU of a tensor with itself is 0, a full-rank PCA reconstructs exactly, a unit whose top
images share one label has purity 1)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from vision_interp import features as F
from vision_interp.features.sae import TopKSAE
from vision_interp.units import UnknownLayerError

from hostile_support import NF, TE, VE, Case

GEOMETRY = ((2, 2), (2, 2), (0, 0, 0, 0))  # a 2x2 stride-2 block: (N, 4, 6, 6) -> (N, 3, 3, 3)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def extend_env(e: SimpleNamespace) -> None:
    e.samples16 = torch.rand(40, 16, generator=_g(11))  # conv2 has 16 channels, like e.d
    e.a_in, e.a_out = torch.rand(2, 4, 6, 6, generator=_g(12)), torch.rand(2, 3, 3, 3, generator=_g(13))
    e.same_file = e.tmp / "dictionary_not_a_folder.txt"
    e.same_file.write_text("a file, not a folder\n")
    e.bn_dict = F.dictionary_from_directions(torch.randn(6, 4, generator=_g(14)), "conv", k=2)  # BNNet's conv: 4 channels


def _steps_seen_sae(e: SimpleNamespace) -> list[tuple[int, bool]]:
    seen: list[tuple[int, bool]] = []
    F.train_topk_sae(torch.rand(32, 4, generator=_g(3)), F.SAEConfig(n_features=4, k=1, steps=3, batch_size=8), progress=False,
                     on_step=lambda step, loss: seen.append((step, isinstance(loss, float) and np.isfinite(loss))))
    return seen


def _steps_seen_tc(e: SimpleNamespace) -> list[tuple[int, bool]]:
    seen: list[tuple[int, bool]] = []
    F.train_conv_transcoder(e.a_in, e.a_out, GEOMETRY, F.TranscoderConfig(n_features=4, k=1, steps=2, batch_size=2), progress=False,
                            on_step=lambda step, loss: seen.append((step, isinstance(loss, float) and np.isfinite(loss))))
    return seen


def _identity_metrics(e: SimpleNamespace) -> dict:
    """An identity dictionary (4 unit directions, k = 4) on positive samples: every sample is rebuilt exactly."""
    d = F.dictionary_from_directions(torch.eye(4), "conv2", k=4)
    return F.reconstruction_metrics(d, torch.rand(20, 4, generator=_g(4)) + 0.1)


def _planted_purity(e: SimpleNamespace) -> dict:
    """Unit 0 is highest on the two images of class 0, unit 1 on the images of classes 1 and 2."""
    acts = torch.tensor([[5.0, 0.1], [4.0, 3.0], [0.5, 2.0], [0.2, 1.0]])
    return F.label_purity(acts, torch.tensor([0, 0, 1, 2]), top=2, n_classes=3)


def _full_rank_pca(e: SimpleNamespace) -> float:
    return F.pca_baseline(torch.rand(20, 4, generator=_g(5)), torch.rand(6, 4, generator=_g(6)), 4)


def _evaluate(e: SimpleNamespace) -> dict:
    return F.evaluate_dictionary(e.m, e.d, F.layer_samples(e.m, "conv2", e.x), e.x, torch.tensor([7, 2]), top=1)


def _evaluate_ok(r: Any) -> bool:
    return (isinstance(r, dict) and r["held_out_images"] == 2 and r["held_out_samples"] == 2 * 14 * 14 and r["fvu"] >= 0 and r["mean_l0"] <= 2
            and 0 <= r["test_accuracy"] <= 1 and 0 <= r["test_accuracy_reconstructed"] <= 1 and r["monosemanticity"]["top"] == 1
            and len(r["feature_frequency"]) == 8)


def _evaluate_bn(e: SimpleNamespace) -> dict:
    """BNNet is left in train mode: the accuracies must run it in eval mode (no BatchNorm update, no dropout)."""
    x = torch.rand(4, 1, 12, 12, generator=_g(7))
    return F.evaluate_dictionary(e.bn, e.bn_dict, F.layer_samples(e.bn, "conv", x), x, torch.tensor([0, 1, 2, 0]), top=1)


def _bt(e: SimpleNamespace, **kw: Any) -> Any:
    return F.build_transcoders(e.m, list(F.MNIST_BLOCKS), **kw)


CASES: list[Case] = [
    # ------------------------------------------------------------------ SAEConfig fields
    Case(F.SAEConfig, "n_features=0", lambda e: F.SAEConfig(n_features=0), VE, "n_features"),
    Case(F.SAEConfig, "n_features=8.0 (a float)", lambda e: F.SAEConfig(n_features=8.0), TE, "n_features"),
    Case(F.SAEConfig, "n_features as a one-element integer tensor", lambda e: F.SAEConfig(n_features=torch.tensor(8), k=2).n_features,
         lambda r: type(r) is int and r == 8, "stored as the int 8", arg="n_features"),
    Case(F.SAEConfig, "seed=-1", lambda e: F.SAEConfig(seed=-1), VE, "seed"),
    Case(F.SAEConfig, "seed=1.5", lambda e: F.SAEConfig(seed=1.5), TE, "seed"),
    Case(F.SAEConfig, "aux_k=0", lambda e: F.SAEConfig(aux_k=0), VE, "aux_k"),
    Case(F.SAEConfig, "aux_k=True", lambda e: F.SAEConfig(aux_k=True), TE, "aux_k"),
    Case(F.SAEConfig, "aux_coef=-0.5", lambda e: F.SAEConfig(aux_coef=-0.5), VE, "aux_coef"),
    Case(F.SAEConfig, "aux_coef=nan", lambda e: F.SAEConfig(aux_coef=float("nan")), NF, "aux_coef"),
    Case(F.SAEConfig, "aux_coef='0.1'", lambda e: F.SAEConfig(aux_coef="0.1"), TE, "aux_coef"),
    Case(F.SAEConfig, "dead_after=0", lambda e: F.SAEConfig(dead_after=0), VE, "dead_after"),
    Case(F.SAEConfig, "dead_after=2.5", lambda e: F.SAEConfig(dead_after=2.5), TE, "dead_after"),
    # ------------------------------------------------------------------ train_topk_sae
    Case(F.train_topk_sae, "a dict instead of an SAEConfig", lambda e: F.train_topk_sae(e.samples16, {"k": 2}), TE, "config"),
    Case(F.train_topk_sae, "a TranscoderConfig as config", lambda e: F.train_topk_sae(e.samples16, F.TranscoderConfig()), TE,
         "config"),
    Case(F.train_topk_sae, "config k larger than n_features", lambda e: F.train_topk_sae(e.samples16, F.SAEConfig(n_features=4, k=5)),
         VE, "k", arg="config"),
    Case(F.train_topk_sae, "progress 'no'", lambda e: F.train_topk_sae(e.samples16, progress="no"), TE, "progress"),
    Case(F.train_topk_sae, "progress 1", lambda e: F.train_topk_sae(e.samples16, progress=1), TE, "progress"),
    Case(F.train_topk_sae, "on_step 5 (not callable)", lambda e: F.train_topk_sae(e.samples16, on_step=5), TE, "on_step"),
    Case(F.train_topk_sae, "on_step 'print' (a string)", lambda e: F.train_topk_sae(e.samples16, on_step="print"), TE, "on_step"),
    Case(F.train_topk_sae, "integer samples", lambda e: F.train_topk_sae(torch.ones(10, 4, dtype=torch.long)), TE, "x"),
    Case(F.train_topk_sae, "no samples (0, 4)", lambda e: F.train_topk_sae(torch.zeros(0, 4)), VE, "x"),
    Case(F.train_topk_sae, "three steps report to on_step", _steps_seen_sae,
         lambda r: r == [(0, True), (1, True), (2, True)], "on_step(0..2, finite float loss)", arg="on_step, progress, config"),
    # ------------------------------------------------------------------ train_conv_transcoder
    Case(F.train_conv_transcoder, "a dict instead of a TranscoderConfig",
         lambda e: F.train_conv_transcoder(e.a_in, e.a_out, GEOMETRY, {"steps": 1}), TE, "config"),
    Case(F.train_conv_transcoder, "an SAEConfig as config",
         lambda e: F.train_conv_transcoder(e.a_in, e.a_out, GEOMETRY, F.SAEConfig()), TE, "config"),
    Case(F.train_conv_transcoder, "progress 'yes'",
         lambda e: F.train_conv_transcoder(e.a_in, e.a_out, GEOMETRY, progress="yes"), TE, "progress"),
    Case(F.train_conv_transcoder, "progress None",
         lambda e: F.train_conv_transcoder(e.a_in, e.a_out, GEOMETRY, progress=None), TE, "progress"),
    Case(F.train_conv_transcoder, "on_step 3 (not callable)",
         lambda e: F.train_conv_transcoder(e.a_in, e.a_out, GEOMETRY, on_step=3), TE, "on_step"),
    Case(F.train_conv_transcoder, "integer block inputs",
         lambda e: F.train_conv_transcoder(torch.ones(2, 4, 6, 6, dtype=torch.long), e.a_out, GEOMETRY), TE, "a_in"),
    Case(F.train_conv_transcoder, "two steps report to on_step", _steps_seen_tc,
         lambda r: r == [(0, True), (1, True)], "on_step(0..1, finite float loss)", arg="on_step, progress, config"),
    # ------------------------------------------------------------------ fvu
    Case(F.fvu, "x a list", lambda e: F.fvu([[1.0, 2.0], [3.0, 4.0]], torch.rand(2, 2)), TE, "x"),
    Case(F.fvu, "x_hat a NumPy array", lambda e: F.fvu(torch.rand(5, 3), np.zeros((5, 3))), TE, "x_hat"),
    Case(F.fvu, "x 4-d activations (not samples)", lambda e: F.fvu(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)), VE, "x"),
    Case(F.fvu, "x with NaN", lambda e: F.fvu(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), torch.zeros(2, 2)), NF, "x"),
    Case(F.fvu, "x_hat with inf", lambda e: F.fvu(torch.rand(3, 2), torch.tensor([[0.0, float("inf")], [0.0, 0.0], [0.0, 0.0]])), NF,
         "x_hat"),
    Case(F.fvu, "x with no variance (all samples equal)", lambda e: F.fvu(torch.ones(6, 3), torch.zeros(6, 3)), VE, "x"),
    Case(F.fvu, "a tensor with itself", lambda e: F.fvu(e.samples16, e.samples16.clone()), lambda r: r == 0.0, "0", arg="x, x_hat"),
    Case(F.fvu, "the mean as reconstruction", lambda e: F.fvu(e.samples16, e.samples16.mean(0).expand(40, 16)),
         lambda r: abs(r - 1.0) < 1e-12, "1", arg="x_hat"),
    # ------------------------------------------------------------------ pca_baseline
    Case(F.pca_baseline, "train a list", lambda e: F.pca_baseline([[0.0, 1.0]], torch.rand(5, 2), 1), TE, "train"),
    Case(F.pca_baseline, "train with NaN", lambda e: F.pca_baseline(torch.full((5, 2), float("nan")), torch.rand(5, 2), 1), NF, "train"),
    Case(F.pca_baseline, "train with no variance", lambda e: F.pca_baseline(torch.ones(5, 2), torch.rand(5, 2), 1), VE, "train"),
    Case(F.pca_baseline, "test 3-d", lambda e: F.pca_baseline(torch.rand(20, 4), torch.rand(2, 4, 3), 1), VE, "test"),
    Case(F.pca_baseline, "test of another width", lambda e: F.pca_baseline(torch.rand(20, 4), torch.rand(5, 3), 1), VE, "test"),
    Case(F.pca_baseline, "one test sample (FVU undefined)", lambda e: F.pca_baseline(torch.rand(20, 4), torch.rand(1, 4), 1), VE, "test"),
    Case(F.pca_baseline, "rank 2.0 (a float)", lambda e: F.pca_baseline(torch.rand(20, 4), torch.rand(5, 4), 2.0), TE, "rank"),
    Case(F.pca_baseline, "full rank reconstructs exactly", _full_rank_pca, lambda r: 0 <= r < 1e-12, "FVU 0",
         arg="train, test, rank"),
    # ------------------------------------------------------------------ reconstruction_metrics
    Case(F.reconstruction_metrics, "dictionary a string", lambda e: F.reconstruction_metrics("mnist_cnn_conv2_sae", e.samples16), TE,
         "dictionary"),
    Case(F.reconstruction_metrics, "dictionary a bare TopKSAE module",
         lambda e: F.reconstruction_metrics(TopKSAE(16, 8, 2), e.samples16), TE, "dictionary"),
    Case(F.reconstruction_metrics, "samples 4-d activations", lambda e: F.reconstruction_metrics(e.d, torch.rand(2, 16, 3, 3)), VE,
         "samples"),
    Case(F.reconstruction_metrics, "samples with inf", lambda e: F.reconstruction_metrics(e.d, torch.full((4, 16), float("inf"))), NF,
         "samples"),
    Case(F.reconstruction_metrics, "one sample (FVU undefined)", lambda e: F.reconstruction_metrics(e.d, torch.rand(1, 16)), VE,
         "samples"),
    Case(F.reconstruction_metrics, "an identity dictionary on positive samples", _identity_metrics,
         lambda r: r["fvu"] < 1e-12 and r["mean_l0"] == 4.0 and r["dead_features"] == 0 and r["feature_frequency"] == [1.0] * 4,
         "FVU 0, L0 4, no dead feature", arg="dictionary, samples"),
    # ------------------------------------------------------------------ label_purity
    Case(F.label_purity, "max_acts a list", lambda e: F.label_purity([[1.0]], torch.tensor([0])), TE, "max_acts"),
    Case(F.label_purity, "max_acts with NaN", lambda e: F.label_purity(torch.full((3, 2), float("nan")), torch.tensor([0, 1, 2]), top=1),
         NF, "max_acts"),
    Case(F.label_purity, "max_acts 1-d", lambda e: F.label_purity(torch.rand(5), torch.zeros(5, dtype=torch.long)), VE, "max_acts"),
    Case(F.label_purity, "top 0", lambda e: F.label_purity(torch.rand(5, 2), torch.zeros(5, dtype=torch.long), top=0), VE, "top"),
    Case(F.label_purity, "top 2.5", lambda e: F.label_purity(torch.rand(5, 2), torch.zeros(5, dtype=torch.long), top=2.5), TE, "top"),
    Case(F.label_purity, "top larger than the number of images",
         lambda e: F.label_purity(torch.rand(5, 2), torch.zeros(5, dtype=torch.long), top=6), VE, "top"),
    Case(F.label_purity, "n_classes 0", lambda e: F.label_purity(torch.rand(5, 2), torch.zeros(5, dtype=torch.long), top=1, n_classes=0),
         VE, "n_classes"),
    Case(F.label_purity, "n_classes 10.0 (a float)",
         lambda e: F.label_purity(torch.rand(5, 2), torch.zeros(5, dtype=torch.long), top=1, n_classes=10.0), TE, "n_classes"),
    Case(F.label_purity, "a label 3 with n_classes 3",
         lambda e: F.label_purity(torch.rand(4, 2), torch.tensor([0, 1, 2, 3]), top=1, n_classes=3), VE, "n_classes"),
    Case(F.label_purity, "float labels", lambda e: F.label_purity(torch.rand(3, 2), torch.tensor([0.0, 1.0, 2.0]), top=1), TE, "labels"),
    Case(F.label_purity, "a negative label", lambda e: F.label_purity(torch.rand(3, 2), torch.tensor([0, -1, 2]), top=1), VE, "labels"),
    Case(F.label_purity, "planted units", _planted_purity,
         lambda r: r["purity"] == [1.0, 0.5] and r["entropy"] == [0.0, 1.0] and r["majority"] == [0, 0] and r["top"] == 2,
         "purity [1, 0.5], entropy [0, 1] bits", arg="max_acts, labels, top, n_classes"),
    # ------------------------------------------------------------------ evaluate_dictionary
    Case(F.evaluate_dictionary, "a string for the model",
         lambda e: F.evaluate_dictionary("mnist_cnn", e.d, e.samples16, e.x, torch.tensor([7, 2])), TE, "model"),
    Case(F.evaluate_dictionary, "dictionary a string",
         lambda e: F.evaluate_dictionary(e.m, "mnist_cnn_conv2_sae", e.samples16, e.x, torch.tensor([7, 2])), TE, "dictionary"),
    Case(F.evaluate_dictionary, "a dictionary of 8 channels for conv2 (16)",
         lambda e: F.evaluate_dictionary(e.m, F.dictionary_from_directions(torch.randn(8, 8, generator=_g(8)), "conv2", k=2),
                                         torch.rand(40, 8), e.x, torch.tensor([7, 2])), VE, "dictionary"),
    Case(F.evaluate_dictionary, "a dictionary for an unknown layer",
         lambda e: F.evaluate_dictionary(e.m, F.dictionary_from_directions(torch.randn(8, 16, generator=_g(9)), "conv9", k=2),
                                         e.samples16, e.x, torch.tensor([7, 2])), UnknownLayerError, "conv9", arg="dictionary"),
    Case(F.evaluate_dictionary, "train_samples a list",
         lambda e: F.evaluate_dictionary(e.m, e.d, [[0.0] * 16], e.x, torch.tensor([7, 2])), TE, "train_samples"),
    Case(F.evaluate_dictionary, "train_samples of width 15",
         lambda e: F.evaluate_dictionary(e.m, e.d, torch.rand(40, 15), e.x, torch.tensor([7, 2])), VE, "train_samples"),
    Case(F.evaluate_dictionary, "train_samples with NaN",
         lambda e: F.evaluate_dictionary(e.m, e.d, torch.full((40, 16), float("nan")), e.x, torch.tensor([7, 2])), NF, "train_samples"),
    Case(F.evaluate_dictionary, "uint8 test_images",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, (e.x * 255).byte(), torch.tensor([7, 2])), VE, "test_images"),
    Case(F.evaluate_dictionary, "3-channel test_images",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, torch.rand(2, 3, 28, 28), torch.tensor([7, 2])), VE, "test_images"),
    Case(F.evaluate_dictionary, "test_images with NaN",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, e.nan, torch.tensor([7, 2])), NF, "test_images"),
    Case(F.evaluate_dictionary, "float test_labels",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, e.x, torch.tensor([7.0, 2.0])), TE, "test_labels"),
    Case(F.evaluate_dictionary, "a negative test label",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, e.x, torch.tensor([7, -2])), VE, "test_labels"),
    Case(F.evaluate_dictionary, "test_labels a list",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, e.x, [7, 2]), TE, "test_labels"),
    Case(F.evaluate_dictionary, "top 0", lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, e.x, torch.tensor([7, 2]), top=0), VE,
         "top"),
    Case(F.evaluate_dictionary, "top 1.0 (a float)",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, e.x, torch.tensor([7, 2]), top=1.0), TE, "top"),
    Case(F.evaluate_dictionary, "top 3 for 2 test images",
         lambda e: F.evaluate_dictionary(e.m, e.d, e.samples16, e.x, torch.tensor([7, 2]), top=3), VE, "top"),
    Case(F.evaluate_dictionary, "two test images, top 1", _evaluate, _evaluate_ok, "FVU >= 0, L0 <= k, accuracies in [0, 1], 392 samples",
         arg="model, dictionary, train_samples, test_images, test_labels, top"),
    Case(F.evaluate_dictionary, "a BatchNorm model left in train mode", _evaluate_bn,
         lambda r: r["held_out_images"] == 4 and r["after_relu"]["reported"] is False and "fvu_after_relu" not in r,
         "measured in eval mode, the model's mode and statistics unchanged", arg="model"),
    # ------------------------------------------------------------------ build_transcoders (all refused before MNIST is read)
    Case(F.build_transcoders, "a string for the model", lambda e: F.build_transcoders("mnist_cnn", list(F.MNIST_BLOCKS)), TE, "model"),
    Case(F.build_transcoders, "a state dict for the model",
         lambda e: F.build_transcoders(e.m.state_dict(), list(F.MNIST_BLOCKS)), TE, "model"),
    Case(F.build_transcoders, "blocks with the same name twice",
         lambda e: F.build_transcoders(e.m, [F.MNIST_BLOCKS[0], F.MNIST_BLOCKS[1][:2] + F.MNIST_BLOCKS[0][2:3] + F.MNIST_BLOCKS[1][3:]]),
         VE, "blocks"),
    Case(F.build_transcoders, "a block with an empty name",
         lambda e: F.build_transcoders(e.m, [("pool1", "pool2", " ", F.TranscoderConfig())]), VE, "name", arg="blocks"),
    Case(F.build_transcoders, "data_dir 5", lambda e: _bt(e, data_dir=5), TE, "data_dir"),
    Case(F.build_transcoders, "data_dir a file", lambda e: _bt(e, data_dir=e.same_file), VE, "data_dir"),
    Case(F.build_transcoders, "train_images 0", lambda e: _bt(e, train_images=0), VE, "train_images"),
    Case(F.build_transcoders, "train_images 2.5", lambda e: _bt(e, train_images=2.5), TE, "train_images"),
    Case(F.build_transcoders, "train_images 70000 (MNIST has 60000)", lambda e: _bt(e, train_images=70000), VE, "train_images"),
    Case(F.build_transcoders, "test_images True", lambda e: _bt(e, test_images=True), TE, "test_images"),
    Case(F.build_transcoders, "test_images 20000 (MNIST has 10000)", lambda e: _bt(e, test_images=20000), VE, "test_images"),
    Case(F.build_transcoders, "model_name 5", lambda e: _bt(e, model_name=5), TE, "model_name"),
    Case(F.build_transcoders, "progress 'yes'", lambda e: _bt(e, progress="yes"), TE, "progress"),
    Case(F.build_transcoders, "log 'print' (a string)", lambda e: _bt(e, log="print"), TE, "log"),
    Case(F.build_transcoders, "log None", lambda e: _bt(e, log=None), TE, "log"),
]
