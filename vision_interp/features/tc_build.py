"""Train, measure and publish the transcoders of a model's conv blocks (the ``transcoder`` command's work).

Each block is trained on MNIST training images, then all are measured together on held-out test
images (:func:`~vision_interp.features.transcoders.measure_transcoders`); the figures go into every
card. A block whose files already exist with the same configuration is loaded, not retrained
(resume: an interrupted run redoes only the blocks it had not saved).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from torch import nn

from .dictionary import _path_for
from .transcoder import TranscoderConfig
from .replacement import measure_transcoders
from .transcoders import Transcoder, load_transcoder, save_transcoder, train_transcoder

__all__ = ["BlockSpec", "build_transcoders", "MNIST_BLOCKS"]

BlockSpec = tuple[str, str, str, TranscoderConfig]  # (in_layer, out_layer, name, config)

# the committed MNIST CNN's blocks: pixels -> pool1 and pool1 -> pool2 (the classifier after pool2 is linear)
MNIST_BLOCKS: tuple[BlockSpec, ...] = (
    ("input", "pool1", "mnist_cnn_conv1_tc", TranscoderConfig(n_features=64, k=4, steps=2000, seed=0)),
    # aggressive AuxK (dead after 10 steps, weight 1, 64 features): 14 dead of 128 on the test set instead of 31
    # with the defaults, FVU 0.0307 instead of 0.0321, at the same training time
    ("pool1", "pool2", "mnist_cnn_conv2_tc", TranscoderConfig(n_features=128, k=8, steps=2000, seed=0, dead_after=10,
                                                              aux_coef=1.0, aux_k=64)),
)


def _saved_matches(name: str, in_layer: str, out_layer: str, config: TranscoderConfig, data: str, model_hash: str) -> Transcoder | None:
    if not _path_for(name).with_suffix(".json").is_file():
        return None
    try:
        tc = load_transcoder(name)
    except (OSError, ValueError):
        return None
    same = (tc.card.get("config") == config.to_dict() and tc.in_layer == in_layer and tc.out_layer == out_layer
            and tc.card.get("data") == data and tc.card.get("model_weights_sha256") == model_hash)
    return tc if same else None


def build_transcoders(model: nn.Module, blocks: Sequence[BlockSpec], *, data_dir: str | os.PathLike | None = None,
                      train_images: int = 10000, test_images: int = 10000, model_name: str = "mnist_cnn",
                      progress: bool = True, log=print) -> list[Transcoder]:
    """Train (or resume) each block's transcoder, measure all on the test set, save each with its card."""
    from ..checks import InputError, InputTypeError, check_instance, check_int, check_model
    from ..data import load_mnist
    from .build import _check_bool, _check_str, _weights_hash
    from .dictionary import check_name_or_path
    from .transcoders import _resolve_block

    check_model(model)  # every argument before any work (MNIST is read only after these)
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, (list, tuple)) or not blocks:
        raise InputError(f"blocks: {blocks!r}; expected a non-empty list of (in_layer, out_layer, name, TranscoderConfig), "
                         "e.g. features.MNIST_BLOCKS")
    for i, block in enumerate(blocks):  # every check before any work
        if not isinstance(block, (list, tuple)) or len(block) != 4 or not all(isinstance(v, str) for v in block[:3]):
            raise InputTypeError(f"blocks[{i}]: {block!r}; expected (in_layer, out_layer, name, TranscoderConfig)")
        in_layer, out_layer, name, config = block
        _resolve_block(model, in_layer, out_layer)
        check_name_or_path(name, f"blocks[{i}] name")
        check_instance(config, TranscoderConfig, f"blocks[{i}] config")
        config.validate()
    names = [str(b[2]) for b in blocks]
    if len(set(names)) != len(names):
        raise InputError(f"blocks: the names {names} repeat; each block's transcoder needs its own file name")
    if data_dir is not None:
        check_name_or_path(data_dir, "data_dir")
        if Path(data_dir).exists() and not Path(data_dir).is_dir():
            raise InputError(f"data_dir: {str(data_dir)!r} is a file; give the folder that holds (or will hold) the MNIST files")
    # the card says "first N images": N can be at most what the split has (60000 train, 10000 test)
    train_images = check_int(train_images, "train_images", minimum=1, maximum=60000)
    test_images = check_int(test_images, "test_images", minimum=1, maximum=10000)
    _check_str(model_name, "model_name")
    _check_bool(progress, "progress")
    if not callable(log):
        raise InputTypeError(f"log: expected a callable log(message) such as print, got {type(log).__name__} {log!r}")
    train = load_mnist("train", data_dir, limit=train_images)
    test = load_mnist("test", data_dir, limit=test_images)
    model_hash = _weights_hash(model)
    tcs = []
    for in_layer, out_layer, name, config in blocks:
        data = f"MNIST train, first {train_images} images, every position of {out_layer}"
        tc = _saved_matches(name, in_layer, out_layer, config, data, model_hash)
        if tc is None:
            tc = train_transcoder(model, in_layer, out_layer, train.images, config, data=data, progress=progress)
            tc.card["model"] = model_name
            tc.card["model_weights_sha256"] = model_hash
            save_transcoder(tc, name)  # saved before measuring: a rerun resumes from here
            log(f"trained {tc.feature_layer} ({in_layer} -> {out_layer}) in {tc.card['training_seconds']} s")
        else:
            log(f"{tc.feature_layer}: {Path(name).name} already trained with this configuration; reusing it")
        tcs.append(tc)
    metrics = measure_transcoders(model, tcs, test.images, test.labels)
    for (_, _, name, _), tc in zip(blocks, tcs):
        tc.card["metrics"] = {**metrics[tc.feature_layer], "accuracy": metrics["accuracy"],
                              "accuracy_all_replaced": metrics["accuracy_all_replaced"],
                              "replaced_together": [t.feature_layer for t in tcs]}
        tc.card["metrics_data"] = f"MNIST test, first {test_images} images (held out)"
        save_transcoder(tc, name)
    return tcs
