"""A family of MNIST CNNs that differ only in their seed, plus controls, for universality studies.

Every model uses the zoo trainer (:func:`vision_interp.zoo.mnist_cnn.train_mnist_cnn`) with the
same configuration except ``seed``. Two controls tell "the same feature in every model" apart
from chance: a model trained on *shuffled labels* (same data, same seed schedule, no digit
information to learn) and a model with *random weights* (a seeded initialisation, never trained;
rebuilt from its seed, so it needs no checkpoint).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .. import io as vio
from .. import resources
from ..checks import check_int

__all__ = ["SEED_MODELS_DIR", "train_seed_models", "load_seed_models", "load_control", "random_model", "seed_model_names",
           "seed_models_dir"]

SEED_MODELS_DIR = resources.find_model("universality") or resources.models_search_path()[0] / "universality"
SHUFFLED = "shuffled_labels"


def seed_model_names(seeds: list[int]) -> list[str]:
    return [f"mnist_cnn_seed{s}" for s in seeds]


def seed_models_dir(seeds: list[int] | None = None, *, train: bool = False) -> Path:
    """Where the seed models are read (the packaged folder when it holds every requested seed, else the
    user's) or, with ``train``, written: the user's models folder, never inside an installed package."""
    if seeds is not None:
        seeds = [check_int(s, "seeds", minimum=0) for s in seeds]
    user = resources.user_models_dir() / "universality"
    if train:
        return user
    names = seed_model_names(seeds) if seeds is not None else []
    for folder in (SEED_MODELS_DIR, user):
        if all((folder / f"{n}.safetensors").is_file() for n in names) and folder.is_dir():
            return folder
    return SEED_MODELS_DIR


def _card_matches(card_path: Path, config: dict, labels: str) -> bool:
    if not card_path.is_file():
        return False
    card = vio.load_json(card_path)
    return card.get("config") == config and card.get("labels") == labels


def _train_one(name: str, images: torch.Tensor, labels: torch.Tensor, test, config, label_kind: str,
               out: Path, data_sha: str, progress: bool) -> dict:
    from ..zoo.mnist_cnn import evaluate, save_checkpoint, train_mnist_cnn

    t0 = time.perf_counter()
    model = train_mnist_cnn(images, labels, config, progress=progress)
    seconds = time.perf_counter() - t0
    ev = evaluate(model, test.images, test.labels)
    card = {
        "model": "MnistCNN",
        "family": "universality: identical configuration, only the seed differs",
        "labels": label_kind,
        "config": asdict(config),
        "test_accuracy": round(ev["accuracy"], 5),
        "per_class_accuracy": [round(a, 5) for a in ev["per_class_accuracy"]],
        "training_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "data_sha256": data_sha,
        "command": f"vision-interp universality --train --seeds ... --epochs {config.epochs}",
    }
    save_checkpoint(model, out, card, name=name)
    return card


def train_seed_models(seeds: list[int], out_dir: str | os.PathLike | None = None, *, epochs: int = 2,
                      data_dir: str | os.PathLike | None = None, shuffled_control: bool = True,
                      control_seed: int = 100, progress: bool = True, log=print) -> dict[str, dict]:
    """Train (or keep, when a checkpoint with the same config exists) one model per seed, and the
    shuffled-label control. Returns ``{name: card}``. Resumable: each model is written atomically.
    ``out_dir`` defaults to :func:`seed_models_dir` ``(train=True)``."""
    from ..data.mnist import data_checksum, load_mnist
    from ..zoo.mnist_cnn import TrainConfig

    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    out = Path(out_dir) if out_dir is not None else seed_models_dir(train=True)
    train = load_mnist("train", data_dir)
    test = load_mnist("test", data_dir)
    data_sha = data_checksum(data_dir)
    jobs = [(name, TrainConfig(seed=s, epochs=epochs), "true") for name, s in zip(seed_model_names(seeds), seeds)]
    if shuffled_control:
        jobs.append((f"mnist_cnn_{SHUFFLED}", TrainConfig(seed=control_seed, epochs=epochs), SHUFFLED))
    cards = {}
    for name, config, label_kind in jobs:
        if _card_matches(out / f"{name}.json", asdict(config), label_kind):
            cards[name] = vio.load_json(out / f"{name}.json")
            log(f"{name}: kept existing checkpoint (test accuracy {cards[name]['test_accuracy']:.4f})")
            continue
        labels = train.labels
        if label_kind == SHUFFLED:
            gen = torch.Generator().manual_seed(config.seed)
            labels = train.labels[torch.randperm(len(labels), generator=gen)]
        cards[name] = _train_one(name, train.images, labels, test, config, label_kind, out, data_sha, progress)
        log(f"{name}: test accuracy {cards[name]['test_accuracy']:.4f} in {cards[name]['training_seconds']} s")
    return cards


def load_seed_models(directory: str | os.PathLike = SEED_MODELS_DIR, seeds: list[int] | None = None) -> dict[str, nn.Module]:
    """The committed seed models (``mnist_cnn_seed*``), in seed order; ``seeds`` picks some."""
    from ..zoo.mnist_cnn import mnist_cnn

    folder = Path(directory)
    found = sorted(folder.glob("mnist_cnn_seed*.safetensors"), key=lambda p: int(p.stem.removeprefix("mnist_cnn_seed")))
    if seeds is not None:
        want = set(seed_model_names(seeds))
        missing = want - {p.stem for p in found}
        if missing:
            raise FileNotFoundError(f"no checkpoint for {sorted(missing)} in {folder}; train them with "
                                    "`vision-interp universality --train --seeds ...`")
        found = [p for p in found if p.stem in want]
    if not found:
        raise FileNotFoundError(f"no mnist_cnn_seed*.safetensors in {folder}; run `vision-interp universality --train`")
    return {p.stem: mnist_cnn(path=p) for p in found}


def load_control(directory: str | os.PathLike = SEED_MODELS_DIR) -> nn.Module:
    """The shuffled-label control model."""
    from ..zoo.mnist_cnn import mnist_cnn

    path = Path(directory) / f"mnist_cnn_{SHUFFLED}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no shuffled-label control at {path}; run `vision-interp universality --train`")
    return mnist_cnn(path=path)


def random_model(seed: int) -> nn.Module:
    """An untrained MNIST CNN with a seeded initialisation (the random-weights control)."""
    from ..checks import check_int
    from ..zoo.mnist_cnn import MnistCNN

    check_int(seed, "seed")
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = MnistCNN()
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
