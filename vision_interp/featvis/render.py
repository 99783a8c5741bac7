"""The optimisation loop: parameterized images -> transforms -> model (up to the layers needed) -> Adam.

:func:`render` validates everything it can before the first step (layer names, channel ranges,
batch indices, whether the model accepts the transformed image size), then runs Adam on the image
parameters only: the model's parameters are frozen for the duration (and restored afterwards),
and the forward pass stops at the deepest layer the objective reads (``capture(stop_early=True)``).

:func:`visualize` and :func:`visualize_layer` pick per-model defaults (InceptionV1: Fourier +
decorrelated colour, Lucid's standard transforms, 224 px; small grayscale models such as the
MNIST CNN: pixel parameterization, +-2 px shifts, native 28x28) and batch many units into one
optimisation.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .. import images as vimages
from ..capture import LayerNotReachedError, capture
from ..units import UnitRangeError, UnknownLayerError, default_input_shape, layer_shape, resolve_layer
from .objectives import Objective, as_objective
from .param import ImageParam, image_param
from .transform import Compose, make_transforms

__all__ = [
    "RenderResult",
    "NonFiniteObjectiveError",
    "render",
    "visualize",
    "visualize_layer",
    "model_defaults",
    "parse_channels",
]


class NonFiniteObjectiveError(RuntimeError):
    """The objective became NaN or infinite during optimisation."""


@dataclass
class RenderResult:
    """Rendered images and how well each achieved its objective.

    ``images``: (N, C, H, W) float in [0, 1] on CPU. ``values``: (N,) the objective of each
    batch element evaluated on its final image without transforms (higher = better achieved).
    ``history``: (steps, N) the objective at each step (on the transformed images that step).
    ``activations``: (N,) the raw unit activation (channel mean) for visualize/visualize_layer,
    also when the objective was negated or had a diversity term; None for plain render().
    ``units``: the unit string of each image for visualize/visualize_layer (repeated
    ``images_per_unit`` times, unit-major: image ``u * images_per_unit + j``).
    """

    images: torch.Tensor
    values: torch.Tensor
    descriptions: list[str]
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    history: torch.Tensor | None = None
    activations: torch.Tensor | None = None
    units: list[str] | None = None
    images_per_unit: int = 1
    seconds: float = 0.0
    steps: int = 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def pil(self, scale: int = 1) -> list:
        """The images as PIL images (nearest-neighbour enlarged by ``scale``)."""
        return [vimages.to_pil(vimages.upscale(img, scale)) for img in self.images]

    def numpy(self) -> list:
        """The images as uint8 arrays (H, W, 3) or (H, W)."""
        return [vimages.to_numpy_image(img) for img in self.images]

    def save(self, directory: str | os.PathLike, names: Sequence[str] | None = None, *, scale: int = 1) -> list[Path]:
        """Write one PNG per image (atomically); names default to ``NNN_<description>.png``."""
        d = Path(directory)
        if names is not None and len(names) != len(self):
            raise ValueError(f"got {len(names)} names for {len(self)} images")
        names = list(names) if names is not None else [f"{i:03d}_{_slug(desc)}.png" for i, desc in enumerate(self.descriptions)]
        return [vimages.save_png(img, d / (n if n.endswith(".png") else n + ".png"), scale=scale) for img, n in zip(self.images, names)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", text).replace(":", "-").strip("_")[:80] or "image"


# --- per-model defaults ----------------------------------------------------------------------------


def _bf16_is_fast() -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX) oneDNN kernels."""
    if torch.cuda.is_available():
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def model_defaults(model: nn.Module) -> dict:
    """Rendering defaults for a model, from its input size (a model may override via ``featvis_defaults``).

    Large inputs (>= 96 px, e.g. InceptionV1 at 224): Fourier parameterization, colour
    decorrelation for RGB, Lucid's standard transforms, 256 steps, and bf16 autocast where the
    hardware supports it (on this project's CPU: ~1.6x faster per step, same final activation
    measured in fp32; see benchmarks/featvis.py). Small inputs (MNIST 28x28):
    a pixel parameterization with lr 0.2 and random shifts of +-2 px that keep the native size
    (the model only accepts 28x28, and scaling/rotating a 28 px image mostly blurs it), 128 steps.
    Measured on the MNIST CNN: after 32 steps, pixel/lr 0.2 beats the strongest test image on
    all 24 conv channels; lr 0.05 (pixel or Fourier) or Fourier/lr 0.2 still missed some.
    """
    shape = default_input_shape(model)
    c, h, w = shape
    if min(h, w) >= 96:
        d = dict(param="fft", decorrelate=(c == 3), transforms="standard", input_shape=(c, h, w), steps=256, batch_size=16,
                 precision="bf16" if _bf16_is_fast() else "fp32", objective="channel")
    else:
        d = dict(param="pixel", decorrelate=(c == 3), transforms="small", input_shape=(c, h, w), steps=128, batch_size=64, lr=0.2,
                 objective="neuron")
    d.update(getattr(model, "featvis_defaults", None) or {})
    return d


# --- render ------------------------------------------------------------------------------------------


def _pick_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    try:
        model_device = next(model.parameters()).device
    except StopIteration:
        model_device = torch.device("cpu")
    if device is None or device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else model_device
    return torch.device(device)


def _per_element(objectives: Sequence[Objective]) -> Objective:
    """Objective i applies to batch element i only: many units rendered in one optimisation."""
    objs = list(objectives)

    def fn(acts) -> torch.Tensor:
        return torch.stack([o(acts)[i] for i, o in enumerate(objs)])

    layers = [l for o in objs for l in o.layers]
    checks = [c for o in objs for c in o.checks]
    desc = "; ".join(f"[{i}] {o.description}" for i, o in enumerate(objs))
    return Objective(fn, layers, desc, checks)


def _is_objective_list(objective) -> bool:
    """A list (or a tuple that is not a unit tuple like ``("conv2", 5)``) means one objective per image."""
    if isinstance(objective, list):
        if not objective:
            raise ValueError("empty list of objectives")
        return True
    if isinstance(objective, tuple) and objective:
        is_unit = isinstance(objective[0], str) and len(objective) <= 3 and all(not isinstance(o, (str, Objective)) for o in objective[1:])
        return not is_unit
    return False


def _check_input_size(model: nn.Module, layers: Sequence[str], shape: tuple, what: str) -> None:
    """Run the model once (early exit) at ``shape``; turn the model's complaint into a clear error."""
    for layer in layers:
        resolve_layer(model, layer)  # unknown names first, with suggestions
    for layer in layers:
        try:
            layer_shape(model, layer, shape)
        except (UnknownLayerError, UnitRangeError, LayerNotReachedError):
            raise
        except (ValueError, RuntimeError) as e:
            raise ValueError(
                f"{type(model).__name__} cannot take images of shape {shape} ({what}) up to layer {layer!r}: {e}"
            ) from e


def render(
    model: nn.Module,
    objective: Objective | str | Sequence[Objective | str],
    *,
    param: ImageParam | str | None = None,
    transforms: str | Sequence | Compose | None = "standard",
    steps: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    thresholds: Iterable[int] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    input_shape: Sequence[int] | None = None,
    save_dir: str | os.PathLike | None = None,
    batch: int | None = None,
    decorrelate: bool | None = None,
    precision: str = "fp32",
    channels_last: bool = True,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    descriptions: Sequence[str] | None = None,
) -> RenderResult:
    """Optimise images to maximise ``objective``; returns a :class:`RenderResult`.

    ``objective``: an :class:`Objective` (values per batch element), a unit string
    (``"mixed4a:476"`` -> channel objective), or a list with one objective per batch element.
    ``param``: an :class:`ImageParam`, or ``"fft"``/``"pixel"`` (built at ``input_shape`` (C, H, W),
    default the model's, for ``batch`` images). ``transforms``: ``"standard"`` (Lucid's set),
    ``"small"``, ``"none"`` or a list. ``thresholds``: steps at which to keep snapshots.
    ``precision``: ``"fp32"`` or ``"bf16"`` (autocast; the image, transforms and objective stay fp32).
    ``channels_last`` feeds the model NHWC tensors (on CPU it makes max pooling ~10x faster).
    ``on_step(step, values)`` is called after every step. Everything is validated before the first step.
    """
    t_start = time.perf_counter()
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if _is_objective_list(objective):
        items = [as_objective(o) for o in objective]
        descs = [o.description for o in items]
        obj = _per_element(items)
        n_from_objective = len(items)
    else:
        obj = as_objective(objective)
        descs = None
        n_from_objective = None
    if not obj.layers:
        raise ValueError(f"objective {obj.description!r} reads no layer")

    # --- the image parameterization ----------------------------------------------------------
    if isinstance(param, ImageParam):
        n = param.shape[0]
        if batch is not None and batch != n:
            raise ValueError(f"batch={batch} but the given parameterization has {n} images")
        img_param = param
    else:
        if input_shape is None:
            input_shape = default_input_shape(model)
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        n = batch or n_from_objective or 1
        kind = param or "fft"
        c = int(input_shape[0])
        img_param = image_param(kind, (n, *input_shape), seed=seed, decorrelate=(c == 3) if decorrelate is None else decorrelate)
    if n_from_objective is not None and n_from_objective != n:
        raise ValueError(f"{n_from_objective} objectives for a batch of {n} images")
    if descriptions is not None:
        if len(descriptions) != n:
            raise ValueError(f"{len(descriptions)} descriptions for {n} images")
        descs = list(descriptions)
    if descs is None:
        descs = [obj.description] * n

    # --- validate before any work --------------------------------------------------------------
    tf = make_transforms(transforms)
    _, c, h, w = img_param.shape
    try:
        out_h, out_w = tf.out_size((h, w))
    except ValueError:
        out_h, out_w = h, w  # custom callables: the check below uses the param size
    eff_shape = (c, out_h, out_w)
    _check_input_size(model, obj.layers, eff_shape, f"{h}x{w} image, {out_h}x{out_w} after transforms")
    obj.check(model, eff_shape, n)
    clean_ok = True
    if (out_h, out_w) != (h, w):
        try:
            _check_input_size(model, obj.layers, (c, h, w), "without transforms")
        except ValueError:
            clean_ok = False
    thresholds = sorted({int(t) for t in (thresholds or [])})
    bad = [t for t in thresholds if not 0 <= t <= steps]
    if bad:
        raise ValueError(f"thresholds {bad} are outside 0..{steps}")

    dev = _pick_device(model, device)
    try:
        orig_device = next(model.parameters()).device
    except StopIteration:
        orig_device = dev
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    layers = list(obj.layers)
    gen = torch.Generator().manual_seed(int(seed))
    snapshots: dict[int, torch.Tensor] = {}
    history = torch.zeros(steps, n)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=(precision == "bf16"))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    from tqdm.auto import tqdm

    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        model.eval()
        if dev != orig_device:
            model.to(dev)
        img_param.to(dev)
        opt = torch.optim.Adam(img_param.parameters(), lr=lr)

        def evaluate(images: torch.Tensor, with_grad: bool, transform: bool) -> torch.Tensor:
            x = tf(images, gen) if transform else images
            x = x.contiguous(memory_format=memory_format)
            # final values are always measured in fp32, so bf16 runs are judged like fp32 ones
            with torch.set_grad_enabled(with_grad), (autocast if with_grad else contextlib.nullcontext()):
                acts = capture(model, x, layers, stop_early=True)
                return obj(acts).float()

        if 0 in thresholds:
            snapshots[0] = img_param().detach().cpu()
        bar = tqdm(range(1, steps + 1), desc=f"render {descs[0][:40]}" + (f" (+{n - 1})" if n > 1 else ""), disable=not progress, leave=False)
        for step in bar:
            opt.zero_grad(set_to_none=True)
            values = evaluate(img_param(), True, True)
            loss = -values.sum()
            if not torch.isfinite(loss):
                raise NonFiniteObjectiveError(
                    f"objective {obj.description!r} became {loss.item()} at step {step} of {steps}; "
                    "try a smaller lr, a sigmoid parameterization, or an objective that is finite for all images"
                )
            loss.backward()
            opt.step()
            history[step - 1] = values.detach().cpu()
            if step in thresholds:
                snapshots[step] = img_param().detach().cpu()
            if on_step is not None:
                on_step(step, values.detach())
            if progress and (step % 10 == 0 or step == steps):
                bar.set_postfix(objective=f"{float(values.detach().mean()):.3g}")
        bar.close()
        with torch.no_grad():
            final = img_param().detach()
            if clean_ok:
                final_values = evaluate(final, False, False).cpu()
            else:
                final_values = evaluate(final, False, True).cpu()
        if not torch.isfinite(final_values).all():
            raise NonFiniteObjectiveError(f"objective {obj.description!r} is not finite on the final images (after {steps} steps)")
    finally:
        for p, req in frozen:
            p.requires_grad_(req)
        model.train(was_training)
        if dev != orig_device:
            model.to(orig_device)
    result = RenderResult(
        images=final.cpu().float(),
        values=final_values,
        descriptions=descs,
        snapshots=snapshots,
        history=history,
        seconds=time.perf_counter() - t_start,
        steps=steps,
    )
    if save_dir is not None:
        result.save(save_dir)
    return result


# --- convenience -------------------------------------------------------------------------------------


def parse_channels(spec: str | Iterable[int] | None, n_channels: int) -> list[int]:
    """``None`` (all), an iterable of ints, or a string like ``"0-7"``, ``"1,3,5"``, ``"0-3,8"``."""
    if spec is None:
        return list(range(n_channels))
    if isinstance(spec, str):
        out: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                a, b = int(m[1]), int(m[2])
                if b < a:
                    raise ValueError(f"channel range {part!r} is empty (end before start)")
                out.extend(range(a, b + 1))
            elif part.isdigit():
                out.append(int(part))
            else:
                raise ValueError(f"cannot parse channels {spec!r}: use e.g. '0-7' or '1,3,5'")
        chans = out
    else:
        chans = [int(c) for c in spec]
    if not chans:
        raise ValueError("no channels given")
    bad = [c for c in chans if not 0 <= c < n_channels]
    if bad:
        raise UnitRangeError(f"channel(s) {', '.join(map(str, bad[:8]))} out of range: valid channels are 0..{n_channels - 1} ({n_channels} channels)")
    return chans


def _channels_per_element(
    layer: str, chans: Sequence[int], sign: float, unit_desc: Sequence[str], position: tuple[int, int] | None = None
) -> Objective:
    """Element i maximises (or, with sign -1, minimises) channel ``chans[i]``: one gather, not N objectives.

    The channel's spatial mean, or with ``position=(y, x)`` the single neuron there.
    """
    idx = torch.as_tensor(list(chans))
    kind = "channels" if position is None else f"neurons@{position[0]},{position[1]}"
    desc = f"{'-' if sign < 0 else ''}{kind} {layer}:[{len(chans)}]"

    def fn(acts) -> torch.Tensor:
        a = acts[layer].float()
        sel = a[torch.arange(a.shape[0], device=a.device), idx.to(a.device)]
        if position is not None and sel.ndim > 1:
            v = sel[:, position[0], position[1]]
        else:
            v = sel.flatten(1).mean(1) if sel.ndim > 1 else sel
        return sign * v

    return Objective(fn, [layer], desc)


def _raw_activations(
    model: nn.Module, layer: str, chans: Sequence[int], images: torch.Tensor, position: tuple[int, int] | None = None
) -> torch.Tensor | None:
    """Channel means (or neurons at ``position``) of ``chans[i]`` on image i, in eval mode without
    gradients (None if the size is not accepted)."""
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters(), None)
        x = images.to(p.device) if p is not None else images
        with torch.no_grad():
            return _channels_per_element(layer, chans, 1.0, [], position)(capture(model, x, [layer], stop_early=True)).cpu()
    except (ValueError, RuntimeError):
        return None
    finally:
        model.train(was_training)


def _render_kwargs(model: nn.Module, size: int | Sequence[int] | None, steps: int | None, kw: dict) -> dict:
    d = model_defaults(model)
    shape = tuple(kw.pop("input_shape", None) or d["input_shape"])
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        shape = (shape[0], *hw)
    out = dict(input_shape=shape, steps=steps if steps is not None else d["steps"])
    if "lr" in d and "lr" not in kw:
        out["lr"] = d["lr"]
    if "param" not in kw:
        out["param"] = d["param"]
    if "transforms" not in kw:
        out["transforms"] = d["transforms"]
    if "decorrelate" not in kw:
        out["decorrelate"] = d["decorrelate"]
    if "precision" in d and "precision" not in kw:
        out["precision"] = d["precision"]
    out.update(kw)
    return out


def visualize(model: nn.Module, unit: str | Objective | Sequence, *, steps: int | None = None, size: int | None = None,
              seed: int = 0, progress: bool = True, **kw) -> RenderResult:
    """Render one unit (``"mixed4a:476"``, ``"conv2:5@3,3"``, ``"conv2"`` = DeepDream) with the model's defaults.

    ``.activations`` holds the unit's raw activation (channel mean, or the neuron) on the final image.
    """
    obj = as_objective(unit)
    res = render(model, obj, seed=seed, progress=progress, **_render_kwargs(model, size, steps, kw))
    res.activations = res.values.clone()
    res.units = [str(unit) if not isinstance(unit, Objective) else unit.description]
    return res


def visualize_layer(
    model: nn.Module,
    layer: str,
    channels: str | Iterable[int] | None = None,
    *,
    negative: bool = False,
    diversity: float = 0.0,
    images_per_unit: int | None = None,
    diversity_layer: str | None = None,
    objective: str | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    **kw,
) -> RenderResult:
    """Render many channels of ``layer`` in batched optimisations (chunks of ``batch_size`` images).

    ``negative=True`` minimises each channel instead. ``diversity > 0`` renders
    ``images_per_unit`` images per channel (default 4) with a Gram-matrix diversity term of that
    weight among the images of the same channel (on ``diversity_layer``, default ``layer``).
    Result order is unit-major: image ``u * images_per_unit + j`` is copy ``j`` of channel
    ``channels[u]``; ``.units`` names each image's unit, ``.values`` is the optimised objective
    (``-activation`` when negative, plus the diversity term), ``.activations`` the raw value of the
    optimised quantity. ``objective`` is ``"channel"`` (spatial mean) or ``"neuron"`` (the centre
    position of the layer's output); the default comes from :func:`model_defaults`: ``"neuron"`` for
    small inputs, where a channel mean of a linear early filter is maximised by a nearly uniform
    image (uninformative), ``"channel"`` for large ones, as in Lucid and OpenAI Microscope.
    Each chunk is seeded ``seed + chunk index``, so results do not depend on the chunking of
    other chunks; a channel's image does depend on its position within its chunk.
    """
    from .objectives import diversity as diversity_objective

    path = resolve_layer(model, layer)
    rk = _render_kwargs(model, size, steps, kw)
    try:
        eff_hw = make_transforms(rk["transforms"]).out_size(tuple(rk["input_shape"][1:]))
    except ValueError:  # custom callables in the chain: render() checks the size
        eff_hw = tuple(rk["input_shape"][1:])
    eff = (rk["input_shape"][0], *eff_hw)
    _check_input_size(model, [path], eff, "after transforms")
    out_shape = layer_shape(model, path, eff)
    n_ch = out_shape[0]
    chans = parse_channels(channels, n_ch)
    objective = objective or model_defaults(model).get("objective", "channel")
    if objective not in ("channel", "neuron"):
        raise ValueError(f"objective must be 'channel' or 'neuron', got {objective!r}")
    position = (out_shape[1] // 2, out_shape[2] // 2) if objective == "neuron" and len(out_shape) == 3 else None
    k = images_per_unit or (4 if diversity > 0 else 1)
    if k < 1:
        raise ValueError(f"images_per_unit must be >= 1, got {k}")
    if diversity > 0 and k < 2:
        raise ValueError("diversity needs at least 2 images per unit (images_per_unit >= 2)")
    if diversity > 0 and diversity_layer is not None:
        resolve_layer(model, diversity_layer)
    d = model_defaults(model)
    bs = max(batch_size or d["batch_size"], k)
    units_per_chunk = max(1, bs // k)
    sign = -1.0 if negative else 1.0
    all_images, all_values, all_acts, all_desc, all_units, all_hist = [], [], [], [], [], []
    seconds = 0.0
    for ci, start in enumerate(range(0, len(chans), units_per_chunk)):
        chunk = chans[start : start + units_per_chunk]
        per_image = [c for c in chunk for _ in range(k)]
        unit_names = [f"{layer}:{c}" for c in per_image]
        what = "channel" if position is None else "neuron"
        at = "" if position is None else f"@{position[0]},{position[1]}"
        descs = [("negative " if negative else "") + f"{what} {u}{at}" + (f" #{j}" if k > 1 else "") for u, j in zip(unit_names, [j for _ in chunk for j in range(k)])]
        obj = _channels_per_element(path, per_image, sign, descs, position)
        if diversity > 0:
            obj = obj + diversity_objective(diversity_layer or path, diversity, group_size=k)
        res = render(model, obj, batch=len(per_image), seed=seed + ci, progress=progress, descriptions=descs, **rk)
        if sign > 0 and diversity <= 0:
            raw = res.values.clone()  # the objective is the raw activation
        else:
            raw = _raw_activations(model, path, per_image, res.images, position)
            if raw is None:  # model does not take the untransformed size
                raw = sign * res.values
        all_images.append(res.images)
        all_values.append(res.values)
        all_acts.append(raw)
        all_desc += descs
        all_units += unit_names
        all_hist.append(res.history)
        seconds += res.seconds
    result = RenderResult(
        images=torch.cat(all_images),
        values=torch.cat(all_values),
        descriptions=all_desc,
        history=torch.cat(all_hist, dim=1) if all_hist and all(h.shape[0] == all_hist[0].shape[0] for h in all_hist) else None,
        activations=torch.cat(all_acts),
        units=all_units,
        images_per_unit=k,
        seconds=seconds,
        steps=rk["steps"],
    )
    return result
