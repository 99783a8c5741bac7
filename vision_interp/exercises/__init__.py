"""Worked exercises that compose the toolkit; :func:`run_mnist_exercise` is the MNIST one.

``vision-interp mnist-exercise --out DIR`` runs it from the command line.
"""

from .analysis import describe_filters, filter_orientation, oriented_bar, stimulus_tuning
from .mnist import ExerciseConfig, run_mnist_exercise

__all__ = ["ExerciseConfig", "run_mnist_exercise", "describe_filters", "filter_orientation", "oriented_bar", "stimulus_tuning"]
