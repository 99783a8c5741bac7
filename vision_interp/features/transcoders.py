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
           "TC_FORMAT", "check_transcoder", "check_transcoders", "input_reader", "block_input_shape", "block_window",
           "block_layers"]

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


def _is_leaf(m: nn.Module) -> bool:
    return next(m.children(), None) is None


def _feature_module_ids(model: nn.Module) -> set[int]:
    """Attached dictionary/transcoder modules (and their submodules): not part of any block."""
    from .attach import _attached_modules

    return {id(sub) for m in _attached_modules(model) for sub in m.modules()}


def input_reader(model: nn.Module, out_layer: str | None = None, input_shape: tuple[int, ...] | None = None) -> str:
    """The module that receives the model input, i.e. the first module of a block that starts at ``"input"``.

    A model may preprocess inline (``conv1(x * 2 - 1)``): the block's real input is the tensor this
    module receives, which a forward *pre*-hook on it reads. Training, :func:`replaced`, attaching and
    measuring all read it there. With ``out_layer``, only modules on the way to it count; two different
    modules reading the input are refused (a block input is one tensor).
    """
    from ..trace import INPUT as TRACE_INPUT, TraceError, trace
    from ..units import default_input_shape

    t = trace(model, input_shape or default_input_shape(model))
    skip = _feature_module_ids(model)
    readers: list[str] = []
    for call in t.calls:
        if not _is_leaf(call.module) or id(call.module) in skip or call.path in readers:
            continue
        if not any(s.producer == TRACE_INPUT for flow in call.inputs for s in flow):
            continue
        if out_layer is not None and call.path != out_layer:
            try:
                if not t.is_upstream(call.path, out_layer):
                    continue
            except TraceError:
                continue
        if not any(s.producer == TRACE_INPUT for s in (call.inputs[0] if call.inputs else ())):
            raise InputError(f"in_layer: 'input': {call.path!r} takes the model input as an argument other than its first; "
                             "start the block at a layer instead")
        readers.append(call.path)
    if not readers:
        to = f" on the way to {out_layer!r}" if out_layer else ""
        raise InputError(f"in_layer: 'input': no module of {type(model).__name__} reads the model input{to}; "
                         "start the block at a layer instead")
    if len(readers) > 1:
        raise InputError(f"in_layer: 'input': several modules read the model input ({', '.join(readers)}); a block from "
                         f"'input' reads one tensor: start the block at a layer instead")
    return readers[0]


def block_input_shape(model: nn.Module, in_layer: str, out_layer: str, input_shape: tuple[int, ...] | None = None,
                      arg: str = "in_layer") -> tuple[int, ...]:
    """The shape (without batch) of the tensor the block ``in_layer -> out_layer`` reads: the input of
    :func:`input_reader` for ``"input"`` (after any inline preprocessing), else ``in_layer``'s output."""
    from ..trace import trace
    from ..units import default_input_shape, layer_shape

    shape_in = tuple(input_shape or default_input_shape(model))
    if in_layer != INPUT:
        return tuple(layer_shape(model, in_layer, shape_in))
    reader = input_reader(model, out_layer, shape_in)
    got = tuple(trace(model, shape_in).call(reader).in_shapes[0])
    if got[1:] != shape_in[1:]:
        raise InputError(f"{arg}: 'input': {type(model).__name__} changes the input's size inline before {reader!r} "
                         f"({shape_in} -> {got}); a block from 'input' is measured in the model input: start it at a layer")
    return got


def block_window(model: nn.Module, in_layer: str, out_layer: str, input_shape: tuple[int, ...] | None = None):
    """The :class:`~vision_interp.trace.Window` of the block input that each block output position reads (from the trace)."""
    from ..trace import trace
    from ..units import default_input_shape

    t = trace(model, tuple(input_shape or default_input_shape(model)))
    return t.receptive_field(out_layer) if in_layer == INPUT else t.relative_window(in_layer, out_layer)


def block_layers(model: nn.Module, in_layer: str, out_layer: str, input_shape: tuple[int, ...] | None = None) -> list[list[str]]:
    """``[[module path, class name], ...]``: the leaf modules that run inside the block, in call order
    (fed by ``in_layer``, feeding ``out_layer`` or ``out_layer`` itself). Cards record it; a block whose
    input does not feed its output is refused."""
    from ..trace import trace
    from ..units import default_input_shape

    t = trace(model, tuple(input_shape or default_input_shape(model)))
    end = t.call(out_layer).index
    inside = t.ancestors(end) | {end}
    if in_layer != INPUT:
        if not t.is_upstream(in_layer, out_layer):
            raise InputError(f"in_layer: {in_layer!r} does not feed {out_layer!r} in this {type(model).__name__}: not a block "
                             "(layers swapped, or a transcoder for another model?)")
        inside &= t.descendants(t.call(in_layer).index)
    skip = _feature_module_ids(model)
    out: list[list[str]] = []
    for i in sorted(inside):
        call = t.calls[i]
        entry = [call.path, type(call.module).__name__]
        if _is_leaf(call.module) and id(call.module) not in skip and entry not in out:
            out.append(entry)
    return out


def check_transcoder(tc: object, model: nn.Module | None = None, arg: str = "tc") -> Transcoder:
    """``tc`` is a :class:`Transcoder` (layers that agree with its card); with ``model``, one for this
    model's block: its layers exist in model order, the feature layer lies inside the block, and the
    block's receptive window (kernel, stride, padding, from the model's trace), channels and map sizes
    are the transcoder's; a card that records the block's layers must match them too. A transcoder for
    another model or another block is refused before any work, naming ``arg``."""
    from ..errors import check_model

    if not isinstance(arg, str):
        raise InputTypeError(f"arg: expected the argument's name for messages (str), got {type(arg).__name__}")
    check_instance(tc, Transcoder, arg)
    check_instance(tc.module, ConvTranscoder, f"{arg}.module")
    for key in ("in_layer", "out_layer", "block"):
        value = getattr(tc, key)
        if not isinstance(value, str) or not value:
            raise InputTypeError(f"{arg}.{key}: expected a layer name, got {type(value).__name__} {value!r}")
        said = tc.card.get(key) if isinstance(tc.card, dict) else None
        if isinstance(said, str) and said != value:
            raise InputError(f"{arg}: its {key} is {value!r} but its card says {said!r} (a transcoder relabelled for another "
                             "block?); load it again with load_transcoder")
    m = tc.module
    card = tc.card if isinstance(tc.card, dict) else {}
    for key, value in (("kernel", m.kernel), ("stride", m.stride), ("pad", m.pad), ("c_in", m.c_in), ("c_out", m.c_out)):
        said = card.get(key)
        if said is not None and (list(said) if isinstance(said, (list, tuple)) else said) != (list(value) if isinstance(value, tuple) else value):
            raise InputError(f"{arg}: its module's {key} is {value!r} but its card says {said!r}; the card and weights disagree")
    if model is None:
        return tc
    check_model(model)
    from ..trace import TraceError
    from ..units import layer_shape
    from ..zoo.spec import model_spec

    modules = dict(model.named_modules())
    for layer in (tc.in_layer, tc.out_layer, tc.block):
        if layer != INPUT and layer not in modules:
            raise InputError(f"{arg}: {tc.feature_layer!r} is for the block {tc.in_layer} -> {tc.out_layer}; this "
                             f"{type(model).__name__} has no layer {layer!r} (a transcoder for another model?)")
    if model_spec(model).input_shape is None:
        return tc  # no declared input shape: the sizes are checked when the model runs
    where = f"the block {tc.in_layer} -> {tc.out_layer} of this {type(model).__name__}"
    try:
        in_shape = block_input_shape(model, tc.in_layer, tc.out_layer, arg=arg)
        out_shape = layer_shape(model, tc.out_layer)
        layers = block_layers(model, tc.in_layer, tc.out_layer)
    except InputError as e:
        raise InputError(f"{arg}: {e}") from e
    except TraceError as e:
        raise InputError(f"{arg}: {where} cannot be read from the model's trace: {e}") from e
    if not any(p == tc.block or p.startswith(tc.block + ".") for p, _ in layers) and tc.block != tc.out_layer:
        raise InputError(f"{arg}: its features are named after {tc.block!r}, which is not inside {where} "
                         f"(layers {', '.join(p for p, _ in layers)})")
    want = (m.c_in, m.c_out)
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise InputError(f"{arg}: {where} maps {tuple(in_shape)} to {tuple(out_shape)}; a transcoder needs conv maps (C, H, W)")
    left, right, top, bottom = m.pad
    hw = (_out_size(in_shape[1], m.kernel[0], m.stride[0], top + bottom), _out_size(in_shape[2], m.kernel[1], m.stride[1], left + right))
    if (in_shape[0], out_shape[0]) != want or hw != tuple(out_shape[1:]):
        raise InputError(f"{arg}: {tc.feature_layer!r} maps ({m.c_in}, H, W) to ({m.c_out}, {hw[0]}, {hw[1]}) but {where} maps "
                         f"{tuple(in_shape)} to {tuple(out_shape)} (a transcoder for another model or block?)")
    try:
        geometry = block_geometry(block_window(model, tc.in_layer, tc.out_layer), in_shape[1:], out_shape[1:])
    except (TraceError, ValueError) as e:
        raise InputError(f"{arg}: the receptive window of {where} is not a conv window ({e}); a transcoder cannot stand for it") from e
    if geometry != (m.kernel, m.stride, m.pad):
        raise InputError(f"{arg}: {tc.feature_layer!r} reads windows kernel {m.kernel}, stride {m.stride}, padding {m.pad} "
                         f"(left, right, top, bottom), but each output position of {where} reads kernel {geometry[0]}, stride "
                         f"{geometry[1]}, padding {geometry[2]} of its input (a transcoder for another block or a shifted card?)")
    recorded = card.get("block_layers")
    if isinstance(recorded, list) and [list(x) for x in recorded] != layers:
        raise InputError(f"{arg}: the card records the block's layers {recorded} but {where} runs {layers} "
                         "(a transcoder for another model or architecture)")
    return tc


def check_transcoders(transcoders: object, model: nn.Module | None = None, arg: str = "transcoders") -> list[Transcoder]:
    """A non-empty list or tuple of transcoders, each checked with :func:`check_transcoder`."""
    if not isinstance(arg, str):
        raise InputTypeError(f"arg: expected the argument's name for messages (str), got {type(arg).__name__}")
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
    """The block's input and output on ``images`` (CPU, float): ``(N, C_in, H, W)``, ``(N, C_out, H', W')``.
    For a block from ``"input"`` the input is what :func:`input_reader` receives (after inline preprocessing)."""
    from ..capture import capture
    from ..model_state import exclusive

    batch_size = check_int(batch_size, "batch_size", minimum=1)
    check_images(images, model, arg="images", allow_single=False)
    src, dst = _resolve_block(model, in_layer, out_layer)
    reader = input_reader(model, dst, tuple(images.shape[1:])) if src == INPUT else None
    dev, dtype = _model_device(model)
    ins, outs = [], []
    seen: list[torch.Tensor] = []

    def read(_m: nn.Module, args: tuple) -> None:
        seen.append(args[0].detach().float().cpu().clone())  # copied before the module runs (it may work in place)

    with exclusive(model, "block_activations()"):
        handle = model.get_submodule(reader).register_forward_pre_hook(read) if reader else None
        try:
            for i in range(0, len(images), batch_size):
                x = images[i:i + batch_size].to(dev, dtype)
                seen.clear()
                got = capture(model, x, [dst] if src == INPUT else [src, dst], detach=True)
                if src == INPUT:
                    ins.append(seen[0])
                else:
                    ins.append(got[src].float().cpu())
                outs.append(got[dst].float().cpu())
        finally:
            if handle is not None:
                handle.remove()
    a_in, a_out = torch.cat(ins), torch.cat(outs)
    if a_in.ndim != 4 or a_out.ndim != 4:
        raise ValueError(f"a transcoder block maps conv maps to conv maps; {src!r} gives {tuple(a_in.shape[1:])}, "
                         f"{dst!r} gives {tuple(a_out.shape[1:])}")
    return a_in, a_out


def train_transcoder(model: nn.Module, in_layer: str, out_layer: str, images: torch.Tensor,
                     config: TranscoderConfig = TranscoderConfig(), *, block: str | None = None, data: str = "",
                     progress: bool = True) -> Transcoder:
    """Train a transcoder for the block ``in_layer -> out_layer`` on ``images`` (encoder = the block's
    receptive window, from the trace). A block from ``"input"`` reads what the model's first module
    receives (:func:`input_reader`), so inline preprocessing is outside the transcoder."""
    from ..errors import check_model
    from ..units import layer_shape

    check_model(model)
    for name, value in (("in_layer", in_layer), ("out_layer", out_layer)):
        if not isinstance(value, str):
            raise InputTypeError(f"{name}: expected a layer name (or 'input'), got {type(value).__name__} {value!r}")
    if block is not None and not isinstance(block, str):
        raise InputTypeError(f"block: expected a layer name or None, got {type(block).__name__} {block!r}")
    if not isinstance(data, str):
        raise InputTypeError(f"data: expected a description (str), got {type(data).__name__}")
    if not isinstance(progress, bool):
        raise InputTypeError(f"progress: expected True or False, got {type(progress).__name__} {progress!r}")
    check_instance(config, TranscoderConfig, "config")
    config.validate()
    check_images(images, model, arg="images", allow_single=False)
    src, dst = _resolve_block(model, in_layer, out_layer)
    shape_in = tuple(images.shape[1:])
    in_shape = block_input_shape(model, src, dst, shape_in)  # refuses a block from "input" whose model resizes inline
    out_shape = tuple(layer_shape(model, dst, shape_in))
    layers = block_layers(model, src, dst, shape_in)
    if block is None:
        block = default_block_name(model, src, dst)
    else:
        from ..units import resolve_layer

        block = resolve_layer(model, block)
        if not any(p == block or p.startswith(block + ".") for p, _ in layers) and block != dst:
            raise InputError(f"block: {block!r} is not inside the block {src} -> {dst} (layers {', '.join(p for p, _ in layers)})")
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise InputError(f"out_layer: the block {src} -> {dst} maps {in_shape} to {out_shape}; a transcoder needs conv maps (C, H, W)")
    try:
        geometry = block_geometry(block_window(model, src, dst, shape_in), in_shape[1:], out_shape[1:])
    except ValueError as e:
        raise InputError(f"out_layer: the block {src} -> {dst} is not a conv block: {e}") from e
    a_in, a_out = block_activations(model, src, dst, images)
    t0 = time.perf_counter()
    module = train_conv_transcoder(a_in, a_out, geometry, config, progress=progress)
    seconds = time.perf_counter() - t0
    card = {
        "format": TC_FORMAT, "kind": "conv_transcoder", "in_layer": src, "out_layer": dst, "block": block,
        "feature_layer": f"{block}/tc", "n_features": config.n_features, "k": config.k, "skip": config.skip,
        "c_in": int(a_in.shape[1]), "c_out": int(a_out.shape[1]), "kernel": list(geometry[0]), "stride": list(geometry[1]),
        "pad": list(geometry[2]), "block_layers": layers, "config": config.to_dict(), "data": data or f"{len(images)} images",
        "samples": int(a_out.shape[0] * a_out.shape[2] * a_out.shape[3]), "training_seconds": round(seconds, 2),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    return Transcoder(module, src, dst, block, card)


def save_transcoder(tc: Transcoder, out: str | os.PathLike) -> Path:
    """Write ``out.safetensors`` + ``out.json`` + ``out.md`` (a bare name goes to ``features/<name>`` in
    :func:`vision_interp.resources.user_models_dir`, never inside an installed package)."""
    check_transcoder(tc)
    base = _path_for(out, saving=True, arg="out")
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
