"""Feature visualization speed: seconds per optimisation step per image.

InceptionV1 (random weights: speed does not depend on them) at 224x224 with Lucid's standard
transforms (the model sees 236x236), for one mixed4a channel and for a batch of 16 mixed4a
channels; and all 24 conv channels of the MNIST CNN in one batch.

Configurations:
  baseline   fp32, contiguous (NCHW) tensors
  default    channels_last (render's default)
  bf16       channels_last + bfloat16 autocast for the model
(The model's LocalResponseNorm is a banded 1x1 convolution, several times faster on CPU than
``F.local_response_norm``'s avg_pool3d; it was 23% of a step before that change.)

``--quality-steps N`` also compares the final activations reached by baseline and bf16
after N steps (same seed), and ``--profile`` prints torch.profiler's top ops for one step.

Usage: python benchmarks/featvis.py [--steps 3] [--threads 2] [--quality-steps 0] [--profile]
"""

from __future__ import annotations

import argparse
import time

import torch


def time_render(model, objectives, steps: int, **kw) -> tuple[float, torch.Tensor]:
    from vision_interp.featvis import render

    render(model, objectives, steps=1, progress=False, **kw)  # warm-up (oneDNN kernel selection, shape checks)
    t = time.perf_counter()
    res = render(model, objectives, steps=steps, progress=False, **kw)
    dt = time.perf_counter() - t
    return dt / steps / len(objectives), res.values


CONFIGS = {
    "baseline": dict(precision="fp32", channels_last=False),
    "default": dict(precision="fp32", channels_last=True),
    "bf16": dict(precision="bf16", channels_last=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after 1 warm-up step)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=16, help="mixed4a channels in the batched run")
    ap.add_argument("--configs", default="baseline,default,bf16")
    ap.add_argument("--quality-steps", type=int, default=0, help="also compare final activations after N steps (batch 4)")
    ap.add_argument("--profile", action="store_true", help="print the top ops of one step of each config")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vision_interp.featvis import channel, render
    from vision_interp.zoo import inceptionv1, mnist_cnn

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; s/step/image at 224x224 (236 after transforms)")
    plain = inceptionv1(pretrained=False)
    one = [channel("mixed4a", 476)]
    many = [channel("mixed4a", c) for c in range(0, 508, 508 // args.batch)][: args.batch]
    for name in args.configs.split(","):
        model, kw = plain, CONFIGS[name]
        s1, _ = time_render(model, one, args.steps, **kw)
        sb, _ = time_render(model, many, args.steps, **kw)
        print(f"inceptionv1 mixed4a  {name:18s} 1 channel: {s1:.4f}   batch {len(many)}: {sb:.4f} s/step/image", flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                render(model, many[:4], steps=1, progress=False, **kw)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    try:
        mn = mnist_cnn()
    except FileNotFoundError:
        mn = mnist_cnn(pretrained=False)
    objs = [channel("conv1", c) for c in range(8)] + [channel("conv2", c) for c in range(16)]
    s, _ = time_render(mn, objs, max(args.steps, 10), transforms="small", param="pixel", lr=0.2)
    print(f"mnist_cnn all 24 conv channels, one batch: {s:.5f} s/step/image", flush=True)
    if args.quality_steps:
        q = [channel("mixed4a", c) for c in (0, 97, 200, 476)]
        ref = render(plain, q, steps=args.quality_steps, progress=False, **CONFIGS["baseline"]).values
        for name in ("default", "bf16"):
            v = render(plain, q, steps=args.quality_steps, progress=False, **CONFIGS[name]).values
            print(f"final activation after {args.quality_steps} steps (fp32 eval) baseline {ref.numpy().round(3)} vs {name} {v.numpy().round(3)}")


if __name__ == "__main__":
    main()
