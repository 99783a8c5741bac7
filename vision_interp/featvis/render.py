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
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .. import images as vimages
from .. import io as vio
from ..capture import LayerNotReachedError, capture
from ..units import UnitRangeError, UnknownLayerError, default_input_shape, layer_shape
from ..zoo.spec import model_spec
from .objectives import Objective, as_objective, bound_layer
from .param import FourierParam, ImageParam, PixelParam, image_param
from .settings import RenderSettings, default_settings, pick_device, preset, resolve_precision
from .transform import Compose, make_transforms

__all__ = [
    "RenderResult",
    "NonFiniteObjectiveError",
    "render",
    "visualize",
    "visualize_layer",
    "model_defaults",
    "parse_channels",
    "resolve_settings",
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
    ``settings``: the whole :class:`RenderSettings` used, as a dict (``RenderSettings.to_dict()``,
    including the preset name); ``seed``: the seed. :meth:`to_dict` records all of it.
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
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: settings (whole), seed, steps, seconds, and per image its unit/description, value and activation."""
        acts = self.activations.tolist() if self.activations is not None else [None] * len(self)
        units = self.units or [None] * len(self)
        return {
            "settings": dict(self.settings), "seed": self.seed, "steps": self.steps, "seconds": round(self.seconds, 3),
            "images": [{"description": d, "unit": u, "value": float(v), "activation": a}
                       for d, u, v, a in zip(self.descriptions, units, self.values.tolist(), acts)],
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` atomically, with the machine's facts (``environment``, as ``vision-interp doctor``)."""
        from ..environment import environment_report

        return vio.save_json(path, {**self.to_dict(), "environment": environment_report(browser=False)})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", text).replace(":", "-").strip("_")[:80] or "image"


# --- per-model defaults ----------------------------------------------------------------------------


def model_defaults(model: nn.Module) -> dict:
    """The model's default :class:`RenderSettings` as a dict (see :func:`default_settings`)."""
    return default_settings(model).to_dict()


# --- render: small steps, each one idea ---------------------------------------------------------------


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


def _check_input_size(model: nn.Module, paths: Sequence[str], shape: tuple, what: str) -> None:
    """Run the model once (early exit, cached by units.layer_shape) at ``shape``; a rejected size is a clear error."""
    for path in paths:
        try:
            layer_shape(model, path, shape)
        except (UnknownLayerError, UnitRangeError, LayerNotReachedError):
            raise
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{type(model).__name__} cannot take images of shape {shape} ({what}) up to layer {path!r}: {e}") from e


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
    _check_input_size(model, paths, eff, f"{h}x{w} image, {out_h}x{out_w} after transforms")
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


@contextlib.contextmanager
def _frozen(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, parameters without gradients, on ``device``; all restored afterwards (also on errors)."""
    p0 = next(model.parameters(), None)
    orig_device = p0.device if p0 is not None else device
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        model.eval()
        if device != orig_device:
            model.to(device)
        yield
    finally:
        for p, req in frozen:
            p.requires_grad_(req)
        model.train(was_training)
        if device != orig_device:
            model.to(orig_device)


class _Evaluator:
    """images -> (transforms) -> model up to the objective's layers -> objective values (N,).

    Layer names are resolved once (``paths``); each step hands the objective a plain dict keyed
    by the names it asked for, so nothing is parsed or resolved per step in featvis.
    """

    def __init__(self, model: nn.Module, obj: Objective, paths: Sequence[str], tf: Compose, settings: RenderSettings,
                 device: torch.device, gen: torch.Generator):
        self.model, self.obj, self.tf, self.gen = model, obj, tf, gen
        self.names = list(obj.layers)
        self.paths = list(paths)
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16")

    def __call__(self, images: torch.Tensor, *, train: bool, transform: bool = True, objective: Objective | None = None) -> torch.Tensor:
        x = self.tf(images, self.gen) if transform else images
        x = x.contiguous(memory_format=self.memory_format)
        # judged values are always computed in fp32, so bf16 runs are measured like fp32 ones
        with torch.set_grad_enabled(train), (self.autocast if train else contextlib.nullcontext()):
            cache = capture(self.model, x, self.paths, stop_early=True)
            raw = _tensors_by_path(cache, self.paths)
            acts = {name: raw[path] for name, path in zip(self.names, self.paths)}
            return (objective or self.obj)(acts).float()


def _tensors_by_path(cache, paths: Sequence[str]) -> dict:
    """The captured tensors keyed by module path, without the cache's per-lookup name resolution."""
    by_path = getattr(cache, "_acts", None)
    if isinstance(by_path, dict) and all(p in by_path for p in paths):
        return by_path
    return {p: cache[p] for p in paths}


def _optimizer(settings: RenderSettings, params) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with the settings' betas and learning-rate schedule (lr_at(step) / lr as a multiplier)."""
    opt = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda i: settings.lr_at(i) / settings.lr)


class _Trajectory:
    """What an optimisation leaves behind: the objective per step, snapshots, the progress bar."""

    def __init__(self, steps: int, n: int, snaps: list[int], desc: str, progress: bool,
                 on_step: Callable[[int, torch.Tensor], None] | None):
        from tqdm.auto import tqdm

        self.history = torch.zeros(steps, n)
        self.snaps, self.on_step, self.progress = set(snaps), on_step, progress
        self.snapshots: dict[int, torch.Tensor] = {}
        self.bar = tqdm(total=steps, desc=f"render {desc[:40]}" + (f" (+{n - 1})" if n > 1 else ""),
                        disable=not progress, leave=False)

    def record(self, step: int, values: torch.Tensor, images: Callable[[], torch.Tensor]) -> None:
        """``images()`` gives the full-size images of this step (only called for a snapshot)."""
        self.history[step - 1] = values.detach().cpu()
        if step in self.snaps:
            self.snapshots[step] = images().detach().cpu()
        if self.on_step is not None:
            self.on_step(step, values.detach())
        self.bar.update(1)
        if self.progress and (step % 10 == 0 or step == len(self.history)):
            self.bar.set_postfix(objective=f"{float(values.detach().mean()):.3g}")


def _ascend(img_param: ImageParam, evaluate: _Evaluator, opt: torch.optim.Optimizer, sched, steps: range,
            transform: bool, trajectory: _Trajectory, full_size: tuple[int, int] | None = None) -> None:
    """Gradient ascent on the summed objective for the given (1-based, global) step numbers
    (``full_size``: snapshots of a coarse phase are its images tiled up to that size)."""
    snapshot = (lambda: tile_images(img_param(), full_size)) if full_size is not None else img_param
    for step in steps:
        opt.zero_grad(set_to_none=True)
        values = evaluate(img_param(), train=True, transform=transform)
        loss = -values.sum()
        if not torch.isfinite(loss):
            raise NonFiniteObjectiveError(
                f"objective {evaluate.obj.description!r} became {loss.item()} at step {step} of {len(trajectory.history)}; "
                "try a smaller lr, a sigmoid parameterization, or an objective that is finite for all images"
            )
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        trajectory.record(step, values, snapshot)


def _optimise(img_param: ImageParam, evaluate: _Evaluator, settings: RenderSettings, snaps: list[int], desc: str,
              progress: bool, on_step: Callable[[int, torch.Tensor], None] | None
              ) -> tuple[torch.Tensor, dict[int, torch.Tensor], ImageParam]:
    """The main phase (the settings' basis, with transforms), then the pixel-basis polish without
    transforms; returns the objective history (steps, N), the snapshots and the final parameterization.

    With ``coarse_phases``, ``img_param`` is the first (smallest) phase's; each phase ends by tiling
    its images up to the next size and continuing from them in the same basis."""
    trajectory = _Trajectory(settings.steps, img_param.shape[0], snaps, desc, progress, on_step)
    full = (int(settings.input_shape[1]), int(settings.input_shape[2])) if settings.coarse_phases else None
    if 0 in trajectory.snaps:
        trajectory.snapshots[0] = (tile_images(img_param(), full) if full else img_param()).detach().cpu()
    done = 0
    for i, ((_divisor, _fraction, lr), steps) in enumerate(zip(settings.coarse_phases, settings.phase_steps())):
        if i:
            img_param = _param_like(settings, tile_images(img_param().detach(), _phase_size(settings, i)))
        opt = torch.optim.Adam(img_param.parameters(), lr=lr, betas=settings.betas)
        _ascend(img_param, evaluate, opt, None, range(done + 1, done + steps + 1), True, trajectory, full)
        done += steps
    if settings.coarse_phases:
        img_param = _param_like(settings, tile_images(img_param().detach(), full))
    main = done + settings.main_steps
    opt, sched = _optimizer(settings, img_param.parameters())
    _ascend(img_param, evaluate, opt, sched, range(done + 1, main + 1), True, trajectory)
    if settings.polish_steps:
        img_param = PixelParam.from_images(img_param().detach(), valid=settings.polish_valid)
        opt = torch.optim.Adam(img_param.parameters(), lr=settings.polish_lr, betas=settings.betas)
        _ascend(img_param, evaluate, opt, None, range(main + 1, settings.steps + 1), False, trajectory)
    trajectory.bar.close()
    return trajectory.history, trajectory.snapshots, img_param


def tile_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``images`` repeated side by side (and cropped) to fill ``size``: a coarse phase's texture at full size."""
    h, w = images.shape[-2:]
    reps = (-(-size[0] // h), -(-size[1] // w))
    return images.repeat(1, 1, *reps)[..., : size[0], : size[1]]


def _phase_size(settings: RenderSettings, phase: int) -> tuple[int, int]:
    """(H, W) of coarse phase ``phase``: the full size divided by its divisor (at least 1 pixel)."""
    divisor = settings.coarse_phases[phase][0]
    _c, h, w = settings.input_shape
    return max(1, h // divisor), max(1, w // divisor)


def _param_like(settings: RenderSettings, images: torch.Tensor) -> ImageParam:
    """The settings' parameterization, starting at ``images`` (the next phase continues from them)."""
    decorrelate = settings.decorrelate and images.shape[1] == 3
    if settings.param == "fft":
        return FourierParam.from_images(images, decay_power=settings.decay_power, decorrelate=decorrelate, valid=settings.valid)
    return PixelParam.from_images(images, valid=settings.valid, decorrelate=decorrelate)


def _judge(evaluate: _Evaluator, images: torch.Tensor, clean_ok: bool, objective: Objective | None = None) -> torch.Tensor:
    """Objective values of the final images: without transforms when the model takes that size."""
    with torch.no_grad():
        values = evaluate(images, train=False, transform=not clean_ok, objective=objective).cpu()
    if not torch.isfinite(values).all():
        raise NonFiniteObjectiveError(f"objective {evaluate.obj.description!r} is not finite on the final images")
    return values


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
    if isinstance(settings, str):
        base = preset(settings)
        shape = model_spec(model).input_shape
        if shape is not None and base.input_shape is None:
            base = base.replace(input_shape=tuple(int(v) for v in shape), decorrelate=base.decorrelate and int(shape[0]) == 3)
    elif settings is None:
        base = default_settings(model)
    elif isinstance(settings, RenderSettings):
        base = settings
    else:
        raise TypeError(f"settings must be a RenderSettings, a preset name or None, got {type(settings).__name__}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - _SETTING_KWARGS
    if unknown:
        raise TypeError(f"unknown render option(s) {sorted(unknown)}; valid: {sorted(_SETTING_KWARGS)}")
    if "input_shape" in changes:
        changes["input_shape"] = tuple(int(v) for v in changes["input_shape"])
    return base.replace(**changes) if changes else base


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
    param_obj, custom_tf = _split_objects(options)
    obj, per_image = _as_batch_objective(objective)
    if not obj.layers:
        raise ValueError(f"objective {obj.description!r} reads no layer")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
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
    p = next(model.parameters(), None)
    x = images.to(p.device) if p is not None else images
    paths = [bound_layer(model, name) for name in objective.layers]
    with _frozen(model, x.device), torch.no_grad():
        try:
            raw = _tensors_by_path(capture(model, x, paths, stop_early=True), paths)
        except (ValueError, RuntimeError):
            return None
        return objective({name: raw[path] for name, path in zip(objective.layers, paths)}).float().cpu()


def _with_size(model: nn.Module, settings: RenderSettings | str | None, size: int | Sequence[int] | None,
               steps: int | None, kw: dict) -> RenderSettings:
    """Settings for visualize/visualize_layer: the given or default ones, with ``size``, ``steps`` and keyword overrides."""
    opts = dict(kw)
    if steps is not None:
        opts["steps"] = steps
    s = resolve_settings(model, settings, {k: v for k, v in opts.items() if k in RenderSettings.__dataclass_fields__})
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        c = (s.input_shape or default_input_shape(model))[0]
        s = s.replace(input_shape=(int(c), int(hw[0]), int(hw[1])))
    return s


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

    if objective is not None:
        kw["objective"] = objective
    if batch_size is not None:
        kw["batch_size"] = batch_size
    s = _with_size(model, settings, size, steps, kw)
    path = bound_layer(model, layer)
    eff = _effective_shape(s, model)
    _check_input_size(model, [path], eff, "after transforms")
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
