"""One render, start to finish: settings and objective prepared and checked (:mod:`.prepare`), the
optimisation run with the model frozen (:mod:`.optimise`), the result packaged (:mod:`.result`)."""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..checks import check_int
from ..errors import check_model
from ..units import default_input_shape
from .objectives import Objective, bound_layer
from .optimise import _Evaluator, _frozen, _judge, _optimise, _phase_size
from .prepare import (_as_batch_objective, _build_param, _descriptions, _split_objects, _validate, _validate_coarse,
                      resolve_settings)
from .result import RenderResult
from .settings import RenderSettings, pick_device, resolve_precision
from .transform import make_transforms


def render(
    model: nn.Module,
    objective: Objective | str | Sequence[Objective | str],
    settings: RenderSettings | str | None = None,
    *,
    seed: int = 0,
    batch: int | None = None,
    thresholds: Iterable[int] | None = None,
    progress: bool = True,
    save_dir: str | os.PathLike | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    descriptions: Sequence[str] | None = None,
    **options,
) -> RenderResult:
    """Optimise images to maximise ``objective``; returns a :class:`RenderResult`.

    ``objective``: an :class:`Objective` (values per batch element), a unit string
    (``"mixed4a:476"`` -> channel objective), or a list with one objective per batch element.
    ``settings``: a :class:`RenderSettings`, a preset name (one of ``PRESETS``: ``"lucid"``, ``"fast"``, ``"fast-small"``, ...) or
    None for the model's default; keyword ``options`` override single fields (``steps=``, ``lr=``,
    ``precision=``, ``input_shape=``, ...). ``param=`` may also be an :class:`ImageParam` and
    ``transforms=`` a list of transforms or a :class:`Compose` (recorded by their repr).
    ``thresholds``: steps at which to keep snapshots. ``on_step(step, values)`` is called after
    every step. Everything is validated before the first step.
    """
    t_start = time.perf_counter()
    check_model(model)
    seed = check_int(seed, "seed")
    if batch is not None:
        batch = check_int(batch, "batch", minimum=1)
    if thresholds is not None:
        if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Iterable):
            raise TypeError(f"thresholds: expected a list of step numbers, got {type(thresholds).__name__} {thresholds!r}")
        thresholds = [check_int(t, "thresholds", minimum=0) for t in thresholds]
    if on_step is not None and not callable(on_step):
        raise TypeError(f"on_step: expected a function on_step(step, values), got {type(on_step).__name__}")
    param_obj, custom_tf = _split_objects(options)
    obj, per_image = _as_batch_objective(objective)
    if not obj.layers:
        raise ValueError(f"objective {obj.description!r} reads no layer")
    paths = [bound_layer(model, name) for name in obj.layers]
    n_given = batch or (len(per_image) if per_image else None)
    settings = resolve_settings(model, settings, options)
    if settings.coarse_phases and settings.input_shape is None:
        settings = settings.replace(input_shape=tuple(int(v) for v in default_input_shape(model)))
    tf = make_transforms(custom_tf if custom_tf is not None else settings.transforms)
    if settings.coarse_phases and param_obj is not None:
        raise ValueError("coarse_phases start from the settings' own parameterization; with param=<ImageParam> use coarse_phases=()")
    # with coarse phases the optimisation starts on the first phase's smaller images
    first = settings.replace(input_shape=(settings.input_shape[0], *_phase_size(settings, 0))) if settings.coarse_phases else settings
    img_param = _build_param(model, first, param_obj, n_given, seed)
    n = img_param.shape[0]
    shape = (n, *settings.input_shape) if settings.coarse_phases else img_param.shape
    descs = _descriptions(obj, per_image, descriptions, n)
    clean_ok, snaps = _validate(model, obj, paths, tf, shape, settings.steps, thresholds)
    if settings.polish_steps and not clean_ok:
        raise ValueError(f"polish_steps={settings.polish_steps} optimises the untransformed {shape[2]}x"
                         f"{shape[3]} image, which the model does not take; use polish_steps=0")
    if settings.coarse_phases:
        _validate_coarse(model, obj, paths, tf, settings, n)
    device = pick_device(model, settings)
    settings, precision_rule = resolve_precision(settings, device)  # "auto" -> fp32/bf16, with the reason
    gen = torch.Generator().manual_seed(int(seed))
    with _frozen(model, device):
        img_param.to(device)
        evaluate = _Evaluator(model, obj, paths, tf, settings, device, gen)
        history, snapshots, img_param = _optimise(img_param, evaluate, settings, snaps, descs[0], progress, on_step)
        final = img_param().detach()
        values = _judge(evaluate, final, clean_ok)
    record = settings.to_dict()
    if precision_rule is not None:
        record["precision_rule"] = precision_rule
    if custom_tf is not None:
        record["transforms"] = repr(tf)
    if param_obj is not None:
        record["param"] = repr(param_obj)
    result = RenderResult(images=final.cpu().float(), values=values, descriptions=descs, snapshots=snapshots, history=history,
                          seconds=time.perf_counter() - t_start, steps=settings.steps, settings=record, seed=int(seed))
    if save_dir is not None:
        result.save(save_dir)
    return result
