"""The package's argument-error classes and the model check: a leaf module (it imports nothing of the
package), so that the lowest layers (``zoo.spec``, ``trace``, ``model_state``) can raise them without
importing :mod:`.checks`, which reads a model's spec and device and so sits above them."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["InputError", "InputTypeError", "NonFiniteError", "TargetRangeError", "FileContentError", "check_model"]


class InputError(ValueError):
    """A bad argument value. The message starts with the argument's name."""


class InputTypeError(TypeError):
    """An argument of the wrong type. The message starts with the argument's name."""


class NonFiniteError(InputError):
    """NaN or infinity in an input or a result, where a number would be meaningless."""


class TargetRangeError(IndexError, InputError):
    """A class index outside the model's outputs (an IndexError too, as before)."""


class FileContentError(InputError):
    """A file that exists but does not hold what was expected (keys, shapes)."""


def check_model(model: Any, arg: str = "model") -> nn.Module:
    """A ``torch.nn.Module`` (a string, a path or a state dict is refused with what to pass instead)."""
    if not isinstance(model, nn.Module):
        hint = " (load it first, e.g. vision_interp.load_model(name))" if isinstance(model, (str, bytes)) else ""
        raise InputTypeError(f"{arg}: expected a torch.nn.Module, got {type(model).__name__}{hint}")
    return model
