"""Models: InceptionV1 (Lucid's inception5h) and a small MNIST CNN; any nn.Module works elsewhere too."""

from .inceptionv1 import InceptionV1, inceptionv1, load_class_names
from .mnist_cnn import MnistCNN, mnist_cnn
from .registry import MODELS, list_models, load_model

__all__ = ["InceptionV1", "inceptionv1", "load_class_names", "MnistCNN", "mnist_cnn", "MODELS", "list_models", "load_model"]
