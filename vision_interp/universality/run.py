"""One call from seeds to report: what ``vision-interp universality`` runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .. import io as vio
from .seeds import SHUFFLED, load_control, load_seed_models, random_model, seed_model_names, train_seed_models
from .study import UniversalityConfig, run_study, seed_dictionaries

__all__ = ["run_universality", "RANDOM_CONTROL_SEED"]

RANDOM_CONTROL_SEED = 1000


def run_universality(seeds: list[int], models_dir: str | os.PathLike, out_dir: str | os.PathLike,
                     config: UniversalityConfig = UniversalityConfig(), *, data_dir: str | os.PathLike | None = None,
                     train: bool = False, epochs: int = 2, groups: int = 4, steps: int = 64,
                     log: Callable[[str], None] = print) -> Path:
    """Load (or train) the seed models and controls, match, and write the report; returns index.html."""
    from ..data.mnist import load_mnist
    from .report import write_report

    if not isinstance(seeds, (list, tuple)) or len(set(seeds)) < 2:
        raise ValueError(f"seeds: universality compares at least two models; give two or more distinct seeds, got {seeds!r}")
    config.validate()
    if train:
        train_seed_models(seeds, models_dir, epochs=epochs, data_dir=data_dir, log=log)
    models = load_seed_models(models_dir, seeds)
    controls = {SHUFFLED: load_control(models_dir), "random_weights": random_model(RANDOM_CONTROL_SEED)}
    test = load_mnist("test", data_dir, limit=config.images)
    dictionaries = None
    if config.feature_layer:
        train_imgs = load_mnist("train", data_dir, limit=2000).images
        dictionaries = seed_dictionaries({**models, **controls}, config.feature_layer, Path(models_dir) / "features",
                                         config, train_imgs, log=log)
    result = run_study(models, controls, test.images, config, dictionaries=dictionaries, log=log)
    cards = {}
    for name in [*seed_model_names(seeds), f"mnist_cnn_{SHUFFLED}"]:
        p = Path(models_dir) / f"{name}.json"
        if p.is_file():
            c = vio.load_json(p)
            cards[name] = {"labels": c.get("labels"), "test_accuracy": c.get("test_accuracy"), "seed": c.get("config", {}).get("seed")}
    cards["random_weights"] = {"labels": "untrained", "test_accuracy": _accuracy(controls["random_weights"], test), "seed": RANDOM_CONTROL_SEED}
    return write_report(result, out_dir, test.images, groups=groups, steps=steps, cards=cards)


def _accuracy(model, split) -> float:
    from ..zoo.mnist_cnn import evaluate

    return round(evaluate(model, split.images, split.labels)["accuracy"], 5)
