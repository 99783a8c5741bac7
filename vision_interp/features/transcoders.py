"""A trained transcoder for one block of a model, with its card: train, measure, save, load by name.

A block is named by its input layer (a module path, or ``"input"`` for the model's input) and its
output layer; its features are named ``"<block>/tc"`` (``block`` defaults to the first conv-like
layer inside it, e.g. ``"conv2/tc:17"``). Files sit beside the SAE dictionaries, in the same format
home (``models/features/<name>.safetensors`` + ``.json`` + ``.md``, written atomically).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import io as vio
from .. import resources
from ..checks import FileContentError, InputError, InputTypeError, check_images, check_instance, check_int, check_state_dict
from ..trace import model_device_dtype as _model_device
from .dictionary import FEATURES_SUBDIR, _card_markdown, _path_for
from .transcoder import ConvTranscoder, TranscoderConfig, block_geometry, train_conv_transcoder

__all__ = ["Transcoder", "INPUT", "block_activations", "train_transcoder", "save_transcoder", "load_transcoder",
           "TC_FORMAT", "check_transcoder", "check_transcoders"]

INPUT = "input"
TC_FORMAT = "vision_interp.transcoder/1"


@dataclass
class Transcoder:
    """A :class:`ConvTranscoder` for the block ``in_layer -> out_layer`` of a model."""

    module: ConvTranscoder
    in_layer: str  # module path, or "input"
    out_layer: str
    block: str  # the features' layer is "<block>/tc"
    card: dict = field(default_factory=dict)

    @property
    def feature_layer(self) -> str:
        return f"{self.block}/tc"

    @property
    def n_features(self) -> int:
        return self.module.n_features

    @property
    def k(self) -> int:
        return self.module.k


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + pad - kernel) // stride + 1


def check_transcoder(tc: object, model: nn.Module | None = None, arg: str = "tc") -> Transcoder:
    """``tc`` is a :class:`Transcoder`; with ``model``, one for this model's block: its layers exist and its
    channels and map sizes match the block's input and output (a transcoder for another model or
    another block is refused before any work, naming ``arg``)."""
    check_instance(tc, Transcoder, arg)
    if model is None:
        return tc
    from ..units import default_input_shape, layer_shape

    modules = dict(model.named_modules())
    for layer in (tc.in_layer, tc.out_layer, tc.block):
        if layer != INPUT and layer not in modules:
            raise InputError(f"{arg}: {tc.feature_layer!r} is for the block {tc.in_layer} -> {tc.out_layer}; this "
                             f"{type(model).__name__} has no layer {layer!r} (a transcoder for another model?)")
    from ..zoo.spec import model_spec

    if model_spec(model).input_shape is None:
        return tc  # no declared input shape: the sizes are checked when the model runs
    in_shape = default_input_shape(model) if tc.in_layer == INPUT else layer_shape(model, tc.in_layer)
    out_shape = layer_shape(model, tc.out_layer)
    m = tc.module
    want = (m.c_in, m.c_out)
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise InputError(f"{arg}: the block {tc.in_layer} -> {tc.out_layer} of this {type(model).__name__} maps "
                         f"{tuple(in_shape)} to {tuple(out_shape)}; a transcoder needs conv maps (C, H, W)")
    left, right, top, bottom = m.pad
    hw = (_out_size(in_shape[1], m.kernel[0], m.stride[0], top + bottom), _out_size(in_shape[2], m.kernel[1], m.stride[1], left + right))
    if (in_shape[0], out_shape[0]) != want or hw != tuple(out_shape[1:]):
        raise InputError(f"{arg}: {tc.feature_layer!r} maps ({m.c_in}, H, W) to ({m.c_out}, {hw[0]}, {hw[1]}) but the block "
                         f"{tc.in_layer} -> {tc.out_layer} of this {type(model).__name__} maps {tuple(in_shape)} to "
                         f"{tuple(out_shape)} (a transcoder for another model or block?)")
    return tc


def check_transcoders(transcoders: object, model: nn.Module | None = None, arg: str = "transcoders") -> list[Transcoder]:
    """A non-empty list or tuple of transcoders, each checked with :func:`check_transcoder`."""
    if isinstance(transcoders, Transcoder) or not isinstance(transcoders, (list, tuple)):
        raise InputTypeError(f"{arg}: expected a list of Transcoder (e.g. [load_transcoder(name)]), got "
                             f"{type(transcoders).__name__}")
    if not transcoders:
        raise InputError(f"{arg}: an empty list; give at least one Transcoder")
    return [check_transcoder(tc, model, f"{arg}[{i}]") for i, tc in enumerate(transcoders)]


def _resolve_block(model: nn.Module, in_layer: str, out_layer: str) -> tuple[str, str]:
    from ..units import resolve_layer

    src = INPUT if in_layer == INPUT else resolve_layer(model, in_layer)
    dst = resolve_layer(model, out_layer)
    if src == dst:
        raise InputError(f"out_layer: {out_layer!r} is also the block's in_layer; a block needs different input and output layers")
    return src, dst


def default_block_name(model: nn.Module, in_layer: str, out_layer: str) -> str:
    """The first layer after ``in_layer`` with weights on the way to ``out_layer`` (e.g. ``conv2``)."""
    from ..trace import trace
    from ..units import default_input_shape

    t = trace(model, default_input_shape(model))
    order = t.order
    start = 0 if in_layer == INPUT else order.index(in_layer) + 1
    for path in order[start:order.index(out_layer) + 1]:
        if any(True for _ in model.get_submodule(path).parameters(recurse=False)):
            return path
    return out_layer


@torch.no_grad()
def block_activations(model: nn.Module, in_layer: str, out_layer: str, images: torch.Tensor,
                      batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's input and output on ``images`` (CPU, float): ``(N, C_in, H, W)``, ``(N, C_out, H', W')``."""
    from ..capture import capture

    batch_size = check_int(batch_size, "batch_size", minimum=1)
    check_images(images, model, arg="images", allow_single=False)
    src, dst = _resolve_block(model, in_layer, out_layer)
    dev, dtype = _model_device(model)
    ins, outs = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(dev, dtype)
        got = capture(model, x, [dst] if src == INPUT else [src, dst], detach=True)
        ins.append((x if src == INPUT else got[src]).float().cpu())
        outs.append(got[dst].float().cpu())
    a_in, a_out = torch.cat(ins), torch.cat(outs)
    if a_in.ndim != 4 or a_out.ndim != 4:
        raise ValueError(f"a transcoder block maps conv maps to conv maps; {src!r} gives {tuple(a_in.shape[1:])}, "
                         f"{dst!r} gives {tuple(a_out.shape[1:])}")
    return a_in, a_out


def _window(model: nn.Module, src: str, dst: str, in_shape: tuple[int, ...]):
    from ..trace import trace

    t = trace(model, in_shape)
    return t.receptive_field(dst) if src == INPUT else t.relative_window(src, dst)


def train_transcoder(model: nn.Module, in_layer: str, out_layer: str, images: torch.Tensor,
                     config: TranscoderConfig = TranscoderConfig(), *, block: str | None = None, data: str = "",
                     progress: bool = True) -> Transcoder:
    """Train a transcoder for the block ``in_layer -> out_layer`` on ``images`` (encoder = the block's receptive field)."""
    check_instance(config, TranscoderConfig, "config")
    config.validate()
    check_images(images, model, arg="images", allow_single=False)
    src, dst = _resolve_block(model, in_layer, out_layer)
    block = block or default_block_name(model, src, dst)
    a_in, a_out = block_activations(model, src, dst, images)
    geometry = block_geometry(_window(model, src, dst, tuple(images.shape[1:])), a_in.shape[-2:], a_out.shape[-2:])
    t0 = time.perf_counter()
    module = train_conv_transcoder(a_in, a_out, geometry, config, progress=progress)
    seconds = time.perf_counter() - t0
    card = {
        "format": TC_FORMAT, "kind": "conv_transcoder", "in_layer": src, "out_layer": dst, "block": block,
        "feature_layer": f"{block}/tc", "n_features": config.n_features, "k": config.k, "skip": config.skip,
        "c_in": int(a_in.shape[1]), "c_out": int(a_out.shape[1]), "kernel": list(geometry[0]), "stride": list(geometry[1]),
        "pad": list(geometry[2]), "config": config.to_dict(), "data": data or f"{len(images)} images",
        "samples": int(a_out.shape[0] * a_out.shape[2] * a_out.shape[3]), "training_seconds": round(seconds, 2),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    return Transcoder(module, src, dst, block, card)


def save_transcoder(tc: Transcoder, out: str | os.PathLike) -> Path:
    """Write ``out.safetensors`` + ``out.json`` + ``out.md`` (a bare name goes to ``features/<name>`` in
    :func:`vision_interp.resources.user_models_dir`, never inside an installed package)."""
    check_transcoder(tc)
    base = _path_for(out, saving=True)
    m = tc.module
    meta = {"format": TC_FORMAT, "in_layer": tc.in_layer, "out_layer": tc.out_layer, "block": tc.block}
    weights = vio.save_state_dict(base.with_suffix(".safetensors"), m.state_dict(), metadata=meta)
    card = dict(tc.card)
    card["weights_sha256"] = vio.sha256_file(weights)
    vio.save_json(base.with_suffix(".json"), card)
    text = _card_markdown(base.name, card).replace("A TopK sparse autoencoder on one layer",
                                                   f"A TopK transcoder for the block {tc.in_layer} -> {tc.out_layer}")
    vio.atomic_write_text(base.with_suffix(".md"), text.replace("# Dictionary card", "# Transcoder card"))
    return weights


def load_transcoder(name_or_path: str | os.PathLike) -> Transcoder:
    """A transcoder by name (``models/features/<name>``) or path (with or without ``.safetensors``)."""
    base = _path_for(name_or_path)
    weights, card_path = base.with_suffix(".safetensors"), base.with_suffix(".json")
    if not weights.is_file():
        known = sorted(p.stem for p in resources.list_model_files(FEATURES_SUBDIR, "*_tc.safetensors"))
        raise FileNotFoundError(f"no transcoder at {weights}; known names: {', '.join(known) or 'none'}")
    if not card_path.is_file():
        raise FileNotFoundError(f"transcoder card {card_path} is missing")
    card = vio.load_json(card_path)
    if not isinstance(card, dict) or card.get("format") != TC_FORMAT:
        got = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise FileContentError(f"{card_path}: not a vision_interp transcoder card (format {got!r}, expected {TC_FORMAT!r})")
    c_in, c_out, n_features, k, kernel, stride, pad = _card_geometry(card, card_path)
    sd = vio.load_state_dict(weights)
    expected = {"W_enc": (n_features, c_in, *kernel), "b_enc": (n_features,), "W_dec": (n_features, c_out), "b_dec": (c_out,),
                "s_in": (), "s_out": ()}
    if "W_skip" in sd:
        expected["W_skip"] = (c_out, c_in, *kernel)
    check_state_dict(sd, expected, weights)
    m = ConvTranscoder(c_in, c_out, n_features, k, kernel, stride, pad, skip="W_skip" in sd)
    m.load_state_dict(sd, strict=True)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return Transcoder(m, card["in_layer"], card["out_layer"], card["block"], card)


def _card_geometry(card: dict, card_path: Path) -> tuple:
    """The card's sizes, checked: positive integers, ``1 <= k <= n_features``, 2 kernel/stride and 4 pad entries, layer names."""
    def ints(key: str, n: int | None, minimum: int) -> list[int]:
        v = card.get(key)
        vals = v if n is not None else [v]
        if not isinstance(vals, list) or (n is not None and len(vals) != n) or any(
                isinstance(i, bool) or not isinstance(i, int) or i < minimum for i in vals):
            what = f"a list of {n} integers >= {minimum}" if n is not None else f"an integer >= {minimum}"
            raise FileContentError(f"{card_path}: {key!r} is {v!r}; expected {what}")
        return vals

    c_in, c_out, n_features, k = (ints(key, None, 1)[0] for key in ("c_in", "c_out", "n_features", "k"))
    if k > n_features:
        raise FileContentError(f"{card_path}: 'k' is {k}; expected an integer in 1..{n_features} (the number of features)")
    kernel, stride, pad = tuple(ints("kernel", 2, 1)), tuple(ints("stride", 2, 1)), tuple(ints("pad", 4, 0))
    for key in ("in_layer", "out_layer", "block"):
        if not isinstance(card.get(key), str) or not card[key]:
            raise FileContentError(f"{card_path}: {key!r} is {card.get(key)!r}; expected a layer name")
    return c_in, c_out, n_features, k, kernel, stride, pad
