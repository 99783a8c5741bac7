"""Benchmark: all per-head scores and the 144-head ablation scan of a GPT-2-small-size model (random weights).

Prints the wall time of (1) the attention scores (one forward pass on batch 10 x 101 tokens), (2) the
weight-based copying and composition scores, (3) the batched ablation scan of all 12 x 12 heads, and for
comparison (4) one full forward pass, so the scan can be read as "N forward passes".

    python benchmarks/induction.py [--batch 10] [--seq-len 50] [--modes mean] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--modes", default="mean", help="ablation modes, comma-separated (mean,zero)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-rows", type=int, default=64)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    from vision_interp.transformer import (ablation_scan, attention_patterns, composition_scores, copying_scores,
                                           head_weights, pattern_scores, repeated_tokens)

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()  # GPT-2 small: 12 x 12, 768, vocab 50257
    model.set_attn_implementation("eager")
    tokens = repeated_tokens(model, args.seq_len, args.batch, seed=0)
    print(f"GPT-2 small size, random weights; tokens {tuple(tokens.shape)}; torch threads {torch.get_num_threads()}")

    with torch.no_grad():
        model(tokens)  # warm-up
        t = time.perf_counter()
        model(tokens)
        fwd = time.perf_counter() - t
    print(f"one full forward pass:              {fwd:7.2f} s")

    t = time.perf_counter()
    scores = pattern_scores(attention_patterns(model, tokens), args.seq_len)
    print(f"attention scores (1 forward):       {time.perf_counter() - t:7.2f} s  (induction max {scores['induction'].max():.3f})")
    t = time.perf_counter()
    w = head_weights(model)
    copying_scores(model, weights=w)
    t_copy = time.perf_counter() - t
    t = time.perf_counter()
    composition_scores(model, weights=w)
    print(f"copying scores (144 heads):         {t_copy:7.2f} s")
    print(f"composition scores (Q/K/V, pairs):  {time.perf_counter() - t:7.2f} s")

    modes = [m for m in args.modes.split(",") if m]
    t = time.perf_counter()
    scan = ablation_scan(model, tokens, modes, max_rows=args.max_rows, progress=False)
    dt = time.perf_counter() - t
    print(f"ablation scan, 144 heads x {len(modes)} mode(s): {dt:7.2f} s  (= {dt / fwd:.0f} full forward passes; "
          f"naive: {144 * len(modes)}); clean loss check {scan['clean_loss']:.4f} vs {scan['clean_loss_recomputed']:.4f}")


if __name__ == "__main__":
    main()
