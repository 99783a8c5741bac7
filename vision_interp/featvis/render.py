"""The optimisation loop: parameterized images -> transforms -> model (up to the layers needed) -> Adam.

:func:`render` validates everything it can before the first step (layer names, channel ranges,
batch indices, whether the model accepts the transformed image size), then runs Adam on the image
parameters only: the model's parameters are frozen for the duration (and restored afterwards),
and the forward pass stops at the deepest layer the objective reads (``capture(stop_early=True)``).

:func:`visualize` and :func:`visualize_layer` use the default that fits the model
(:func:`~vision_interp.featvis.settings.default_preset`: InceptionV1 at 224 px ``"smooth-256"`` with Lucid's
standard transforms; small grayscale models such as the MNIST CNN ``"fast-small"``, untransformed at 28x28;
small colour models and fixed-size ones ``"smooth-small"``, with size-preserving shifts) and batch many units
into one optimisation.

Each job has its module, re-exported here: :mod:`.run` (:func:`render`, start to finish),
:mod:`.prepare` (settings, objective, parameterization and size checks before the first step),
:mod:`.optimise` (the loop), :mod:`.result` (:class:`RenderResult`) and :mod:`.per_unit`
(:func:`visualize`, :func:`visualize_layer`).
"""

from __future__ import annotations

from .optimise import tile_images
from .per_unit import evaluate_objective, parse_channels, visualize, visualize_layer
from .prepare import model_defaults, resolve_settings
from .result import NonFiniteObjectiveError, RenderResult
from .run import render

__all__ = [
    "RenderResult",
    "NonFiniteObjectiveError",
    "render",
    "visualize",
    "visualize_layer",
    "model_defaults",
    "parse_channels",
    "resolve_settings",
    "evaluate_objective",
    "tile_images",
]
