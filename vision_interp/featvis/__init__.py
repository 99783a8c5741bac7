"""Feature visualization: optimise images to show what a unit, layer or direction responds to.

``visualize(model, "mixed4a:476")`` for one unit, ``visualize_layer(model, "conv2")`` for many
units in batched optimisations, ``render(model, objective, ...)`` for full control. Objectives
(:mod:`.objectives`) compose with + - * /; parameterizations are in :mod:`.param` and the
robustness transforms in :mod:`.transform`.
"""

from . import objectives
from .objectives import Objective, channel, class_logit, deepdream, direction, diversity, layer_l2, neuron
from .param import FourierParam, ImageParam, PixelParam, image_param
from .render import (NonFiniteObjectiveError, RenderResult, evaluate_objective, model_defaults, parse_channels, render, resolve_settings,
                     visualize, visualize_layer)
from .settings import PRESETS, RenderSettings, default_preset, default_settings, preset
from .transform import Compose, Jitter, Pad, RandomRotate, RandomScale, make_transforms, small_transforms, standard_transforms

__all__ = [
    "objectives", "Objective", "channel", "class_logit", "deepdream", "direction", "diversity", "layer_l2", "neuron",
    "FourierParam", "ImageParam", "PixelParam", "image_param",
    "NonFiniteObjectiveError", "RenderResult", "evaluate_objective", "model_defaults", "parse_channels", "render", "resolve_settings",
    "visualize", "visualize_layer", "PRESETS", "RenderSettings", "default_preset", "default_settings", "preset",
    "Compose", "Jitter", "Pad", "RandomRotate", "RandomScale", "make_transforms", "small_transforms", "standard_transforms",
]
