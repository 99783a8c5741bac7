"""Transcoders inside a model: the replacement model, and transcoder features as units.

* :func:`replaced` -- inside the block, each transcoded block's output is the transcoder's
  prediction from the block's (possibly already replaced) input: the sparse replacement model, no
  error term. Hooks are removed on exit, also on errors.
* :func:`attach_transcoder` -- the features become the channels of a layer ``"<block>/tc"``
  (``"conv2/tc:17"``) for capture, featvis, attribution, dataset examples and galleries, through the
  same machinery as SAE dictionaries (:mod:`vision_interp.features.attach`): ``detach`` and
  ``attached_features`` treat both alike.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .attach import (Attachment, FeatureHook, _check_gradient, _check_mode, _parent_and_child, attached_copy,
                     attached_features, detach)
from ..trace import model_device_dtype as _model_device
from .sae import fvu
from ..checks import InputError, InputTypeError, check_images, check_int, check_matrix
from ..errors import check_model
from ..model_state import exclusive, runs_model
from .transcoders import INPUT, Transcoder, block_activations, block_layers, check_transcoder, check_transcoders, input_reader

__all__ = ["replaced", "attach_transcoder", "attached_transcoder", "input_reader", "measure_transcoders", "check_disjoint"]


def check_disjoint(transcoders: Sequence[Transcoder], model: nn.Module, arg: str = "transcoders") -> None:
    """Refuse blocks that share a module (the same block twice, or overlapping blocks): replacing both
    would silently discard one prediction. Blocks are read from the model's trace."""
    from ..trace import TraceError
    from ..zoo.spec import model_spec

    seen: dict[str, str] = {}
    for i, tc in enumerate(transcoders):
        if tc.out_layer in seen:
            raise InputError(f"{arg}[{i}]: a second transcoder for the block ending at {tc.out_layer!r} (also {seen[tc.out_layer]}); "
                             "give each block once")
        seen[tc.out_layer] = f"{arg}[{i}]"
    if model_spec(model).input_shape is None:
        return
    owner: dict[str, tuple[int, Transcoder]] = {}
    for i, tc in enumerate(transcoders):
        try:
            layers = block_layers(model, tc.in_layer, tc.out_layer)
        except TraceError:
            continue
        for path, _ in layers:
            if path in owner:
                j, other = owner[path]
                raise InputError(f"{arg}[{i}]: the block {tc.in_layer} -> {tc.out_layer} overlaps {arg}[{j}]'s block "
                                 f"{other.in_layer} -> {other.out_layer} (both contain {path!r}); replaced blocks must not overlap")
            owner[path] = (i, tc)


@contextmanager
def replaced(model: nn.Module, transcoders: Sequence[Transcoder]) -> Iterator[nn.Module]:
    """Run ``model`` with every block in ``transcoders`` replaced by its transcoder's prediction from the
    block's input (an empty list: the model itself). The sparse replacement model, no error term.

    The list's order does not matter: a block reads its input *after* any block that ends there has
    replaced it (all predictions are hooked before all reads), so ``[t2, t1]`` runs the same model as
    ``[t1, t2]``. Overlapping or repeated blocks are refused. A block from ``"input"`` reads what the
    model's first module receives (after inline preprocessing). Each transcoder runs as a copy on
    the model's device and dtype with exact gradients; the caller's transcoders are not changed.
    The model is held for this thread inside the block, and every hook is removed on exit.
    """
    check_model(model)
    if isinstance(transcoders, (list, tuple)) and not transcoders:
        yield model
        return
    transcoders = check_transcoders(transcoders, model)
    check_disjoint(transcoders, model)
    modules = dict(model.named_modules())
    readers = [input_reader(model, tc.out_layer) if tc.in_layer == INPUT else None for tc in transcoders]
    copies = [attached_copy(tc.module, model, "exact") for tc in transcoders]
    stash: dict[int, torch.Tensor] = {}
    handles = []
    with exclusive(model, "replaced()"):
        try:
            for i, (tc, module) in enumerate(zip(transcoders, copies)):  # first every prediction ...
                handles.append(modules[tc.out_layer].register_forward_hook(_predict(stash, i, module)))
            for i, (tc, reader) in enumerate(zip(transcoders, readers)):  # ... then every read of a block input
                if reader is not None:
                    handles.append(modules[reader].register_forward_pre_hook(_stash_input(stash, i)))
                else:
                    handles.append(modules[tc.in_layer].register_forward_hook(_stash_output(stash, i)))
            yield model
        finally:
            for h in handles:
                h.remove()


def _stash_input(stash: dict, key: int):
    def hook(m: nn.Module, args: tuple) -> None:
        stash[key] = args[0].clone() if getattr(m, "inplace", False) else args[0]  # an in-place module would change it
    return hook


def _stash_output(stash: dict, key: int):
    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        stash[key] = out
    return hook


def _predict(stash: dict, key: int, module: nn.Module):
    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
        if key not in stash:
            raise RuntimeError(f"replaced(): the block output of {module!r} ran before its input was read")
        return module.predict(stash.pop(key)).to(out.dtype)
    return hook


class TranscoderHook(FeatureHook):
    """Part of the model: on the block's input layer it computes the features; in ``"replace"`` mode a
    second instance on the block's output layer returns the prediction from the features computed in
    this pass. ``role``: ``"read_output"`` (a forward hook on the input layer), ``"write"``."""

    def __init__(self, dictionary: nn.Module, name: str, mode: str, role: str, state: dict):
        super().__init__(dictionary, name, mode)
        self.role, self.state = role, state

    def __call__(self, _module: nn.Module, inputs: tuple, out: Any) -> Any:
        if self.role == "write":
            if self.mode != "replace":
                return None
            if "z" not in self.state:
                raise RuntimeError(f"transcoder {self.name!r}: the block's output ran before its input was read")
            return self.dictionary.decode(self.state.pop("z"), self.state.pop("a_in")).to(out.dtype)
        self._read(out)
        return None

    def _read(self, a_in: torch.Tensor) -> None:
        self.state["a_in"], self.state["z"] = a_in, self.dictionary(a_in)


class TranscoderInputHook(TranscoderHook):
    """The forward *pre*-hook on the module that receives the model input (a block from ``"input"``):
    it reads the tensor that module actually receives, after any inline preprocessing."""

    def __call__(self, module: nn.Module, args: tuple) -> None:  # type: ignore[override]
        self._read(args[0].clone() if getattr(module, "inplace", False) else args[0])  # an in-place module would change it
        return None


def attach_transcoder(model: nn.Module, tc: Transcoder, *, mode: str = "observe", gradient: str = "linear") -> Attachment:
    """Make the transcoder's features a layer ``"<block>/tc"`` of ``model`` (``mode``: observe | replace).

    In ``"observe"`` mode the model's outputs are unchanged; in ``"replace"`` the block's output is the
    transcoder's prediction. A copy is attached (the caller's transcoder keeps its dtype, device and
    gradient mode); ``gradient`` is the attachment's default (:func:`~vision_interp.features.feature_gradients`
    overrides it for a block of code). Undo with :func:`vision_interp.features.detach` or ``Attachment.remove()``.
    """
    from ..trace import invalidate
    from ..units import resolve_layer

    check_model(model)
    check_transcoder(tc, model)
    _check_mode(mode, ("observe", "replace"))
    _check_gradient(gradient)
    block = resolve_layer(model, tc.block)
    out_path = resolve_layer(model, tc.out_layer)
    reads_input = tc.in_layer == INPUT
    src_path = input_reader(model, out_path) if reads_input else resolve_layer(model, tc.in_layer)
    parent, child, full = _parent_and_child(model, block, "tc")
    if child in parent._modules:
        raise InputError(f"tc: {full!r} is already attached to this model; detach it first (features.detach(model, {full!r}))")
    module = attached_copy(tc.module, model, gradient)
    state: dict = {}
    parent.add_module(child, module)
    source = model.get_submodule(src_path)
    if reads_input:
        handles = [source.register_forward_pre_hook(TranscoderInputHook(module, full, mode, "read_input", state))]
    else:
        handles = [source.register_forward_hook(TranscoderHook(module, full, mode, "read_output", state))]
    handles.append(model.get_submodule(out_path).register_forward_hook(TranscoderHook(module, full, mode, "write", state)))
    invalidate(model)
    return Attachment(model, full, src_path, mode, module)


@contextmanager
def attached_transcoder(model: nn.Module, tc: Transcoder, **kwargs: Any) -> Iterator[Attachment]:
    """``with attached_transcoder(model, tc) as a:`` -- features exist inside the block only."""
    a = attach_transcoder(model, tc, **kwargs)
    try:
        yield a
    finally:
        if a.name in attached_features(model):
            detach(model, a.name)


@runs_model
@torch.no_grad()
def measure_transcoders(model: nn.Module, transcoders: list[Transcoder], images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int = 500) -> dict:
    """Held-out figures: per transcoder FVU of its block output (positions as samples), mean L0, dead
    features (never active on these images) and the accuracy with that block alone replaced (no
    error term); then the accuracy with all of them replaced together. The model runs in eval mode."""
    check_model(model)
    transcoders = check_transcoders(transcoders, model)
    check_disjoint(transcoders, model)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    images, _ = check_images(images, model, arg="images", allow_single=False)
    check_matrix(labels, "labels", ndim=1)
    if labels.is_floating_point() or labels.dtype == torch.bool or len(labels) != len(images):
        raise InputError(f"labels: {tuple(labels.shape)} {labels.dtype}; expected one integer class label per image ({len(images)})")
    out: dict = {"images": int(len(images))}
    with replaced(model, []):
        base = _accuracy(model, images, labels, batch_size)
    out["accuracy"] = base
    for tc in transcoders:
        a_in, a_out = block_activations(model, tc.in_layer, tc.out_layer, images, batch_size)
        module = copy.deepcopy(tc.module).to(device=a_in.device, dtype=a_in.dtype).eval()  # the caller's stays as it is
        z = torch.cat([module(a_in[i:i + batch_size]) for i in range(0, len(a_in), batch_size)])
        pred = torch.cat([module.decode(z[i:i + batch_size], a_in[i:i + batch_size]) for i in range(0, len(z), batch_size)])
        flat = lambda t: t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])  # noqa: E731
        with replaced(model, [tc]):
            acc = _accuracy(model, images, labels, batch_size)
        out[tc.feature_layer] = {"fvu": round(fvu(flat(a_out), flat(pred)), 5), "mean_l0": round(float((z > 0).sum(1).float().mean()), 4),
                                 "dead_features": int((~(z > 0).any(dim=(0, 2, 3))).sum()), "accuracy_replaced": acc}
    with replaced(model, transcoders):
        out["accuracy_all_replaced"] = _accuracy(model, images, labels, batch_size)
    return out


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    dev, dtype = _model_device(model)
    right = sum(int((model(images[i:i + batch_size].to(dev, dtype)).argmax(1).cpu() == labels[i:i + batch_size].cpu()).sum())
                for i in range(0, len(images), batch_size))
    return round(right / max(1, len(images)), 5)
