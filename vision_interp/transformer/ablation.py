"""Head ablation: how much the loss on the second copy of ``[BOS] + R + R`` rises when a head is removed.

A head's output before ``W_O`` is ``z_h`` (``d_head`` numbers per position, the slice ``h*d_head:(h+1)*d_head``
of the input of ``attn.c_proj``). Ablating the head replaces ``z_h`` by

* ``"zero"``: 0;
* ``"mean"``: its mean over every batch element and position of the clean run on the same probe.

:func:`ablated_loss` is the reference: a forward hook on ``attn.c_proj`` (through
:func:`vision_interp.capture.hooks`) adds ``(replacement - z_h) @ W_O[h]`` to the output of the model's own
forward pass. :func:`ablation_scan`, :func:`joint_ablations`, :func:`path_ablated_loss` and
:func:`attribution_patching` run the block loop of :mod:`.forward` instead, which starts from the cached clean
prefix and computes only what the ablation can change (see :func:`ablation_scan`); the tests check both paths
agree.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from ..capture import hooks
from ..checks import check_token_ids
from ..model_state import runs_model
from .forward import attn_residual, causal_bias, embed, mlp_residual, next_token_ce, run_block, unembed_ce, upcast
from .scores import _device, _seq_len, check_model, copy_slices

__all__ = ["ABLATION_MODES", "ATTRIBUTION_SCOPES", "head_means", "ablated_loss", "ablation_scan", "path_ablated_loss",
           "attribution_patching", "integrated_attribution_patching", "ablation_line", "joint_ablations"]

ABLATION_MODES = ("mean", "zero")


def _check_modes(modes: Iterable[str]) -> list[str]:
    modes = list(modes)
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad:
        raise ValueError(f"unknown ablation mode(s) {bad}; choose from {', '.join(ABLATION_MODES)}")
    return modes


def _check_heads(model: torch.nn.Module, heads: Sequence[tuple[int, int]]) -> None:
    L, H = model.config.n_layer, model.config.n_head
    for lh in heads:
        l, h = lh
        if not (0 <= l < L and 0 <= h < H):
            raise IndexError(f"head {l}.{h} does not exist: layers 0..{L - 1}, heads 0..{H - 1}")


@torch.no_grad()
def _clean_run(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Residual stream entering each block, each layer's c_proj input ``z``, and the logits of the clean run."""
    L = model.config.n_layer
    resid: dict[int, torch.Tensor] = {}
    zs: dict[int, torch.Tensor] = {}

    def block_in(i):
        def fn(_m, inputs, _out):
            resid[i] = inputs[0]
        return fn

    def proj_in(i):
        def fn(_m, inputs, _out):
            zs[i] = inputs[0]
        return fn

    fns = {f"transformer.h.{i}": block_in(i) for i in range(L)}
    fns.update({f"transformer.h.{i}.attn.c_proj": proj_in(i) for i in range(L)})
    with hooks(model, fns):
        logits = model(tokens.to(_device(model))).logits
    return [resid[i] for i in range(L)], [zs[i] for i in range(L)], logits


@runs_model
@torch.no_grad()
def head_means(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean ``z`` of every head over batch and positions of the clean run, ``(L, H, d_head)``."""
    check_token_ids(tokens, vocab_size=int(model.config.vocab_size), n_ctx=int(model.config.n_positions))
    _, zs, _ = _clean_run(model, tokens)
    H = model.config.n_head
    return torch.stack([upcast(z).mean(dim=(0, 1)).view(H, -1) for z in zs])


def _patch_hook(W_O: torch.Tensor, head_of_row: torch.Tensor, repl: torch.Tensor, H: int):
    """A c_proj forward hook; row ``i`` of the (flattened) batch ablates head ``head_of_row[i]`` (-1 = none)."""

    def fn(_m, inputs, out):
        z = inputs[0]
        B, T, d = z.shape
        zh = z.view(B, T, H, -1)
        rows = torch.nonzero(head_of_row >= 0).flatten()
        if rows.numel() == 0:
            return None
        hs = head_of_row[rows]
        cur = zh[rows, :, hs]  # (R, T, dh)
        delta = (repl[hs][:, None, :] - cur) @ W_O[hs]  # (R, T, d)
        out = out.clone()
        out[rows] += delta.to(out.dtype)
        return out

    return fn


@runs_model
@torch.no_grad()
def ablated_loss(model: torch.nn.Module, tokens: torch.Tensor, heads: Sequence[tuple[int, int]], mode: str = "mean",
                 means: torch.Tensor | None = None) -> float:
    """Mean second-copy loss with all ``heads`` (``[(layer, head), ...]``) ablated at once (a full forward pass)."""
    check_model(model)
    (mode,) = _check_modes([mode])
    _check_heads(model, heads)
    seq_len = _seq_len(tokens, model)
    H, d = model.config.n_head, model.config.n_embd
    dh = d // H
    if mode == "mean" and means is None:
        means = head_means(model, tokens)
    fns = {}
    for layer in sorted({l for l, _ in heads}):
        blk = model.transformer.h[layer].attn.c_proj
        W_O = blk.weight.view(H, dh, d)
        repl = means[layer].to(W_O) if mode == "mean" else torch.zeros(H, dh, dtype=W_O.dtype, device=W_O.device)
        layer_heads = [h for l, h in heads if l == layer]

        def fn(_m, inputs, out, W_O=W_O, repl=repl, layer_heads=layer_heads):
            zh = inputs[0].view(*inputs[0].shape[:2], H, dh)
            delta = sum((repl[h] - zh[:, :, h]) @ W_O[h] for h in layer_heads)
            return out + delta

        fns[f"transformer.h.{layer}.attn.c_proj"] = fn
    with hooks(model, fns):
        logits = model(tokens.to(_device(model))).logits
    lt = next_token_ce(logits[:, :-1], tokens[:, 1:])
    return float(lt[:, copy_slices(seq_len)[1]].mean())


# ---------------------------------------------------------------- the fast exact scan (own forward loop)


def _second_copy_ce(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per row of ``x`` ``(N, Tq, d)`` (second-copy positions only) against ``targets``."""
    return unembed_ce(model, x, targets).mean(1)


def _queries(seq_len: int) -> slice:
    """Positions whose prediction is scored: ``seq_len+1 .. 2*seq_len-1`` (predicting ``R[1:]`` of the second copy)."""
    return slice(seq_len + 1, 2 * seq_len)


@torch.no_grad()
def _clean_cache(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Residual entering each block and each block's per-head ``z`` ``(B, T, H, dh)``, plus the clean second-copy
    loss computed by this module's own forward loop."""
    H = model.config.n_head
    seq_len = _seq_len(tokens, model)
    x = embed(model, tokens.to(_device(model)))
    bias = causal_bias(x.shape[1], x.dtype, x.device)
    resid, zs = [], []
    for layer, block in enumerate(model.transformer.h):
        resid.append(x)
        x, _, z = run_block(block, layer, x, H, bias=bias)
        zs.append(z)
    targets = tokens[:, 1:][:, _queries(seq_len)].to(x.device)
    clean = float(_second_copy_ce(model, x[:, _queries(seq_len)], targets).mean())
    return resid, zs, clean


def _run_from(model: torch.nn.Module, layer: int, x: torch.Tensor, seq_len: int, *, zedit=None, kedit=None,
              first_z: torch.Tensor | None = None) -> torch.Tensor:
    """Blocks ``layer..L-1`` on ``x`` (``(N, T', d)``); the last block computes only the scored queries. With
    ``first_z`` the attention of block ``layer`` is not recomputed (an edit of ``z`` cannot change it): ``z`` is
    taken from the clean cache and only ``W_O``, the MLP and the later blocks run."""
    H = model.config.n_head
    blocks = model.transformer.h
    L = len(blocks)
    T = x.shape[1]
    bias_all = causal_bias(T, x.dtype, x.device)
    q2 = _queries(seq_len)
    bias_q = causal_bias(T, x.dtype, x.device, q2)
    for i in range(layer, L):
        last = i == L - 1
        if i == layer and first_z is not None:
            z = zedit(i, first_z) if zedit is not None else first_z
            if last:
                z, x = z[:, q2], x[:, q2]
            x = mlp_residual(blocks[i], attn_residual(blocks[i], x, z))
        else:
            x, _, _ = run_block(blocks[i], i, x, H, bias=bias_q if last else bias_all, queries=q2 if last else None,
                                zedit=zedit, kedit=kedit)
    return x


def _replacement(means: torch.Tensor, layer: int, mode: str) -> torch.Tensor:
    return means[layer] if mode == "mean" else torch.zeros_like(means[layer])


@runs_model
@torch.no_grad()
def ablation_scan(model: torch.nn.Module, tokens: torch.Tensor, modes: Sequence[str] = ABLATION_MODES, *,
                  max_rows: int = 64, progress: bool = True) -> dict:
    """Ablate every head in turn; return the rise of the mean second-copy loss per head and mode. Exact.

    Work saved against one forward pass per head, none of which changes the result: the clean residual stream
    entering layer ``l`` and the clean ``z`` of layer ``l`` are cached (a head's ablation changes nothing
    before its ``W_O``); heads are batched (``max_rows`` sequences per pass); the last position (it predicts
    nothing) is dropped; the last block computes only the scored second-copy queries, and only those positions
    are unembedded.

    Returns ``{"clean_loss", "clean_loss_recomputed", "<mode>": (L, H) loss increases, "<mode>_loss": (L, H)
    ablated losses}``; ``clean_loss`` is the model's own forward pass, ``clean_loss_recomputed`` this path's.
    """
    from tqdm.auto import tqdm

    check_model(model)
    modes = _check_modes(modes)
    seq_len = _seq_len(tokens, model)
    L, H = model.config.n_layer, model.config.n_head
    B = tokens.shape[0]
    logits = model(tokens.to(_device(model))).logits
    lt = next_token_ce(logits[:, :-1], tokens[:, 1:])
    clean = float(lt[:, copy_slices(seq_len)[1]].mean())
    del logits, lt
    resid, zs, recomputed = _clean_cache(model, tokens)
    means = torch.stack([z.mean(dim=(0, 1)) for z in zs])  # (L, H, dh), over batch and all positions
    resid, zs = [r[:, :-1] for r in resid], [z[:, :-1] for z in zs]  # the last position predicts nothing
    targets = tokens[:, 1:][:, _queries(seq_len)].to(resid[0].device)
    per_chunk = max(1, max_rows // B)
    result: dict = {"clean_loss": clean, "clean_loss_recomputed": recomputed}
    total = len(modes) * L * ((H + per_chunk - 1) // per_chunk)
    with tqdm(total=total, desc="ablation scan", disable=not progress) as bar:
        for mode in modes:
            losses = np.zeros((L, H))
            for layer in range(L):
                repl = _replacement(means, layer, mode)
                for h0 in range(0, H, per_chunk):
                    hs = torch.arange(h0, min(H, h0 + per_chunk), device=repl.device)
                    rows = torch.arange(len(hs) * B, device=repl.device)
                    head_of_row = hs.repeat_interleave(B)

                    def zedit(i, z, head_of_row=head_of_row, rows=rows, repl=repl, layer=layer):
                        if i != layer:
                            return z
                        z = z.clone()
                        z[rows, :, head_of_row] = repl[head_of_row][:, None, :]
                        return z

                    x = _run_from(model, layer, resid[layer].repeat(len(hs), 1, 1), seq_len, zedit=zedit,
                                  first_z=zs[layer].repeat(len(hs), 1, 1, 1))
                    per_row = _second_copy_ce(model, x, targets.repeat(len(hs), 1))
                    losses[layer, hs.cpu().numpy()] = per_row.view(len(hs), B).mean(1).double().cpu().numpy()
                    bar.update(1)
            result[mode] = losses - clean
            result[f"{mode}_loss"] = losses
    return result


# ---------------------------------------------------------------- joint and path ablations


def _heads_zedit(heads: Sequence[tuple[int, int]], means: torch.Tensor, mode: str):
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(l, []).append(h)

    def zedit(i, z):
        if i not in by_layer:
            return z
        z = z.clone()
        hs = by_layer[i]
        z[:, :, hs] = _replacement(means, i, mode)[hs]
        return z

    return zedit


@torch.no_grad()
def _joint_loss(model, resid, zs, means, tokens, heads, mode) -> float:
    seq_len = _seq_len(tokens, model)
    first = min(l for l, _ in heads)
    x = _run_from(model, first, resid[first], seq_len, zedit=_heads_zedit(heads, means, mode), first_z=zs[first])
    targets = tokens[:, 1:][:, _queries(seq_len)].to(x.device)
    return float(_second_copy_ce(model, x, targets).mean())


@runs_model
@torch.no_grad()
def path_ablated_loss(model: torch.nn.Module, tokens: torch.Tensor, senders: Sequence[tuple[int, int]],
                      receivers: Sequence[tuple[int, int]], mode: str = "mean", *, _cache=None) -> float:
    """Second-copy loss when only the *keys* of ``receivers`` stop seeing ``senders``' output.

    The senders' contribution ``z_h W_O[h]`` to the residual is replaced by its ablated value (``mode``) only in
    the residual from which the receivers compute their keys; queries, values and every other head and MLP see
    the clean senders. Everything downstream of the receivers is recomputed, so the number is the loss through
    the path sender -> receiver keys (K-composition) alone.
    """
    check_model(model)
    (mode,) = _check_modes([mode])
    _check_heads(model, list(senders) + list(receivers))
    if not senders or not receivers:
        raise ValueError("path ablation needs at least one sender and one receiver head")
    if max(l for l, _ in senders) >= min(l for l, _ in receivers):
        raise ValueError("every sender must be in an earlier layer than every receiver")
    seq_len = _seq_len(tokens, model)
    H, d = model.config.n_head, model.config.n_embd
    dh = d // H
    resid, zs, _ = _cache or _clean_cache(model, tokens)
    means = torch.stack([z.mean(dim=(0, 1)) for z in zs])
    delta = 0
    for l, h in senders:
        W_O = model.transformer.h[l].attn.c_proj.weight.view(H, dh, d)
        delta = delta + (_replacement(means, l, mode)[h] - zs[l][:, :, h]) @ W_O[h]  # (B, T', d)
    recv: dict[int, list[int]] = {}
    for l, h in receivers:
        recv.setdefault(l, []).append(h)

    def kedit(i, x, k):
        if i not in recv:
            return k
        block = model.transformer.h[i]
        x_ln = block.ln_1(x + delta)
        w, b = block.attn.c_attn.weight[:, d:2 * d], block.attn.c_attn.bias[d:2 * d]
        k2 = (x_ln @ w + b).view(*x.shape[:2], H, dh).transpose(1, 2)
        k = k.clone()
        k[:, recv[i]] = k2[:, recv[i]]
        return k

    first = min(recv)
    x = _run_from(model, first, resid[first], seq_len, kedit=kedit)
    targets = tokens[:, 1:][:, _queries(seq_len)].to(x.device)
    return float(_second_copy_ce(model, x, targets).mean())


@runs_model
@torch.no_grad()
def joint_ablations(model: torch.nn.Module, tokens: torch.Tensor, induction_heads: Sequence[tuple[int, int]],
                    previous_token_heads: Sequence[tuple[int, int]], modes: Sequence[str] = ABLATION_MODES) -> dict:
    """Second-copy loss (and its rise over clean) with all induction heads ablated together, all previous-token
    heads together, and the previous-token -> induction K path only (see :func:`path_ablated_loss`).

    Entries whose head set is empty (or a path whose senders are not earlier than its receivers) are ``None``.
    """
    check_model(model)
    modes = _check_modes(modes)
    _check_heads(model, list(induction_heads) + list(previous_token_heads))
    _seq_len(tokens, model)
    cache = _clean_cache(model, tokens)
    resid, zs, clean = cache
    means = torch.stack([z.mean(dim=(0, 1)) for z in zs])
    out: dict = {"clean_second_copy_loss": clean,
                 "induction_heads": [list(x) for x in induction_heads],
                 "previous_token_heads": [list(x) for x in previous_token_heads]}
    senders = [s for s in previous_token_heads if induction_heads and s[0] < min(l for l, _ in induction_heads)]
    for mode in modes:
        row = {}
        for name, heads in (("induction_heads", induction_heads), ("previous_token_heads", previous_token_heads)):
            row[name] = _joint_loss(model, resid, zs, means, tokens, heads, mode) if heads else None
        row["previous_token_to_induction_keys"] = (
            path_ablated_loss(model, tokens, senders, induction_heads, mode, _cache=cache)
            if senders and induction_heads else None)
        out[mode] = {k: (None if v is None else {"loss": v, "increase": v - clean}) for k, v in row.items()}
    out["path_senders"] = [list(x) for x in senders]
    return out


# ---------------------------------------------------------------- attribution patching

ATTRIBUTION_SCOPES = ("all", "layer", "head")


def _line_grads(model: torch.nn.Module, cache, seq_len: int, start: int, repl: dict[int, torch.Tensor],
                alpha: float, targets: torch.Tensor, heads: dict[int, torch.Tensor] | None = None
                ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{l: (z_ablated - z, dLoss/dz)}`` at the point ``alpha`` of the line from the clean to the ablated run.

    In every layer ``l`` of ``repl`` (``repl[l]``: ``(H, dh)`` replacement), the heads selected by ``heads[l]``
    (an ``(H,)`` 0/1 mask; all heads when ``heads`` is None) are set to ``z + alpha (repl - z)``, where ``z`` is what
    this run computes there (so moving an earlier layer also moves a later layer's ``z``, and ``alpha = 1`` is the
    exact joint ablation); ``sum_l (z_ablated - z) . dLoss/dz = dLoss/dalpha``. Runs blocks ``start..L-1`` from the
    cached clean residual, the last block at the scored queries only (the other positions of its ``z`` cannot
    reach the loss), so the last layer's tensors cover those queries only.
    """
    resid, zs, _ = cache
    probes: dict[int, torch.Tensor] = {}
    diffs: dict[int, torch.Tensor] = {}

    def zedit(i, z):
        if i not in repl:
            return z
        diff = repl[i] - z  # not detached: a later layer's z reaches the loss (1 - alpha) times as strongly
        if heads is not None:
            diff = diff * heads[i][:, None]
        eps = torch.zeros_like(z, requires_grad=True)
        probes[i], diffs[i] = eps, diff.detach()
        return z + alpha * diff + eps

    with torch.enable_grad():
        x = _run_from(model, start, resid[start], seq_len, zedit=zedit, first_z=zs[start])
        loss = _second_copy_ce(model, x, targets).mean()
        layers = sorted(probes)
        grads = torch.autograd.grad(loss, [probes[i] for i in layers])
    return {i: (diffs[i], g) for i, g in zip(layers, grads)}


def _scan_cache(model: torch.nn.Module, tokens: torch.Tensor):
    """Clean cache with the last position (it predicts nothing) dropped, and the per-layer head means over every
    batch element and position (as :func:`ablation_scan` defines them)."""
    resid, zs, clean = _clean_cache(model, tokens)
    means = torch.stack([z.mean(dim=(0, 1)) for z in zs])
    return ([r[:, :-1] for r in resid], [z[:, :-1] for z in zs], clean), means


@runs_model
def integrated_attribution_patching(model: torch.nn.Module, tokens: torch.Tensor,
                                    modes: Sequence[str] = ABLATION_MODES, *, steps: int = 8,
                                    scope: str = "all") -> dict:
    """Estimate of every head's ablation effect by integrated gradients along the straight line from the clean
    ``z`` to the ablated one (midpoint rule, ``steps`` points ``alpha = (k + 1/2) / steps``).

    The estimate of head ``h`` is ``sum_k (z_ablated - z_h) . dLoss/dz_h / steps``, at the point ``alpha_k`` where a
    set of heads is moved ``alpha_k`` of the way to its ablation at once:

    * ``"head"``: only ``h`` itself. The sum converges to the exact ablation effect of ``h`` (fundamental theorem
      of calculus along the line); ``steps`` backward passes per head, more than the exact scan: a check;
    * ``"layer"``: every head of ``h``'s layer (one run of the later blocks per layer and step);
    * ``"all"``: every head of every layer (one forward + backward pass per step, ``steps`` times the cost of
      :func:`attribution_patching`). The estimates then sum to the loss rise of ablating all heads together
      (completeness), shared out along the joint path.

    ``steps=1`` with the gradient at ``alpha = 0`` instead of ``1/2`` is :func:`attribution_patching`. Returns
    ``{"<mode>": (L, H) estimates}``.
    """
    check_model(model)
    modes = _check_modes(modes)
    if scope not in ATTRIBUTION_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(ATTRIBUTION_SCOPES)}, got {scope!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    seq_len = _seq_len(tokens, model)
    L, H = model.config.n_layer, model.config.n_head
    cache, means = _scan_cache(model, tokens)
    targets = tokens[:, 1:][:, _queries(seq_len)].to(means.device)
    alphas = [(k + 0.5) / steps for k in range(steps)]
    eye = torch.eye(H, dtype=means.dtype, device=means.device)
    out = {}
    for mode in modes:
        repl = {l: _replacement(means, l, mode) for l in range(L)}
        if scope == "all":
            groups = [(0, repl, None, None)]
        elif scope == "layer":
            groups = [(l, {l: repl[l]}, None, None) for l in range(L)]
        else:
            groups = [(l, {l: repl[l]}, {l: eye[h]}, h) for l in range(L) for h in range(H)]
        est = torch.zeros(L, H, dtype=torch.float64)
        for start, rep, mask, only in groups:
            for a in alphas:
                for l, (diff, g) in _line_grads(model, cache, seq_len, start, rep, a, targets, mask).items():
                    terms = (diff * g).sum(dim=(0, 1, 3)).double().cpu() / steps
                    if only is None:
                        est[l] += terms
                    else:
                        est[l, only] += terms[only]
        out[mode] = est.numpy()
    return out


@runs_model
@torch.no_grad()
def ablation_line(model: torch.nn.Module, tokens: torch.Tensor, head: tuple[int, int], mode: str = "mean",
                  ts: Sequence[float] = tuple(k / 10 for k in range(11))) -> list[float]:
    """Rise of the mean second-copy loss with ``head``'s ``z`` moved a fraction ``t`` of the way to its ablation,
    ``z + t (z_ablated - z)``, for each ``t`` in ``ts`` (``t = 1``: the exact ablation; the slope at ``t = 0``: attribution
    patching). Shows where the first-order estimate fails: a loss that is flat at 0 and rises late."""
    check_model(model)
    (mode,) = _check_modes([mode])
    _check_heads(model, [head])
    seq_len = _seq_len(tokens, model)
    (resid, zs, clean), means = _scan_cache(model, tokens)
    layer, h = head
    targets = tokens[:, 1:][:, _queries(seq_len)].to(zs[0].device)
    repl = _replacement(means, layer, mode)[h]
    out = []
    for t in ts:
        def zedit(i, z, t=float(t)):
            if i != layer:
                return z
            z = z.clone()
            z[:, :, h] += t * (repl - z[:, :, h])
            return z

        x = _run_from(model, layer, resid[layer], seq_len, zedit=zedit, first_z=zs[layer])
        out.append(float(_second_copy_ce(model, x, targets).mean()) - clean)
    return out


@runs_model
def attribution_patching(model: torch.nn.Module, tokens: torch.Tensor, modes: Sequence[str] = ABLATION_MODES) -> dict:
    """First-order estimate of every head's ablation effect from one forward and one backward pass.

    ``dLoss ~= sum_{batch, positions} (z_ablated - z_h) . dLoss/dz_h`` (the gradient of the mean second-copy loss
    with respect to each head's ``z``, taken at the clean run; the means are taken from the same forward pass).
    Returns ``{"<mode>": (L, H) estimates}``.
    """
    check_model(model)
    modes = _check_modes(modes)
    seq_len = _seq_len(tokens, model)
    H = model.config.n_head
    probes, zs = [], []

    def zedit(_i, z):
        eps = torch.zeros_like(z, requires_grad=True)
        probes.append(eps)
        zs.append(z.detach())
        return z + eps

    with torch.enable_grad():
        x = embed(model, tokens.to(_device(model)))
        bias = causal_bias(x.shape[1], x.dtype, x.device)
        for layer, block in enumerate(model.transformer.h):  # every position: the means need the last layer's z too
            x, _, _ = run_block(block, layer, x, H, bias=bias, zedit=zedit)
        q2 = _queries(seq_len)
        loss = _second_copy_ce(model, x[:, q2], tokens[:, 1:][:, q2].to(x.device)).mean()
        grads = torch.autograd.grad(loss, probes)
    means = torch.stack([z.mean(dim=(0, 1)) for z in zs])
    return {mode: torch.stack([((_replacement(means, l, mode)[None, None] - zs[l]) * grads[l]).sum(dim=(0, 1, 3))
                               for l in range(len(zs))]).double().cpu().numpy() for mode in modes}
