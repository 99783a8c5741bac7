"""Render settings as one value: how an image is parameterized, transformed and optimised.

A :class:`RenderSettings` holds everything that decides a rendered picture besides the objective
and the seed (parameterization, transforms, optimiser, schedule, steps, precision, device, batch,
input shape), so a gallery or a results JSON can record it whole with :meth:`RenderSettings.to_dict`
and two runs with equal settings and seeds are the same run.

Named presets (:data:`PRESETS`):

* ``"lucid"``: Lucid's recipe, the reference every speed claim is measured against: Fourier
  basis with 1/f scaling (``decay_power=1``, ``sd=0.01``), decorrelated colour, sigmoid, Lucid's
  standard transforms, Adam at lr 0.05, 512 steps, fp32.
* ``"smooth-256"``: the default for large inputs (InceptionV1): Lucid's recipe with a smoother
  basis (spectrum scaled by 1/f^1.25) and 256 steps: its clean and transform-robust activation
  climb faster than the recipe's at every step count measured, at a lower high-frequency share.
  It does not reach the 512-step reference in a quarter of the time (``docs/featvis.md``).
* ``"pyramid"``: the same basis, climbing for 10/11 of its 704 steps on half-size images (a step
  there costs about a third), tiled up, then 64 steps at full size at lr 0.02: a higher activation
  than ``"smooth-256"`` at about the same cost, but the picture stays 2 x 2 periodic (measured), so
  it is a preset to choose, not the default.
* ``"fast-small"``: the default for small grayscale inputs (MNIST 28x28): Fourier basis, no transforms,
  Adam (0.7, 0.8) at lr 0.1, and a clamp polish for the last 1/8 of 112 steps, so each linear
  first-layer unit reaches its exact optimum (a corner of the [0, 1] box): >= 1.0x the reference's
  512-step activation in under a quarter of its time, at a lower high-frequency share.
* ``"smooth-small"``: ``"smooth-256"`` with the size-preserving transforms (``"small"``: random shifts
  of up to 2 px): the default for colour inputs below 96 px and for any model that does not take the
  standard transforms' larger canvas (a fixed-size model with a Linear head). On a trained 48 px RGB
  face model (MTCNN's ONet) ``"fast-small"`` leaves 65% of the channel values at exactly 0 or 255;
  this preset 0.5%, with half the high-frequency share and a more transform-robust activation, still
  above every real crop at every unit measured (``docs/featvis.md``).

The default (:func:`default_preset`) is a function of what the model is: its input size and channels
and whether it runs on the standard transforms' output size, wherever the size was declared (the
model's spec, ``input_shape=`` or ``size=``).
* ``"lucid-256"`` and ``"exact"`` (pixel basis and clamp throughout): the previous defaults.

Precision is fp32 in every preset and default, on every machine: the same call with the same seed
gives the same settings (and, with the same torch and thread count, the same pictures) on any CPU.
``precision="bf16"`` (bf16 autocast for the model's forward and backward) is asked for by name;
``precision="auto"`` picks bf16 where :func:`vision_interp.environment.native_bf16` says it is fast
(CUDA, AVX512-BF16 or AMX) and fp32 elsewhere, and :func:`resolve_precision` records which it picked
and why. What bf16 costs in activation and gains in speed is measured in ``docs/featvis.md``.

A pixel-basis polish (``polish_fraction``) after transform-robust optimisation raises the clean
activation a lot and the transform-averaged one not at all (measured), so the large-input default
does not use it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..environment import ASSUME_BF16_ENV, native_bf16
from ..zoo.spec import model_spec

__all__ = ["RenderSettings", "PRESETS", "preset", "default_settings", "default_preset", "resolve_precision", "SMALL_INPUT_PX",
           "PRECISIONS", "STANDARD_GROWTH", "FITTING_TRANSFORMS"]

PRECISIONS = ("fp32", "bf16", "auto")  # what a user may ask for; a render runs in fp32 or bf16

SMALL_INPUT_PX = 96  # inputs smaller than this on a side get a small-input preset ("fast-small" grayscale, "smooth-small" colour)
STANDARD_GROWTH = 12  # Lucid's standard transforms give the model an image this many pixels larger per side (224 -> 236)
FITTING_TRANSFORMS = "small"  # the named transform set that keeps the image's size: what a fixed-size model takes

_CHOICES: dict[str, tuple[str, ...]] = {
    "param": ("fft", "pixel"),
    "valid": ("sigmoid", "clamp"),
    "polish_valid": ("sigmoid", "clamp"),
    "transforms": ("standard", "small", "none"),
    "optimizer": ("adam",),
    "schedule": ("constant", "cosine"),
    "precision": PRECISIONS,
    "objective": ("channel", "neuron"),
}


@dataclass(frozen=True)
class RenderSettings:
    """Everything that fixes a rendering besides objective and seed. Immutable; use :meth:`replace`.

    ``schedule="cosine"`` decays the learning rate from ``lr`` to ``lr * final_lr_fraction``
    over ``steps``. ``objective`` is what :func:`visualize_layer` optimises per channel
    (``"channel"``: spatial mean, ``"neuron"``: the centre position). ``device=None`` means the
    model's device on every machine; ``"auto"`` means CUDA when available (:func:`pick_device`). ``input_shape=None`` means the model's own (C, H, W).
    ``betas`` are Adam's. ``polish_fraction``: the last ``round(steps * polish_fraction)`` steps
    (:attr:`polish_steps`) optimise the pixels directly (a pixel basis started from the image reached),
    on the untransformed image, with Adam at ``polish_lr``, through ``polish_valid`` (a sigmoid, or a straight-through clamp that
    can reach 0 and 1 exactly): the Fourier basis and the transforms shape the picture, the short
    pixel-basis finish lifts the clean activation it is judged by (measured in docs/featvis.md).
    ``coarse_phases``: ``(divisor, fraction, lr)`` phases run first, each for ``fraction`` of
    ``steps`` (:meth:`phase_steps`) on images 1/divisor of the size per side, with the same
    transforms and a fresh Adam at ``lr``; between phases, and into the full-size steps, the image is
    tiled up (a Fourier image is periodic, so the tiling is seamless) and the next phase continues
    from it. A step on a quarter of the pixels costs about a third as much (measured), and a
    translation-invariant objective (a channel mean) prefers the same texture at any size, so most
    of the climb can be done small. ``steps`` counts every step, coarse ones included.
    """

    preset: str | None = None
    param: str = "fft"
    decorrelate: bool = True
    valid: str = "sigmoid"
    sd: float = 0.01
    decay_power: float = 1.0
    transforms: str = "standard"
    optimizer: str = "adam"
    lr: float = 0.05
    schedule: str = "constant"
    final_lr_fraction: float = 0.0
    steps: int = 512
    batch_size: int = 16
    precision: str = "fp32"
    device: str | None = None
    channels_last: bool = True
    input_shape: tuple[int, int, int] | None = None
    objective: str = "channel"
    betas: tuple[float, float] = (0.9, 0.999)
    polish_fraction: float = 0.0
    polish_lr: float = 0.05
    polish_valid: str = "sigmoid"
    coarse_phases: tuple[tuple[int, float, float], ...] = ()

    def __post_init__(self) -> None:
        for name, valid in _CHOICES.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"RenderSettings.{name} must be one of {', '.join(map(repr, valid))}, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            low = 1 if name == "batch_size" else 0
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"RenderSettings.{name} must be an integer >= {low}, got {v!r}")
        if not (isinstance(self.polish_fraction, (int, float)) and 0.0 <= self.polish_fraction < 1.0):
            raise ValueError(f"RenderSettings.polish_fraction must be a number in [0, 1), got {self.polish_fraction!r}")
        for name in ("lr", "polish_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"RenderSettings.{name} must be a finite number > 0, got {v!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else ()
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"RenderSettings.betas must be two numbers in [0, 1) (Adam's beta1, beta2), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        object.__setattr__(self, "coarse_phases", _checked_coarse_phases(self.coarse_phases))
        if sum(p[1] for p in self.coarse_phases) + self.polish_fraction > 1.0 + 1e-9:
            raise ValueError("RenderSettings.coarse_phases: the coarse fractions and polish_fraction add up to more than 1 "
                             f"({sum(p[1] for p in self.coarse_phases)} + {self.polish_fraction}); lower one, or use coarse_phases=()")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"RenderSettings.final_lr_fraction must be in [0, 1], got {self.final_lr_fraction!r}")
        if self.sd < 0:
            raise ValueError(f"RenderSettings.sd must be >= 0, got {self.sd!r}")
        if self.input_shape is not None:
            shape = tuple(int(s) for s in self.input_shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"RenderSettings.input_shape must be (C, H, W) with positive sizes, got {self.input_shape!r}")
            object.__setattr__(self, "input_shape", shape)

    def replace(self, **changes: Any) -> "RenderSettings":
        """A copy with ``changes``; unknown names are an error that lists the valid ones."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown render setting(s) {sorted(unknown)}; valid: {sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (galleries fingerprint this; results JSONs record it whole)."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        d["betas"] = list(self.betas)
        d["coarse_phases"] = [list(phase) for phase in self.coarse_phases]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RenderSettings":
        return cls().replace(**dict(d))

    @property
    def polish_steps(self) -> int:
        """The last steps, in the pixel basis without transforms (a fixed share of ``steps``)."""
        return min(int(round(self.steps * self.polish_fraction)), self.steps - self.coarse_steps)

    @property
    def main_steps(self) -> int:
        """Full-size steps in the settings' own basis, with transforms (after the coarse phases, before the polish)."""
        return self.steps - self.coarse_steps - self.polish_steps

    def phase_steps(self) -> list[int]:
        """Steps of each coarse phase: boundaries at ``round(steps * cumulative fraction)``, so they add up exactly."""
        bounds, acc = [0], 0.0
        for _divisor, fraction, _lr in self.coarse_phases:
            acc += fraction
            bounds.append(min(self.steps, int(round(self.steps * acc))))
        return [b - a for a, b in zip(bounds, bounds[1:])]

    @property
    def coarse_steps(self) -> int:
        """Steps run at reduced sizes, first (see ``coarse_phases``)."""
        return sum(self.phase_steps())

    def lr_at(self, step: int) -> float:
        """Learning rate for optimisation step ``step`` (0-based) of the main phase."""
        if self.schedule == "constant" or self.main_steps <= 1:
            return self.lr
        low = self.lr * self.final_lr_fraction
        return low + (self.lr - low) * 0.5 * (1.0 + math.cos(math.pi * step / self.main_steps))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _checked_coarse_phases(phases: Any) -> tuple[tuple[int, float, float], ...]:
    """``coarse_phases`` as a tuple of (divisor >= 2, fraction in (0, 1], lr > 0) tuples, or a clear error."""
    if not isinstance(phases, (tuple, list)):
        raise ValueError(f"RenderSettings.coarse_phases must be a sequence of (divisor, fraction, lr) phases, got {phases!r}")
    out = []
    for phase in phases:
        ok = isinstance(phase, (tuple, list)) and len(phase) == 3
        if ok:
            d, n, lr = phase
            ok = (isinstance(d, int) and not isinstance(d, bool) and d >= 2 and _is_number(n) and 0 < n <= 1
                  and _is_number(lr) and lr > 0)
        if not ok:
            raise ValueError("RenderSettings.coarse_phases: each phase must be (divisor: int >= 2, fraction of steps: number in (0, 1], "
                             f"lr: number > 0), e.g. ((2, 0.9, 0.05),); got {phase!r}")
        out.append((int(phase[0]), float(phase[1]), float(phase[2])))
    return tuple(out)


PRESETS: dict[str, RenderSettings] = {
    "lucid": RenderSettings(preset="lucid"),
    # the defaults, measured against "lucid" in docs/featvis.md (benchmarks/featvis.py)
    "smooth-256": RenderSettings(preset="smooth-256", decay_power=1.25, steps=256),
    # "smooth-256" with size-preserving transforms: small colour inputs and fixed-size models (measured in docs/featvis.md)
    "smooth-small": RenderSettings(preset="smooth-small", decay_power=1.25, steps=256, transforms=FITTING_TRANSFORMS),
    "fast-small": RenderSettings(preset="fast-small", transforms="none", lr=0.1, betas=(0.7, 0.8), steps=112,
                                 polish_fraction=0.125, polish_lr=0.2, polish_valid="clamp", batch_size=64, objective="neuron"),
    # 10/11 of the steps on half-size (tiled) images at lr 0.05, the rest at full size at lr 0.02
    "pyramid": RenderSettings(preset="pyramid", decay_power=1.25, lr=0.02, steps=704, coarse_phases=((2, 10 / 11, 0.05),)),
    "lucid-256": RenderSettings(preset="lucid-256", steps=256),
    "exact": RenderSettings(preset="exact", param="pixel", valid="clamp", transforms="none", lr=0.2, steps=128,
                            batch_size=64, objective="neuron"),
}


def preset(name: str, **changes: Any) -> RenderSettings:
    """A named preset (one of :data:`PRESETS`), optionally with ``changes``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(map(repr, PRESETS))}")
    return PRESETS[name].replace(**changes)


LARGE_INPUT_DEFAULT = "smooth-256"  # measured against "lucid" in docs/featvis.md


def _checked_shape(input_shape: Any, arg: str) -> tuple[int, int, int] | None:
    """``input_shape`` as a (C, H, W) tuple of positive ints (None stays None), or an error naming ``arg``."""
    from ..checks import check_int

    if input_shape is None:
        return None
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list, torch.Size)):
        raise TypeError(f"{arg}: expected (C, H, W), a sequence of three positive integers, got {type(input_shape).__name__} "
                        f"{input_shape!r}")
    if len(input_shape) != 3:
        raise ValueError(f"{arg}: expected (C, H, W), three positive integers, got {len(input_shape)} value(s) {tuple(input_shape)!r}")
    return tuple(check_int(v, f"{arg}[{i}]", minimum=1) for i, v in enumerate(input_shape))


def _declared_shape(model: nn.Module) -> tuple[int, int, int] | None:
    """The spec's (C, H, W), or None when it declares none (or not three sizes)."""
    declared = model_spec(model).input_shape
    return tuple(int(v) for v in declared) if declared is not None and len(declared) == 3 else None


def _runs_at(model: nn.Module, shape: tuple[int, int, int]) -> bool:
    """Whether the whole forward pass runs on one image of ``shape`` (the cached trace: one pass on zeros)."""
    from ..trace import TraceError, trace

    try:
        return trace(model, shape).error is None
    except TraceError:
        return False


def default_preset(model: nn.Module, input_shape: Sequence[int] | None = None) -> tuple[str, str]:
    """The preset that fits ``model`` at ``input_shape`` (default: the spec's), and why: ``(name, reason)``.

    The rule reads what the model is, never where its size was declared:

    * grayscale (1 channel) and below :data:`SMALL_INPUT_PX` on a side: ``"fast-small"`` (measured on the
      MNIST CNN, whose reference optimises the untransformed image);
    * otherwise, at least :data:`SMALL_INPUT_PX` on each side *and* the whole model runs on the
      :data:`STANDARD_GROWTH` px larger canvas the standard transforms make: ``"smooth-256"``;
    * otherwise (a small colour input, or a model that takes only its own size): ``"smooth-small"``,
      the same basis with the size-preserving transforms (measured on MTCNN's ONet).

    Without a declared or given shape the large-input default is returned (the caller must give one).
    """
    from ..errors import check_model

    check_model(model)
    shape = _checked_shape(input_shape, "input_shape")
    if shape is None:
        shape = _declared_shape(model)
    if shape is None:
        return LARGE_INPUT_DEFAULT, "no input shape declared or given: the large-input default (give input_shape=)"
    c, h, w = shape
    small = min(h, w) < SMALL_INPUT_PX
    if small and c == 1:
        return "fast-small", f"{c}x{h}x{w}: grayscale and below {SMALL_INPUT_PX} px"
    grown = (c, h + STANDARD_GROWTH, w + STANDARD_GROWTH)
    if small:
        return "smooth-small", f"{c}x{h}x{w}: {c} channels and below {SMALL_INPUT_PX} px (size-preserving transforms)"
    if _runs_at(model, grown):
        return LARGE_INPUT_DEFAULT, f"{c}x{h}x{w}: {SMALL_INPUT_PX} px or more, and the model takes the standard transforms' {h + STANDARD_GROWTH}x{w + STANDARD_GROWTH}"
    return "smooth-small", (f"{c}x{h}x{w}: the model does not take the standard transforms' {h + STANDARD_GROWTH}x{w + STANDARD_GROWTH} "
                            "(size-preserving transforms)")


def default_settings(model: nn.Module, input_shape: Sequence[int] | None = None) -> RenderSettings:
    """The model's default at ``input_shape`` (default: the spec's): the preset :func:`default_preset` picks,
    with that shape, then the spec's ``featvis_defaults``.

    The same model at the same size gets the same settings whether the size comes from its spec or from
    the caller. Colour decorrelation only applies to RGB inputs. A model without a declared input shape
    gets the large-input default with ``input_shape=None`` (the caller must then give one).
    """
    name, _why = default_preset(model, input_shape)
    s = PRESETS[name]
    shape = _checked_shape(input_shape, "input_shape") or _declared_shape(model)
    if shape is not None:
        s = s.replace(input_shape=shape, decorrelate=s.decorrelate and int(shape[0]) == 3)
    overrides = dict(model_spec(model).featvis_defaults)
    return s.replace(**overrides) if overrides else s


def resolve_precision(settings: RenderSettings, device: torch.device | str) -> tuple[RenderSettings, str | None]:
    """``settings`` with ``precision="auto"`` replaced by what it picks on ``device``, and the reason
    (None when the precision was given by name, so nothing was picked).

    ``auto`` picks bf16 where :func:`vision_interp.environment.native_bf16` is true (CUDA, or a CPU
    with AVX512-BF16/AMX oneDNN kernels) and fp32 elsewhere: on a CPU without them bf16 autocast is
    emulated and slower than fp32 (measured in docs/featvis.md).
    """
    if settings.precision != "auto":
        return settings, None
    dev = torch.device(device)
    fast = native_bf16(dev)
    why = ("CUDA" if dev.type == "cuda" else "native bf16 on this CPU") if fast else "no native bf16 on this CPU"
    if os.environ.get(ASSUME_BF16_ENV):
        why += f" ({ASSUME_BF16_ENV}={os.environ[ASSUME_BF16_ENV]})"
    picked = "bf16" if fast else "fp32"
    return settings.replace(precision=picked), f"auto -> {picked}: {why}"


def pick_device(model: nn.Module, settings: RenderSettings) -> torch.device:
    """``settings.device`` when given; ``"auto"``: CUDA when available, else the model's device; ``None`` (the
    default): where the model's parameters are, so the default does not change with the machine (move the model,
    or ask for ``device="auto"``/``"cuda"``, to render on a GPU)."""
    if settings.device not in (None, "auto"):
        return torch.device(settings.device)
    if settings.device == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
