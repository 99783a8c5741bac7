"""Units and layers, batched: :func:`visualize` (one unit) and :func:`visualize_layer` (many units of
a layer in batched optimisations), channel lists, and objective values of given images."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch
from torch import nn

from ..capture import _capture
from ..checks import check_images, check_instance, check_int, check_number
from ..errors import check_model
from ..units import UnitRangeError, default_input_shape, layer_shape
from .objectives import Objective, as_objective, bound_layer
from .optimise import _frozen, _tensors_by_path
from .prepare import _check_input_size, _fitting_hint, _stopped_at, resolve_settings
from .result import RenderResult
from .run import render
from .settings import RenderSettings, _checked_shape
from .transform import make_transforms


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


def _channels_per_element(layer: str, chans: Sequence[int], position: tuple[int, int] | None = None) -> Objective:
    """Element i's value is channel ``chans[i]`` of image i: one gather, not N objectives.

    The channel's spatial mean, or with ``position=(y, x)`` the single neuron there. Negate it to minimise.
    """
    idx = torch.as_tensor(list(chans))
    kind = "channels" if position is None else f"neurons@{position[0]},{position[1]}"
    desc = f"{kind} {layer}:[{len(chans)}]"

    def fn(acts) -> torch.Tensor:
        a = acts[layer].float()
        sel = a[torch.arange(a.shape[0], device=a.device), idx.to(a.device)]
        if position is not None and sel.ndim > 1:
            v = sel[:, position[0], position[1]]
        else:
            v = sel.flatten(1).mean(1) if sel.ndim > 1 else sel
        return v

    obj = Objective(fn, [layer], desc, reads_position=position is not None)
    obj.unit_objective = obj
    return obj


def evaluate_objective(model: nn.Module, objective: Objective, images: torch.Tensor) -> torch.Tensor | None:
    """``objective`` on ``images`` as they are (eval mode, no gradients, fp32); None when the model
    rejects their size."""
    x, _ = check_images(images, model, arg="images", allow_single=False)
    check_instance(objective, Objective, "objective")
    paths = [bound_layer(model, name) for name in objective.layers]
    shape = tuple(int(v) for v in x.shape[1:])
    try:
        objective.check(model, shape, x.shape[0])  # ranges, and what an objective reads from the model (class names)
    except (ValueError, RuntimeError):
        if _stopped_at(model, shape) is not None:
            return None  # the model rejects this size
        raise
    with _frozen(model, x.device), torch.no_grad():
        try:
            raw = _tensors_by_path(_capture(model, x, paths, stop_early=True), paths)
        except (ValueError, RuntimeError):
            return None
        return objective({name: raw[path] for name, path in zip(objective.layers, paths)}).float().cpu()


def _with_size(model: nn.Module, settings: RenderSettings | str | None, size: int | Sequence[int] | None,
               steps: int | None, kw: dict) -> RenderSettings:
    """Settings for visualize/visualize_layer: the given or default ones, with ``size``, ``steps`` and keyword overrides."""
    opts = {k: v for k, v in kw.items() if k in RenderSettings.__dataclass_fields__}
    if steps is not None:
        opts["steps"] = check_int(steps, "steps", minimum=0)
    if size is not None:
        # the size goes in before the settings are resolved: the default preset is chosen at this size
        hw = _checked_size(size)
        if opts.get("input_shape") is not None:
            c = _checked_shape(opts["input_shape"], "input_shape")[0]
        elif isinstance(settings, RenderSettings) and settings.input_shape is not None:
            c = settings.input_shape[0]
        else:
            c = default_input_shape(model)[0]
        opts["input_shape"] = (int(c), *hw)
    return resolve_settings(model, settings, opts)


def _checked_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``size=`` as (H, W): one positive integer for a square, or two."""
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ValueError(f"size: expected one integer or (H, W), got {len(size)} values {tuple(size)!r}")
        return check_int(size[0], "size[0]", minimum=1), check_int(size[1], "size[1]", minimum=1)
    v = check_int(size, "size", minimum=1)
    return v, v


def _unit_activations(model: nn.Module, obj: Objective, res: RenderResult) -> torch.Tensor | None:
    """The raw activation of the objective's unit on the final images: the values themselves when the
    objective is the unit, else one extra evaluation (e.g. for ``-channel(u)``: +activation, not -)."""
    unit = obj.unit_objective
    if unit is obj:
        return res.values.clone()
    if unit is None:
        return None
    return evaluate_objective(model, unit, res.images)


def visualize(model: nn.Module, unit: str | Objective | Sequence, settings: RenderSettings | str | None = None, *,
              steps: int | None = None, size: int | None = None, seed: int = 0, progress: bool = True, **kw) -> RenderResult:
    """Render one unit (``"mixed4a:476"``, ``"conv2:5@3,3"``, ``"conv2"`` = DeepDream) with the model's default settings
    (or ``settings``: a :class:`RenderSettings` or a preset name; keyword options override fields).

    ``.activations`` holds the unit's raw activation (channel mean, or the neuron) on the final image,
    with the unit's own sign also when the objective was negated or scaled; None when the objective
    combines several units.
    """
    check_model(model)
    seed = check_int(seed, "seed")
    obj = as_objective(unit)
    s = _with_size(model, settings, size, steps, kw)
    extra = {k: v for k, v in kw.items() if k not in RenderSettings.__dataclass_fields__}
    res = render(model, obj, s, seed=seed, progress=progress, **extra)
    res.activations = _unit_activations(model, obj, res)
    res.units = [str(unit) if not isinstance(unit, Objective) else unit.description]
    return res


def visualize_layer(
    model: nn.Module,
    layer: str,
    channels: str | Iterable[int] | None = None,
    settings: RenderSettings | str | None = None,
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
    unit. ``objective`` is ``"channel"`` (spatial mean) or ``"neuron"`` (the centre position of the
    layer's output); the default comes from the settings: ``"neuron"`` for small inputs, where a
    channel mean of a linear early filter is maximised by a nearly uniform image (uninformative),
    ``"channel"`` for large ones, as in Lucid and OpenAI Microscope.
    Each chunk is seeded ``seed + chunk index``, so results do not depend on the chunking of
    other chunks; a channel's image does depend on its position within its chunk.
    """
    from .objectives import diversity as diversity_objective

    check_model(model)
    check_instance(layer, str, "layer")
    check_instance(negative, bool, "negative")
    diversity = check_number(diversity, "diversity", minimum=0.0)
    if images_per_unit is not None:
        images_per_unit = check_int(images_per_unit, "images_per_unit", minimum=1)
    if diversity_layer is not None:
        check_instance(diversity_layer, str, "diversity_layer")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed")
    if objective is not None:
        kw["objective"] = objective
    if batch_size is not None:
        kw["batch_size"] = batch_size
    s = _with_size(model, settings, size, steps, kw)
    path = bound_layer(model, layer)
    eff = _effective_shape(s, model)
    c, h, w = tuple(s.input_shape or default_input_shape(model))
    _check_input_size(model, [path], eff, "after transforms", _fitting_hint(model, [path], int(c), int(h), int(w), eff[1:]))
    out_shape = layer_shape(model, path, eff)
    chans = parse_channels(channels, out_shape[0])
    position = (out_shape[1] // 2, out_shape[2] // 2) if s.objective == "neuron" and len(out_shape) == 3 else None
    k = images_per_unit or (4 if diversity > 0 else 1)
    if k < 1:
        raise ValueError(f"images_per_unit must be >= 1, got {k}")
    if diversity > 0 and k < 2:
        raise ValueError("diversity needs at least 2 images per unit (images_per_unit >= 2)")
    if diversity > 0 and diversity_layer is not None:
        bound_layer(model, diversity_layer)
    units_per_chunk = max(1, max(s.batch_size, k) // k)
    sign = -1.0 if negative else 1.0
    extra = {key: v for key, v in kw.items() if key not in RenderSettings.__dataclass_fields__}
    parts: list[RenderResult] = []
    for ci, start in enumerate(range(0, len(chans), units_per_chunk)):
        per_image = [c for c in chans[start : start + units_per_chunk] for _ in range(k)]
        descs = _unit_descriptions(layer, per_image, k, negative, position)
        unit_obj = _channels_per_element(path, per_image, position)
        obj = unit_obj if sign > 0 else -unit_obj
        if diversity > 0:
            obj = obj + diversity_objective(diversity_layer or path, diversity, group_size=k)
        res = render(model, obj, s, batch=len(per_image), seed=seed + ci, progress=progress, descriptions=descs, **extra)
        res.activations = res.values.clone() if obj is unit_obj else evaluate_objective(model, unit_obj, res.images)
        if res.activations is None:  # the model does not take the untransformed size
            res.activations = sign * res.values
        res.units = [f"{layer}:{c}" for c in per_image]
        parts.append(res)
    return _concat(parts, k)


def _effective_shape(s: RenderSettings, model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model sees after the settings' transforms."""
    shape = tuple(s.input_shape or default_input_shape(model))
    hw = make_transforms(s.transforms).out_size(tuple(shape[1:]))
    return (int(shape[0]), int(hw[0]), int(hw[1]))


def _unit_descriptions(layer: str, per_image: Sequence[int], k: int, negative: bool, position: tuple[int, int] | None) -> list[str]:
    what = "channel" if position is None else "neuron"
    at = "" if position is None else f"@{position[0]},{position[1]}"
    return [("negative " if negative else "") + f"{what} {layer}:{c}{at}" + (f" #{i % k}" if k > 1 else "") for i, c in enumerate(per_image)]


def _concat(parts: Sequence[RenderResult], k: int) -> RenderResult:
    """One result from the chunks of visualize_layer (unit-major order kept)."""
    hists = [p.history for p in parts]
    same_len = all(h is not None and h.shape[0] == hists[0].shape[0] for h in hists)
    return RenderResult(
        images=torch.cat([p.images for p in parts]),
        values=torch.cat([p.values for p in parts]),
        descriptions=[d for p in parts for d in p.descriptions],
        history=torch.cat(hists, dim=1) if hists and same_len else None,
        activations=torch.cat([p.activations for p in parts]),
        units=[u for p in parts for u in (p.units or [])],
        images_per_unit=k,
        seconds=sum(p.seconds for p in parts),
        steps=parts[0].steps,
        settings=parts[0].settings,
        seed=parts[0].seed,
    )
