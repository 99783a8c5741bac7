"""Run a model and collect named activations; the only place that registers forward hooks.

Two ideas, TransformerLens style:

* :func:`capture` runs ``model(x)`` and returns an :class:`ActivationCache` you index by layer
  name (or unit: ``cache["conv2:5"]``). When it has everything it was asked for, it stops the
  forward pass, so later layers cost nothing.
* :func:`hooks` is an explicit, temporary, named set of forward hooks (to read or to replace a
  layer's output, e.g. for ablations). Hooks are removed in ``finally``, also on exceptions.
* :func:`capture_dataset` is the one loop that streams a dataset through a model in batches
  (eval mode, no gradients, the model's device and dtype) and yields each batch's activations.

The early exit is a ``BaseException``: a model whose ``forward`` wraps layers in
``try: ... except Exception:`` cannot swallow it and run on past the requested layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from . import checks
from .model_state import exclusive, using
from .trace import LayerNotReachedError
from .units import Unit, UnitSpec, check_unit_range, model_device_dtype, parse_unit, resolve_layer, resolve_layers

__all__ = ["ActivationCache", "LayerNotReachedError", "capture", "capture_dataset", "dataset_batches", "hooks",
           "run_with_cache", "select_unit"]

HookFn = Callable[[nn.Module, tuple, Any], Any]


class _StopForward(BaseException):
    """Raised inside a hook to end the forward pass once every requested layer has run.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that a model's ``except Exception`` does not catch it.
    """


@contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn]) -> Iterator[dict[str, torch.utils.hooks.RemovableHandle]]:
    """Attach forward hooks by layer name for the duration of a ``with`` block.

    ``fns`` maps a layer name (or alias) to ``fn(module, inputs, output)``; returning a value
    replaces the layer's output. Names are validated before anything is attached; an alias and
    the path of the same module in one mapping is an error (one of the two would be dropped).
    The model is held for this thread while the hooks are attached (see :mod:`.model_state`): another
    thread's toolkit call waits instead of running through these hooks.
    """
    modules = dict(model.named_modules())
    paths = resolve_layers(model, fns)
    resolved = {paths[name]: fn for name, fn in fns.items()}
    for name, fn in fns.items():
        if not callable(fn):
            raise checks.InputTypeError(f"fns[{name!r}]: expected a hook function fn(module, inputs, output), "
                                        f"got {type(fn).__name__}")
    handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
    with exclusive(model, "hooks()"):
        try:
            for path, fn in resolved.items():
                handles[path] = modules[path].register_forward_hook(fn)
            yield handles
        finally:
            for h in handles.values():
                h.remove()


def select_unit(act: torch.Tensor, spec: UnitSpec) -> torch.Tensor:
    """Slice a batched layer activation to a unit: channel (B, H, W) or channel@y,x (B,)."""
    unit = parse_unit(spec)
    out = act
    if unit.channel is not None:
        out = out[:, unit.channel]
    elif unit.channels is not None:
        out = out[:, unit.channels.start : unit.channels.stop]
    if unit.position is not None:
        y, x = unit.position
        out = out[..., y, x]
    return out


class ActivationCache(Mapping):
    """Activations by layer name. Index with a module path, an alias, or a unit string."""

    def __init__(self, activations: dict[str, Any], model: nn.Module, output: Any = None, completed: bool = True):
        self._acts = activations
        self._model = model
        self.output = output
        """The model's output, or None when the forward pass stopped early."""
        self.completed = completed
        """True when the forward pass ran to the end."""

    def _key(self, name: str) -> str:
        return resolve_layer(self._model, name)

    def __getitem__(self, name: UnitSpec) -> Any:
        """The layer's activation, or a unit of it checked exactly as :func:`resolve_unit` checks it
        (a negative or too large channel or position is a :class:`UnitRangeError`, never a wrapped index)."""
        unit = parse_unit(name)
        path = self._key(unit.layer)
        if path not in self._acts:
            raise KeyError(f"{unit.layer!r} was not captured; captured: {', '.join(self._acts)}")
        act = self._acts[path]
        if not unit.has_channel:
            return act
        if not isinstance(act, torch.Tensor):
            raise checks.InputTypeError(f"{name!r}: layer {unit.layer!r} outputs {type(act).__name__}, not a tensor; "
                                        "index the layer itself")
        check_unit_range(unit, tuple(act.shape[1:]))
        return select_unit(act, unit)

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def __repr__(self) -> str:
        parts = []
        for k, v in self._acts.items():
            parts.append(f"{k}: {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"{k}: {type(v).__name__}")
        return f"ActivationCache({', '.join(parts)})"


def capture(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[Any],
    layers: Sequence[str] | str,
    *,
    stop_early: bool = True,
    detach: bool = False,
) -> ActivationCache:
    """Run ``model(inputs)`` and return the outputs of ``layers``.

    With ``stop_early`` (default) the forward pass ends as soon as every requested layer has
    produced its output, so no compute is spent on later layers. Activations keep their autograd
    graph unless ``detach`` is set (feature visualization needs the graph). If a module is called
    several times, its first call is recorded.

    Checked first (:mod:`.checks`): image inputs are float, finite, in [0, 1], with the model's
    channels (other precisions are converted to the model's dtype). The model runs in eval mode
    on your behalf and every module's own mode is restored afterwards (:mod:`.model_state`).
    """
    paths = _layer_paths(model, layers)
    inputs = _checked_inputs(model, inputs)
    with using(model, what="capture()"):
        return _capture(model, inputs, paths, stop_early=stop_early, detach=detach)


def _layer_paths(model: nn.Module, layers: Sequence[str] | str, arg: str = "layers") -> list[str]:
    """Module paths for ``layers`` (a name or a non-empty list of names), duplicates dropped."""
    if not isinstance(model, nn.Module):
        raise checks.InputTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not all(isinstance(n, (str, Unit)) for n in layers):
        raise checks.InputTypeError(f"{arg}: expected a layer name or a list of layer names, got {layers!r}")
    paths = list(dict.fromkeys(resolve_layer(model, n) for n in layers))
    if not paths:
        raise checks.InputError(f"{arg}: an empty list; give at least one layer name (see vision_interp.layer_names(model))")
    return paths


def _checked_inputs(model: nn.Module, inputs: Any, arg: str = "inputs") -> Any:
    """Image batches get the image checks; a tuple of arguments and non-image tensors only finiteness."""
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim == 4 or (inputs.ndim == 3 and (inputs.is_floating_point() or inputs.dtype == torch.uint8)):
            return checks.check_images(inputs, model, arg=arg, allow_single=False, keep_graph=True)[0]
        checks.check_finite(inputs, arg)
        return inputs
    if isinstance(inputs, (tuple, list)):
        for i, v in enumerate(inputs):
            if isinstance(v, torch.Tensor):
                checks.check_finite(v, f"{arg}[{i}]")
        return inputs
    raise checks.InputTypeError(f"{arg}: expected a torch.Tensor (or a tuple of forward() arguments), got {type(inputs).__name__}")


def _capture(model: nn.Module, inputs: Any, paths: list[str], *, stop_early: bool = True,
             detach: bool = False) -> ActivationCache:
    """:func:`capture` without checks or mode changes, for inner loops that checked once (featvis steps)."""
    acts: dict[str, Any] = {}

    def make_hook(path: str) -> HookFn:
        def hook(_module: nn.Module, _inp: tuple, out: Any) -> None:
            if path in acts:
                return
            acts[path] = out.detach() if (detach and isinstance(out, torch.Tensor)) else out
            if stop_early and len(acts) == len(paths):
                raise _StopForward

        return hook

    output = None
    completed = False
    with hooks(model, {p: make_hook(p) for p in paths}):
        try:
            if isinstance(inputs, (tuple, list)):
                output = model(*inputs)
            else:
                output = model(inputs)
            completed = True
        except _StopForward:
            pass
    missing = [p for p in paths if p not in acts]
    if missing:
        raise LayerNotReachedError(
            f"the forward pass of {type(model).__name__} never ran layer(s) {', '.join(missing)}: "
            "they are registered but not called by forward(); choose a layer on the computation path"
        )
    ordered = {p: acts[p] for p in paths}
    return ActivationCache(ordered, model, output=output, completed=completed)


def run_with_cache(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str] | None = None, *, detach: bool = True) -> tuple[Any, ActivationCache]:
    """Full forward pass returning ``(output, cache)``; all leaf modules when ``layers`` is None.
    Same checks and eval-mode rule as :func:`capture`."""
    if layers is None:
        if not isinstance(model, nn.Module):
            raise checks.InputTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        layers = [n for n, m in model.named_modules() if n and not list(m.children())]
    paths = _layer_paths(model, list(layers))
    inputs = _checked_inputs(model, inputs)
    with using(model, what="run_with_cache()"):
        return _run_with_cache(model, inputs, paths, detach)


def _run_with_cache(model: nn.Module, inputs: Any, paths: list[str], detach: bool) -> tuple[Any, ActivationCache]:
    acts: dict[str, Any] = {}
    modules = dict(model.named_modules())

    def make_hook(path: str) -> HookFn:
        def hook(_m: nn.Module, _i: tuple, out: Any) -> None:
            if path not in acts:
                acts[path] = out.detach() if (detach and isinstance(out, torch.Tensor)) else out

        return hook

    with hooks(model, {p: make_hook(p) for p in paths if p in modules}):
        output = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    return output, ActivationCache({p: acts[p] for p in paths if p in acts}, model, output=output)


def dataset_batches(
    images: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "batches",
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, batch)`` over a tensor (N, ...) cut into ``batch_size`` pieces, or over an iterable of
    batches, moved to ``device``/``dtype``, with an optional progress bar (closed also on errors)."""
    from tqdm.auto import tqdm

    checks.check_int(batch_size, "batch_size", minimum=1)
    total = len(images) if isinstance(images, torch.Tensor) else None
    chunks: Iterable[torch.Tensor] = (
        (images[i : i + batch_size] for i in range(0, len(images), batch_size)) if isinstance(images, torch.Tensor) else images
    )
    start = 0
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for xb in chunks:
            yield start, xb.to(device=device or xb.device, dtype=dtype or xb.dtype)
            start += len(xb)
            bar.update(len(xb))


def capture_dataset(
    model: nn.Module,
    images: torch.Tensor | Iterable[torch.Tensor],
    layers: Sequence[str] | str,
    *,
    batch_size: int = 256,
    progress: bool = False,
    desc: str | None = None,
) -> Iterator[tuple[int, ActivationCache]]:
    """Stream ``images`` through ``model`` and yield ``(start, cache)`` per batch: the one dataset loop.

    Eval mode and no gradients *for each batch's forward pass only*: the model's modes and the grad
    mode are restored before each ``yield``, so your loop body runs with your own settings, and the
    model is held only while a batch runs (another thread may use it between batches). Inputs are
    checked (a tensor once, an iterable of batches per batch) and moved to the model's device and
    dtype; activations are detached; the forward pass stops after the deepest requested layer.
    Arguments are checked when this is called, before the first batch.
    """
    paths = _layer_paths(model, layers)
    checks.check_int(batch_size, "batch_size", minimum=1)
    if isinstance(images, torch.Tensor):
        images = checks.check_images(images, model, arg="images", allow_single=False)[0]
    elif not hasattr(images, "__iter__"):
        raise checks.InputTypeError(f"images: expected a tensor (N, C, H, W) or an iterable of batches, got {type(images).__name__}")
    names = [layers] if isinstance(layers, str) else list(layers)
    return _dataset_loop(model, images, paths, batch_size, progress, desc or f"capture {', '.join(map(str, names))}")


def _dataset_loop(model: nn.Module, images: Any, paths: list[str], batch_size: int, progress: bool,
                  desc: str) -> Iterator[tuple[int, ActivationCache]]:
    device, dtype = model_device_dtype(model)
    checked = isinstance(images, torch.Tensor)
    for start, xb in dataset_batches(images, batch_size, device=device, dtype=dtype, progress=progress, desc=desc):
        if not checked:
            xb = checks.check_images(xb, model, arg=f"images (batch at {start})", allow_single=False)[0]
        with using(model, grad=False, what="capture_dataset()"):
            cache = _capture(model, xb, paths, detach=True)
        yield start, cache
