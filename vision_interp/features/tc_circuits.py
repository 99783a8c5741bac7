"""Global (input-invariant) circuits between transcoder features.

Between two chained transcoders the map from an upstream feature's activation to a downstream
feature's pre-activation does not depend on the input: the upstream decoder direction read by the
downstream encoder kernel, ``W[g, f, dy, dx] = enc_b[g, :, dy, dx] . dec_a[f]``. From the last block
to the logits the weight is the decoder direction read by the (affine) head at each position. A
per-input graph's edges between active features are exactly these weights times the upstream
activation (with no skip term in between).

Sparsity is compared with the neuron-level weights of the same block (its first layer with weights,
e.g. ``conv2``): the share of each unit's absolute weight mass in its top 10 connections, and the
effective number of connections ``(sum |w|)^2 / sum w^2``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import InputError, check_int, check_matrix, check_model
from ..model_state import exclusive, runs_model
from .graph import logits_path, model_logits
from .transcoders import Transcoder, check_transcoder, check_transcoders

__all__ = ["feature_feature_weights", "feature_logit_weights_tc", "top_connections", "sparsity", "sparsity_comparison"]


def feature_feature_weights(upstream: Transcoder, downstream: Transcoder) -> torch.Tensor:
    """``(F_down, F_up, kh, kw)``: downstream pre-activation per unit of upstream activation at each offset."""
    check_transcoder(upstream, arg="upstream")
    check_transcoder(downstream, arg="downstream")
    if downstream.in_layer != upstream.out_layer:
        raise InputError(f"downstream: {downstream.feature_layer!r} reads {downstream.in_layer!r}, not the upstream block's "
                         f"output {upstream.out_layer!r} (are the two in model order?)")
    if downstream.module.c_in != upstream.module.c_out:
        raise InputError(f"downstream: reads {downstream.module.c_in} channels; upstream writes {upstream.module.c_out}")
    return torch.einsum("gcyx,fc->gfyx", downstream.module.encoder.cpu().double(), upstream.module.directions.cpu().double())


@runs_model
@torch.no_grad()
def feature_logit_weights_tc(model: nn.Module, last: Transcoder) -> torch.Tensor:
    """``(F, n_logits, H, W)``: logit change per unit of feature f placed at (y, x) of the last block's
    output. The layers after it must be affine: checked by scaling, negating and adding probes (a ReLU,
    PReLU or max pool after the block passes a scaling test but not these), refused otherwise."""
    from ..capture import hooks
    from ..units import default_input_shape

    check_model(model)
    if not isinstance(last, _Probe):
        check_transcoder(last, model, arg="last")
    d = last.module.directions.cpu().double()
    f, c = d.shape
    shape = _out_shape(model, last)
    h, w = shape[-2:]
    m = _double(model)
    path = logits_path(model)
    in_shape = default_input_shape(model)
    a = torch.zeros((f, h, w, c, h, w), dtype=torch.float64)
    for yy in range(h):
        for xx in range(w):
            a[:, yy, xx, :, yy, xx] = d
    a = a.reshape(f * h * w, c, h, w)

    def head(values: torch.Tensor) -> torch.Tensor:
        with hooks(m, {last.out_layer: lambda _m, _i, _o: values}):
            return model_logits(m, torch.zeros((len(values), *in_shape), dtype=torch.float64), path)

    out = head(a)
    base = head(torch.zeros_like(a[:1]))
    twice = head(2 * a)
    gen = torch.Generator().manual_seed(0)
    r1, r2 = (torch.randn((2, c, h, w), generator=gen, dtype=torch.float64) * float(d.abs().max().clamp_min(1e-12)) for _ in range(2))
    probes = head(torch.cat([r1, r2, r1 + r2, -r1]))  # additivity and negation, with mixed signs everywhere
    tol = 1e-9 * max(1.0, float(out.abs().max()), float(probes.abs().max()))
    d1, d2, d12, dneg = (probes[2 * i:2 * i + 2] - base for i in range(4))
    affine = (torch.allclose(twice - base, 2 * (out - base), atol=tol) and torch.allclose(d12, d1 + d2, atol=tol)
              and torch.allclose(dneg, -d1, atol=tol))
    if not affine:
        raise InputError(f"last: the layers after {last.out_layer!r} are not affine (a ReLU, PReLU, max pool or bias before a "
                         "nonlinearity): no input-invariant feature -> logit weights (give the last transcoder of a chain "
                         "whose head is linear, or use per-input attribution graphs)")
    return (out - base).reshape(f, h, w, -1).permute(0, 3, 1, 2)


def _double(model: nn.Module) -> nn.Module:
    """A float64 eval-mode copy on the CPU (the user's model is only read, under its lock)."""
    import copy

    with exclusive(model, "feature_logit_weights_tc()"):
        return copy.deepcopy(model).cpu().double().eval()


def _out_shape(model: nn.Module, tc: Transcoder) -> tuple[int, ...]:
    from ..units import layer_shape

    return layer_shape(model, tc.out_layer)


def top_connections(weights: torch.Tensor, n: int = 10) -> list[list[dict]]:
    """Per unit (first axis): its ``n`` largest |weights| as ``{"index": [...], "weight": w}`` (index over the other axes)."""
    check_matrix(weights, "weights", ndim=(2, 3, 4, 5, 6))
    n = check_int(n, "n", minimum=1)
    out = []
    for row in weights:
        flat = row.flatten()
        vals, idx = flat.abs().topk(min(n, flat.numel()))
        out.append([{"index": list(map(int, torch.unravel_index(i, row.shape))), "weight": round(float(flat[i]), 6)} for i in idx])
    return out


def sparsity(weights: torch.Tensor, n: int = 10) -> dict:
    """Mean over units (first axis) of the top-``n`` share of |weight| mass and of the effective number of connections."""
    check_matrix(weights, "weights", ndim=(2, 3, 4, 5, 6))
    n = check_int(n, "n", minimum=1)
    a = weights.abs().flatten(1).double()
    top = a.topk(min(n, a.shape[1]), dim=1).values.sum(1) / a.sum(1).clamp_min(1e-30)
    eff = a.sum(1) ** 2 / (a ** 2).sum(1).clamp_min(1e-30)
    return {"units": a.shape[0], "connections_per_unit": a.shape[1], f"top{n}_share_mean": round(float(top.mean()), 5),
            "effective_connections_mean": round(float(eff.mean()), 3)}


@runs_model
def sparsity_comparison(model: nn.Module, transcoders: list[Transcoder]) -> dict:
    """Feature-level vs neuron-level weight sparsity for each pair of chained blocks and for the logits."""
    transcoders = check_transcoders(transcoders, model)
    from .graph import check_chain

    check_chain(transcoders)
    out: dict = {}
    for a, b in zip(transcoders, transcoders[1:]):
        neuron = getattr(model.get_submodule(b.block), "weight", None)
        if not isinstance(neuron, torch.Tensor) or neuron.ndim < 2:
            raise InputError(f"transcoders: {b.feature_layer!r} is named after {b.block!r}, which has no weight matrix to compare "
                             "the feature weights with (name the block after its conv layer)")
        neuron = neuron.detach()
        out[f"{a.feature_layer} -> {b.feature_layer}"] = {
            "features": sparsity(feature_feature_weights(a, b)),
            "neurons": {"layer": b.block, **sparsity(neuron)}}
    last = transcoders[-1]
    flw = feature_logit_weights_tc(model, last)  # (F, L, H, W)
    neuron_logit = _neuron_logit_weights(model, last)  # (C, L, H, W)
    out[f"{last.feature_layer} -> logits"] = {"features": sparsity(flw), "neurons": {"layer": last.out_layer, **sparsity(neuron_logit)}}
    return out


@torch.no_grad()
def _neuron_logit_weights(model: nn.Module, last: Transcoder) -> torch.Tensor:
    """``(C, n_logits, H, W)``: the head's weights from each channel of the last block's output."""
    c = last.module.c_out
    eye = torch.eye(c, dtype=torch.float64)

    return feature_logit_weights_tc(model, _Probe(eye, last.out_layer))  # type: ignore[arg-type]


class _Probe:
    """Stands in for a transcoder whose decoder directions are the unit channels of ``out_layer``."""

    def __init__(self, directions: torch.Tensor, out_layer: str):
        self.module = type("_Unit", (), {"directions": directions})()
        self.out_layer = out_layer
