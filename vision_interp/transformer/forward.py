"""A GPT-2 forward pass written out block by block, so each analysis runs only the part it needs.

The model's own LayerNorm modules and ``lm_head`` are called as they are; the ``Conv1D`` layers are one
``addmm`` each on their own weights (as ``Conv1D.forward`` does), the residual adds go in place into the fresh
``addmm`` outputs, the attention core is one ``baddbmm`` (causal bias + scaled ``q k^T``) and a softmax in the
model's dtype, and GPT-2's ``gelu_new`` runs as PyTorch's fused tanh GELU (the same formula; transformers'
python version makes five passes over the MLP activations). The results match ``model(tokens)`` to float
rounding (tested). Owning the loop lets callers

* stop after the last layer's attention *pattern* (no values, no ``W_O``, no last MLP, no unembedding);
* compute only some query positions in the last block (the second copy, for the ablation scan);
* edit a head's ``z`` (the ``c_proj`` input slice) or the residual a head's *keys* read (path patching);
* start from a cached residual stream (the clean prefix of an ablation scan).

No hooks are registered anywhere, so nothing can be left behind on an exception.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["upcast", "next_token_ce", "unembed_ce", "embed", "causal_bias", "qkv", "attention_pattern", "attn_residual", "mlp_residual", "run_block",
           "unembed"]

# zedit(layer, z) -> z: z is (N, T, H, d_head) (a view may be returned modified); kedit(layer, x_ln) -> x_ln or None
ZEdit = Callable[[int, torch.Tensor], torch.Tensor]


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32 (half precision is upcast for losses and means; float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def next_token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per position, ``(..., T)``, of ``logits`` ``(..., T, vocab)`` against ``targets`` ``(..., T)``.

    On the flattened ``(rows, vocab)`` logits: a log-softmax over the contiguous last dimension. (The
    ``logits.transpose(1, 2)`` layout ``F.cross_entropy`` asks for with a sequence dimension made the log-softmax
    run strided and copy the logits: as slow as the unembedding itself.)"""
    V = logits.shape[-1]
    ce = F.cross_entropy(upcast(logits).reshape(-1, V), targets.reshape(-1).to(logits.device), reduction="none")
    return ce.view(targets.shape)


def embed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Token + position embeddings, the residual stream entering block 0."""
    tr = model.transformer
    pos = torch.arange(tokens.shape[-1], device=tokens.device)
    return tr.wte(tokens) + tr.wpe(pos)[None]


def causal_bias(T: int, dtype: torch.dtype, device: torch.device, queries: slice | None = None) -> torch.Tensor:
    """Additive mask ``(Tq, T)``: 0 where key <= query, the dtype's minimum above (as transformers does)."""
    q = torch.arange(T, device=device)[queries if queries is not None else slice(None)]
    k = torch.arange(T, device=device)
    return torch.zeros(len(q), T, dtype=dtype, device=device).masked_fill(k[None] > q[:, None], torch.finfo(dtype).min)


def _heads(x: torch.Tensor, H: int) -> torch.Tensor:
    """``(N, T, d)`` -> ``(N, H, T, d_head)``."""
    N, T, d = x.shape
    return x.view(N, T, H, d // H).transpose(1, 2)


def _linear(conv: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A transformers ``Conv1D`` (``x @ W + b``) on ``(..., d_in)``, as one ``addmm``, returned 2-D ``(rows, d_out)``."""
    return torch.addmm(conv.bias, x.reshape(-1, x.shape[-1]), conv.weight)


def qkv(block: torch.nn.Module, x_ln: torch.Tensor, H: int, *, need_v: bool = True):
    """Per-head queries, keys (and values) from the LayerNormed residual; ``need_v=False`` skips the V third."""
    c = block.attn.c_attn
    N, T, d = x_ln.shape
    if need_v:
        q, k, v = _linear(c, x_ln).view(N, T, 3 * d).split(d, dim=2)
        return _heads(q, H), _heads(k, H), _heads(v, H)
    w, b = c.weight[:, :2 * d], c.bias[:2 * d]
    q, k = torch.addmm(b, x_ln.reshape(-1, d), w).view(N, T, 2 * d).split(d, dim=2)
    return _heads(q, H), _heads(k, H), None


def attention_pattern(block: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T * scaling + bias)``, ``(N, H, Tq, T)``, in the model's dtype as transformers' eager attention
    computes it (a float32 softmax here made a float64 model's loss and gradients float32-accurate only).

    One ``baddbmm`` adds the causal bias while it multiplies (``bias + scaling * q k^T``; equal to transformers'
    ``q k^T * scaling + bias`` up to float rounding)."""
    N, H, Tq, dh = q.shape
    T = k.shape[2]
    w = torch.baddbmm(bias.expand(N * H, Tq, T), q.reshape(N * H, Tq, dh), k.reshape(N * H, T, dh).transpose(1, 2),
                      alpha=block.attn.scaling)
    return torch.softmax(w, dim=-1).view(N, H, Tq, T)


def _activation(act: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """GPT-2's ``gelu_new`` (transformers' python ``NewGELUActivation``: five elementwise passes) as PyTorch's fused
    tanh GELU, the same formula (equal to float rounding, tested); any other activation as the module itself."""
    from transformers.activations import GELUTanh, NewGELUActivation

    if isinstance(act, (NewGELUActivation, GELUTanh)):
        return lambda x: F.gelu(x, approximate="tanh")
    return act


def mlp_residual(block: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``h + mlp(ln_2(h))`` (``h``: ``(N, T, d)``), the second half of a block, with the fused GELU and the residual
    added in place into the fresh ``c_proj`` output (the same additions as transformers', in the same order)."""
    m = block.mlp
    a = _activation(m.act)(_linear(m.c_fc, block.ln_2(h)))
    return torch.addmm(m.c_proj.bias, a, m.c_proj.weight).add_(h.reshape(-1, h.shape[-1])).view(h.shape)


def attn_residual(block: torch.nn.Module, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``x + c_proj(z)`` for the per-head ``z`` ``(N, Tq, H, d_head)`` and the residual ``x`` ``(N, Tq, d)``."""
    N, Tq = z.shape[:2]
    return _linear(block.attn.c_proj, z.reshape(N, Tq, -1)).add_(x.reshape(N * Tq, -1)).view(N, Tq, -1)


def run_block(block: torch.nn.Module, layer: int, x: torch.Tensor, H: int, *, bias: torch.Tensor,
              queries: slice | None = None, zedit: ZEdit | None = None,
              kedit: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
              keep_pattern: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One transformer block on ``x`` ``(N, T, d)``; returns ``(x_out, pattern or None, z)``.

    ``queries``: only those positions are computed as queries (keys and values still use every position);
    ``x_out`` and ``z`` then cover only them. ``zedit(layer, z)`` may replace the per-head ``z``
    ``(N, Tq, H, d_head)``; ``kedit(layer, x, k)`` may return new keys ``(N, H, T, d_head)``.
    """
    x_ln = block.ln_1(x)
    q, k, v = qkv(block, x_ln, H)
    if kedit is not None:
        k = kedit(layer, x, k)
    if queries is not None:
        q = q[:, :, queries]
    p = attention_pattern(block, q, k, bias)
    N, _, Tq, T = p.shape
    z = torch.bmm(p.view(N * H, Tq, T), v.reshape(N * H, T, -1)).view(N, H, Tq, -1).transpose(1, 2)  # (N, Tq, H, dh)
    if zedit is not None:
        z = zedit(layer, z)
    h = attn_residual(block, x if queries is None else x[:, queries], z)
    return mlp_residual(block, h), (p if keep_pattern else None), z


def unembed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits from the final residual stream."""
    return model.lm_head(model.transformer.ln_f(x))


def unembed_ce(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *, rows: int = 1024,
               vocab_block: int = 1024) -> torch.Tensor:
    """Cross-entropy of the logits of the final residual ``x`` ``(..., d)`` against ``targets`` ``(...)``, without
    ever holding more than ``rows x vocab_block`` logits.

    ``logsumexp`` over the vocabulary is accumulated block by block (``logaddexp``), the target's logit is its own
    dot product. Equal to ``cross_entropy(unembed(model, x))`` to float rounding (tested); about twice as fast on
    a CPU for GPT-2's 50257 tokens, since each logits block stays in cache instead of a (rows x 50257) matrix
    going through memory twice.
    """
    d = x.shape[-1]
    y = model.transformer.ln_f(x).reshape(-1, d)
    t = targets.reshape(-1).to(y.device)
    W, b = model.lm_head.weight, model.lm_head.bias  # (vocab, d), GPT-2: no bias
    out = []
    for i in range(0, y.shape[0], rows):
        yi, ti = y[i:i + rows], t[i:i + rows]
        lse = None
        for v0 in range(0, W.shape[0], vocab_block):
            block = F.linear(yi, W[v0:v0 + vocab_block], None if b is None else b[v0:v0 + vocab_block])
            part = torch.logsumexp(upcast(block), dim=-1)
            lse = part if lse is None else torch.logaddexp(lse, part)
        target = upcast((yi * W[ti]).sum(-1) + (0 if b is None else b[ti]))
        out.append(lse - target)
    return torch.cat(out).view(targets.shape)
