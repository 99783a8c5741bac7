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
    from ..data.mnist import load_mnist

    if train_images < 1 or test_images < 1:
        raise ValueError(f"train_images and test_images must be positive, got {train_images}, {test_images}")
    train = load_mnist("train", data_dir, limit=train_images)
    test = load_mnist("test", data_dir, limit=test_images)
    d = train_dictionary(model, layer, train.images, config, progress=progress,
                         data=f"MNIST train, first {train_images} images, every position of {layer}")
    samples = layer_samples(model, d.layer, train.images)
    d.card["model"] = model_name
    d.card["model_weights_sha256"] = _weights_hash(model)
    d.card["metrics"] = evaluate_dictionary(model, d, samples, test.images, test.labels)
    d.card["metrics_data"] = f"MNIST test, first {test_images} images (held out)"
    save_dictionary(d, out)
    return d


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
    from ..gallery import make_gallery
    from .attach import attached
    from .writeup import write_writeup

    out = Path(out_dir)
    with attached(model, dictionary) as a:
        make_gallery(model, [a.name], out / "gallery", steps=steps, batch=batch, diverse=0, negative=True, examples=8,
                     data_dir=data_dir, progress=progress, model_name=dictionary.card.get("model"), overwrite=overwrite)
    return write_writeup(model, dictionary, out, gallery="gallery/index.html", neuron_gallery=neuron_gallery)
