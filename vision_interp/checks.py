"""One place per kind of argument check, used by every public entry point before any work starts.

Each check raises an error whose message starts with the argument's name, says what was wrong
and what would be valid: ``"inputs: dtype torch.uint8; images must be floating point in [0, 1]
(e.g. images.float() / 255)"``. The errors subclass ``ValueError`` / ``TypeError`` so existing
``except ValueError`` clauses keep working.

Kinds: images (type, dtype, shape, channels, batch, finiteness, range [0, 1]), baselines (number
or a tensor that broadcasts to the images), integers (counts, sizes), class targets, token ids
(dtype, vocabulary, context length), and state dicts read from files (keys and shapes). Unit
names and ranges live in :mod:`.units` (``resolve_unit`` and :func:`.units.check_unit_range`).

**Integer ids** (channels, feature ids, class indices, positions, counts): a Python ``int``, a NumPy integer
or a one-element integer tensor. A ``bool`` is refused, and so is *every* float, also an integral one such as
``3.0`` or ``torch.tensor(3.0)``: an id is never read from a float, so ``2.7`` cannot become channel 2 and the
rule has no tolerance to argue about (``check_index``, ``check_int``, ``check_class_target``, and
:mod:`.units` for channels and positions of units). The error is :class:`IdTypeError` (a ``TypeError``, and a
``ValueError`` for callers that catch bad unit specs as such) and starts with the argument's name.

Non-finite values are never passed on silently: NaN or inf in an input is an error; a method's
result that is not finite is an error naming the result (:func:`check_finite_result`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "InputError", "InputTypeError", "IdTypeError", "NonFiniteError", "FileContentError", "TargetRangeError",
    "check_model", "check_instance", "check_index", "is_integer_id", "check_input_shape", "check_matrix", "check_images", "check_baselines", "check_int", "check_number", "check_finite", "check_finite_result",
    "check_class_target", "check_token_ids", "check_state_dict", "check_window",
]


import numpy as np

from .errors import (FileContentError, IdTypeError, InputError, InputTypeError, NonFiniteError,  # noqa: F401
                     TargetRangeError, check_input_shape, check_model)


def check_instance(value: Any, cls: type | tuple[type, ...], arg: str) -> Any:
    """``value`` is an instance of ``cls``; else an InputTypeError naming the argument and the expected type."""
    if not isinstance(value, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise InputTypeError(f"{arg}: expected {names}, got {type(value).__name__}")
    return value


def check_matrix(t: Any, arg: str, *, ndim: int | tuple[int, ...] = 2, finite: bool = True) -> torch.Tensor:
    """A tensor with ``ndim`` dimensions (one of them when a tuple), finite unless ``finite=False``."""
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{arg}: expected a torch.Tensor, got {type(t).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if t.ndim not in dims:
        raise InputError(f"{arg}: shape {tuple(t.shape)}; expected {' or '.join(str(d) for d in dims)} dimensions")
    if finite:
        check_finite(t, arg)
    return t


def _nonfinite_summary(t: torch.Tensor) -> str:
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    parts = ([f"{n_nan} NaN"] if n_nan else []) + ([f"{n_inf} infinite"] if n_inf else [])
    return " and ".join(parts) + f" value(s) of {t.numel()}"


def _finite_range(t: torch.Tensor) -> tuple[float, float] | None:
    """``(min, max)`` of a real tensor, or None when it holds NaN or infinity (one pass: NaN propagates
    through min/max and an infinity is an extreme, so this is cheaper than ``isfinite().all()``)."""
    lo, hi = torch.aminmax(t.detach())
    lo, hi = float(lo), float(hi)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def check_finite(t: torch.Tensor, arg: str) -> None:
    """Refuse NaN or infinity in an input tensor."""
    if t.is_complex():
        ok = bool(torch.isfinite(t).all())
    elif t.is_floating_point() and t.numel():
        ok = _finite_range(t) is not None
    else:
        return
    if not ok:
        raise NonFiniteError(f"{arg}: {_nonfinite_summary(t)}; every value must be a finite number")


def check_finite_result(t: torch.Tensor, what: str, hint: str = "") -> torch.Tensor:
    """Refuse a result with NaN or infinity (the model produced them); returns ``t`` when finite."""
    if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise NonFiniteError(f"{what}: {_nonfinite_summary(t)} in the result; the model's output is not finite for these "
                             f"inputs{(': ' + hint) if hint else ''}")
    return t


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    from .trace import model_device_dtype

    return model_device_dtype(model)


def _expected_channels(model: nn.Module | None) -> tuple[int, ...] | None:
    if model is None:
        return None
    from .zoo.spec import model_spec

    shape = model_spec(model).input_shape
    return tuple(int(s) for s in shape) if shape is not None and len(shape) == 3 else None


def check_images(x: Any, model: nn.Module | None = None, *, arg: str = "inputs", allow_single: bool = True,
                 value_range: tuple[float, float] | None = (0.0, 1.0), tolerance: float = 1e-4,
                 keep_graph: bool = False) -> tuple[torch.Tensor, bool]:
    """Images (N, C, H, W) or one image (C, H, W): a floating tensor, finite, in ``value_range``.

    Returns ``(batch, single)``: the detached batch on the model's device in the model's dtype (any
    float precision is converted: float64 or float16 images give the same numbers as float32 ones),
    and whether one image was given. Integer images (0..255) are refused, never read as [0, 1].
    ``keep_graph`` keeps the autograd graph to ``x`` (capture: gradients to the input).
    """
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{arg}: expected a torch.Tensor of images (N, C, H, W) in [0, 1], got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (e.g. images.float() / 255 for 0..255 images)" if x.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64) else ""
        raise InputError(f"{arg}: dtype {x.dtype}; give float images with values in [0, 1]{hint}")
    single = x.ndim == 3 and allow_single
    xb = x[None] if single else x
    if xb.ndim != 4:
        want = "(N, C, H, W) or one image (C, H, W)" if allow_single else "(N, C, H, W)"
        raise InputError(f"{arg}: shape {tuple(x.shape)}; expected images {want}")
    if xb.shape[0] == 0:
        raise InputError(f"{arg}: an empty batch (N = 0); give at least one image")
    if min(xb.shape[1:]) == 0:
        raise InputError(f"{arg}: shape {tuple(x.shape)} has an empty dimension; channels, height and width must be >= 1")
    expected = _expected_channels(model)
    if expected is not None and xb.shape[1] != expected[0]:
        raise InputError(f"{arg}: {xb.shape[1]} channels (shape {tuple(x.shape)}); {type(model).__name__} expects "
                         f"{expected[0]}-channel images (input_shape {expected})")
    values = xb.detach()
    span = _finite_range(values)
    if span is None:
        raise NonFiniteError(f"{arg}: {_nonfinite_summary(values)}; every value must be a finite number")
    if value_range is not None:
        lo, hi = span
        if lo < value_range[0] - tolerance or hi > value_range[1] + tolerance:
            hint = " (they look like 0..255 pixels: divide by 255)" if hi > 2 and float(values.frac().abs().max()) == 0 else ""
            raise InputError(f"{arg}: values span [{lo:.4g}, {hi:.4g}]; images must be in "
                             f"[{value_range[0]:g}, {value_range[1]:g}]{hint}")
    if model is not None:
        device, dtype = _model_device_dtype(model)
        xb = (xb if keep_graph else values).to(device=device, dtype=dtype if dtype.is_floating_point else xb.dtype)
    return xb, single


def check_baselines(baselines: Any, x: torch.Tensor, *, arg: str = "baselines") -> Any:
    """A baseline for images ``x`` (N, C, H, W): None, a finite number, or a float tensor shaped
    (C, H, W), (1, C, H, W) or (N, C, H, W). Returns a number or a tensor (N, C, H, W) like ``x``."""
    if baselines is None:
        return None
    if isinstance(baselines, bool):
        raise InputTypeError(f"{arg}: a bool; give a number or a tensor shaped like the images")
    if isinstance(baselines, (int, float)):
        if not torch.isfinite(torch.tensor(float(baselines))):
            raise NonFiniteError(f"{arg}: {baselines}; a baseline must be a finite number or tensor")
        return float(baselines)
    if not isinstance(baselines, torch.Tensor):
        raise InputTypeError(f"{arg}: expected a number or a torch.Tensor, got {type(baselines).__name__}")
    if not baselines.is_floating_point():
        raise InputError(f"{arg}: dtype {baselines.dtype}; a baseline tensor must be floating point like the images")
    n = x.shape[0]
    shape = tuple(baselines.shape)
    valid = [tuple(x.shape[1:]), (1, *x.shape[1:]), tuple(x.shape)]
    if shape not in valid:
        raise InputError(f"{arg}: shape {shape}; valid shapes for {n} input(s) of shape {tuple(x.shape[1:])} are "
                         f"{valid[0]}, {valid[1]} or {valid[2]}")
    check_finite(baselines, arg)
    b = baselines.detach().to(device=x.device, dtype=x.dtype)
    return (b[None] if b.ndim == 3 else b).expand_as(x).contiguous()


def is_integer_id(value: Any) -> bool:
    """Whether ``value`` may be read as an integer id: an int, a NumPy integer, or a one-element integer
    tensor or array (never a bool, never a float, also not ``3.0``; see the module docstring)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    if isinstance(value, np.ndarray):
        return value.size == 1 and np.issubdtype(value.dtype, np.integer)
    return False


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor" + (f" ({value.item()!r})" if value.numel() == 1 else f" of shape {tuple(value.shape)}")
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def check_index(value: Any, arg: str, *, minimum: int | None = None, maximum: int | None = None,
                what: str = "an integer") -> int:
    """An integer id (see the module docstring: floats, also ``3.0``, and bools are refused), within
    ``[minimum, maximum]``; returns it as a Python int."""
    if not is_integer_id(value):
        hint = ""
        if isinstance(value, (float, np.floating)) and math.isfinite(float(value)):
            hint = f" (write {int(value)} if that is the id you mean)" if float(value).is_integer() else \
                " (an id is never rounded or truncated)"
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            hint = " (e.g. t.long())"
        raise IdTypeError(f"{arg}: expected {what}, got {_describe(value)}{hint}")
    v = int(value.item()) if isinstance(value, (torch.Tensor, np.ndarray)) else int(value)
    if minimum is not None and v < minimum or maximum is not None and v > maximum:
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise InputError(f"{arg}: {v}; must be {' and '.join(p for p in (lo, hi) if p)}")
    return v


def check_int(value: Any, arg: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (a bool or a float is refused, also ``3.0``; a NumPy integer or a one-element integer tensor
    is read as its value), within ``[minimum, maximum]``."""
    if not is_integer_id(value):
        raise InputTypeError(f"{arg}: expected an integer, got {type(value).__name__} {value!r}")
    value = int(value.item()) if isinstance(value, (torch.Tensor, np.ndarray)) else int(value)
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise InputError(f"{arg}: {value}; must be {' and '.join(p for p in (lo, hi) if p)}")
    return value


def check_number(value: Any, arg: str, *, minimum: float | None = None, maximum: float | None = None,
                 strict_min: bool = False) -> float:
    """A finite real number within bounds (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{arg}: expected a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise NonFiniteError(f"{arg}: {value}; must be a finite number")
    if minimum is not None and (v < minimum or strict_min and v == minimum):
        raise InputError(f"{arg}: {value}; must be {'>' if strict_min else '>='} {minimum:g}")
    if maximum is not None and v > maximum:
        raise InputError(f"{arg}: {value}; must be <= {maximum:g}")
    return v


def check_class_target(target: Any, arg: str = "target") -> None:
    """Refuse a target that cannot be a class index: a float (also ``3.0``, a NumPy float, a float tensor or
    array), a bool, a complex number, or a list / tuple holding any of these."""
    if isinstance(target, (bool, np.bool_)):
        raise IdTypeError(f"{arg}: a bool; give a class index, a class label or a unit like 'conv2:5'")
    if isinstance(target, (float, np.floating)):
        hint = f" (e.g. {int(target)})" if math.isfinite(float(target)) else ""
        raise IdTypeError(f"{arg}: the float {float(target)!r}; class indices must be integers{hint}")
    if isinstance(target, complex):
        raise IdTypeError(f"{arg}: the complex number {target!r}; class indices must be integers")
    if isinstance(target, torch.Tensor) and (target.is_floating_point() or target.is_complex() or target.dtype == torch.bool):
        raise IdTypeError(f"{arg}: a {target.dtype} tensor; class indices must be an integer tensor "
                          "(e.g. target.long())")
    if isinstance(target, np.ndarray) and not np.issubdtype(target.dtype, np.integer):
        raise IdTypeError(f"{arg}: a {target.dtype} array; class indices must be integers (e.g. target.astype(int))")
    if isinstance(target, (list, tuple)):
        for t in target:
            if isinstance(t, (list, tuple)):
                check_class_target(t, arg)
            elif isinstance(t, (bool, np.bool_, float, np.floating, complex)) or (
                    isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)):
                raise IdTypeError(f"{arg}: contains {_describe(t)}; per-example class indices must be integers")


def check_token_ids(tokens: Any, *, vocab_size: int, n_ctx: int | None = None, arg: str = "tokens",
                    min_len: int = 1) -> torch.Tensor:
    """Token ids as a (batch, seq) long tensor: integers in ``0..vocab_size - 1``, ``min_len <= seq <= n_ctx``."""
    if isinstance(tokens, (list, tuple)):
        try:
            tokens = torch.as_tensor(tokens)
        except (TypeError, ValueError) as e:
            raise InputTypeError(f"{arg}: cannot read as token ids ({e}); give a list or tensor of integers") from e
    if not isinstance(tokens, torch.Tensor):
        raise InputTypeError(f"{arg}: expected token ids (a tensor or list of ints), got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise InputError(f"{arg}: dtype {tokens.dtype}; token ids must be integers (e.g. tokens.long())")
    t = tokens[None] if tokens.ndim == 1 else tokens
    if t.ndim != 2:
        raise InputError(f"{arg}: shape {tuple(tokens.shape)}; expected (seq,) or (batch, seq)")
    if t.shape[0] == 0:
        raise InputError(f"{arg}: an empty batch; give at least one sequence")
    if t.shape[1] < min_len:
        raise InputError(f"{arg}: sequence length {t.shape[1]}; at least {min_len} token(s) are needed")
    if n_ctx is not None and t.shape[1] > n_ctx:
        raise InputError(f"{arg}: sequence length {t.shape[1]} exceeds the model's context of {n_ctx} tokens")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= vocab_size:
        raise InputError(f"{arg}: ids span {lo}..{hi}; valid token ids are 0..{vocab_size - 1} (vocabulary of {vocab_size})")
    return t.long()


def check_state_dict(sd: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int | None]], source: Any) -> None:
    """A state dict read from ``source`` has exactly ``expected``'s keys with matching shapes (None = any size)."""
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise FileContentError(
            f"{source}: " + "; ".join(p for p in (f"missing tensors {', '.join(missing)}" if missing else "",
                                                  f"unexpected tensors {', '.join(extra)}" if extra else "") if p)
            + f"; expected exactly {', '.join(expected)}")
    for key, shape in expected.items():
        got = tuple(sd[key].shape)
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise FileContentError(f"{source}: tensor {key!r} has shape {got}; expected {want}")
        if sd[key].is_floating_point():
            check_finite(sd[key], f"{source}: tensor {key!r}")


def check_window(window: Any, x: torch.Tensor, arg: str) -> tuple[int, ...]:
    """A sliding window / stride (C, h, w) of positive ints that fits in one image of ``x`` (N, C, H, W)."""
    if isinstance(window, int) and not isinstance(window, bool):
        window = (window,)
    if not isinstance(window, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in window):
        raise InputTypeError(f"{arg}: expected a tuple of ints (C, h, w), got {window!r}")
    shape = tuple(x.shape[1:])
    if len(window) != len(shape):
        raise InputError(f"{arg}: {tuple(window)} has {len(window)} entries; one per image dimension {shape} is needed")
    if any(v < 1 for v in window):
        raise InputError(f"{arg}: {tuple(window)}; every entry must be >= 1")
    if any(v > s for v, s in zip(window, shape)):
        raise InputError(f"{arg}: {tuple(window)} is larger than one image {shape}; each entry must be <= the image's size")
    return tuple(window)
