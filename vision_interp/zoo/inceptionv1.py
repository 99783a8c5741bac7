"""InceptionV1 as Lucid's "inception5h" graph: the model of the Circuits thread and OpenAI Microscope.

Same layers, channel counts (mixed4a has 508 channels), padding (TF "SAME" written out as explicit
pads, with -inf for max pools) and local response normalisation as the TensorFlow graph, 1008
logits, and parameter names such that the published PyTorch conversion ``inception5h.pth``
(116 tensors, 7,066,380 parameters) loads with ``strict=True``.

Inputs are RGB in [0, 1]; the model applies the graph's own preprocessing (``x * 255 - 117``).

Layer names: every module path (``conv2d0_pre_relu_conv``, ``mixed4a``, ``mixed4a_3x3``, ...) plus
Lucid's names for pre-ReLU tensors (``conv2d0_pre_relu``, ``mixed4a_3x3_pre_relu``, ...) and
``softmax2_pre_activation`` for the logits.

Local response normalisation follows TensorFlow's definition with the graph's own attributes
(``depth_radius=5, bias=2, alpha=1e-4, beta=0.5``): ``x / (2 + 1e-4 * sum_{|d|<=5} x_d^2)^0.5``.
``torch.nn.functional.local_response_norm`` divides alpha by the window size, so the equivalent torch
call is ``(size=11, alpha=1.1e-3, beta=0.5, k=2)``. Padding is TF "SAME" computed from each input's
shape at run time (it depends on the parity of the size for stride 2), so every input size gives
TF's output shapes: 224 -> mixed4a 14x14, 236 -> mixed4a 15x15. See ``docs/inceptionv1.md``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import io as vio

__all__ = ["InceptionV1", "inceptionv1", "INCEPTION5H_URL", "MIXED_BLOCKS", "MIN_CLASSIFIER_INPUT", "load_class_names", "tf_same_pads"]

INCEPTION5H_URL = "https://github.com/ProGamerGov/pytorch-lucid-models/releases/download/v1.0/inception5h.pth"
WEIGHTS_ENV = "VISION_INTERP_INCEPTIONV1_WEIGHTS"
SHA256_ENV = "VISION_INTERP_INCEPTIONV1_SHA256"

# name: (in, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool projection)
MIXED_BLOCKS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
# Smallest input side whose mixed5b is >= 7x7: conv2d0 and four stride-2 pools each give ceil(n / 2),
# so mixed5b is ceil(n / 32) and the 7x7 classifier pool needs n > 6 * 32.
MIN_CLASSIFIER_INPUT = 6 * 32 + 1
BRANCHES = ("1x1", "3x3", "5x5", "pool_reduce")  # concatenation order of a mixed block


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one axis: output ceil(size / stride), extra pad after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class LocalResponseNorm(nn.Module):
    """TensorFlow LRN: ``x / (bias + alpha * sum_{|d|<=depth_radius} x_d^2) ** beta``.

    Defaults are inception5h's attributes (depth radius 5, bias 2, alpha 1e-4 *not* divided by the
    window, beta 0.5). Computed as a banded 1x1 convolution over squared activations, several times
    faster on CPU than ``F.local_response_norm``'s avg_pool3d.
    """

    def __init__(self, depth_radius: int = 5, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.5):
        super().__init__()
        self.depth_radius = depth_radius
        self.size = 2 * depth_radius + 1
        self.bias, self.alpha, self.beta = bias, alpha, beta

    def _band(self, x: torch.Tensor) -> torch.Tensor:
        """(C, C, 1, 1) 0/1 matrix summing each channel's 2r+1 neighbours, cached per shape/device/dtype."""
        key = (x.shape[1], x.device, x.dtype, self.depth_radius)
        if getattr(self, "_band_key", None) != key:
            idx = torch.arange(x.shape[1], device=x.device)
            band = ((idx[:, None] - idx[None, :]).abs() <= self.depth_radius).to(x.dtype)
            self._band_cache, self._band_key = band[:, :, None, None], key
        return self._band_cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.bias + self.alpha * F.conv2d(x * x, self._band(x))) ** -self.beta

    def linearized(self, x: torch.Tensor) -> torch.Tensor:
        """Circuits' linear stand-in: the identity (LRN only rescales; expanded weights skip it)."""
        return x


class MaxPoolSame(nn.Module):
    """Max pool with TF "SAME" padding computed from the input's shape (pads filled with -inf)."""

    def __init__(self, stride: int, kernel_size: int = 3):
        super().__init__()
        self.stride = stride
        self.kernel_size = kernel_size

    def pad_amounts(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) TF "SAME" pads for an ``h x w`` input."""
        return (*tf_same_pads(h, self.kernel_size, self.stride), *tf_same_pads(w, self.kernel_size, self.stride))

    def _torch_pad(self, x: torch.Tensor) -> tuple[int, int, int, int]:
        top, bottom, left, right = self.pad_amounts(x.shape[-2], x.shape[-1])
        return (left, right, top, bottom)  # F.pad order: last axis first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self._torch_pad(x)
        if any(pad):
            x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, stride=self.stride)

    def linearized(self, x: torch.Tensor) -> torch.Tensor:
        """Circuits' linear stand-in: average over the same window, SAME pads as zeros and counted.

        Every output is then the mean of ``kernel_size**2`` entries, a fixed linear map of ``x``
        with the same output shape and window positions as the max pool.
        """
        pad = self._torch_pad(x)
        return F.avg_pool2d(F.pad(x, pad) if any(pad) else x, self.kernel_size, stride=self.stride)


class Concat(nn.Module):
    """Channel concatenation; a module so that ``mixed*`` outputs are addressable by name."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class SamePadConv(nn.Conv2d):
    """Conv2d with TF "SAME" padding computed from the input's shape (zeros, extra pad after)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(cin, cout, k, stride=stride)

    def pad_amounts(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) TF "SAME" pads for an ``h x w`` input."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (*tf_same_pads(h, kh, sh), *tf_same_pads(w, kw, sw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pad_amounts(x.shape[-2], x.shape[-1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class InceptionV1(nn.Module):
    """Lucid's inception5h. ``forward`` takes RGB in [0, 1] (N, 3, H, W) and returns 1008 logits."""

    input_shape = (3, 224, 224)
    gallery_layers = ("conv2d0", "conv2d1", "conv2d2", *MIXED_BLOCKS)

    def __init__(self) -> None:
        super().__init__()
        self.layer_aliases: dict[str, str] = {}
        self._conv("conv2d0", 3, 64, 7, stride=2)
        self.maxpool0 = MaxPoolSame(2)
        self.localresponsenorm0 = LocalResponseNorm()
        self._conv("conv2d1", 64, 64, 1)
        self._conv("conv2d2", 64, 192, 3)
        self.localresponsenorm1 = LocalResponseNorm()
        self.maxpool1 = MaxPoolSame(2)
        for name, (cin, c1, c3r, c3, c5r, c5, cp) in MIXED_BLOCKS.items():
            if name == "mixed4a":
                self.maxpool4 = MaxPoolSame(2)
            if name == "mixed5a":
                self.maxpool10 = MaxPoolSame(2)
            self._conv(f"{name}_1x1", cin, c1, 1)
            self._conv(f"{name}_3x3_bottleneck", cin, c3r, 1)
            self._conv(f"{name}_3x3", c3r, c3, 3)
            self._conv(f"{name}_5x5_bottleneck", cin, c5r, 1)
            self._conv(f"{name}_5x5", c5r, c5, 5)
            setattr(self, f"{name}_pool", MaxPoolSame(1))
            self._conv(f"{name}_pool_reduce", cin, cp, 1)
            setattr(self, name, Concat())
        self.avgpool0 = nn.AvgPool2d(7, stride=1)
        self.softmax2_pre_activation_matmul = nn.Linear(1024, 1008)
        self.layer_aliases["softmax2_pre_activation"] = "softmax2_pre_activation_matmul"
        self.layer_aliases["logits"] = "softmax2_pre_activation_matmul"
        self.class_names: list[str] | None = None

    def _conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1) -> None:
        setattr(self, f"{name}_pre_relu_conv", SamePadConv(cin, cout, k, stride))
        setattr(self, name, nn.ReLU())
        self.layer_aliases[f"{name}_pre_relu"] = f"{name}_pre_relu_conv"

    def _cr(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)(getattr(self, f"{name}_pre_relu_conv")(x))

    def _mixed(self, name: str, x: torch.Tensor) -> torch.Tensor:
        b1 = self._cr(f"{name}_1x1", x)
        b3 = self._cr(f"{name}_3x3", self._cr(f"{name}_3x3_bottleneck", x))
        b5 = self._cr(f"{name}_5x5", self._cr(f"{name}_5x5_bottleneck", x))
        bp = self._cr(f"{name}_pool_reduce", getattr(self, f"{name}_pool")(x))
        return getattr(self, name)(b1, b3, b5, bp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"InceptionV1 expects RGB images (N, 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
        x = x * 255.0 - 117.0
        x = self._cr("conv2d0", x)
        x = self.localresponsenorm0(self.maxpool0(x))
        x = self._cr("conv2d1", x)
        x = self._cr("conv2d2", x)
        x = self.maxpool1(self.localresponsenorm1(x))
        for name in MIXED_BLOCKS:
            if name == "mixed4a":
                x = self.maxpool4(x)
            if name == "mixed5a":
                x = self.maxpool10(x)
            x = self._mixed(name, x)
        if x.shape[-1] < 7 or x.shape[-2] < 7:
            raise ValueError(
                f"input too small for the classifier head: mixed5b is {x.shape[-2]}x{x.shape[-1]}, needs >= 7x7 "
                f"(input >= {MIN_CLASSIFIER_INPUT}x{MIN_CLASSIFIER_INPUT}: every axis is divided by 32, rounding up); "
                "capture an earlier layer instead"
            )
        x = self.avgpool0(x).mean(dim=(2, 3))  # 7x7 average, then global mean for inputs > 224
        return self.softmax2_pre_activation_matmul(x)


def load_class_names(data_dir: str | os.PathLike | None = None) -> list[str] | None:
    """The 1001 Lucid class names (index 0 'dummy') from ``inceptionv1/imagenet_comp_graph_label_strings.txt``."""
    from ..data.paths import find_data_file

    path = find_data_file("inceptionv1/imagenet_comp_graph_label_strings.txt", data_dir)
    if path is None:
        return None
    return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]


def _resolve_weights(weights: str | os.PathLike | None, sha256: str | None, url: str, cache: Path | None, progress: bool) -> Path:
    """Local path (argument or env var) wins; else download into the cache with trust-on-first-use hashing."""
    sha256 = sha256 or os.environ.get(SHA256_ENV) or None
    local = weights or os.environ.get(WEIGHTS_ENV)
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"InceptionV1 weights not found at {path} (from {'argument' if weights else WEIGHTS_ENV})")
        if sha256 and vio.sha256_file(path).lower() != sha256.lower():
            raise vio.ChecksumError(f"sha256 of {path} does not match the expected {sha256}")
        return path
    cache = Path(cache) if cache else vio.cache_dir() / "inceptionv1"
    dest = cache / Path(url).name
    record = dest.with_name(dest.name + ".sha256")
    if dest.is_file():
        digest = vio.sha256_file(dest)
        expected = sha256 or (record.read_text().strip() if record.is_file() else None)
        if expected and digest.lower() != expected.lower():
            raise vio.ChecksumError(
                f"cached {dest} has sha256 {digest}, expected {expected}; delete it to download again"
            )
        return dest
    vio.download(url, dest, sha256=sha256, progress=progress)
    digest = vio.sha256_file(dest)
    if not sha256:
        vio.atomic_write_text(record, digest + "\n")
        warnings.warn(
            f"InceptionV1 weights downloaded without a known sha256; recorded {digest} in {record} and later "
            f"loads are checked against it. Pass sha256=... (or set {SHA256_ENV}) to verify against a trusted hash.",
            stacklevel=3,
        )
    return dest


def inceptionv1(
    pretrained: bool = False,
    *,
    weights: str | os.PathLike | None = None,
    sha256: str | None = None,
    url: str = INCEPTION5H_URL,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> InceptionV1:
    """Build InceptionV1 (eval mode, frozen). With ``pretrained`` or ``weights``, load ``inception5h.pth``.

    Weights come from ``weights`` (a local file), else ``$VISION_INTERP_INCEPTIONV1_WEIGHTS``, else a
    download of ``url`` into the cache. The download is verified against ``sha256`` (or
    ``$VISION_INTERP_INCEPTIONV1_SHA256``); with no hash given, the first download's hash is recorded
    and later loads are checked against it.
    """
    model = InceptionV1()
    if pretrained or weights is not None:
        path = _resolve_weights(weights, sha256, url, Path(cache_dir) if cache_dir else None, progress)
        sd = vio.load_state_dict(path)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path} is not an inception5h state dict: {e}") from e
    model.class_names = load_class_names(data_dir)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
