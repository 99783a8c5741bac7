"""The optimisation loop: the model frozen on its device, the objective evaluated through the
transforms, Adam with its schedule, coarse-to-fine phases, snapshots, and the final judgement."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..capture import _capture
from ..model_state import using
from .objectives import Objective
from .param import FourierParam, ImageParam, PixelParam
from .result import NonFiniteObjectiveError
from .settings import RenderSettings
from .transform import Compose


@contextlib.contextmanager
def _frozen(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, parameters without gradients, on ``device``; every module's mode and every parameter's
    ``requires_grad`` restored afterwards, also on errors; one thread at a time (:func:`..model_state.using`)."""
    p0 = next(model.parameters(), None)
    orig_device = p0.device if p0 is not None else device
    with using(model, freeze=True, what="feature visualization"):
        if device != orig_device:
            model.to(device)
        try:
            yield
        finally:
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
            cache = _capture(self.model, x, self.paths, stop_early=True)
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
