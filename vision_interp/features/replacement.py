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

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .attach import Attachment, FeatureHook, _device_dtype, _forget_cached_structure, _parent_and_child, attached_features, detach
from ..trace import model_device_dtype as _model_device
from .sae import fvu
from ..checks import InputError, check_images, check_int, check_matrix
from ..model_state import runs_model
from .transcoders import INPUT, Transcoder, block_activations, check_transcoder, check_transcoders

__all__ = ["replaced", "attach_transcoder", "attached_transcoder", "input_reader", "measure_transcoders"]


def input_reader(model: nn.Module) -> str:
    """The first module the model calls on its raw input: where a hook can read the model input."""
    from ..trace import INPUT as TRACE_INPUT, trace
    from ..units import default_input_shape

    t = trace(model, default_input_shape(model))
    for call in t.calls:
        if any(s.producer == TRACE_INPUT for flow in call.inputs for s in flow):
            return call.path
    raise ValueError(f"no module of {type(model).__name__} reads the model input directly")


@contextmanager
def replaced(model: nn.Module, transcoders: Sequence[Transcoder]) -> Iterator[nn.Module]:
    """Run ``model`` with every block in ``transcoders`` replaced by its transcoder's prediction (an
    empty list: the model itself)."""
    if isinstance(transcoders, (list, tuple)) and not transcoders:
        yield model
        return
    check_transcoders(transcoders, model)
    modules = dict(model.named_modules())
    stash: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for tc in transcoders:
            module = _on_model(tc.module, model)
            if tc.in_layer == INPUT:
                handles.append(model.register_forward_pre_hook(_stash_input(stash, tc.in_layer)))
            else:
                handles.append(modules[tc.in_layer].register_forward_hook(_stash_output(stash, tc.in_layer)))
            handles.append(modules[tc.out_layer].register_forward_hook(_predict(stash, tc.in_layer, module)))
        yield model
    finally:
        for h in handles:
            h.remove()


def _on_model(module: nn.Module, model: nn.Module) -> nn.Module:
    """``module`` on the model's device and dtype; a copy when it must move (the caller's transcoder stays as it was)."""
    import copy

    dev, dtype = _device_dtype(model)
    p = next(module.parameters())
    return module if (p.device, p.dtype) == (dev, dtype) else copy.deepcopy(module).to(dev, dtype)


def _stash_input(stash: dict, key: str):
    def hook(_m: nn.Module, args: tuple) -> None:
        stash[key] = args[0]
    return hook


def _stash_output(stash: dict, key: str):
    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        stash[key] = out
    return hook


def _predict(stash: dict, key: str, module: nn.Module):
    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
        return module.predict(stash[key]).to(out.dtype)
    return hook


class TranscoderHook(FeatureHook):
    """Part of the model: on the block's input layer it computes the features (reading the module's
    input when the block starts at the model input); in ``"replace"`` mode a second instance on the
    block's output layer returns the prediction from the features computed in this pass."""

    def __init__(self, dictionary: nn.Module, name: str, mode: str, role: str, state: dict):
        super().__init__(dictionary, name, mode)
        self.role, self.state = role, state

    def __call__(self, _module: nn.Module, inputs: tuple, out: Any) -> Any:
        if self.role == "read_input":
            a_in = inputs[0]
        elif self.role == "read_output":
            a_in = out
        else:  # "write": the block's output layer
            if self.mode != "replace":
                return None
            return self.dictionary.decode(self.state["z"], self.state["a_in"]).to(out.dtype)
        self.state["a_in"], self.state["z"] = a_in, self.dictionary(a_in)
        return None


def attach_transcoder(model: nn.Module, tc: Transcoder, *, mode: str = "observe", gradient: str = "linear") -> Attachment:
    """Make the transcoder's features a layer ``"<block>/tc"`` of ``model`` (``mode``: observe | replace).

    In ``"observe"`` mode the model's outputs are unchanged; in ``"replace"`` the block's output is the
    transcoder's prediction. Undo with :func:`vision_interp.features.detach` or ``Attachment.remove()``.
    """
    from ..units import resolve_layer

    check_transcoder(tc, model)
    if mode not in ("observe", "replace"):
        raise ValueError(f"mode must be 'observe' or 'replace' for a transcoder, got {mode!r}")
    if gradient not in ("linear", "exact"):
        raise ValueError(f"gradient must be 'linear' or 'exact', got {gradient!r}")
    block = resolve_layer(model, tc.block)
    out_path = resolve_layer(model, tc.out_layer)
    reads_input = tc.in_layer == INPUT
    src_path = input_reader(model) if reads_input else resolve_layer(model, tc.in_layer)
    parent, child, full = _parent_and_child(model, block, "tc")
    if child in parent._modules:
        raise ValueError(f"{full!r} is already attached to this model; detach it first (features.detach(model, {full!r}))")
    module = tc.module.to(*_device_dtype(model)).eval()
    module.gradient = gradient
    state: dict = {}
    parent.add_module(child, module)
    handles = [model.get_submodule(src_path).register_forward_hook(
        TranscoderHook(module, full, mode, "read_input" if reads_input else "read_output", state))]
    handles.append(model.get_submodule(out_path).register_forward_hook(TranscoderHook(module, full, mode, "write", state)))
    _forget_cached_structure(model)
    return Attachment(model, full, src_path, mode)


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
    transcoders = check_transcoders(transcoders, model)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    images, _ = check_images(images, model, arg="images", allow_single=False)
    check_matrix(labels, "labels", ndim=1)
    if labels.is_floating_point() or len(labels) != len(images):
        raise InputError(f"labels: {tuple(labels.shape)} {labels.dtype}; expected one integer class label per image ({len(images)})")
    out: dict = {"images": int(len(images))}
    with replaced(model, []):
        base = _accuracy(model, images, labels, batch_size)
    out["accuracy"] = base
    for tc in transcoders:
        a_in, a_out = block_activations(model, tc.in_layer, tc.out_layer, images, batch_size)
        z = torch.cat([tc.module(a_in[i:i + batch_size]) for i in range(0, len(a_in), batch_size)])
        pred = torch.cat([tc.module.decode(z[i:i + batch_size], a_in[i:i + batch_size]) for i in range(0, len(z), batch_size)])
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
