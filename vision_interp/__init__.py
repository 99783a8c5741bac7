"""vision_interp: see how vision networks compute.

Feature visualization (:mod:`.featvis`), attribution on Captum (:mod:`.attribution`), circuit-weight
inspectors (:mod:`.circuits`), Microscope-style galleries (:mod:`.gallery`), the MNIST exercise
(:mod:`.exercises`), and induction-head discovery in GPT-2 (:mod:`.transformer`). One unit grammar
everywhere: ``"mixed4a:476"``, ``"conv2:5@3,4"``, ``"conv2:0-7"``, ``("conv2", 5)``, resolved once into
a :class:`UnitHandle`; model structure from one cached :func:`trace`; model facts from :func:`model_spec`.

The GPT-2 side is imported lazily (``vi.analyze_induction`` loads it on first use), so vision users
do not pay for ``transformers``.
"""

from importlib import import_module
from typing import Any

from . import attribution, circuits, featvis
from .attribution import (LayerAttribution, attribute, attribute_dataset, ig_completeness, layer_attribution,
                          randomization_test, unit_attribution)
from .checks import FileContentError, InputError, InputTypeError, NonFiniteError
from .model_state import ModelBusyError
from .capture import ActivationCache, LayerNotReachedError, capture, capture_dataset, hooks, run_with_cache
from .circuits import (CircuitError, LinearizationError, circuit_diagram, classifier_view, connection_weights, direct_weights,
                       expanded_weights, layer_neuron_groups, neuron_groups, top_connections)
from .featvis import RenderResult, render, visualize, visualize_layer
from .trace import Trace, TraceError, Window, trace
from .units import (LayerNameCollisionError, Unit, UnitHandle, UnitRangeError, UnknownLayerError, layer_names, layer_shape,
                    model_device_dtype, parse_channel_list, parse_unit, resolve_layer, resolve_unit)
from .zoo import inceptionv1, list_models, load_model, mnist_cnn
from .zoo.spec import ModelSpec, model_spec

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it (dynamic version)

# name -> module, imported on first attribute access (heavy or rarely needed at import time)
_LAZY = {
    "make_gallery": "vision_interp.gallery",
    "GallerySettings": "vision_interp.gallery",
    "assemble_gallery": ("vision_interp.gallery", "assemble"),
    "run_mnist_exercise": "vision_interp.exercises",
    "ExerciseConfig": "vision_interp.exercises",
    "load_gpt2": "vision_interp.transformer",
    "load_gpt2_tokenizer": "vision_interp.transformer",
    "analyze_induction": "vision_interp.transformer",
    "InductionReport": "vision_interp.transformer",
    "ablation_scan": "vision_interp.transformer",
    "train_induction_model": "vision_interp.transformer",
    "top_activating": "vision_interp.data.examples",
    "attribution_patching": "vision_interp.transformer",
    "integrated_attribution_patching": "vision_interp.transformer",
    "ablation_line": "vision_interp.transformer",
    "joint_ablations": "vision_interp.transformer",
    "fast_pattern_scores": "vision_interp.transformer",
    "composition_baseline": "vision_interp.transformer",
    "GalleryLockedError": "vision_interp.gallery",
    "load_labels": "vision_interp.gallery",
    "attach_features": ("vision_interp.features", "attach"),
    "detach_features": ("vision_interp.features", "detach"),
    "load_dictionary": "vision_interp.features",
    "show": "vision_interp.display",
    "train_dictionary": "vision_interp.features",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        target = _LAZY[name]
        module, attr = target if isinstance(target, tuple) else (target, name)
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("gallery", "exercises", "transformer", "data", "zoo", "features", "universality", "display"):
        return import_module(f"vision_interp.{name}")
    raise AttributeError(f"module 'vision_interp' has no attribute {name!r}")


__all__ = [
    # addressing and activations
    "Unit", "UnitHandle", "UnitRangeError", "UnknownLayerError", "LayerNameCollisionError", "parse_unit",
    "parse_channel_list", "resolve_layer", "resolve_unit", "layer_names", "layer_shape", "model_device_dtype",
    "ActivationCache", "LayerNotReachedError", "capture", "capture_dataset", "hooks", "run_with_cache",
    # errors of the argument checks and of shared use (vision_interp.checks, vision_interp.model_state)
    "InputError", "InputTypeError", "NonFiniteError", "FileContentError", "ModelBusyError",
    # model structure
    "trace", "Trace", "TraceError", "Window",
    # models
    "inceptionv1", "mnist_cnn", "load_model", "list_models", "ModelSpec", "model_spec",
    # feature visualization
    "featvis", "render", "visualize", "visualize_layer", "RenderResult",
    # attribution
    "attribution", "attribute", "attribute_dataset", "layer_attribution", "unit_attribution", "LayerAttribution",
    "ig_completeness", "randomization_test",
    # circuits
    "circuits", "direct_weights", "expanded_weights", "connection_weights", "top_connections", "classifier_view",
    "neuron_groups", "layer_neuron_groups", "circuit_diagram", "CircuitError", "LinearizationError",
    # lazily imported
    *_LAZY,
]
