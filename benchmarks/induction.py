"""Benchmark: per-head attention scores, the exact 144-head ablation scan and the two attribution-patching estimates of a
GPT-2-small-size model (random weights), each as a ratio to one plain Hugging Face forward pass.

Setup of issue 16: GPT-2 small configuration (12 x 12 heads, d_model 768, vocab 50257), random weights,
[BOS] + R + R with seq_len 50, batch 10 (10 x 101 tokens), fp32 on CPU. The forward pass and the score paths
are timed interleaved (forward, fast scores, slow scores, repeated), so load on a shared machine hits them
alike; the ratios use the median forward time of the whole run.

    python benchmarks/induction.py [--batch 10] [--seq-len 50] [--repeats 3] [--modes mean] [--threads N] [--no-scan]
                                   [--ig-steps 8]

Also printed: the FLOP count of each path relative to the forward pass (multiply-adds of the matrix
products), the floor an exact fp32 implementation can reach.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _flops(cfg, B: int, T: int, seq_len: int) -> dict[str, float]:
    """Matrix-product FLOPs of the forward pass, the score path and one-mode ablation scan (as implemented)."""
    d, L, H, V = cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.vocab_size
    inner = cfg.n_inner or 4 * d
    n = B * T
    attn_core = 2 * 2 * B * T * T * d  # q k^T and p v
    layer = 2 * n * (4 * d * d + 2 * d * inner) + attn_core
    unembed = 2 * n * d * V
    forward = L * layer + unembed
    scores = (L - 1) * layer + 2 * n * 2 * d * d + attn_core / 2
    nq = seq_len - 1  # scored second-copy positions
    Tn = T - 1
    full_rows = 2 * B * Tn * (4 * d * d + 2 * d * inner) + 2 * 2 * B * Tn * Tn * d
    last_block = 2 * B * Tn * 3 * d * d + 2 * 2 * B * nq * Tn * d + 2 * B * nq * (d * d + 2 * d * inner)
    scan = 0.0
    for l in range(L):
        first = 2 * B * Tn * (d * d + 2 * d * inner) if l < L - 1 else 2 * B * nq * (d * d + 2 * d * inner)
        scan += H * (first + max(0, L - 2 - l) * full_rows + (last_block if l < L - 1 else 0) + 2 * B * nq * d * V)
    return {"forward": forward, "scores": scores, "scan": scan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="mean", help="ablation modes, comma-separated (mean,zero)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-rows", type=int, default=64)
    ap.add_argument("--no-scan", action="store_true", help="skip the (long) ablation scan")
    ap.add_argument("--ig-steps", type=int, default=8, help="points of integrated-gradients attribution patching")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    from vision_interp.transformer import (ablation_scan, attention_patterns, composition_scores, copying_scores,
                                           head_weights, pattern_scores, repeated_tokens)
    from vision_interp.transformer.ablation import attribution_patching, integrated_attribution_patching
    from vision_interp.transformer.scores import fast_pattern_scores

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()  # GPT-2 small: 12 x 12, 768, vocab 50257
    model.set_attn_implementation("eager")
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = repeated_tokens(model, args.seq_len, args.batch, seed=0)
    B, T = tokens.shape
    fl = _flops(model.config, B, T, args.seq_len)
    print(f"GPT-2 small size, random weights; tokens {tuple(tokens.shape)}; torch threads {torch.get_num_threads()}")

    def forward():
        with torch.no_grad():
            return model(tokens).logits

    forward(), fast_pattern_scores(model, tokens)  # warm-up
    fwd, fast, slow = [], [], []
    for _ in range(args.repeats):
        fwd.append(_timed(forward)[0])
        t, (sf, _, _) = _timed(lambda: fast_pattern_scores(model, tokens))
        fast.append(t)
        t, ss = _timed(lambda: pattern_scores(attention_patterns(model, tokens), args.seq_len))
        slow.append(t)
        print(f"  forward {fwd[-1]:6.2f} s   fast scores {fast[-1]:6.2f} s ({fast[-1] / fwd[-1]:.2f})   "
              f"hooked full-forward scores {slow[-1]:6.2f} s ({slow[-1] / fwd[-1]:.2f})")
    diff = max(float(abs(sf[k] - ss[k]).max()) for k in sf)
    t_copy, _ = _timed(lambda: copying_scores(model, weights=head_weights(model)))
    t_comp, _ = _timed(lambda: composition_scores(model))
    t_attr, _ = _timed(lambda: attribution_patching(model, tokens, ["mean"]))
    fwd.append(_timed(forward)[0])
    t_ig, _ = _timed(lambda: integrated_attribution_patching(model, tokens, ["mean"], steps=args.ig_steps, scope="all"))
    fwd.append(_timed(forward)[0])
    scan_t = None
    if not args.no_scan:
        modes = [m for m in args.modes.split(",") if m]
        scan_t, scan = _timed(lambda: ablation_scan(model, tokens, modes, max_rows=args.max_rows, progress=False))
        fwd.append(_timed(forward)[0])
    f = statistics.median(fwd)
    print(f"\none full forward pass (median of {len(fwd)}):     {f:7.2f} s")
    print(f"all per-head attention scores (fast path):      {statistics.median(fast):7.2f} s = "
          f"{statistics.median(fast) / f:.2f} forward passes (median of per-repeat ratios "
          f"{statistics.median(a / b for a, b in zip(fast, fwd)):.2f}; FLOP ratio {fl['scores'] / fl['forward']:.2f}); "
          f"max difference to the hooked path {diff:.1e}")
    print(f"same scores through a hooked full forward:      {statistics.median(slow):7.2f} s = {statistics.median(slow) / f:.2f} forward passes")
    print(f"copying scores (144 heads):                     {t_copy:7.2f} s")
    print(f"composition scores (Q/K/V, all pairs):          {t_comp:7.2f} s")
    print(f"attribution patching (1 forward + 1 backward):  {t_attr:7.2f} s = {t_attr / f:.2f} forward passes")
    print(f"integrated-gradients attribution patching, {args.ig_steps} steps, scope all, one mode: {t_ig:7.2f} s = "
          f"{t_ig / f:.2f} forward passes")
    if scan_t is not None:
        print(f"exact ablation scan, 144 heads x {len(modes)} mode(s):    {scan_t:7.2f} s = {scan_t / f:.1f} forward passes "
              f"(FLOP ratio per mode {fl['scan'] / fl['forward']:.1f}; one forward per head: 144); clean loss check "
              f"{scan['clean_loss']:.5f} vs {scan['clean_loss_recomputed']:.5f}")


if __name__ == "__main__":
    main()
