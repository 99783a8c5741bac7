"""vision_interp: see how vision networks compute.

Feature visualization, attribution (on Captum), circuit-weight inspectors, neuron galleries,
the MNIST exercise, and induction-head discovery in GPT-2; one unit grammar everywhere
(``"mixed4a:476"``, ``("conv2", 5)``).
"""

from .capture import ActivationCache, LayerNotReachedError, capture, hooks, run_with_cache
from .units import Unit, UnitRangeError, UnknownLayerError, layer_names, layer_shape, parse_unit, resolve_layer, resolve_unit
from .zoo import inceptionv1, list_models, load_model, mnist_cnn

__version__ = "0.1.0"

__all__ = [
    "ActivationCache",
    "LayerNotReachedError",
    "capture",
    "hooks",
    "run_with_cache",
    "Unit",
    "UnitRangeError",
    "UnknownLayerError",
    "layer_names",
    "layer_shape",
    "parse_unit",
    "resolve_layer",
    "resolve_unit",
    "inceptionv1",
    "list_models",
    "load_model",
    "mnist_cnn",
]
