"""Random, seeded, composable image transforms that make visualizations robust (plain torch).

A visualization that only works for one exact pixel grid is an adversarial pattern, not a
feature. Lucid's remedy: at every step, pad, jitter, scale and rotate the image a little before
the model sees it, so that only patterns that survive small geometric changes get reinforced.

Every geometric transform here is an affine map of pixel coordinates, so a chain of them is fused
into **one** ``affine_grid`` + ``grid_sample`` call (instead of one resampling per transform):
faster, and the image is interpolated once rather than blurred repeatedly. Each transform draws
its random parameters per batch element from a ``torch.Generator``, so a seed fixes everything.

Coordinates: continuous pixel coordinates ``(x, y)`` with pixel ``i`` covering ``[i, i+1)``
(``align_corners=False``). Each transform gives, per batch element, a 3x3 matrix taking an
*output* pixel position to the *input* position it samples from, and its output size.

Differences from Lucid, on purpose: scaling zooms about the centre and keeps the size (Lucid
resizes the canvas), and the area a rotation uncovers gets the padding fill (Lucid uses zeros).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = [
    "Transform",
    "Pad",
    "Jitter",
    "RandomScale",
    "RandomRotate",
    "Compose",
    "standard_transforms",
    "small_transforms",
    "make_transforms",
]

Size = tuple[int, int]  # (H, W)


class Transform:
    """An affine, random, per-batch-element geometric transform."""

    fill: float | str | None = None

    def out_size(self, size: Size) -> Size:
        return size

    def matrices(self, n: int, size: Size, gen: torch.Generator) -> torch.Tensor:
        """(n, 3, 3) maps from output pixel coordinates to input pixel coordinates."""
        raise NotImplementedError  # pragma: no cover

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return Compose([self])(x, gen)


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


def _pick(values: Sequence[float], n: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.randint(len(values), (n,), generator=gen)
    return torch.as_tensor(list(values), dtype=torch.float64)[idx]


class Pad(Transform):
    """Grow the canvas by ``pad`` pixels on each side, filled with ``fill`` (a value, or "reflect")."""

    def __init__(self, pad: int, fill: float | str = 0.5):
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if isinstance(fill, str) and fill != "reflect":
            raise ValueError(f"fill must be a number or 'reflect', got {fill!r}")
        self.pad, self.fill = int(pad), fill

    def out_size(self, size: Size) -> Size:
        return size[0] + 2 * self.pad, size[1] + 2 * self.pad

    def matrices(self, n: int, size: Size, gen: torch.Generator) -> torch.Tensor:
        m = _eye(n)
        m[:, 0, 2] = m[:, 1, 2] = -self.pad
        return m

    def __repr__(self) -> str:
        return f"Pad({self.pad}, fill={self.fill!r})"


class Jitter(Transform):
    """Random crop that removes ``d`` pixels in total per axis (a random shift of 0..d pixels)."""

    def __init__(self, d: int):
        if d < 0:
            raise ValueError(f"jitter must be >= 0, got {d}")
        self.d = int(d)

    def out_size(self, size: Size) -> Size:
        if size[0] <= self.d or size[1] <= self.d:
            raise ValueError(f"Jitter({self.d}) needs an image larger than {self.d} pixels, got {size[0]}x{size[1]}")
        return size[0] - self.d, size[1] - self.d

    def matrices(self, n: int, size: Size, gen: torch.Generator) -> torch.Tensor:
        m = _eye(n)
        m[:, 0, 2] = torch.randint(self.d + 1, (n,), generator=gen).double()
        m[:, 1, 2] = torch.randint(self.d + 1, (n,), generator=gen).double()
        return m

    def __repr__(self) -> str:
        return f"Jitter({self.d})"


class RandomScale(Transform):
    """Zoom about the centre by a factor drawn from ``scales`` (size unchanged)."""

    def __init__(self, scales: Iterable[float]):
        self.scales = [float(s) for s in scales]
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("RandomScale needs positive scale factors")

    def matrices(self, n: int, size: Size, gen: torch.Generator) -> torch.Tensor:
        s = _pick(self.scales, n, gen)
        cy, cx = size[0] / 2, size[1] / 2
        m = _eye(n)
        m[:, 0, 0] = m[:, 1, 1] = 1.0 / s
        m[:, 0, 2] = cx - cx / s
        m[:, 1, 2] = cy - cy / s
        return m

    def __repr__(self) -> str:
        return f"RandomScale({self.scales})"


class RandomRotate(Transform):
    """Rotate about the centre by an angle (degrees) drawn from ``angles``."""

    def __init__(self, angles: Iterable[float]):
        self.angles = [float(a) for a in angles]
        if not self.angles:
            raise ValueError("RandomRotate needs at least one angle")

    def matrices(self, n: int, size: Size, gen: torch.Generator) -> torch.Tensor:
        a = _pick(self.angles, n, gen) * math.pi / 180
        cos, sin = torch.cos(a), torch.sin(a)
        cy, cx = size[0] / 2, size[1] / 2
        m = _eye(n)
        m[:, 0, 0], m[:, 0, 1] = cos, -sin
        m[:, 1, 0], m[:, 1, 1] = sin, cos
        m[:, 0, 2] = cx - cos * cx + sin * cy
        m[:, 1, 2] = cy - sin * cx - cos * cy
        return m

    def __repr__(self) -> str:
        return f"RandomRotate({len(self.angles)} angles, {min(self.angles):g}..{max(self.angles):g} deg)"


TransformLike = Union[Transform, Callable[[torch.Tensor, torch.Generator], torch.Tensor]]


def _to_normalized(size: Size) -> torch.Tensor:
    """Pixel coordinates -> grid_sample's [-1, 1] coordinates (align_corners=False)."""
    h, w = size
    return torch.tensor([[2.0 / w, 0, -1], [0, 2.0 / h, -1], [0, 0, 1]], dtype=torch.float64)


def _from_normalized(size: Size) -> torch.Tensor:
    h, w = size
    return torch.tensor([[w / 2.0, 0, w / 2.0], [0, h / 2.0, h / 2.0], [0, 0, 1]], dtype=torch.float64)


class Compose:
    """Apply transforms in order; runs of affine :class:`Transform` s become one ``grid_sample``.

    Other callables ``fn(images, generator) -> images`` may be mixed in; they split the fusion.
    """

    def __init__(self, transforms: Sequence[TransformLike]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"transform {t!r} is not callable")

    def out_size(self, size: Size) -> Size:
        for t in self.transforms:
            if isinstance(t, Transform):
                size = t.out_size(size)
            else:
                raise ValueError("out_size is unknown for a chain with custom callables")
        return size

    def _fused(self, x: torch.Tensor, chain: list[Transform], gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        size: Size = (x.shape[-2], x.shape[-1])
        in_size = size
        total = _eye(n)
        fill: float | str | None = None
        for t in chain:
            total = total @ t.matrices(n, size, gen)
            size = t.out_size(size)
            if fill is None and t.fill is not None:
                fill = t.fill
        if size == in_size and torch.equal(total, _eye(n)):
            return x
        theta = (_to_normalized(in_size) @ total @ _from_normalized(size))[:, :2, :]
        grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), [n, x.shape[1], size[0], size[1]], align_corners=False)
        if fill == "reflect":
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        value = float(fill) if fill is not None else 0.0
        if value == 0.0:
            return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return F.grid_sample(x - value, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + value

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        chain: list[Transform] = []
        for t in self.transforms:
            if isinstance(t, Transform):
                chain.append(t)
                continue
            if chain:
                x, chain = self._fused(x, chain, gen), []
            x = t(x, gen)
        if chain:
            x = self._fused(x, chain, gen)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def standard_transforms() -> Compose:
    """Lucid's standard robustness set: pad 12 (gray), jitter 8, scale 0.9..1.1, rotate -10..10 deg, jitter 4.

    Output is 12 pixels larger than the input per axis (224 -> 236).
    """
    return Compose([
        Pad(12, fill=0.5),
        Jitter(8),
        RandomScale([1 + (i - 5) / 50.0 for i in range(11)]),
        RandomRotate(list(range(-10, 11)) + 5 * [0]),
        Jitter(4),
    ])


def small_transforms(shift: int = 2, fill: float = 0.0) -> Compose:
    """For tiny fixed-size inputs (MNIST 28x28): random shifts of up to ``shift`` pixels, size unchanged."""
    from ..checks import check_int

    check_int(shift, "shift", minimum=0)
    return Compose([Pad(shift, fill=fill), Jitter(2 * shift)])


def make_transforms(spec: str | Sequence[TransformLike] | Compose | None) -> Compose:
    """``"standard"``, ``"small"``, ``"none"``/None, a list of transforms, or a :class:`Compose`."""
    if spec is None:
        return Compose([])
    if isinstance(spec, Compose):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key == "standard":
            return standard_transforms()
        if key == "small":
            return small_transforms()
        if key == "none":
            return Compose([])
        raise ValueError(f"unknown transforms {spec!r}: choose 'standard', 'small', 'none' or pass a list")
    if isinstance(spec, Transform) or callable(spec):
        return Compose([spec])
    return Compose(list(spec))
