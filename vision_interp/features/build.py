"""Train, measure and save a model's dictionary in one call (what ``vision-interp features train`` runs)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .dictionary import Dictionary, layer_samples, save_dictionary, train_dictionary
from .metrics import evaluate_dictionary
from .sae import SAEConfig

__all__ = ["build_dictionary"]


def build_dictionary(model: nn.Module, layer: str, out: str | os.PathLike, config: SAEConfig = SAEConfig(), *,
                     data_dir: str | os.PathLike | None = None, train_images: int = 5000, test_images: int = 10000,
                     model_name: str = "mnist_cnn", progress: bool = True) -> Dictionary:
    """Train on the first ``train_images`` MNIST training images, measure on the first
    ``test_images`` test images (held out), save to ``out`` (name or path) and return the dictionary."""
    from ..checks import check_instance, check_int
    from ..data.mnist import load_mnist
    from ..errors import check_model
    from ..units import resolve_layer
    from .dictionary import _check_layer_name, check_name_or_path

    check_model(model)  # every argument before any work (MNIST is read only after these)
    _check_layer_name(layer)
    resolve_layer(model, layer)
    check_name_or_path(out, "out")
    check_instance(config, SAEConfig, "config")
    config.validate(1)
    if data_dir is not None:
        check_name_or_path(data_dir, "data_dir")
    # the card says "first N images": N can be at most what the split has (60000 train, 10000 test)
    train_images = check_int(train_images, "train_images", minimum=1, maximum=60000)
    test_images = check_int(test_images, "test_images", minimum=1, maximum=10000)
    _check_str(model_name, "model_name")
    _check_bool(progress, "progress")
    train = load_mnist("train", data_dir, limit=train_images)
    test = load_mnist("test", data_dir, limit=test_images)
    d = train_dictionary(model, layer, train.images, config, progress=progress,
                         data=f"MNIST train, first {train_images} images, every position of {layer}")
    samples = layer_samples(model, d.layer, train.images)
    d.card["model"] = model_name
    d.card["model_weights_sha256"] = _weights_hash(model)
    d.card["metrics"] = evaluate_dictionary(model, d, samples, test.images, test.labels,
                                           top=min(100, len(test.images)))  # purity over no more images than there are
    d.card["metrics_data"] = f"MNIST test, first {test_images} images (held out)"
    save_dictionary(d, out)
    return d


def _check_str(value: object, arg: str) -> None:
    from ..checks import InputTypeError

    if not isinstance(value, str):
        raise InputTypeError(f"{arg}: expected a str, got {type(value).__name__} {value!r}")


def _check_bool(value: object, arg: str) -> None:
    from ..checks import InputTypeError

    if not isinstance(value, bool):
        raise InputTypeError(f"{arg}: expected True or False, got {type(value).__name__} {value!r}")


def _weights_hash(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def publish_dictionary(model: nn.Module, dictionary: Dictionary, out_dir: str | os.PathLike, *, steps: int = 64,
                       batch: int = 16, data_dir: str | os.PathLike | None = None,
                       neuron_gallery: str | None = "../../mnist_cnn/layers/conv2.html", overwrite: bool = False,
                       progress: bool = True) -> Path:
    """The feature gallery (``vision_interp.gallery.make_gallery`` on the model with the dictionary
    attached, layer ``"<layer>/sae"``) in ``out_dir/gallery`` plus the generated write-up in ``out_dir``."""
    from ..checks import check_instance, check_int
    from ..errors import check_model
    from ..gallery import make_gallery
    from .attach import attached
    from .dictionary import check_name_or_path
    from .writeup import write_writeup

    check_model(model)  # every argument before any work
    check_instance(dictionary, Dictionary, "dictionary")
    check_name_or_path(out_dir, "out_dir")
    steps = check_int(steps, "steps", minimum=1)
    batch = check_int(batch, "batch", minimum=1)
    if data_dir is not None:
        check_name_or_path(data_dir, "data_dir")
    if neuron_gallery is not None:
        _check_str(neuron_gallery, "neuron_gallery")
    _check_bool(overwrite, "overwrite")
    _check_bool(progress, "progress")
    if not isinstance((dictionary.card or {}).get("metrics"), dict) or "monosemanticity" not in dictionary.card["metrics"]:
        from ..checks import InputError

        raise InputError("dictionary: its card has no measured metrics (the write-up is built from them); measure it with "
                         "build_dictionary or evaluate_dictionary first")
    out = Path(out_dir)
    with attached(model, dictionary) as a:
        make_gallery(model, [a.name], out / "gallery", steps=steps, batch=batch, diverse=0, negative=True, examples=8,
                     data_dir=data_dir, progress=progress, model_name=dictionary.card.get("model"), overwrite=overwrite)
    return write_writeup(model, dictionary, out, gallery="gallery/index.html", neuron_gallery=neuron_gallery)
