"""Image parameterizations: free parameters -> a batch of images in [0, 1].

Gradient ascent directly on pixels finds high-frequency patterns that excite a unit but look like
noise. Two changes of basis (from Lucid) make the optimisation prefer natural-looking images:

* **Fourier basis with 1/f scaling**: the parameters are a spectrum whose coefficients are
  multiplied by ``1 / f ** decay_power``, so a unit step in parameter space moves low
  frequencies as much as high ones would move in a natural image (whose spectrum falls as 1/f).
* **Colour decorrelation**: for RGB, the parameters live in a decorrelated colour space and are
  mapped to RGB with the square root of ImageNet's colour correlation matrix.

Finally a sigmoid (or a straight-through clamp) keeps pixels in [0, 1]. Every parameterization has
a batch dimension, and each batch element is initialised from its own seeded generator, so an
element's start does not depend on how many others are optimised with it.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

__all__ = ["ImageParam", "PixelParam", "FourierParam", "image_param", "COLOR_CORRELATION_SVD_SQRT", "rfft2d_freqs"]

# Square root of the colour covariance of ImageNet (from Lucid), normalised so the largest column norm is 1.
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()

Valid = Literal["sigmoid", "clamp"]


def _element_generators(seed: int, n: int) -> list[torch.Generator]:
    """One generator per batch element, so element i's initial image depends only on (seed, i)."""
    return [torch.Generator().manual_seed(int(seed) * 1_000_003 + i) for i in range(n)]


def _randn_per_element(shape: Sequence[int], sd: float, seed: int) -> torch.Tensor:
    n = shape[0]
    gens = _element_generators(seed, n)
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in gens]) * sd


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude of each coefficient of an ``rfft2`` of an h x w image: (h, w//2+1)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class ImageParam(nn.Module):
    """Base class: ``forward()`` returns images (N, C, H, W) in [0, 1]; ``parameters()`` are optimised."""

    def __init__(self, shape: Sequence[int], *, decorrelate: bool, valid: Valid):
        super().__init__()
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError(f"image shape must be (N, C, H, W) with positive sizes, got {tuple(shape)}")
        if valid not in ("sigmoid", "clamp"):
            raise ValueError(f"valid must be 'sigmoid' or 'clamp', got {valid!r}")
        self.shape = tuple(int(s) for s in shape)
        self.decorrelate = bool(decorrelate) and self.shape[1] == 3
        self.valid = valid
        self.register_buffer("color", _COLOR_NORMALIZED.clone(), persistent=False)

    def raw(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        t = self.raw()
        if self.decorrelate:
            # (N, 3, H, W): mix the colour channels with the correlation square root
            t = torch.einsum("nchw,dc->ndhw", t, self.color)
        if self.valid == "sigmoid":
            return torch.sigmoid(t)
        x = t + 0.5
        return x + (x.clamp(0, 1) - x).detach()  # straight-through: clamp forward, identity gradient

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.shape}"


def _undo_colour(param: ImageParam, t: torch.Tensor) -> torch.Tensor:
    """The inverse of the colour mixing in :meth:`ImageParam.forward` (identity without decorrelation)."""
    if not param.decorrelate:
        return t
    return torch.einsum("ndhw,cd->nchw", t, torch.linalg.inv(param.color.double()).float())


class PixelParam(ImageParam):
    """One free parameter per pixel (the naive basis)."""

    def __init__(self, shape: Sequence[int], *, sd: float = 0.01, seed: int = 0, decorrelate: bool = True, valid: Valid = "sigmoid"):
        super().__init__(shape, decorrelate=decorrelate, valid=valid)
        self.pixels = nn.Parameter(_randn_per_element(self.shape, sd, seed))

    def raw(self) -> torch.Tensor:
        return self.pixels

    @classmethod
    def from_images(cls, images: torch.Tensor, valid: Valid = "sigmoid", eps: float = 1e-4, *,
                    decorrelate: bool = False) -> "PixelParam":
        """A pixel basis whose first output is ``images`` (for the sigmoid clipped to [eps, 1 - eps]): to
        continue an optimisation in the pixel basis from wherever another parameterization got."""
        param = cls(images.shape, sd=0.0, decorrelate=decorrelate, valid=valid)
        x = images.detach().float().cpu()
        t = torch.logit(x.clamp(eps, 1 - eps)) if valid == "sigmoid" else x - 0.5
        with torch.no_grad():
            param.pixels.copy_(_undo_colour(param, t))
        return param.to(images.device)


class FourierParam(ImageParam):
    """A spectrum scaled by 1/f**decay_power, turned into an image with an inverse real FFT.

    The scale is computed once (a buffer), not at every step.
    """

    def __init__(self, shape: Sequence[int], *, sd: float = 0.01, decay_power: float = 1.0, seed: int = 0,
                 decorrelate: bool = True, valid: Valid = "sigmoid"):
        super().__init__(shape, decorrelate=decorrelate, valid=valid)
        n, c, h, w = self.shape
        freqs = rfft2d_freqs(h, w)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        # with norm="ortho" this equals Lucid's sqrt(h*w)-scaled TF irfft2d; /4 is Lucid's "magic" contrast factor
        scale = scale / 4.0
        self.register_buffer("scale", scale[None, None, :, :, None].float(), persistent=False)
        self.spectrum = nn.Parameter(_randn_per_element((n, c, h, w // 2 + 1, 2), sd, seed))

    def raw(self) -> torch.Tensor:
        h, w = self.shape[2], self.shape[3]
        spec = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        return torch.fft.irfft2(spec, s=(h, w), norm="ortho")

    @classmethod
    def from_images(cls, images: torch.Tensor, *, decay_power: float = 1.0, decorrelate: bool = True,
                    valid: Valid = "sigmoid", eps: float = 1e-4) -> "FourierParam":
        """A Fourier basis whose first output is ``images`` (for the sigmoid clipped to [eps, 1 - eps]).

        The inverse of :meth:`forward`: undo the sigmoid (or the clamp's +0.5), the colour mixing and
        the 1/f scaling. Used to continue at full size from a tiled coarse-size result.
        """
        param = cls(images.shape, sd=0.0, decay_power=decay_power, decorrelate=decorrelate, valid=valid)
        x = images.detach().float().cpu()
        t = torch.logit(x.clamp(eps, 1 - eps)) if valid == "sigmoid" else x - 0.5
        spec = torch.fft.rfft2(_undo_colour(param, t), norm="ortho") / param.scale[..., 0]
        with torch.no_grad():
            param.spectrum.copy_(torch.view_as_real(spec))
        return param.to(images.device)


def image_param(
    kind: str,
    shape: Sequence[int],
    *,
    seed: int = 0,
    sd: float = 0.01,
    decorrelate: bool = True,
    valid: Valid = "sigmoid",
    decay_power: float = 1.0,
) -> ImageParam:
    """Build a parameterization by name: ``"fft"`` (alias ``"fourier"``) or ``"pixel"``.

    ``decorrelate`` only applies to 3-channel images; grayscale and other channel counts are
    parameterized per channel.
    """
    kind = kind.lower()
    if kind in ("fft", "fourier"):
        return FourierParam(shape, sd=sd, decay_power=decay_power, seed=seed, decorrelate=decorrelate, valid=valid)
    if kind == "pixel":
        return PixelParam(shape, sd=sd, seed=seed, decorrelate=decorrelate, valid=valid)
    raise ValueError(f"kind: unknown parameterization {kind!r}: choose 'fft' (Fourier, 1/f scaled) or 'pixel'")
