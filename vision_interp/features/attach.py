"""Make a dictionary's features ordinary units of a model: ``"conv2/sae:17"``.

:func:`attach` registers a *copy* of the dictionary as a child module named ``"<layer>/sae"`` beside
its source layer and adds a forward hook on the source layer that runs it. The dictionary's output
``(N, F, H, W)`` is then the output of a module on the forward path, so everything that reads
layers by module path -- ``capture``, featvis objectives, attribution targets, dataset examples,
the gallery -- sees features as channels, without knowing about dictionaries.

The attachment contract (dictionaries and transcoders alike):

* **Copies.** The attached module is a copy on the model's device and dtype; the caller's
  dictionary or transcoder (weights, dtype, device, gradient mode) is never changed, so it can be
  measured, saved or attached elsewhere afterwards.
* **The block's real input.** A transcoder block that starts at the model input reads what the
  model's first module receives (a forward *pre*-hook), after any inline preprocessing
  (:func:`vision_interp.features.transcoders.input_reader`).
* **The consumer picks the gradient.** An attachment's ``gradient=`` is only its default;
  :func:`feature_gradients` sets every attached feature's gradient for one block of code
  (attribution and graphs use ``"exact"``; feature visualization keeps the default ``"linear"``).
* **Structure changes are announced once**: :func:`vision_interp.trace.invalidate`.

Modes (what the hook does with the layer's output):

* ``"observe"`` (default): compute the features, leave the layer's output unchanged; the
  model's outputs are exactly as before.
* ``"replace"``: the layer's output becomes the dictionary's reconstruction (to measure what the
  model loses when it only sees the features).
* ``"splice"``: output ``x_hat + stopgrad(x - x_hat)``: values exactly as before, but gradients from
  later layers flow through the features (layer attribution *at* the features).

Gradients of a TopK feature: ``"linear"`` (the attachment default) is straight-through -- exact where
the feature is active, its linear pre-activation's gradient where it is not -- so feature
visualization can grow a feature from an image where it is not active anywhere (with exact
gradients most features start, and stay, at zero: measured on the committed conv2 dictionary, 4 of
64 reach a positive value in 64 steps). ``"exact"`` gives the true derivative of the feature
everywhere: what attribution, completeness and graphs need, and what they ask for with
:func:`feature_gradients`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["attach", "detach", "attached", "attached_features", "feature_gradients", "observing_modules", "MODES", "GRADIENTS"]

MODES = ("observe", "replace", "splice")
GRADIENTS = ("linear", "exact")
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


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
    """What :func:`attach` did; ``remove()`` undoes it (same as :func:`detach`). ``module`` is the
    attached copy (not the caller's object); ``gradient`` its current gradient mode."""

    model: nn.Module = field(repr=False)
    name: str  # full module path of the features, e.g. "conv2/sae"
    layer: str  # the source layer's module path
    mode: str
    module: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def gradient(self) -> str | None:
        return getattr(self.module, "gradient", None)

    def remove(self) -> None:
        detach(self.model, self.name)


def _parent_and_child(model: nn.Module, layer_path: str, suffix: str) -> tuple[nn.Module, str, str]:
    """The module that gets the dictionary as a child, the child's name, and the full path."""
    parent_path, _, leaf = layer_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    child = f"{leaf}/{suffix}"
    return parent, child, f"{parent_path}.{child}" if parent_path else child


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    from ..trace import model_device_dtype

    return model_device_dtype(model)


def attached_copy(module: nn.Module, model: nn.Module, gradient: str | None = None) -> nn.Module:
    """A copy of ``module`` on ``model``'s device and dtype, in eval mode, frozen, with ``gradient`` set:
    what gets attached (or run by :func:`~vision_interp.features.replaced`); the caller's module is untouched."""
    dev, dtype = _device_dtype(model)
    out = copy.deepcopy(module).to(device=dev, dtype=dtype).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    if gradient is not None and hasattr(out, "gradient"):
        out.gradient = gradient
    return out


def observing_modules(model: nn.Module) -> list[nn.Module]:
    """The dictionary / transcoder modules attached in ``"observe"`` mode: they compute features beside the
    model but never change its output, so a method that inspects the ops of a forward pass (attribution's
    guards) leaves what runs inside them out."""
    return [hook.dictionary for _m, _a, _h, hook in _hooks_of(model) if hook.mode == "observe"]


def _hooks_of(model: nn.Module) -> Iterator[tuple[nn.Module, str, int, FeatureHook]]:
    """Every feature hook on the model: ``(module, hook dict name, hook id, hook)``."""
    for module in model.modules():
        for attr in _HOOK_DICTS:
            for hid, fn in list(getattr(module, attr).items()):
                if isinstance(fn, FeatureHook):
                    yield module, attr, hid, fn


def _attached_modules(model: nn.Module) -> list[nn.Module]:
    """Each attached dictionary/transcoder module once (a transcoder has two hooks on one module)."""
    seen: dict[int, nn.Module] = {}
    for _, _, _, fn in _hooks_of(model):
        seen.setdefault(id(fn.dictionary), fn.dictionary)
    return list(seen.values())


def _check_gradient(gradient: Any, arg: str = "gradient") -> str:
    from ..errors import InputError, InputTypeError

    if not isinstance(gradient, str):
        raise InputTypeError(f"{arg}: expected one of {', '.join(map(repr, GRADIENTS))}, got {type(gradient).__name__} {gradient!r}")
    if gradient not in GRADIENTS:
        raise InputError(f"{arg}: {gradient!r}; must be one of {', '.join(map(repr, GRADIENTS))}")
    return gradient


def _check_mode(mode: Any, modes: tuple[str, ...]) -> str:
    from ..errors import InputError, InputTypeError

    if not isinstance(mode, str):
        raise InputTypeError(f"mode: expected one of {', '.join(map(repr, modes))}, got {type(mode).__name__} {mode!r}")
    if mode not in modes:
        raise InputError(f"mode: {mode!r}; must be one of {', '.join(map(repr, modes))}")
    return mode


@contextmanager
def feature_gradients(model: nn.Module, mode: str) -> Iterator[None]:
    """For the block's duration, every dictionary/transcoder feature attached to ``model`` passes back
    ``mode`` gradients: ``"exact"`` (the true derivative: attribution, graphs, completeness) or
    ``"linear"`` (straight-through for inactive features: feature visualization). Each attachment's
    own mode comes back afterwards, also on errors.

    The consumer picks its gradient here; the attachment's ``gradient=`` is only its default.
    """
    from ..errors import check_model

    check_model(model)
    _check_gradient(mode, "mode")
    saved = [(m, m.gradient) for m in _attached_modules(model) if hasattr(m, "gradient")]
    try:
        for m, _ in saved:
            m.gradient = mode
        yield
    finally:
        for m, previous in reversed(saved):
            m.gradient = previous


def attached_features(model: nn.Module) -> dict[str, str]:
    """``{feature layer path: mode}`` for every dictionary attached to ``model``."""
    from ..errors import check_model

    check_model(model)
    names = {id(m): n for n, m in model.named_modules()}
    return {names.get(id(fn.dictionary), fn.name): fn.mode for _, _, _, fn in _hooks_of(model)}


def attach(model: nn.Module, dictionary, name: str | None = None, *, layer: str | None = None,
           mode: str = "observe", gradient: str = "linear", check: bool = True) -> Attachment:
    """Attach a copy of ``dictionary`` (a :class:`~vision_interp.features.Dictionary` or a bare module
    with ``forward``/``decode``) to ``model`` so that its features are the channels of layer ``name``.

    ``name`` defaults to ``"<layer>/sae"`` (``"/<suffix>"`` is added to the source layer's path; a
    nested source ``"features.3"`` gives ``"features.3/sae"``). ``layer`` defaults to the
    dictionary's own ``layer``. With ``check``, one probe forward pass verifies that the features
    come out as ``(F, H, W)`` like a conv layer. ``gradient`` is the attachment's default gradient
    mode (see :func:`feature_gradients`). The caller's dictionary is not changed.
    """
    from ..errors import InputError, InputTypeError, check_model
    from ..trace import invalidate
    from ..units import layer_shape, resolve_layer

    check_model(model)
    _check_mode(mode, MODES)
    _check_gradient(gradient)
    if not isinstance(check, bool):
        raise InputTypeError(f"check: expected True or False, got {type(check).__name__} {check!r}")
    for arg, value in (("name", name), ("layer", layer)):
        if value is not None and not isinstance(value, str):
            raise InputTypeError(f"{arg}: expected a layer name or None, got {type(value).__name__} {value!r}")
    if hasattr(dictionary, "in_layer") and hasattr(dictionary, "out_layer"):  # a Transcoder (duck-typed: no import cycle)
        raise InputTypeError("dictionary: a Transcoder; attach it with features.attach_transcoder(model, tc)")
    module = getattr(dictionary, "module", dictionary)
    if not isinstance(module, nn.Module) or not callable(getattr(module, "decode", None)):
        raise InputTypeError(f"dictionary: expected a Dictionary (see load_dictionary) or an nn.Module with decode(), "
                             f"got {type(dictionary).__name__}")
    layer = layer or getattr(dictionary, "layer", None)
    if not layer:
        raise InputError("layer: attach() needs layer=... (the source layer) for a dictionary that does not record one")
    path = resolve_layer(model, layer)
    suffix = "sae"
    if name is not None:
        prefix = f"{path}/"
        if not name.startswith(prefix) or len(name) == len(prefix):
            raise InputError(f"name: the feature layer's name must be '{prefix}<suffix>' (the source layer, a slash, a suffix), got {name!r}")
        suffix = name[len(prefix):]
    if any(ch in suffix for ch in ".:@/ "):
        raise InputError(f"name: the suffix of a feature layer name cannot contain '.', ':', '@', '/' or spaces, got {suffix!r}")
    parent, child, full = _parent_and_child(model, path, suffix)
    if child in parent._modules:
        raise InputError(f"name: {full!r} is already attached to this model; detach it first (features.detach(model, {full!r}))")
    module = attached_copy(module, model, gradient)
    source = model.get_submodule(path)
    parent.add_module(child, module)
    handle = source.register_forward_hook(FeatureHook(module, full, mode))
    invalidate(model)
    try:
        if check:
            shape = layer_shape(model, full)
            src_shape = layer_shape(model, path)
            n_feat = getattr(module, "n_features", None)
            if len(shape) != len(src_shape) or (n_feat is not None and shape[0] != n_feat):
                raise InputError(f"dictionary: output {shape} does not look like the source layer {src_shape} with {n_feat} channels")
            if len(shape) == 3 and shape[1:] != src_shape[1:]:
                raise InputError(f"dictionary: output {shape} lost the spatial size {src_shape[1:]} of {path!r}")
    except BaseException:
        handle.remove()
        del parent._modules[child]
        invalidate(model)
        raise
    return Attachment(model, full, path, mode, module)


def detach(model: nn.Module, name: str | None = None) -> list[str]:
    """Remove the dictionary ``name`` (or every attached dictionary) and its hooks. Returns what was removed."""
    from ..errors import InputError, InputTypeError, check_model
    from ..trace import invalidate

    check_model(model)
    if name is not None and not isinstance(name, str):
        raise InputTypeError(f"name: expected a feature layer name (e.g. 'conv2/sae') or None, got {type(name).__name__} {name!r}")
    names = {id(m): n for n, m in model.named_modules()}
    targets = {}
    for module, attr, hid, fn in list(_hooks_of(model)):
        full = names.get(id(fn.dictionary), fn.name)
        if name is not None and full != name:
            continue
        targets.setdefault(full, []).append((module, attr, hid))
    if name is not None and not targets:
        attached_now = ", ".join(attached_features(model)) or "none"
        raise InputError(f"name: no dictionary {name!r} is attached to this model (attached: {attached_now})")
    for full, hooks in targets.items():
        for module, attr, hid in hooks:
            getattr(module, attr).pop(hid, None)
        parent_path, _, child = full.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        parent._modules.pop(child, None)
    invalidate(model)
    return list(targets)


@contextmanager
def attached(model: nn.Module, dictionary, name: str | None = None, **kwargs: Any) -> Iterator[Attachment]:
    """``with attached(model, d) as a:`` -- the features exist inside the block only (removed also on errors)."""
    a = attach(model, dictionary, name, **kwargs)
    try:
        yield a
    finally:
        if a.name in attached_features(model):
            detach(model, a.name)
