"""Sparse dictionaries on a layer's activations: a TopK sparse autoencoder, trained deterministically.

A conv layer's output ``(N, C, H, W)`` is read as ``N*H*W`` samples of ``C`` numbers (spatial
positions as samples). The TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders") writes each sample as a sparse non-negative combination of ``F`` learned unit-norm
decoder directions, keeping exactly the ``k`` largest pre-activations::

    z = TopK(ReLU(W_enc (x / scale - b_dec) + b_enc))        (F codes, at most k non-zero)
    x_hat = scale * (z @ W_dec + b_dec)

``scale`` (the mean sample norm of the training data) makes learning rates independent of the
layer's units. As an ``nn.Module`` the dictionary maps ``(N, C, H, W)`` to codes ``(N, F, H, W)``,
so once attached to a model (:func:`vision_interp.features.attach`) its features are channels of
an ordinary layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TopKSAE", "SAEConfig", "train_topk_sae", "fvu", "check_config_fields"]


class TopKSAE(nn.Module):
    """A TopK sparse autoencoder over ``d_in`` channels with ``n_features`` features."""

    def __init__(self, d_in: int, n_features: int, k: int, scale: float = 1.0):
        super().__init__()
        if not 1 <= k <= n_features:
            raise ValueError(f"k must be in 1..n_features ({n_features}), got {k}")
        self.d_in, self.n_features, self.k = d_in, n_features, k
        self.W_enc = nn.Parameter(torch.zeros(n_features, d_in))
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.W_dec = nn.Parameter(torch.zeros(n_features, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.gradient = "exact"  # or "linear" (straight-through): an attached copy gets it; see attach.feature_gradients

    # -- flat (samples, channels) interface: training and metrics
    def linear_pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.scale - self.b_dec) @ self.W_enc.T + self.b_enc

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear_pre_activations(x))

    def encode_flat(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(M, F)`` for samples ``(M, C)``: the k largest ReLU pre-activations, others zero.

        Values are always exact. Gradients: with ``gradient == "exact"`` an inactive feature has zero
        gradient; with ``"linear"`` (straight-through) every feature gets the gradient of its linear
        pre-activation, so feature visualization can grow a feature that is not active anywhere yet
        (with exact gradients it starts, and stays, at zero on most images). Where a feature is
        active, both gradients are the same.
        """
        return self._codes(self.linear_pre_activations(x), dim=-1)

    def _codes(self, lin: torch.Tensor, dim: int) -> torch.Tensor:
        """TopK of the ReLU'd linear pre-activations along ``dim`` (the feature axis); see encode_flat."""
        pre = F.relu(lin)
        vals, idx = pre.topk(self.k, dim=dim)
        z = torch.zeros_like(pre).scatter(dim, idx, vals)
        if self.gradient == "linear" and lin.requires_grad:
            z = lin + (z - lin).detach()
        return z

    def decode_flat(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.W_dec + self.b_dec) * self.scale

    # -- spatial (N, C, H, W) interface: the dictionary as a layer
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``(N, F, H, W)`` of a conv activation ``(N, C, H, W)`` (or ``(N, F)`` of ``(N, C)``)."""
        if x.ndim == 2:
            return self.encode_flat(x)
        if x.ndim != 4 or x.shape[1] != self.d_in:
            raise ValueError(f"dictionary expects (N, {self.d_in}, H, W) activations, got {tuple(x.shape)}")
        # written as 1x1 convolutions so the model's trace sees a per-position layer (receptive fields,
        # data flow) exactly as for a conv layer; same maths as the flat interface
        lin = F.conv2d(x / self.scale - self.b_dec[None, :, None, None], self.W_enc[:, :, None, None], self.b_enc)
        return self._codes(lin, dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``(N, C, H, W)`` of codes ``(N, F, H, W)`` (or ``(N, C)`` of ``(N, F)``)."""
        if z.ndim == 2:
            return self.decode_flat(z)
        return F.conv2d(z, self.W_dec.T[:, :, None, None], self.b_dec) * self.scale

    @property
    def directions(self) -> torch.Tensor:
        """Decoder directions ``(F, C)`` in the layer's units (unit norm times ``scale``)."""
        return self.W_dec.detach() * self.scale

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))


def check_training_options(progress: object, on_step: object) -> None:
    """The trainers' keyword options: ``progress`` a bool, ``on_step`` a callable ``(step, loss)`` or None."""
    from ..errors import InputTypeError

    if not isinstance(progress, bool):
        raise InputTypeError(f"progress: expected True or False, got {type(progress).__name__} {progress!r}")
    if on_step is not None and not callable(on_step):
        raise InputTypeError(f"on_step: expected a callable on_step(step, loss) or None, got {type(on_step).__name__} {on_step!r}")


def check_config_fields(config: object, ints: dict[str, int], numbers: dict[str, tuple[float, bool]], bools: tuple[str, ...] = ()) -> None:
    """Every field of a training config: ``ints`` (name -> minimum; a bool or a float, even 2.0, is refused),
    ``numbers`` (name -> (minimum, strictly above)), ``bools``. Called at construction, so a bad value
    fails where it was written, naming the field, not deep inside torch."""
    from ..checks import check_int, check_number
    from ..errors import InputTypeError

    cls = type(config).__name__
    for name, minimum in ints.items():  # stored back as a plain int (a 0-d integer tensor is accepted)
        object.__setattr__(config, name, check_int(getattr(config, name), f"{cls}.{name}", minimum=minimum))
    for name, (minimum, strict) in numbers.items():
        check_number(getattr(config, name), f"{cls}.{name}", minimum=minimum, strict_min=strict)
    for name in bools:
        if not isinstance(getattr(config, name), bool):
            raise InputTypeError(f"{cls}.{name}: expected True or False, got {type(getattr(config, name)).__name__} "
                                 f"{getattr(config, name)!r}")


@dataclass(frozen=True)
class SAEConfig:
    n_features: int = 64
    k: int = 4
    steps: int = 2000  # 2000 x 1024 samples at lr 3e-3: held-out FVU as good as 3000 x 2048 at 2e-3, a third of the work
    batch_size: int = 1024
    lr: float = 3e-3
    seed: int = 0
    aux_k: int = 16  # AuxK: dead features learn to explain the residual (Gao et al.)
    aux_coef: float = 1 / 32
    dead_after: int = 200  # steps without firing before a feature counts as dead for AuxK

    def __post_init__(self) -> None:
        """Each field's type and range at construction; ``k <= n_features`` in :meth:`validate`."""
        check_config_fields(self, {"n_features": 1, "k": 1, "steps": 1, "batch_size": 1, "seed": 0, "aux_k": 1, "dead_after": 1},
                            {"lr": (0.0, True), "aux_coef": (0.0, False)})

    def validate(self, d_in: int) -> None:
        self.__post_init__()
        if self.n_features < 1 or not 1 <= self.k <= self.n_features:
            raise ValueError(f"need n_features >= 1 and 1 <= k <= n_features, got n_features={self.n_features}, k={self.k}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if d_in < 1:
            raise ValueError("the activations have no channels")


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: ``sum |x - x_hat|^2 / sum |x - mean(x)|^2`` over samples ``(M, C)``.

    Both are checked first (tensors of samples ``(M, C)``, finite, the same shape): a 4-d activation
    would be averaged over the batch only, a silently different number. Samples without variance
    (one sample, or all equal) leave the FVU undefined, and are refused rather than divided by ~0."""
    from ..checks import InputError, check_matrix

    check_matrix(x, "x")
    check_matrix(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise InputError(f"x_hat: shape {tuple(x_hat.shape)}; it must match x {tuple(x.shape)}")
    if x.is_complex() or x_hat.is_complex():
        raise InputError("x: complex values; FVU is defined for real samples")
    x, x_hat = x.double(), x_hat.double()
    var = ((x - x.mean(0)) ** 2).sum()
    if not float(var) > 0:
        raise InputError(f"x: {len(x)} sample(s) with no variance (every sample is the same); the fraction of variance "
                         "unexplained is undefined: give at least two different samples (M, C)")
    return float(((x - x_hat) ** 2).sum() / var)


def _init(sae: TopKSAE, x: torch.Tensor, gen: torch.Generator) -> None:
    """Decoder: random unit directions; encoder: its transpose; b_dec: the data mean (in scaled units)."""
    with torch.no_grad():
        w = torch.randn(sae.n_features, sae.d_in, generator=gen)
        sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec)
        sae.b_dec.copy_(x.mean(0) / sae.scale)


def train_topk_sae(x: torch.Tensor, config: SAEConfig = SAEConfig(), *, progress: bool = True,
                   on_step: Callable[[int, float], None] | None = None) -> TopKSAE:
    """Train a TopK SAE on samples ``x (M, C)``; same data, config and threads give the same weights."""
    from tqdm.auto import tqdm

    from ..checks import InputError, InputTypeError, check_finite, check_instance

    check_instance(config, SAEConfig, "config")  # every argument before any work
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"x: expected a tensor of samples (M, C), got {type(x).__name__}")
    check_training_options(progress, on_step)
    if x.ndim != 2:
        raise InputError(f"x: train_topk_sae needs samples (M, C), got shape {tuple(x.shape)}; see features.layer_samples")
    if not x.is_floating_point():
        raise InputTypeError(f"x: dtype {x.dtype}; expected floating-point activations (M, C)")
    if len(x) == 0:
        raise InputError("x: no samples (M = 0); give at least one sample (M, C)")
    check_finite(x, "x")
    config.validate(x.shape[1])
    x = x.float()
    gen = torch.Generator().manual_seed(config.seed)
    scale = float(x.norm(dim=1).mean().clamp_min(1e-8))
    sae = TopKSAE(x.shape[1], config.n_features, config.k, scale)
    _init(sae, x, gen)
    opt = torch.optim.Adam(sae.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, 5 * (1 - s / config.steps)))  # linear decay over the last 20%
    last_fired = torch.zeros(config.n_features, dtype=torch.long)
    bar = tqdm(range(config.steps), desc="train sae", disable=not progress, unit="step")
    for step in bar:
        idx = torch.randint(0, len(x), (min(config.batch_size, len(x)),), generator=gen)
        xb = x[idx]
        pre = sae.pre_activations(xb)
        vals, top = pre.topk(sae.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top, vals)
        rec = sae.decode_flat(z)
        err = xb - rec
        var = ((xb - xb.mean(0)) ** 2).sum().clamp_min(1e-12)
        loss = (err ** 2).sum() / var
        fired = torch.zeros(config.n_features, dtype=torch.bool)
        fired[top[vals > 0].unique()] = True
        last_fired = torch.where(fired, torch.zeros_like(last_fired), last_fired + 1)
        dead = last_fired > config.dead_after
        if config.aux_coef > 0 and bool(dead.any()):
            k_aux = min(config.aux_k, int(dead.sum()))
            aux_pre = pre.masked_fill(~dead, 0.0)
            a_vals, a_idx = aux_pre.topk(k_aux, dim=-1)
            z_aux = torch.zeros_like(pre).scatter(-1, a_idx, a_vals)
            aux_rec = (z_aux @ sae.W_dec) * sae.scale
            aux = ((err.detach() - aux_rec) ** 2).sum() / ((err.detach() ** 2).sum().clamp_min(1e-12))
            loss = loss + config.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _remove_parallel_grad(sae)
        opt.step()
        sched.step()
        sae.normalize_decoder()
        if on_step:
            on_step(step, float(loss.detach()))
        if step % 100 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", dead=int(dead.sum()))
    bar.close()
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


def _remove_parallel_grad(sae: TopKSAE) -> None:
    """Keep decoder rows on the unit sphere: drop the gradient component along each row."""
    g, w = sae.W_dec.grad, sae.W_dec.data
    if g is not None:
        g.sub_((g * w).sum(1, keepdim=True) * w)
