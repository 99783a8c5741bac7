"""Per-head scores of a GPT-2: attention-pattern scores, OV copying, composition between layers.

Every score is a ``(n_layer, n_head)`` array (composition: ``(L, H, L, H)``), so that heads can be ranked
and drawn as a layer x head heatmap. The probe data is always ``[BOS] + R + R``: ``R`` is ``seq_len``
tokens drawn uniformly (with replacement) from the model's own vocabulary minus BOS, from a seeded
generator. Position ``0`` is BOS, the first copy is ``1..seq_len``, the second ``seq_len+1..2*seq_len``.

Weights are read in the "Mathematical Framework for Transformer Circuits" convention (row vectors,
``x @ W``): per head ``W_Q, W_K, W_V`` are ``d_model x d_head`` and ``W_O`` is ``d_head x d_model``;
``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O``. LayerNorm is folded the TransformerLens way
(``fold_ln=True``): the centring and the elementwise weight of ``ln_1`` are folded into that layer's
``W_Q, W_K, W_V``, those of ``ln_f`` into ``W_U``; the per-token ``1/std`` scale and all biases are
dropped (they do not change which tokens a head copies or which heads compose).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import InputError, InputTypeError, check_int, check_token_ids
from ..model_state import runs_model
from ..capture import hooks
from .loading import check_model  # the one GPT-2 model check lives with the loader

__all__ = [
    "HeadWeights",
    "check_model",
    "check_probe",
    "repeated_tokens",
    "attention_patterns",
    "pattern_scores",
    "fast_pattern_scores",
    "induction_scores",
    "previous_token_scores",
    "duplicate_token_scores",
    "head_weights",
    "copying_scores",
    "composition_scores",
    "composition_baseline",
    "token_losses",
    "copy_losses",
    "copy_slices",
]


def check_probe(model: torch.nn.Module, seq_len: int, batch: int) -> None:
    """Validate the probe size against the model's context window before any forward pass."""
    check_model(model)
    for name, v in (("seq_len", seq_len), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (2 if name == "seq_len" else 1):
            raise InputError(f"{name}: {v!r}; must be a positive integer" + (" >= 2" if name == "seq_len" else "")
                             + (" (a repeated sequence needs two tokens to have a previous token to copy)" if name == "seq_len" else ""))
    n_pos = int(model.config.n_positions)
    if 2 * seq_len + 1 > n_pos:
        raise ValueError(
            f"seq_len {seq_len} needs {2 * seq_len + 1} positions ([BOS] + 2 copies) but the model's context window "
            f"is {n_pos}; use seq_len <= {(n_pos - 1) // 2}"
        )
    if model.config.vocab_size < 3:
        raise ValueError(f"vocab_size {model.config.vocab_size} is too small to draw random tokens")


def _bos_id(model: torch.nn.Module) -> int:
    bos = getattr(model.config, "bos_token_id", None)
    vocab = int(model.config.vocab_size)
    return int(bos) if isinstance(bos, int) and 0 <= bos < vocab else vocab - 1


def repeated_tokens(model: torch.nn.Module, seq_len: int = 50, batch: int = 10, seed: int = 0) -> torch.Tensor:
    """``(batch, 2*seq_len+1)`` token ids ``[BOS] + R + R``, R uniform over the model's vocab without BOS.

    BOS is ``config.bos_token_id`` (50256 for GPT-2; the last id for the toy model). Deterministic in ``seed``.
    """
    check_probe(model, seq_len, batch)
    vocab, bos = int(model.config.vocab_size), _bos_id(model)
    gen = torch.Generator().manual_seed(int(seed))
    r = torch.randint(0, vocab - 1, (batch, seq_len), generator=gen)
    r = r + (r >= bos).long()  # skip the BOS id
    bos_col = torch.full((batch, 1), bos, dtype=torch.long)
    return torch.cat([bos_col, r, r], dim=1)


def _seq_len(tokens: torch.Tensor, model: torch.nn.Module | None = None) -> int:
    """``seq_len`` of ``[BOS] + R + R`` token ids; with ``model``, the ids are also checked against its
    vocabulary and context window (:func:`..checks.check_token_ids`) before any forward pass."""
    if model is not None:
        check_token_ids(tokens, vocab_size=int(model.config.vocab_size), n_ctx=int(model.config.n_positions), min_len=3)
    if not isinstance(tokens, torch.Tensor):
        raise InputTypeError(f"tokens: expected a (batch, 2*seq_len+1) tensor of token ids, got {type(tokens).__name__}")
    T = tokens.shape[-1]
    if tokens.ndim != 2 or T < 3 or T % 2 == 0:
        raise InputError(f"tokens: expected [BOS] + R + R token ids of shape (batch, 2*seq_len+1), got {tuple(tokens.shape)}")
    return (T - 1) // 2


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@runs_model
@torch.no_grad()
def attention_patterns(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of every head, ``(n_layer, batch, n_head, T, T)``, from one forward pass.

    Read from each ``transformer.h.<i>.attn`` module's output through :func:`vision_interp.capture.hooks`;
    the model must use eager attention (SDPA never materialises the probabilities).
    """
    check_model(model)
    check_token_ids(tokens, vocab_size=int(model.config.vocab_size), n_ctx=int(model.config.n_positions))
    impl = getattr(model.config, "_attn_implementation", "eager")
    if impl != "eager":
        raise ValueError(f"attention patterns need eager attention, the model uses {impl!r}; "
                         "call model.set_attn_implementation('eager') (load_gpt2 does this)")
    n_layer = model.config.n_layer
    got: dict[int, torch.Tensor] = {}

    def make(i: int):
        def fn(_m, _inp, out):
            if not isinstance(out, tuple) or len(out) < 2 or out[1] is None:
                raise RuntimeError("the attention module returned no probabilities; use eager attention")
            got[i] = out[1].detach().float().cpu()

        return fn

    with hooks(model, {f"transformer.h.{i}.attn": make(i) for i in range(n_layer)}):
        model(tokens.to(_device(model)))
    return torch.stack([got[i] for i in range(n_layer)])


def _check_patterns(patterns: torch.Tensor, seq_len: int | None = None) -> None:
    """Attention patterns ``(n_layer, batch, n_head, T, T)``; with ``seq_len``, ``T = 2 * seq_len + 1``."""
    if not isinstance(patterns, torch.Tensor) or patterns.ndim != 5 or patterns.shape[-1] != patterns.shape[-2]:
        raise InputError(f"patterns: expected attention patterns (n_layer, batch, n_head, T, T), got "
                         f"{tuple(patterns.shape) if isinstance(patterns, torch.Tensor) else type(patterns).__name__}")
    if seq_len is not None:
        check_int(seq_len, "seq_len", minimum=1)
        if patterns.shape[-1] != 2 * seq_len + 1:
            raise InputError(f"seq_len: {seq_len} needs patterns over 2 * seq_len + 1 = {2 * seq_len + 1} positions; "
                             f"these have T = {patterns.shape[-1]} (seq_len {(patterns.shape[-1] - 1) // 2})")


def _diag_mean(patterns: torch.Tensor, offset: int, last: int | None) -> np.ndarray:
    """Mean over batch and queries of ``pattern[q, q - offset]``, for the ``last`` queries (all when None)."""
    d = torch.diagonal(patterns, offset=-offset, dim1=-2, dim2=-1)  # (L, B, H, T - offset)
    if last is not None:
        d = d[..., -last:]
    return d.mean(dim=(1, 3)).numpy().astype(np.float64)


def induction_scores(patterns: torch.Tensor, seq_len: int) -> np.ndarray:
    """Induction score: mean attention from each second-copy position ``q`` (``seq_len+1 .. 2*seq_len``)
    to ``q - (seq_len - 1)``, the token right after the previous occurrence of the token at ``q``.

    Averaged over the batch and all ``seq_len`` second-copy queries. 1 = a perfect induction head; a head
    with uniform causal attention scores about ``1/(1.5*seq_len)``.
    """
    _check_patterns(patterns, seq_len)
    return _diag_mean(patterns, seq_len - 1, seq_len)


def previous_token_scores(patterns: torch.Tensor) -> np.ndarray:
    """Previous-token score: mean attention from position ``i`` to ``i - 1``, over every ``i >= 1`` and the batch."""
    _check_patterns(patterns)
    return _diag_mean(patterns, 1, None)


def duplicate_token_scores(patterns: torch.Tensor, seq_len: int) -> np.ndarray:
    """Duplicate-token score: mean attention from each second-copy position ``q`` to ``q - seq_len``, the earlier
    copy of the same token (averaged over the batch and the ``seq_len`` second-copy queries)."""
    _check_patterns(patterns, seq_len)
    return _diag_mean(patterns, seq_len, seq_len)


@runs_model
@torch.no_grad()
def fast_pattern_scores(model: torch.nn.Module, tokens: torch.Tensor, *, keep_patterns: bool = False
                        ) -> tuple[dict[str, np.ndarray], torch.Tensor | None, torch.Tensor | None]:
    """The three attention-pattern scores without a full forward pass; equal to :func:`pattern_scores` of
    :func:`attention_patterns` up to float rounding.

    Runs the blocks of :mod:`.forward` and stops once the last layer's pattern exists: the last layer
    computes only queries and keys (no values, no ``W_O``, no MLP) and nothing is unembedded. Only the three
    diagonals each score reads are averaged (the softmax itself needs whole rows). With ``keep_patterns`` also
    returns the batch-mean patterns and those of the first sequence, each ``(L, H, T, T)`` (for the report).
    """
    from .forward import attention_pattern, causal_bias, embed, qkv, run_block

    check_model(model)
    seq_len = _seq_len(tokens, model)
    L, H = model.config.n_layer, model.config.n_head
    x = embed(model, tokens.to(_device(model)))
    bias = causal_bias(x.shape[1], x.dtype, x.device)
    out = {k: np.zeros((L, H)) for k in ("induction", "previous_token", "duplicate_token")}
    means, example = [], []
    for layer, block in enumerate(model.transformer.h):
        if layer < L - 1:
            x, p, _ = run_block(block, layer, x, H, bias=bias, keep_pattern=True)
        else:
            q, k, _ = qkv(block, block.ln_1(x), H, need_v=False)
            p = attention_pattern(block, q, k, bias)
        p = p.float()
        for name, offset, last in (("induction", seq_len - 1, seq_len), ("previous_token", 1, None),
                                   ("duplicate_token", seq_len, seq_len)):
            d = torch.diagonal(p, offset=-offset, dim1=-2, dim2=-1)
            out[name][layer] = (d if last is None else d[..., -last:]).mean(dim=(0, 2)).double().cpu().numpy()
        if keep_patterns:
            means.append(p.mean(0).cpu())
            example.append(p[0].cpu())
    if not keep_patterns:
        return out, None, None
    return out, torch.stack(means), torch.stack(example)


def pattern_scores(patterns: torch.Tensor, seq_len: int) -> dict[str, np.ndarray]:
    """The three attention-pattern scores from one set of patterns."""
    return {
        "induction": induction_scores(patterns, seq_len),
        "previous_token": previous_token_scores(patterns),
        "duplicate_token": duplicate_token_scores(patterns, seq_len),
    }


@dataclass
class HeadWeights:
    """Per-head matrices (row-vector convention), LayerNorm folded when ``fold_ln``.

    ``W_Q, W_K, W_V``: ``(L, H, d_model, d_head)``; ``W_O``: ``(L, H, d_head, d_model)``;
    ``W_E``: ``(vocab, d_model)``; ``W_U``: ``(d_model, vocab)``.
    """

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    W_E: torch.Tensor
    W_U: torch.Tensor
    fold_ln: bool


def _fold(w: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``C diag(gamma) w`` with the centring matrix ``C = I - 11^T/d``: what LayerNorm does before ``w``."""
    a = gamma[:, None] * w
    return a - a.mean(0, keepdim=True)


@torch.no_grad()
def head_weights(model: torch.nn.Module, fold_ln: bool = True) -> HeadWeights:
    """Split GPT-2's fused ``c_attn`` (``d x 3d``) and ``c_proj`` (``d x d``) Conv1D weights into heads."""
    check_model(model)
    cfg = model.config
    d, H = cfg.n_embd, cfg.n_head
    dh = d // H
    qs, ks, vs, os_ = [], [], [], []
    for block in model.transformer.h:
        w = block.attn.c_attn.weight.detach().float().cpu()  # (d, 3d): x @ w
        wq, wk, wv = w[:, :d], w[:, d:2 * d], w[:, 2 * d:]
        if fold_ln:
            g = block.ln_1.weight.detach().float().cpu()
            wq, wk, wv = _fold(wq, g), _fold(wk, g), _fold(wv, g)
        qs.append(wq.reshape(d, H, dh).permute(1, 0, 2))
        ks.append(wk.reshape(d, H, dh).permute(1, 0, 2))
        vs.append(wv.reshape(d, H, dh).permute(1, 0, 2))
        os_.append(block.attn.c_proj.weight.detach().float().cpu().reshape(H, dh, d))
    W_E = model.transformer.wte.weight.detach().float().cpu()
    W_U = model.lm_head.weight.detach().float().cpu().T
    if fold_ln:
        W_U = _fold(W_U, model.transformer.ln_f.weight.detach().float().cpu())
    return HeadWeights(torch.stack(qs), torch.stack(ks), torch.stack(vs), torch.stack(os_), W_E, W_U, fold_ln)


def _copy_sample(vocab: int, bos: int, max_tokens: int = 2048, seed: int = 0) -> torch.Tensor:
    """Token ids for the in-sample copying test: every non-BOS token for small vocabularies, else a seeded sample."""
    ids = torch.tensor([t for t in range(vocab) if t != bos]) if vocab <= max_tokens + 1 else None
    if ids is None:
        ids = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))
        ids = ids[ids != bos][:max_tokens].sort().values
    return ids


@torch.no_grad()
def copying_scores(model: torch.nn.Module, fold_ln: bool = True, weights: HeadWeights | None = None,
                   max_tokens: int = 2048) -> dict[str, np.ndarray]:
    """How much each head's OV circuit copies tokens, from the full OV circuit ``W_E W_V W_O W_U``.

    ``W_U`` is centred over the vocabulary first (adding the same number to every logit changes no softmax;
    TransformerLens' ``center_unembed``), so a direction shared by all tokens cannot pass for copying.

    * ``"copying"``: ``Re(sum lambda) / sum |lambda|`` of the eigenvalues, in ``[-1, 1]`` (Elhage et al. 2021's
      summary statistic; +1 = every eigenvalue positive). The ``vocab x vocab`` circuit is never formed: its
      nonzero eigenvalues equal those of ``W_O (W_U W_E) W_V`` (``d_head x d_head``; eig(AB) = eig(BA) away from 0).
      It saturates near +1 as soon as a few large positive eigenvalues dominate, so two finer scores follow;
    * ``"copying_positive_share"``: the share of the ``d_head`` eigenvalues with a positive real part;
    * ``"copying_top1"``: the share of tokens ``t`` (every non-BOS token, or a seeded sample of ``max_tokens``)
      whose own logit is the largest of row ``t`` of the full OV circuit restricted to those tokens (1 = the
      head raises exactly the token it attends to; chance = 1/len(sample)).
    """
    check_int(max_tokens, "max_tokens", minimum=1)
    w = weights or head_weights(model, fold_ln)
    W_U = w.W_U.double()
    W_U = W_U - W_U.mean(1, keepdim=True)
    W_E = w.W_E.double()
    M = w.W_O.double() @ (W_U @ W_E) @ w.W_V.double()  # (L, H, dh, dh)
    lam = torch.linalg.eigvals(M)
    ratio = lam.sum(-1).real / lam.abs().sum(-1).clamp_min(1e-30)
    share = (lam.real > 0).double().mean(-1)
    ids = _copy_sample(W_E.shape[0], _bos_id(model), max_tokens)
    Es, Us = W_E[ids].float(), W_U[:, ids].float()
    left = Es @ w.W_V  # (L, H, n, dh)
    right = w.W_O @ Us  # (L, H, dh, n)
    top1 = np.zeros(ratio.shape)
    for l in range(left.shape[0]):
        circuit = left[l] @ right[l]  # (H, n, n)
        top1[l] = (circuit.argmax(-1) == torch.arange(len(ids))).double().mean(-1).numpy()
    return {"copying": ratio.numpy(), "copying_positive_share": share.numpy(), "copying_top1": top1}


def _qr_factors(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``M = A B^T`` (A, B: ``(..., d, k)``) return ``Qa, core, Qb`` with ``M = Qa core Qb^T``, Q orthonormal."""
    Qa, Ra = torch.linalg.qr(A)
    Qb, Rb = torch.linalg.qr(B)
    return Qa, Ra @ Rb.transpose(-1, -2), Qb


@torch.no_grad()
def composition_scores(model: torch.nn.Module, fold_ln: bool = True, weights: HeadWeights | None = None) -> dict[str, np.ndarray]:
    """Q-, K- and V-composition between every head pair ``(l1, h1) -> (l2, h2)`` with ``l1 < l2``.

    As in "A Mathematical Framework for Transformer Circuits", a Frobenius-norm ratio of how much the
    earlier head's output ``W_OV1 = W_V1 W_O1`` feeds the later head's input (row-vector convention):

    * K-composition: ``||W_OV1 W_QK2^T|| / (||W_OV1|| ||W_QK2||)`` (the earlier head writes what the later head's keys read);
    * Q-composition: ``||W_OV1 W_QK2|| / (||W_OV1|| ||W_QK2||)``;
    * V-composition: ``||W_OV1 W_OV2|| / (||W_OV1|| ||W_OV2||)``.

    Arrays are ``(L, H, L, H)`` indexed ``[l1, h1, l2, h2]``; entries with ``l1 >= l2`` are NaN. The d x d
    products are never formed: with ``W_OV1 = Qa core1 Qb^T`` and the later matrix ``Qc core2 Qd^T`` (QR
    factors), the norm equals ``||core1 (Qb^T Qc) core2||`` on ``d_head x d_head`` matrices. Random
    matrices score about ``sqrt(d_head / d_model)``-ish, so compare heads with each other, not with 0.
    """
    w = weights or head_weights(model, fold_ln)
    L, H, d, dh = w.W_Q.shape
    Wq, Wk, Wv, Wo = w.W_Q, w.W_K, w.W_V, w.W_O  # float32: the ratios need no more, and it halves the time
    Wo_t = Wo.transpose(-1, -2)  # (L, H, d, dh)
    ov = _qr_factors(Wv, Wo_t)  # W_OV = Wv Wo = Wv (Wo^T)^T
    qk = _qr_factors(Wq, Wk)  # W_QK = Wq Wk^T
    kq = _qr_factors(Wk, Wq)  # W_QK^T
    later = {"k": kq, "q": qk, "v": ov}
    out = {k: np.full((L, H, L, H), np.nan) for k in later}
    left_norm = torch.linalg.matrix_norm(ov[1])  # (L, H)
    for l1 in range(L - 1):
        core1, Qb = ov[1][l1], ov[2][l1]  # (H, dh, dh), (H, d, dh)
        for kind, (Qc, core2, _Qd) in later.items():
            Qc2, c2 = Qc[l1 + 1:], core2[l1 + 1:]  # (L2, H, d, dh), (L2, H, dh, dh)
            G = torch.einsum("adk,lbde->albke", Qb, Qc2)  # (H1, L2, H2, dh, dh)
            prod = core1[:, None, None] @ G @ c2[None]
            num = torch.linalg.matrix_norm(prod)
            den = left_norm[l1][:, None, None] * torch.linalg.matrix_norm(c2)[None]
            out[kind][l1, :, l1 + 1:, :] = (num / den.clamp_min(1e-30)).numpy()
    return {"k_composition": out["k"], "q_composition": out["q"], "v_composition": out["v"]}


@torch.no_grad()
def composition_baseline(d_model: int, d_head: int, samples: int = 200, seed: int = 0) -> dict[str, float]:
    """Expected composition score of random matrices with the heads' shapes: the "chance" level.

    ``W_V, W_O, W_Q, W_K`` are drawn with i.i.d. Gaussian entries (``d_model x d_head`` and ``d_head x d_model``),
    and ``||W_OV1 W_QK2^T|| / (||W_OV1|| ||W_QK2||)`` is averaged over ``samples`` independent draws (K, Q and V
    composition have the same distribution for such matrices). Returns ``{"mean", "std", "samples"}``.
    """
    check_int(d_model, "d_model", minimum=1)
    check_int(d_head, "d_head", minimum=1, maximum=d_model)
    check_int(samples, "samples", minimum=2)
    gen = torch.Generator().manual_seed(int(seed))
    shape = (samples, d_model, d_head)
    A, B, C, D = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4))
    Qa, core1, Qb = _qr_factors(A, B)
    Qc, core2, _ = _qr_factors(C, D)
    num = torch.linalg.matrix_norm(core1 @ (Qb.transpose(-1, -2) @ Qc) @ core2)
    ratio = num / (torch.linalg.matrix_norm(core1) * torch.linalg.matrix_norm(core2))
    return {"mean": float(ratio.mean()), "std": float(ratio.std()), "samples": int(samples)}


def token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per position, ``(batch, T-1)``: entry ``t`` is the loss of predicting ``tokens[:, t+1]``."""
    from .forward import next_token_ce

    if logits.ndim != 3 or tokens.ndim != 2 or tuple(logits.shape[:2]) != tuple(tokens.shape):
        raise InputError(f"tokens: shape {tuple(tokens.shape)}; it must match the logits' (batch, seq) "
                         f"{tuple(logits.shape[:2])} (logits are (batch, seq, vocab))")
    return next_token_ce(logits[:, :-1], tokens[:, 1:])


def copy_slices(seq_len: int) -> tuple[slice, slice]:
    """Indices into :func:`token_losses` for the first and second copy.

    Both skip the copy's first token (nothing predicts it): first copy = predicting ``R[1:]`` at positions
    ``2..seq_len``; second copy = predicting ``R[1:]`` at ``seq_len+2..2*seq_len`` (what induction can predict).
    """
    check_int(seq_len, "seq_len", minimum=2)
    return slice(1, seq_len), slice(seq_len + 1, 2 * seq_len)


@runs_model
@torch.no_grad()
def copy_losses(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[float, float]:
    """Mean loss on the first and on the second copy of ``[BOS] + R + R`` (see :func:`copy_slices`)."""
    seq_len = _seq_len(tokens, model)
    logits = model(tokens.to(_device(model))).logits
    lt = token_losses(logits, tokens)
    s1, s2 = copy_slices(seq_len)
    return float(lt[:, s1].mean()), float(lt[:, s2].mean())
