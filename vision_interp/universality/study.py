"""The universality study: seed models (+ controls) -> per-layer matches -> numbers for the report.

For each layer (neurons of ``conv1`` and ``conv2``, and the features of a dictionary trained on
each model's ``conv2``) every model's units are matched to every other model's units on the same
test images and positions. Controls (a shuffled-label model, a random-weights model) are matched
the same way, so "model B has a unit like this one" is compared with "a model that learned no
digits has one too".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..features.attach import attached
from ..features.dictionary import Dictionary, layer_activations
from .matching import LayerMatch, match_layer, shared_samples

__all__ = ["UniversalityConfig", "UniversalityResult", "collect_samples", "run_study", "seed_dictionaries"]


@dataclass(frozen=True)
class UniversalityConfig:
    layers: tuple[str, ...] = ("conv1", "conv2")
    feature_layer: str | None = "conv2"  # train/load a dictionary on this layer of every model (None = skip)
    images: int = 2000  # first N MNIST test images
    max_samples: int = 200_000  # (image, position) samples per layer, the same for every model
    threshold: float = 0.5  # "matched" = best-match correlation >= threshold
    seed: int = 0
    sae_features: int = 64
    sae_k: int = 4
    sae_steps: int = 1000

    def validate(self) -> None:
        if not self.layers and not self.feature_layer:
            raise ValueError("give at least one layer or a feature layer")
        if self.images < 10:
            raise ValueError(f"images must be at least 10, got {self.images}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a correlation in [-1, 1], got {self.threshold}")
        if self.max_samples is not None and self.max_samples < 100:
            raise ValueError(f"max_samples must be at least 100, got {self.max_samples}")


@dataclass
class UniversalityResult:
    config: UniversalityConfig
    layers: dict[str, LayerMatch]  # layer name (e.g. "conv2", "conv2/sae") -> matches
    models: dict[str, nn.Module] = field(repr=False)
    controls: dict[str, nn.Module] = field(repr=False)
    dictionaries: dict[str, Dictionary] = field(default_factory=dict, repr=False)


@torch.no_grad()
def collect_samples(model: nn.Module, layer: str, images: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``layer``'s activations as samples (M, C), restricted to the shared sample ``index``."""
    acts = layer_activations(model, layer, images)
    samples = acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1]) if acts.ndim == 4 else acts
    return samples if index is None else samples[index]


def seed_dictionaries(models: dict[str, nn.Module], layer: str, directory: str | os.PathLike, config: UniversalityConfig,
                      train_images: torch.Tensor, log: Callable[[str], None] = print) -> dict[str, Dictionary]:
    """One dictionary per model on ``layer``, loaded from ``directory`` or trained (and saved) there."""
    from ..features.dictionary import load_dictionary, save_dictionary, train_dictionary
    from ..features.sae import SAEConfig

    cfg = SAEConfig(n_features=config.sae_features, k=config.sae_k, steps=config.sae_steps, seed=config.seed)
    out = {}
    for name, model in models.items():
        path = Path(directory) / f"{name}_{layer}_sae"
        if path.with_suffix(".safetensors").is_file():
            d = load_dictionary(path)
            if d.card.get("config") == {**cfg.__dict__} and d.layer == layer:
                out[name] = d
                log(f"{name}: kept dictionary {path.name}")
                continue
        d = train_dictionary(model, layer, train_images, cfg, data=f"MNIST train, first {len(train_images)} images", progress=False)
        d.card["model"] = name
        save_dictionary(d, path)
        log(f"{name}: trained dictionary {path.name} in {d.card['training_seconds']} s")
        out[name] = d
    return out


def run_study(models: dict[str, nn.Module], controls: dict[str, nn.Module], images: torch.Tensor,
              config: UniversalityConfig = UniversalityConfig(), *, dictionaries: dict[str, Dictionary] | None = None,
              log: Callable[[str], None] = print) -> UniversalityResult:
    """Match every layer of ``config`` (and the dictionaries' features) across ``models`` and against ``controls``."""
    from ..units import layer_shape

    config.validate()
    if len(models) < 2:
        raise ValueError(f"need at least two models, got {len(models)}")
    images = images[: config.images]
    layers: dict[str, LayerMatch] = {}
    every = {**models, **controls}
    for layer in config.layers:
        shape = layer_shape(next(iter(models.values())), layer)
        positions = shape[1] * shape[2] if len(shape) == 3 else 1
        index = shared_samples(len(images), positions, config.max_samples, config.seed)
        samples = {n: collect_samples(m, layer, images, index) for n, m in every.items()}
        layers[layer] = match_layer({n: samples[n] for n in models}, controls={n: samples[n] for n in controls},
                                    layer=layer, progress=log)
    if dictionaries:
        missing = set(every) - set(dictionaries)
        if missing:
            raise ValueError(f"dictionaries missing for {sorted(missing)}")
        source = next(iter(dictionaries.values())).layer
        shape = layer_shape(next(iter(models.values())), source)
        index = shared_samples(len(images), shape[1] * shape[2], config.max_samples, config.seed)
        samples = {}
        for n, m in every.items():
            with attached(m, dictionaries[n], check=False) as a:
                samples[n] = collect_samples(m, a.name, images, index)
        name = f"{source}/sae"
        layers[name] = match_layer({n: samples[n] for n in models}, controls={n: samples[n] for n in controls},
                                   layer=name, progress=log)
    return UniversalityResult(config, layers, models, controls, dictionaries or {})
