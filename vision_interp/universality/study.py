"""The universality study: seed models (+ controls) -> per-layer matches -> numbers for the report.

For each layer (neurons of ``conv1`` and ``conv2``, and the features of a dictionary trained on
each model's ``conv2``) every model's units are matched to every other model's units on the same
test images and positions. Controls (a shuffled-label model, a random-weights model) are matched
the same way, so "model B has a unit like this one" is compared with "a model that learned no
digits has one too".

Three measures per layer (see :data:`MEASURES`): the one the verdict uses ("features") keeps only
*informative* positions (the receptive field holds a pixel brighter than ``ink_threshold``) and
partials out the amount of ink in the receptive field (its mean pixel) before correlating; the
other two ("all" = the former measure over every position, "informative" = the position filter
alone) are reported so the effect of each step is visible. On blank positions every unit gives its
constant blank response, and among inked patches any filter whose weights do not sum to zero
follows the amount of ink, so both reward units that merely separate "ink" from "no ink", which a
random filter does as well as a learned one.
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
from .matching import LayerMatch, match_layer, partial_out, patch_ink, shared_samples

__all__ = ["MEASURES", "PRIMARY", "UniversalityConfig", "UniversalityResult", "collect_samples", "run_study", "seed_dictionaries"]


PRIMARY = "features"
MEASURES = {
    PRIMARY: "informative positions (ink in the receptive field), amount of ink partialled out",
    "informative": "informative positions (ink in the receptive field), raw activations",
    "all": "all positions, raw activations (the former measure)",
}


@dataclass(frozen=True)
class UniversalityConfig:
    layers: tuple[str, ...] = ("conv1", "conv2")
    feature_layer: str | None = "conv2"  # train/load a dictionary on this layer of every model (None = skip)
    images: int = 2000  # first N MNIST test images
    max_samples: int = 200_000  # (image, position) samples per layer, the same for every model
    threshold: float = 0.5  # "matched" = best-match correlation >= threshold
    ink_threshold: float = 0.5  # a position is informative when its receptive field has a pixel > this (pixels in [0, 1])
    compare: bool = True  # also match with the "informative" and "all" measures, for comparison
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
        if not 0.0 <= self.ink_threshold < 1.0:
            raise ValueError(f"ink_threshold is a pixel value in [0, 1), got {self.ink_threshold}")
        if self.max_samples is not None and self.max_samples < 100:
            raise ValueError(f"max_samples must be at least 100, got {self.max_samples}")


@dataclass
class UniversalityResult:
    config: UniversalityConfig
    layers: dict[str, LayerMatch]  # layer name (e.g. "conv2", "conv2/sae") -> matches by the PRIMARY measure
    models: dict[str, nn.Module] = field(repr=False)
    controls: dict[str, nn.Module] = field(repr=False)
    dictionaries: dict[str, Dictionary] = field(default_factory=dict, repr=False)
    comparisons: dict[str, dict[str, LayerMatch]] = field(default_factory=dict)  # other measure -> layer -> matches

    def __repr__(self) -> str:  # short; the table is in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)


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

    # batch size and lr pinned to the recipe the committed seed dictionaries were trained with
    cfg = SAEConfig(n_features=config.sae_features, k=config.sae_k, steps=config.sae_steps, batch_size=2048, lr=2e-3,
                    seed=config.seed)
    if not models:
        raise ValueError("models: no models given; pass {name: model} for every seed")
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


def _measures(model: nn.Module, layer: str, images: torch.Tensor, config: UniversalityConfig) -> dict[str, tuple]:
    """measure -> (shared sample index or None, ink-amount covariate or None) for ``layer``."""
    from ..data.examples import receptive_field
    from ..units import layer_shape

    shape = layer_shape(model, layer)
    if len(shape) != 3:  # no positions: every sample is a whole image
        return {PRIMARY: (shared_samples(len(images), 1, config.max_samples, config.seed), None)}
    positions = shape[1] * shape[2]
    peak, mean = patch_ink(images, receptive_field(model, layer), (shape[1], shape[2]))
    informative = shared_samples(len(images), positions, config.max_samples, config.seed, allowed=peak > config.ink_threshold)
    out = {PRIMARY: (informative, mean[informative])}
    if config.compare:
        out["informative"] = (informative, None)
        out["all"] = (shared_samples(len(images), positions, config.max_samples, config.seed), None)
    return out


def _match_measures(name: str, acts: dict[str, torch.Tensor], models: dict, controls: dict, measures: dict,
                    result_layers: dict, comparisons: dict, log: Callable[[str], None]) -> None:
    """Match ``acts`` (model -> (M, C) samples over every position) by each measure."""
    for kind, (index, covariate) in measures.items():
        samples = {n: a if index is None else a[index] for n, a in acts.items()}
        if covariate is not None:
            samples = {n: partial_out(a, covariate) for n, a in samples.items()}
        lm = match_layer({n: samples[n] for n in models}, controls={n: samples[n] for n in controls},
                         layer=f"{name} [{kind}]", progress=log)
        lm.layer = name
        if kind == PRIMARY:
            result_layers[name] = lm
        else:
            comparisons.setdefault(kind, {})[name] = lm


def run_study(models: dict[str, nn.Module], controls: dict[str, nn.Module], images: torch.Tensor,
              config: UniversalityConfig = UniversalityConfig(), *, dictionaries: dict[str, Dictionary] | None = None,
              log: Callable[[str], None] = print) -> UniversalityResult:
    """Match every layer of ``config`` (and the dictionaries' features) across ``models`` and against
    ``controls`` by the PRIMARY measure (and by the other :data:`MEASURES` for comparison)."""
    config.validate()
    if len(models) < 2:
        raise ValueError(f"models: need at least two models, got {len(models)}")
    images = images[: config.images]
    layers: dict[str, LayerMatch] = {}
    comparisons: dict[str, dict[str, LayerMatch]] = {}
    every = {**models, **controls}
    first = next(iter(models.values()))
    for layer in config.layers:
        measures = _measures(first, layer, images, config)
        acts = {n: collect_samples(m, layer, images, None) for n, m in every.items()}
        _match_measures(layer, acts, models, controls, measures, layers, comparisons, log)
    if dictionaries:
        missing = set(every) - set(dictionaries)
        if missing:
            raise ValueError(f"dictionaries missing for {sorted(missing)}")
        source = next(iter(dictionaries.values())).layer
        measures = _measures(first, source, images, config)
        acts = {}
        for n, m in every.items():
            with attached(m, dictionaries[n], check=False) as a:
                acts[n] = collect_samples(m, a.name, images, None)
        _match_measures(f"{source}/sae", acts, models, controls, measures, layers, comparisons, log)
    return UniversalityResult(config, layers, models, controls, dictionaries or {}, comparisons)
