"""Models: InceptionV1 (Lucid's inception5h) and a small MNIST CNN; any nn.Module works elsewhere too.

What the rest of the package knows about a model comes from :func:`model_spec` (``zoo/spec.py``),
never from these classes: consumers do not import them (checked by ``tests/test_import_graph.py``).
"""

from .inceptionv1 import InceptionV1, inceptionv1, load_class_names
from .mnist_cnn import MnistCNN, mnist_cnn
from .registry import MODELS, ModelLoadError, list_models, load_model, load_weights
from .spec import ModelSpec, model_spec

__all__ = ["InceptionV1", "inceptionv1", "load_class_names", "MnistCNN", "mnist_cnn", "MODELS", "list_models", "load_model",
           "load_weights", "ModelLoadError", "ModelSpec", "model_spec"]
