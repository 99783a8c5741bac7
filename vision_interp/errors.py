"""The package's argument-error classes and the model check: a leaf module (it imports nothing of the
package), so that the lowest layers (``zoo.spec``, ``trace``, ``model_state``) can raise them without
importing :mod:`.checks`, which reads a model's spec and device and so sits above them."""

from __future__ import annotations

import numbers
from typing import Any

from torch import nn

__all__ = ["InputError", "InputTypeError", "IdTypeError", "NonFiniteError", "TargetRangeError", "FileContentError",
           "check_model", "check_input_shape"]


class InputError(ValueError):
    """A bad argument value. The message starts with the argument's name."""


class InputTypeError(TypeError):
    """An argument of the wrong type. The message starts with the argument's name."""


class IdTypeError(InputTypeError, ValueError):
    """A float (even ``3.0``), a bool or a float tensor where an integer id is expected (a channel, a feature id,
    a class index, a position). A TypeError, and also a ValueError so that code catching a bad unit spec as a
    ValueError (``parse_unit``'s long-standing contract) still catches it."""


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


def check_input_shape(shape: Any, arg: str = "input_shape") -> tuple[int, ...]:
    """An input shape without batch, ``(C, H, W)`` or another length: positive integers (a float, also
    ``28.0``, or a bool is refused, never truncated). Here, not in ``checks``, so the trace can use it."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or not hasattr(shape, "__iter__"):
        raise InputTypeError(f"{arg}: expected a tuple of ints such as (3, 224, 224), got {type(shape).__name__} {shape!r}")
    out = []
    for i, s in enumerate(shape):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise IdTypeError(f"{arg}: entry {i} is {type(s).__name__} {s!r}; sizes are integers, e.g. (3, 224, 224)")
        if int(s) < 1:
            raise InputError(f"{arg}: {tuple(shape)}; every size must be >= 1")
        out.append(int(s))
    if not out:
        raise InputError(f"{arg}: an empty shape; give (C, H, W) without the batch dimension")
    return tuple(out)
