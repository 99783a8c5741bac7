"""Transcoders for convolutional blocks: a sparse, interpretable stand-in for a block of a CNN.

A transcoder (Dunefsky et al. 2024, "Transcoders find interpretable LLM feature circuits") reads a
block's *input* and predicts its *output*. For a conv block (e.g. ``pool1 -> conv2 -> relu2 -> pool2``)
the encoder is a convolution with the block's receptive field (read from the model's trace), the
features are TopK-sparse per position, and the decoder is 1x1; an optional linear skip has the
encoder's geometry::

    u   = pad(a_in / s_in)
    pre = conv(u, W_enc, stride) + b_enc                       (F, H_out, W_out)
    z   = TopK_F(ReLU(pre))                                     (at most k features per position)
    out = s_out * (conv1x1(z, W_dec) + b_dec + conv(u, W_skip, stride))

``s_in`` / ``s_out`` (mean per-position norms of the training data) make learning rates independent
of the layer's units. Given which features are active (the sparse selection), the map from the
block's input and the feature values to its output is linear: that is what attribution graphs use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvTranscoder", "TranscoderConfig", "train_conv_transcoder", "block_geometry"]


class ConvTranscoder(nn.Module):
    """Block input ``(N, C_in, H_in, W_in)`` -> features ``(N, F, H, W)``; ``decode`` gives the block output."""

    def __init__(self, c_in: int, c_out: int, n_features: int, k: int, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int, int, int], *, skip: bool = False, s_in: float = 1.0, s_out: float = 1.0):
        super().__init__()
        if not 1 <= k <= n_features:
            raise ValueError(f"k must be in 1..n_features ({n_features}), got {k}")
        self.c_in, self.c_out, self.n_features, self.k = c_in, c_out, n_features, k
        self.kernel, self.stride, self.pad = tuple(kernel), tuple(stride), tuple(pad)  # pad: (left, right, top, bottom)
        self.W_enc = nn.Parameter(torch.zeros(n_features, c_in, *kernel))
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.W_dec = nn.Parameter(torch.zeros(n_features, c_out))
        self.b_dec = nn.Parameter(torch.zeros(c_out))
        self.W_skip = nn.Parameter(torch.zeros(c_out, c_in, *kernel)) if skip else None
        self.register_buffer("s_in", torch.tensor(float(s_in)))
        self.register_buffer("s_out", torch.tensor(float(s_out)))
        self.gradient = "exact"  # or "linear" (straight-through, featvis): an attached copy gets it; see attach.feature_gradients

    @property
    def has_skip(self) -> bool:
        return self.W_skip is not None

    def _input(self, a_in: torch.Tensor) -> torch.Tensor:
        if a_in.ndim != 4 or a_in.shape[1] != self.c_in:
            raise ValueError(f"transcoder expects (N, {self.c_in}, H, W) block inputs, got {tuple(a_in.shape)}")
        return F.pad(a_in / self.s_in, self.pad)

    def linear_pre_activations(self, a_in: torch.Tensor) -> torch.Tensor:
        """``conv(u, W_enc) + b_enc``: linear in the block input."""
        return F.conv2d(self._input(a_in), self.W_enc, self.b_enc, stride=self.stride)

    def select(self, lin: torch.Tensor) -> torch.Tensor:
        """TopK of the ReLU'd pre-activations over the feature axis (dim 1); others zero."""
        pre = F.relu(lin)
        vals, idx = pre.topk(self.k, dim=1)
        z = torch.zeros_like(pre).scatter(1, idx, vals)
        if self.gradient == "linear" and lin.requires_grad:
            z = lin + (z - lin).detach()
        return z

    def forward(self, a_in: torch.Tensor) -> torch.Tensor:
        """Feature activations ``(N, F, H, W)``: the transcoder's features as a layer."""
        return self.select(self.linear_pre_activations(a_in))

    def skip_term(self, a_in: torch.Tensor) -> torch.Tensor | None:
        """``s_out * conv(u, W_skip)`` (no bias), or None without a skip."""
        if self.W_skip is None:
            return None
        return F.conv2d(self._input(a_in), self.W_skip, stride=self.stride) * self.s_out

    def decode(self, z: torch.Tensor, a_in: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted block output from features ``z`` (plus the skip term of ``a_in`` if there is one)."""
        out = F.conv2d(z, self.W_dec.T[:, :, None, None], self.b_dec) * self.s_out
        if self.W_skip is not None:
            if a_in is None:
                raise ValueError("this transcoder has a skip term: decode(z, a_in) needs the block input")
            out = out + self.skip_term(a_in)
        return out

    def predict(self, a_in: torch.Tensor) -> torch.Tensor:
        """The block output the transcoder predicts from the block input."""
        return self.decode(self(a_in), a_in)

    @property
    def directions(self) -> torch.Tensor:
        """Decoder directions ``(F, C_out)`` in the output layer's units: feature f adds ``z_f * directions[f]``."""
        return self.W_dec.detach() * self.s_out

    @property
    def encoder(self) -> torch.Tensor:
        """Encoder kernels ``(F, C_in, kh, kw)`` in the input layer's units (bias excluded)."""
        return self.W_enc.detach() / self.s_in


def block_geometry(window, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """Kernel, stride and padding (left, right, top, bottom) of a conv whose output position p reads
    exactly ``window`` (a :class:`vision_interp.trace.Window` relative to the block input) and whose
    output has the block output's size."""
    if window.is_global:
        raise ValueError("the block output sees its whole input (a global window): a transcoder needs a conv block")
    pads = []
    for ax in (1, 0):  # F.pad order: last axis (x) first
        before = -window.offset[ax]
        if before < 0:
            raise ValueError(f"block window offset {window.offset} starts inside the input: not a conv block geometry")
        after = (out_hw[ax] - 1) * window.stride[ax] + window.size[ax] - in_hw[ax] - before
        if after < 0:
            raise ValueError(f"block window {window} does not tile an input of {in_hw} into {out_hw}")
        pads += [before, after]
    return tuple(window.size), tuple(window.stride), tuple(pads)  # type: ignore[return-value]


@dataclass(frozen=True)
class TranscoderConfig:
    n_features: int = 64
    k: int = 4
    skip: bool = False
    steps: int = 1500
    batch_size: int = 32  # images per step (every position of each image is a sample)
    lr: float = 3e-3
    seed: int = 0
    aux_k: int = 16  # AuxK: dead features learn to explain the residual (Gao et al.)
    aux_coef: float = 1 / 32
    dead_after: int = 100  # steps without firing before a feature counts as dead for AuxK

    def __post_init__(self) -> None:
        """Each field's type and range, at construction (``TranscoderConfig(steps=2.5)`` fails here, naming
        ``steps``); ``k <= n_features`` is checked by :meth:`validate` (before any training), so a
        command line can adjust one of them first."""
        from .sae import check_config_fields

        check_config_fields(self, {"n_features": 1, "k": 1, "steps": 1, "batch_size": 1, "seed": 0, "aux_k": 1, "dead_after": 1},
                            {"lr": (0.0, True), "aux_coef": (0.0, False)}, ("skip",))

    def validate(self) -> None:
        """Every field's type and range, and ``1 <= k <= n_features``."""
        self.__post_init__()
        if not 1 <= self.k <= self.n_features:
            from ..errors import InputError

            raise InputError(f"TranscoderConfig.k: need n_features >= 1 and 1 <= k <= n_features, got "
                             f"n_features={self.n_features}, k={self.k}")

    def to_dict(self) -> dict:
        return asdict(self)


def _mean_norm(t: torch.Tensor) -> float:
    return float(t.norm(dim=1).mean().clamp_min(1e-8))


def _init(tc: ConvTranscoder, a_out: torch.Tensor, gen: torch.Generator) -> None:
    """Encoder: random kernels of unit norm; decoder: small random rows; b_dec: the mean output (scaled)."""
    with torch.no_grad():
        w = torch.randn(tc.W_enc.shape, generator=gen)
        tc.W_enc.copy_(w / w.flatten(1).norm(dim=1)[:, None, None, None])
        d = torch.randn(tc.W_dec.shape, generator=gen)
        tc.W_dec.copy_(0.1 * d / d.norm(dim=1, keepdim=True))
        tc.b_dec.copy_(a_out.mean((0, 2, 3)) / tc.s_out)


def _check_geometry(geometry: object, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple:
    """``(kernel, stride, pad)`` of positive ints (pad >= 0) that map ``in_hw`` to ``out_hw`` (see :func:`block_geometry`)."""
    from ..checks import InputError, InputTypeError

    def ints(v: object, n: int) -> bool:
        return isinstance(v, (tuple, list)) and len(v) == n and all(isinstance(i, int) and not isinstance(i, bool) for i in v)

    if not (isinstance(geometry, (tuple, list)) and len(geometry) == 3 and ints(geometry[0], 2) and ints(geometry[1], 2)
            and ints(geometry[2], 4)):
        raise InputTypeError(f"geometry: expected (kernel (kh, kw), stride (sh, sw), pad (left, right, top, bottom)) "
                             f"of ints, e.g. from block_geometry(); got {geometry!r}")
    kernel, stride, pad = (tuple(g) for g in geometry)
    if min(kernel + stride) < 1 or min(pad) < 0:
        raise InputError(f"geometry: {geometry!r}; kernel and stride entries must be >= 1 and padding >= 0")
    hw = tuple((size + p0 + p1 - k) // s + 1 for size, k, s, p0, p1 in zip(in_hw, kernel, stride, pad[2::-2], pad[3::-2]))
    if hw != tuple(out_hw):
        raise InputError(f"geometry: {geometry!r} maps inputs of {in_hw} to {hw}, not to the outputs' {tuple(out_hw)}")
    return kernel, stride, pad


def train_conv_transcoder(a_in: torch.Tensor, a_out: torch.Tensor, geometry: tuple, config: TranscoderConfig = TranscoderConfig(),
                          *, progress: bool = True, on_step: Callable[[int, float], None] | None = None) -> ConvTranscoder:
    """Train on paired block inputs ``(N, C_in, H_in, W_in)`` and outputs ``(N, C_out, H, W)``.

    Loss: the batch's FVU of the output (positions as samples) plus AuxK for dead features. Same
    data, config and thread count give the same weights.
    """
    from tqdm.auto import tqdm

    from ..checks import InputError, InputTypeError, check_instance, check_matrix
    from .sae import check_training_options

    check_instance(config, TranscoderConfig, "config")  # every argument before any work
    config.validate()
    check_training_options(progress, on_step)
    check_matrix(a_in, "a_in", ndim=4)
    check_matrix(a_out, "a_out", ndim=4)
    for arg, t in (("a_in", a_in), ("a_out", a_out)):
        if not t.is_floating_point():
            raise InputTypeError(f"{arg}: dtype {t.dtype}; expected floating-point block activations")
    if len(a_in) != len(a_out) or not len(a_in):
        raise InputError(f"a_out: {len(a_out)} outputs for {len(a_in)} inputs; give one block output per block input (at least one)")
    kernel, stride, pad = _check_geometry(geometry, tuple(a_in.shape[-2:]), tuple(a_out.shape[-2:]))
    gen = torch.Generator().manual_seed(config.seed)
    tc = ConvTranscoder(a_in.shape[1], a_out.shape[1], config.n_features, config.k, kernel, stride, pad, skip=config.skip,
                        s_in=_mean_norm(a_in), s_out=_mean_norm(a_out))
    _init(tc, a_out, gen)
    opt = torch.optim.Adam(tc.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, 5 * (1 - s / config.steps)))  # linear decay over the last 20%
    last_fired = torch.zeros(config.n_features, dtype=torch.long)
    bar = tqdm(range(config.steps), desc="train transcoder", disable=not progress, unit="step")
    for step in bar:
        idx = torch.randint(0, len(a_in), (min(config.batch_size, len(a_in)),), generator=gen)
        xb, yb = a_in[idx], a_out[idx]
        lin = tc.linear_pre_activations(xb)
        z = tc.select(lin)
        err = yb - tc.decode(z, xb)
        var = ((yb - yb.mean((0, 2, 3), keepdim=True)) ** 2).sum().clamp_min(1e-12)
        loss = (err ** 2).sum() / var
        fired = (z > 0).any(dim=(0, 2, 3))
        last_fired = torch.where(fired, torch.zeros_like(last_fired), last_fired + 1)
        dead = last_fired > config.dead_after
        if config.aux_coef > 0 and bool(dead.any()):
            k_aux = min(config.aux_k, int(dead.sum()))
            aux_pre = F.relu(lin).masked_fill(~dead[None, :, None, None], 0.0)
            vals, top = aux_pre.topk(k_aux, dim=1)
            z_aux = torch.zeros_like(aux_pre).scatter(1, top, vals)
            aux_rec = F.conv2d(z_aux, tc.W_dec.T[:, :, None, None]) * tc.s_out
            aux = ((err.detach() - aux_rec) ** 2).sum() / (err.detach() ** 2).sum().clamp_min(1e-12)
            loss = loss + config.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step:
            on_step(step, float(loss.detach()))
        if step % 100 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", dead=int(dead.sum()))
    bar.close()
    tc.eval()
    for p in tc.parameters():
        p.requires_grad_(False)
    return tc
