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

from .trace import LayerNotReachedError
from .units import UnitSpec, model_device_dtype, parse_unit, resolve_layer, resolve_layers

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
    """
    modules = dict(model.named_modules())
    paths = resolve_layers(model, fns)
    resolved = {paths[name]: fn for name, fn in fns.items()}
    handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
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
        unit = parse_unit(name)
        path = self._key(unit.layer)
        if path not in self._acts:
            raise KeyError(f"{unit.layer!r} was not captured; captured: {', '.join(self._acts)}")
        act = self._acts[path]
        if not unit.has_channel:
            return act
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
    """
    if isinstance(layers, str):
        layers = [layers]
    paths = list(dict.fromkeys(resolve_layer(model, n) for n in layers))
    if not paths:
        raise ValueError("capture() needs at least one layer name")
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
    """Full forward pass returning ``(output, cache)``; all leaf modules when ``layers`` is None."""
    if layers is None:
        layers = [n for n, m in model.named_modules() if n and not list(m.children())]
    acts: dict[str, Any] = {}
    modules = dict(model.named_modules())
    paths = [resolve_layer(model, n) for n in layers]

    def make_hook(path: str) -> HookFn:
        def hook(_m: nn.Module, _i: tuple, out: Any) -> None:
            if path not in acts:
                acts[path] = out.detach() if (detach and isinstance(out, torch.Tensor)) else out

        return hook

    with hooks(model, {p: make_hook(p) for p in paths if p in modules}):
        output = model(inputs)
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

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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

    Eval mode (restored afterwards), no gradients, inputs moved to the model's device and dtype,
    detached activations, early exit after the deepest requested layer.
    """
    device, dtype = model_device_dtype(model)
    names = [layers] if isinstance(layers, str) else list(layers)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start, xb in dataset_batches(images, batch_size, device=device, dtype=dtype, progress=progress,
                                             desc=desc or f"capture {', '.join(map(str, names))}"):
                yield start, capture(model, xb, names, detach=True)
    finally:
        model.train(was_training)
