"""The block loop of vision_interp.transformer.forward against transformers' own modules: the fused GELU, one
block, the whole forward pass (float32 and float64), and the cross-entropy layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vision_interp.transformer.forward import (_activation, causal_bias, embed, mlp_residual, next_token_ce, run_block,
                                               unembed)

from test_transformer import tiny_gpt2


def test_fused_gelu_equals_gelu_new_on_mlp_activations():
    """GPT-2's gelu_new (transformers' python NewGELUActivation) and PyTorch's fused tanh GELU agree to 1e-6 on the
    pre-activations of a GPT-2-small-size MLP (d 768 -> 3072, GPT-2's init scale) and on a wide grid."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import NewGELUActivation

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, vocab_size=256, n_positions=128)
    m = GPT2LMHeadModel(cfg).eval()
    block = m.transformer.h[0]
    x = embed(m, torch.randint(0, 256, (4, 101)))
    with torch.no_grad():
        pre = block.mlp.c_fc(block.ln_2(x + 3 * torch.randn_like(x)))
    grid = torch.linspace(-12, 12, 200_001)
    new_gelu = NewGELUActivation()
    fused = _activation(block.mlp.act)
    assert isinstance(block.mlp.act, NewGELUActivation) and fused is not block.mlp.act
    for a in (pre, grid):
        assert float((fused(a) - new_gelu(a)).abs().max()) <= 1e-6
    other = torch.nn.ReLU()
    assert _activation(other) is other  # any other activation runs as the module itself


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_block_loop_equals_model_forward(dtype, atol):
    """Embedding, every block and the unembedding of the loop give the model's own logits; in float64 to 1e-12
    (the softmax and the loss stay in the model's dtype)."""
    m = tiny_gpt2(n_layer=3).to(dtype)
    tok = torch.randint(0, 99, (3, 21))
    with torch.no_grad():
        ref = m(tok).logits
        x = embed(m, tok)
        bias = causal_bias(x.shape[1], x.dtype, x.device)
        for i, b in enumerate(m.transformer.h):
            x, _, _ = run_block(b, i, x, m.config.n_head, bias=bias)
        logits = unembed(m, x)
        # the second half of a block alone equals transformers' ln_2 + MLP + residual
        h = torch.randn(2, 5, m.config.n_embd, dtype=dtype)
        b0 = m.transformer.h[0]
        torch.testing.assert_close(mlp_residual(b0, h), h + b0.mlp(b0.ln_2(h)), atol=atol, rtol=0)
    assert logits.dtype == dtype
    torch.testing.assert_close(logits, ref, atol=atol, rtol=0)


def test_next_token_ce_equals_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    tgt = torch.randint(0, 11, (3, 7))
    ref = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
    got = next_token_ce(logits[:, :], tgt)
    assert got.shape == (3, 7) and got.dtype == torch.float64
    torch.testing.assert_close(got, ref, atol=1e-14, rtol=0)
    half = next_token_ce(logits.to(torch.bfloat16), tgt)
    assert half.dtype == torch.float32  # half precision is upcast for the loss


@pytest.mark.parametrize("bias", [False, True])
def test_unembed_ce_equals_full_logits_cross_entropy(bias):
    """The vocabulary-blocked cross-entropy equals the cross-entropy of the full logits, also with blocks and row
    chunks that do not divide the sizes, and with an lm_head bias; gradients flow (integrated attribution)."""
    from vision_interp.transformer.forward import unembed_ce

    m = tiny_gpt2(n_layer=1, vocab=100).double()
    if bias:
        m.lm_head.bias = torch.nn.Parameter(torch.randn(100, dtype=torch.float64))
    torch.manual_seed(1)
    x = torch.randn(3, 7, m.config.n_embd, dtype=torch.float64, requires_grad=True)
    tgt = torch.randint(0, 100, (3, 7))
    ref = next_token_ce(unembed(m, x), tgt)
    got = unembed_ce(m, x, tgt, rows=5, vocab_block=33)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    g, = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=0)
