"""Head ablation: how much the loss on the second copy of ``[BOS] + R + R`` rises when a head is removed.

A head's output before ``W_O`` is ``z_h`` (``d_head`` numbers per position, the slice ``h*d_head:(h+1)*d_head``
of the input of ``attn.c_proj``). Ablating the head replaces ``z_h`` by

* ``"zero"``: 0;
* ``"mean"``: its mean over every batch element and position of the clean run on the same probe.

The replacement is applied by a forward hook on ``attn.c_proj`` (through :func:`vision_interp.capture.hooks`):
the hook sees the module's input ``z`` and adds ``(replacement - z_h) @ W_O[h]`` to the output, which is
exactly ``c_proj`` applied to the patched ``z``.

The full scan is batched: for layer ``l`` the residual stream entering block ``l`` is cached once from the
clean run and repeated once per head of that layer (each copy ablates a different head, selected per
example), then only blocks ``l..L-1`` run, and only the second-copy positions are unembedded. That costs
about ``sum_l (L - l) / L`` = roughly half of ``n_layer * n_head`` full forward passes for the scan.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..capture import hooks
from .scores import _device, _seq_len, check_model, copy_slices

__all__ = ["ABLATION_MODES", "head_means", "ablated_loss", "ablation_scan"]

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


@torch.no_grad()
def head_means(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean ``z`` of every head over batch and positions of the clean run, ``(L, H, d_head)``."""
    _, zs, _ = _clean_run(model, tokens)
    H = model.config.n_head
    return torch.stack([z.float().mean(dim=(0, 1)).view(H, -1) for z in zs])


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


@torch.no_grad()
def ablated_loss(model: torch.nn.Module, tokens: torch.Tensor, heads: Sequence[tuple[int, int]], mode: str = "mean",
                 means: torch.Tensor | None = None) -> float:
    """Mean second-copy loss with all ``heads`` (``[(layer, head), ...]``) ablated at once (a full forward pass)."""
    check_model(model)
    (mode,) = _check_modes([mode])
    _check_heads(model, heads)
    seq_len = _seq_len(tokens)
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
    lt = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tokens[:, 1:].to(logits.device), reduction="none")
    return float(lt[:, copy_slices(seq_len)[1]].mean())


def _causal_mask(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    m = torch.zeros(T, T, dtype=dtype, device=device)
    return m.masked_fill(torch.ones(T, T, dtype=torch.bool, device=device).triu(1), torch.finfo(dtype).min)[None, None]


@torch.no_grad()
def _second_copy_loss_from(model: torch.nn.Module, layer: int, resid: torch.Tensor, tokens: torch.Tensor,
                           unembed_chunk: int) -> torch.Tensor:
    """Run blocks ``layer..`` on ``resid`` (``(N*B, T, d)``), return the mean second-copy loss of each row ``(N*B,)``."""
    T = resid.shape[1]
    seq_len = (T - 1) // 2
    mask = _causal_mask(T, resid.dtype, resid.device)
    x = resid
    for block in model.transformer.h[layer:]:
        x = block(x, attention_mask=mask)
        if isinstance(x, tuple):  # older transformers return (hidden, ...)
            x = x[0]
    s2 = copy_slices(seq_len)[1]
    x = x[:, s2]  # predictions of the second copy only
    targets = tokens[:, 1:][:, s2].to(x.device)
    reps = x.shape[0] // tokens.shape[0]
    targets = targets.repeat(reps, 1)
    out = []
    for i in range(0, x.shape[0], unembed_chunk):
        logits = model.lm_head(model.transformer.ln_f(x[i:i + unembed_chunk])).float()
        out.append(F.cross_entropy(logits.transpose(1, 2), targets[i:i + unembed_chunk], reduction="none").mean(1))
    return torch.cat(out)


@torch.no_grad()
def ablation_scan(model: torch.nn.Module, tokens: torch.Tensor, modes: Sequence[str] = ABLATION_MODES, *,
                  max_rows: int = 64, unembed_chunk: int | None = None, progress: bool = True) -> dict:
    """Ablate every head in turn; return the rise of the mean second-copy loss per head and mode.

    Returns ``{"clean_loss": float, "clean_loss_recomputed": float, "<mode>": (L, H) array of loss increases,
    "<mode>_loss": (L, H) array of ablated losses}``. ``clean_loss_recomputed`` runs the same partial-forward
    path with nothing ablated, a check that it matches the model's own forward pass. ``max_rows`` bounds the
    number of sequences per partial forward (heads x batch are split into chunks).
    """
    from tqdm.auto import tqdm

    check_model(model)
    modes = _check_modes(modes)
    seq_len = _seq_len(tokens)
    L, H, d = model.config.n_layer, model.config.n_head, model.config.n_embd
    dh = d // H
    B = tokens.shape[0]
    if unembed_chunk is None:
        unembed_chunk = max(1, int(2e8 // (seq_len * model.config.vocab_size * 4)))  # ~200 MB of logits at once
    resid, zs, logits = _clean_run(model, tokens)
    lt = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tokens[:, 1:].to(logits.device), reduction="none")
    clean = float(lt[:, copy_slices(seq_len)[1]].mean())
    recomputed = float(_second_copy_loss_from(model, 0, resid[0], tokens, unembed_chunk).mean())
    means = torch.stack([z.float().mean(dim=(0, 1)).view(H, dh) for z in zs])
    heads_per_chunk = max(1, max_rows // B)
    result: dict = {"clean_loss": clean, "clean_loss_recomputed": recomputed}
    total = len(modes) * L * ((H + heads_per_chunk - 1) // heads_per_chunk)
    with tqdm(total=total, desc="ablation scan", disable=not progress) as bar:
        for mode in modes:
            losses = np.zeros((L, H))
            for layer in range(L):
                c_proj = model.transformer.h[layer].attn.c_proj
                W_O = c_proj.weight.view(H, dh, d)
                repl = means[layer].to(W_O) if mode == "mean" else torch.zeros(H, dh, dtype=W_O.dtype, device=W_O.device)
                for h0 in range(0, H, heads_per_chunk):
                    hs = list(range(h0, min(H, h0 + heads_per_chunk)))
                    head_of_row = torch.tensor(hs, device=W_O.device).repeat_interleave(B)
                    x = resid[layer].repeat(len(hs), 1, 1)
                    with hooks(model, {f"transformer.h.{layer}.attn.c_proj": _patch_hook(W_O, head_of_row, repl, H)}):
                        per_row = _second_copy_loss_from(model, layer, x, tokens, unembed_chunk)
                    losses[layer, hs] = per_row.view(len(hs), B).mean(1).double().cpu().numpy()
                    bar.update(1)
            result[mode] = losses - clean
            result[f"{mode}_loss"] = losses
    return result
