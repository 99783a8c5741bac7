"""Tensors to pictures: every PNG the package writes goes through here.

One colour convention for signed quantities (weights, attributions): red positive, blue
negative, white zero, symmetric around zero.
"""

from __future__ import annotations

import io as _io
import math
import os
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .io import atomic_write_bytes

__all__ = [
    "to_numpy_image",
    "to_pil",
    "save_png",
    "png_bytes",
    "make_grid",
    "diverging",
    "overlay",
    "upscale",
    "normalize01",
    "save_figure",
    "MAX_INPUT_PIXELS",
    "ImageFileError",
    "read_image",
    "image_tensor",
]


def _as_tensor(img: torch.Tensor | np.ndarray | Image.Image) -> torch.Tensor:
    if isinstance(img, Image.Image):
        arr = np.asarray(img).astype(np.float32) / 255.0
        t = torch.from_numpy(arr)
        return t.permute(2, 0, 1) if t.ndim == 3 else t[None]
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(img)
    return img.detach().cpu().float()


def to_numpy_image(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in [0, 1] -> (H, W, 3) or (H, W) uint8."""
    t = _as_tensor(img)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}; use make_grid() first")
        t = t[0]
    if t.ndim == 3:
        if t.shape[0] == 1:
            t = t[0]
        elif t.shape[0] == 3:
            t = t.permute(1, 2, 0)
        elif t.shape[-1] in (1, 3):
            t = t.squeeze(-1) if t.shape[-1] == 1 else t
        else:
            raise ValueError(f"cannot show an image with {t.shape[0]} channels; give 1 or 3 channels")
    arr = (t.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return arr


def to_pil(img: torch.Tensor | np.ndarray) -> Image.Image:
    return Image.fromarray(to_numpy_image(img))


def upscale(img: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour enlargement of a (C, H, W) or (N, C, H, W) image, for small inputs like MNIST."""
    if factor <= 1:
        return img
    return img.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def save_png(img: torch.Tensor | np.ndarray | Image.Image, path: str | os.PathLike, *, scale: int = 1) -> Path:
    """Save an image as a compressed PNG, atomically. ``scale`` enlarges with nearest neighbours."""
    if not isinstance(img, Image.Image):
        t = _as_tensor(img)
        if scale > 1:
            t = upscale(t if t.ndim >= 3 else t[None], scale)
        pil = to_pil(t)
    else:
        pil = img if scale <= 1 else img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return atomic_write_bytes(path, png_bytes(pil))


def png_bytes(img: torch.Tensor | np.ndarray | Image.Image, *, scale: int = 1) -> bytes:
    """The compressed PNG file of an image, in memory (for notebooks and inline data URIs)."""
    pil = img if isinstance(img, Image.Image) else to_pil(upscale(_as_tensor(img), scale) if scale > 1 else _as_tensor(img))
    if isinstance(img, Image.Image) and scale > 1:
        pil = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = _io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def normalize01(img: torch.Tensor) -> torch.Tensor:
    """Stretch each image of a batch (or one image) to [0, 1]."""
    t = img.float()
    if t.ndim == 4:
        flat = t.flatten(1)
        lo, hi = flat.min(1).values, flat.max(1).values
        return (t - lo.view(-1, 1, 1, 1)) / (hi - lo).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (t - t.min()) / (t.max() - t.min()).clamp_min(1e-12)


def make_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    ncols: int | None = None,
    pad: int = 2,
    pad_value: float = 1.0,
) -> torch.Tensor:
    """Tile N images (N, C, H, W) into one (C, H', W'); grayscale and RGB may be mixed (gray is repeated)."""
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[:, None]
        items = list(images)
    else:
        items = [(_as_tensor(i) if i.ndim == 3 else _as_tensor(i)[None]) for i in images]
    if not items:
        raise ValueError("make_grid() needs at least one image")
    c = max(i.shape[0] for i in items)
    items = [i.expand(c, -1, -1) if i.shape[0] == 1 else i for i in items]
    h = max(i.shape[1] for i in items)
    w = max(i.shape[2] for i in items)
    n = len(items)
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = torch.full((c, nrows * (h + pad) + pad, ncols * (w + pad) + pad), float(pad_value))
    for k, im in enumerate(items):
        r, col = divmod(k, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + im.shape[1], x : x + im.shape[2]] = im.detach().cpu().float()
    return grid


def diverging(values: torch.Tensor, vmax: float | None = None) -> torch.Tensor:
    """Signed map(s) (..., H, W) -> RGB (..., 3, H, W): red positive, blue negative, white at zero.

    ``vmax`` fixes the scale (shared across the input); by default the largest |value| is used.
    """
    v = _as_tensor(values)
    scale = float(vmax) if vmax is not None else float(v.abs().max())
    s = (v / max(scale, 1e-12)).clamp(-1, 1)
    pos, neg = s.clamp_min(0), (-s).clamp_min(0)
    # white -> red for positive, white -> blue for negative
    r = 1 - neg * 0.85
    g = 1 - pos * 0.85 - neg * 0.65
    b = 1 - pos * 0.85
    return torch.stack([r, g.clamp(0, 1), b], dim=-3)


def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.6, vmax: float | None = None) -> torch.Tensor:
    """Blend a signed heatmap (H, W) over an image (C, H, W): the input stays visible in gray.

    The heatmap is normalised per image (largest |value| = full colour) unless ``vmax`` is given.
    """
    img = _as_tensor(image)
    if img.ndim == 2:
        img = img[None]
    gray = img.mean(0, keepdim=True).expand(3, -1, -1)
    h = _as_tensor(heat)
    if h.ndim == 3:
        h = h.sum(0)
    if h.shape != gray.shape[1:]:
        h = torch.nn.functional.interpolate(h[None, None], size=gray.shape[1:], mode="bilinear", align_corners=False)[0, 0]
    col = diverging(h, vmax)
    strength = (h.abs() / max(float(vmax) if vmax else float(h.abs().max()), 1e-12)).clamp(0, 1)
    a = alpha * strength
    base = 0.35 + 0.65 * gray  # lighten the input so colours read
    return (1 - a) * base + a * col


def save_figure(fig, path: str | os.PathLike, *, dpi: int | None = None, colors: int | None = 256) -> Path:
    """Render a matplotlib figure to PNG through :func:`save_png` (atomic) and close it.

    ``colors`` quantizes to a palette PNG (several times smaller for plots); None keeps full RGB.
    """
    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    buf.seek(0)
    pil = Image.open(buf).convert("RGB")
    if colors:
        pil = pil.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    return save_png(pil, path)


# ------------------------------------------------------------------ reading input pictures

MAX_INPUT_PIXELS = 50_000_000  # about 7000 x 7000; larger files are refused before their pixels are decoded


class ImageFileError(ValueError):
    """An input picture that cannot be used: missing, not an image, truncated, or too large."""


def read_image(path: str | os.PathLike, *, what: str = "image") -> Image.Image:
    """Open and fully decode a picture file (RGB or grayscale), refusing files over :data:`MAX_INPUT_PIXELS`.

    The size is read from the header first, so a decompression bomb never allocates its pixels.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageFileError(f"{what} {p}: no such file" if not p.exists() else f"{what} {p}: not a regular file")
    try:
        with _size_checked_here(), Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_INPUT_PIXELS:
                raise ImageFileError(
                    f"{what} {p}: {w} x {h} pixels ({w * h / 1e6:.0f} Mpx) is above the limit of "
                    f"{MAX_INPUT_PIXELS / 1e6:.0f} Mpx; downscale the picture first")
            im.load()
            mode = "L" if im.mode in ("1", "L", "I", "I;16", "F", "LA") else "RGB"
            return im.convert(mode)
    except ImageFileError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageFileError(f"{what} {p}: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageFileError(f"{what} {p}: not a picture in a format PIL reads (PNG, JPEG, BMP, ...), "
                             "or truncated or corrupt") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise ImageFileError(f"{what} {p}: unreadable picture, truncated or corrupt ({e})") from None


@contextmanager
def _size_checked_here() -> Iterator[None]:
    """PIL's own bomb check raises before the size is known; read_image applies its smaller, stated limit instead."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def image_tensor(img: Image.Image, shape: Sequence[int]) -> torch.Tensor:
    """A decoded picture as a (C, H, W) float tensor in [0, 1], converted to C channels and resized to H x W."""
    c, h, w = shape
    im = img.convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
    t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)
