"""Everything :func:`~vision_interp.featvis.render` decides and checks before the first step: the
settings (preset, model defaults, overrides), the batch objective and its descriptions, the image
parameterization, and whether the model takes the transformed (and coarse-phase) image sizes."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..capture import LayerNotReachedError
from ..trace import TraceError, trace
from ..units import UnitRangeError, UnknownLayerError, default_input_shape, layer_shape
from ..zoo.spec import model_spec
from .objectives import Objective, as_objective
from .optimise import _phase_size
from .param import ImageParam, image_param
from .settings import FITTING_TRANSFORMS, RenderSettings, _checked_shape, default_settings, preset
from .transform import Compose


def model_defaults(model: nn.Module, input_shape: Sequence[int] | None = None) -> dict:
    """The model's default :class:`RenderSettings` at ``input_shape`` (default: the spec's) as a dict
    (see :func:`default_settings`)."""
    return default_settings(model, input_shape).to_dict()


def _per_element(objectives: Sequence[Objective]) -> Objective:
    """Objective i applies to batch element i only: many units rendered in one optimisation."""
    objs = list(objectives)

    def fn(acts) -> torch.Tensor:
        return torch.stack([o(acts)[i] for i, o in enumerate(objs)])

    layers = [l for o in objs for l in o.layers]
    checks = [c for o in objs for c in o.checks]
    desc = "; ".join(f"[{i}] {o.description}" for i, o in enumerate(objs))
    return Objective(fn, layers, desc, checks, reads_position=any(o.reads_position for o in objs))


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


def _as_batch_objective(objective) -> tuple[Objective, list[str] | None]:
    """One objective over the batch, plus per-image descriptions when a list was given."""
    if _is_objective_list(objective):
        items = [as_objective(o) for o in objective]
        return _per_element(items), [o.description for o in items]
    return as_objective(objective), None


def _stopped_at(model: nn.Module, shape: tuple) -> str | None:
    """Why the model's forward pass stops on an image of ``shape`` (None when it runs through)."""
    try:
        return trace(model, shape).error
    except TraceError as e:
        return str(e)


def _check_input_size(model: nn.Module, paths: Sequence[str], shape: tuple, what: str, hint: str = "") -> None:
    """Run the model once (early exit, cached by units.layer_shape) at ``shape``; a rejected size is a clear
    error (with ``hint``: what to do instead), also when the rejection stops the pass before a layer is reached."""
    for path in paths:
        try:
            layer_shape(model, path, shape)
        except (UnknownLayerError, UnitRangeError):
            raise
        except LayerNotReachedError as e:
            stopped = _stopped_at(model, tuple(shape))
            if stopped is None:
                raise  # the layer is off the computation path at every size
            raise ValueError(f"{type(model).__name__} cannot take images of shape {tuple(shape)} ({what}): its forward pass stops "
                             f"before layer {path!r} ({stopped}){hint}") from e
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{type(model).__name__} cannot take images of shape {tuple(shape)} ({what}) up to layer {path!r}: "
                             f"{e}{hint}") from e


def _fitting_hint(model: nn.Module, paths: Sequence[str], c: int, h: int, w: int, out: tuple[int, int]) -> str:
    """When transforms change the size and the model takes only its own: the transform set that fits."""
    if out == (h, w):
        return ""
    try:
        _check_input_size(model, paths, (c, h, w), "without transforms")
    except ValueError:
        return ""
    return (f"; the model takes {h}x{w} but not the {out[0]}x{out[1]} these transforms make: use transforms="
            f"{FITTING_TRANSFORMS!r} (random shifts that keep the size; preset 'smooth-small' is 'smooth-256' with them), "
            "'none', or a custom list whose output is the image's own size")


def _build_param(model: nn.Module, settings: RenderSettings, param: ImageParam | None, n: int | None, seed: int) -> ImageParam:
    """The given parameterization, or one built from the settings for ``n`` images."""
    if param is not None:
        if n is not None and n != param.shape[0]:
            raise ValueError(f"batch={n} but the given parameterization has {param.shape[0]} images")
        return param
    shape = settings.input_shape or default_input_shape(model)
    c = int(shape[0])
    return image_param(settings.param, (n or 1, *shape), seed=seed, sd=settings.sd, decorrelate=settings.decorrelate and c == 3,
                       valid=settings.valid, decay_power=settings.decay_power)


def _descriptions(obj: Objective, per_image: list[str] | None, given: Sequence[str] | None, n: int) -> list[str]:
    if per_image is not None and len(per_image) != n:
        raise ValueError(f"{len(per_image)} objectives for a batch of {n} images")
    if given is not None:
        if len(given) != n:
            raise ValueError(f"{len(given)} descriptions for {n} images")
        return list(given)
    return per_image or [obj.description] * n


def _validate(model: nn.Module, obj: Objective, paths: Sequence[str], tf: Compose, shape: tuple, steps: int,
              thresholds: Iterable[int] | None) -> tuple[bool, list[int]]:
    """Everything checkable before the first step. Returns (final images can be judged without
    transforms, sorted snapshot steps)."""
    _, c, h, w = shape
    try:
        out_h, out_w = tf.out_size((h, w))
    except ValueError:
        out_h, out_w = h, w  # custom callables: checked at the parameterization's size
    eff = (c, out_h, out_w)
    _check_input_size(model, paths, eff, f"{h}x{w} image, {out_h}x{out_w} after transforms",
                      _fitting_hint(model, paths, c, h, w, (out_h, out_w)))
    obj.check(model, eff, shape[0])
    clean_ok = True
    if (out_h, out_w) != (h, w):
        try:
            _check_input_size(model, paths, (c, h, w), "without transforms")
        except ValueError:
            clean_ok = False
    snaps = sorted({int(t) for t in (thresholds or [])})
    bad = [t for t in snaps if not 0 <= t <= steps]
    if bad:
        raise ValueError(f"thresholds {bad} are outside 0..{steps}")
    return clean_ok, snaps


def _validate_coarse(model: nn.Module, obj: Objective, paths: Sequence[str], tf: Compose, settings: RenderSettings, n: int) -> None:
    """Every coarse phase's size must be taken by the model (after the transforms) and by the objective,
    and the objective must not read one position (a tiled smaller image does not stand in for it)."""
    if obj.reads_position:
        raise ValueError(f"objective {obj.description!r} reads one position, which a tiled coarse image does not stand in for: "
                         "use coarse_phases=() (or a preset without them, e.g. 'smooth-256')")
    c = int(settings.input_shape[0])
    for i, (divisor, _fraction, _lr) in enumerate(settings.coarse_phases):
        h, w = _phase_size(settings, i)
        try:
            out_h, out_w = tf.out_size((h, w))
        except ValueError:
            out_h, out_w = h, w
        what = f"coarse phase {i} (1/{divisor} of the side: {h}x{w}, {out_h}x{out_w} after transforms)"
        try:
            _check_input_size(model, paths, (c, out_h, out_w), "after transforms")
            obj.check(model, (c, out_h, out_w), n)
        except (ValueError, UnitRangeError) as e:
            raise ValueError(f"{what}: {e}; the coarse phases need an objective that reads the layer at any size (a channel mean, "
                             "not one position) and a model that takes the smaller images: use smaller divisors or coarse_phases=()") from e


_SETTING_KWARGS = {f for f in RenderSettings.__dataclass_fields__} - {"preset"}


def _split_objects(options: dict) -> tuple[ImageParam | None, Any]:
    """Take object-valued ``param=`` (an ImageParam) and ``transforms=`` (a list/Compose) out of
    ``options``; names stay in ``options`` as settings overrides (``transforms=None`` means "none")."""
    param_obj = options.pop("param", None)
    if isinstance(param_obj, str):
        options["param"], param_obj = param_obj, None
    elif param_obj is not None and not isinstance(param_obj, ImageParam):
        raise TypeError(f"param must be 'fft', 'pixel' or an ImageParam, got {type(param_obj).__name__}")
    if "transforms" not in options:
        return param_obj, None
    tf = options.pop("transforms")
    if tf is None or isinstance(tf, str):
        options["transforms"] = (tf or "none").lower()
        return param_obj, None
    return param_obj, tf


def resolve_settings(model: nn.Module, settings: RenderSettings | str | None, overrides: dict) -> RenderSettings:
    """``settings`` (a value, a preset name, or None = the model's default) with keyword ``overrides``.

    ``param``/``transforms`` given as strings override the settings; objects (an ImageParam, a
    transform list) are passed to :func:`render` separately.
    """
    from ..errors import check_model

    check_model(model)
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides: expected a dict of render settings, got {type(overrides).__name__} {overrides!r}")
    bad_keys = [k for k in overrides if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"overrides: setting names must be strings, got {bad_keys[:3]!r}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - _SETTING_KWARGS
    if unknown:
        raise TypeError(f"unknown render option(s) {sorted(unknown)}; valid: {sorted(_SETTING_KWARGS)}")
    if "input_shape" in changes:
        changes["input_shape"] = _checked_shape(changes["input_shape"], "input_shape")
    if isinstance(settings, str):
        base = preset(settings)
        shape = model_spec(model).input_shape
        if shape is not None and base.input_shape is None:
            base = base.replace(input_shape=tuple(int(v) for v in shape), decorrelate=base.decorrelate and int(shape[0]) == 3)
    elif settings is None:
        # the default is chosen at the size the render will have, wherever that size was declared
        base = default_settings(model, changes.get("input_shape"))
    elif isinstance(settings, RenderSettings):
        base = settings
    else:
        raise TypeError(f"settings must be a RenderSettings, a preset name or None, got {type(settings).__name__}")
    return base.replace(**changes) if changes else base
