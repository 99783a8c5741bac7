"""Make a dictionary's features ordinary units of a model: ``"conv2/sae:17"``.

:func:`attach` registers the dictionary as a child module named ``"<layer>/sae"`` beside its
source layer and adds a forward hook on the source layer that runs it. The dictionary's output
``(N, F, H, W)`` is then the output of a module on the forward path, so everything that reads
layers by module path -- ``capture``, featvis objectives, attribution targets, dataset examples,
the gallery -- sees features as channels, without knowing about dictionaries.

Modes (what the hook does with the layer's output):

* ``"observe"`` (default): compute the features, leave the layer's output unchanged; the
  model's outputs are exactly as before.
* ``"replace"``: the layer's output becomes the dictionary's reconstruction (to measure what the
  model loses when it only sees the features).
* ``"splice"``: output ``x_hat + stopgrad(x - x_hat)``: values exactly as before, but gradients from
  later layers flow through the features (layer attribution *at* the features).

Gradients of a TopK feature: ``gradient="linear"`` (default) is straight-through -- exact where
the feature is active, its linear pre-activation's gradient where it is not -- so feature
visualization can grow a feature from an image where it is not active anywhere (with exact
gradients most features start, and stay, at zero: measured on the committed conv2 dictionary, 4 of
64 reach a positive value in 64 steps). ``gradient="exact"`` gives exact gradients, for attributions
that must be the true derivative of the feature everywhere.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["attach", "detach", "attached", "attached_features", "MODES"]

MODES = ("observe", "replace", "splice")
GRADIENTS = ("linear", "exact")


class FeatureHook:
    """The forward hook on the source layer. A plain object holding the dictionary (not a closure),
    so ``copy.deepcopy(model)`` -- used e.g. by attribution's model repairs -- maps it to the copy's
    own dictionary module. ``part_of_model``: the model's trace keeps this hook (the features are a
    layer of the model), while it sets users' temporary hooks aside."""

    part_of_model = True

    def __init__(self, dictionary: nn.Module, name: str, mode: str):
        self.dictionary, self.name, self.mode = dictionary, name, mode

    def __call__(self, _module: nn.Module, _inputs: tuple, out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"dictionary {self.name!r}: its source layer returned {type(out).__name__}, not a tensor")
        codes = self.dictionary(out)
        if self.mode == "observe":
            return None
        rec = self.dictionary.decode(codes).to(out.dtype)
        if self.mode == "replace":
            return rec
        return rec + (out - rec).detach()


@dataclass
class Attachment:
    """What :func:`attach` did; ``remove()`` undoes it (same as :func:`detach`)."""

    model: nn.Module = field(repr=False)
    name: str  # full module path of the features, e.g. "conv2/sae"
    layer: str  # the source layer's module path
    mode: str

    def remove(self) -> None:
        detach(self.model, self.name)


def _parent_and_child(model: nn.Module, layer_path: str, suffix: str) -> tuple[nn.Module, str, str]:
    """The module that gets the dictionary as a child, the child's name, and the full path."""
    parent_path, _, leaf = layer_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    child = f"{leaf}/{suffix}"
    return parent, child, f"{parent_path}.{child}" if parent_path else child


def _forget_cached_structure(model: nn.Module) -> None:
    """Attaching adds a layer: drop what other modules cached about this model's structure."""
    import importlib

    for module_name, cache_name in (("vision_interp.units", "_SHAPE_CACHE"), ("vision_interp.circuits.graph", "_GRAPHS"),
                                    ("vision_interp.attribution._model", "_PROFILES"), ("vision_interp.trace", "_TRACES")):
        try:
            cache = getattr(importlib.import_module(module_name), cache_name, None)
        except ImportError:
            continue
        if cache is not None:
            try:
                cache.pop(model, None)
            except TypeError:
                pass


def _hooks_of(model: nn.Module) -> Iterator[tuple[nn.Module, int, FeatureHook]]:
    for module in model.modules():
        for hid, fn in list(module._forward_hooks.items()):
            if isinstance(fn, FeatureHook):
                yield module, hid, fn


def attached_features(model: nn.Module) -> dict[str, str]:
    """``{feature layer path: mode}`` for every dictionary attached to ``model``."""
    names = {id(m): n for n, m in model.named_modules()}
    return {names.get(id(fn.dictionary), fn.name): fn.mode for _, _, fn in _hooks_of(model)}


def attach(model: nn.Module, dictionary, name: str | None = None, *, layer: str | None = None,
           mode: str = "observe", gradient: str = "linear", check: bool = True) -> Attachment:
    """Attach ``dictionary`` (a :class:`~vision_interp.features.Dictionary` or a bare module with
    ``forward``/``decode``) to ``model`` so that its features are the channels of layer ``name``.

    ``name`` defaults to ``"<layer>/sae"`` (``"/<suffix>"`` is added to the source layer's path; a
    nested source ``"features.3"`` gives ``"features.3/sae"``). ``layer`` defaults to the
    dictionary's own ``layer``. With ``check``, one probe forward pass verifies that the features
    come out as ``(F, H, W)`` like a conv layer.
    """
    from ..units import layer_shape, resolve_layer

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
    module = getattr(dictionary, "module", dictionary)
    if not isinstance(module, nn.Module):
        from ..checks import InputTypeError

        raise InputTypeError(f"dictionary: expected a Dictionary (see load_dictionary) or an nn.Module, got {type(dictionary).__name__}")
    layer = layer or getattr(dictionary, "layer", None)
    if not layer:
        raise ValueError("attach() needs layer=... (the source layer) for a dictionary that does not record one")
    path = resolve_layer(model, layer)
    suffix = "sae"
    if name is not None:
        prefix = f"{path}/"
        if not name.startswith(prefix) or len(name) == len(prefix):
            raise ValueError(f"name must be '{prefix}<suffix>' (the source layer, a slash, a suffix), got {name!r}")
        suffix = name[len(prefix):]
    if any(ch in suffix for ch in ".:@/ ") :
        raise ValueError(f"the suffix of a feature layer name cannot contain '.', ':', '@', '/' or spaces, got {suffix!r}")
    parent, child, full = _parent_and_child(model, path, suffix)
    if child in parent._modules:
        raise ValueError(f"{full!r} is already attached to this model; detach it first (features.detach(model, {full!r}))")
    dev, dtype = _device_dtype(model)
    module = module.to(device=dev, dtype=dtype).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    if hasattr(module, "gradient"):
        module.gradient = gradient
    source = model.get_submodule(path)
    parent.add_module(child, module)
    handle = source.register_forward_hook(FeatureHook(module, full, mode))
    _forget_cached_structure(model)
    try:
        if check:
            shape = layer_shape(model, full)
            src_shape = layer_shape(model, path)
            n_feat = getattr(module, "n_features", None)
            if len(shape) != len(src_shape) or (n_feat is not None and shape[0] != n_feat):
                raise ValueError(f"dictionary output {shape} does not look like the source layer {src_shape} with {n_feat} channels")
            if len(shape) == 3 and shape[1:] != src_shape[1:]:
                raise ValueError(f"dictionary output {shape} lost the spatial size {src_shape[1:]} of {path!r}")
    except Exception:
        handle.remove()
        del parent._modules[child]
        _forget_cached_structure(model)
        raise
    return Attachment(model, full, path, mode)


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def detach(model: nn.Module, name: str | None = None) -> list[str]:
    """Remove the dictionary ``name`` (or every attached dictionary) and its hook. Returns what was removed."""
    removed = []
    names = {id(m): n for n, m in model.named_modules()}
    for module, hid, fn in list(_hooks_of(model)):
        full = names.get(id(fn.dictionary), fn.name)
        if name is not None and full != name:
            continue
        del module._forward_hooks[hid]
        parent_path, _, child = full.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        parent._modules.pop(child, None)
        removed.append(full)
    if name is not None and not removed:
        attached_now = ", ".join(attached_features(model)) or "none"
        raise ValueError(f"no dictionary {name!r} is attached to this model (attached: {attached_now})")
    _forget_cached_structure(model)
    return removed


@contextmanager
def attached(model: nn.Module, dictionary, name: str | None = None, **kwargs: Any) -> Iterator[Attachment]:
    """``with attached(model, d) as a:`` -- the features exist inside the block only (removed also on errors)."""
    a = attach(model, dictionary, name, **kwargs)
    try:
        yield a
    finally:
        if a.name in attached_features(model):
            detach(model, a.name)
