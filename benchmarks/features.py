"""Time to train the committed conv2 dictionary (TopK SAE, 64 features, k = 4) on this machine
(target: < 120 s on 2 cores), plus the matmul throughput of the same run as a load indicator.

Usage: python benchmarks/features.py [--data-dir DIR] [--steps 2000] [--batch-size 1024] [--lr 3e-3] [--threads 2]
(the former recipe: --steps 3000 --batch-size 2048 --lr 2e-3)
Prints collection and training seconds, steps per second, held-out FVU and mean L0. On a shared
machine compare the 'reference matmul' line between runs: it scales with the load.
"""

from __future__ import annotations

import argparse
import time

import torch

import vision_interp as vi
from vision_interp.data import load_mnist
from vision_interp.features import SAEConfig, layer_samples, reconstruction_metrics, train_topk_sae


def reference_matmul_seconds() -> float:
    a = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=SAEConfig.steps)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=SAEConfig.batch_size)
    ap.add_argument("--lr", type=float, default=SAEConfig.lr)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = vi.mnist_cnn()
    train = load_mnist("train", args.data_dir, download=False, limit=5000)
    test = load_mnist("test", args.data_dir, download=False, limit=2000)
    ref_before = reference_matmul_seconds()
    t0 = time.perf_counter()
    x = layer_samples(model, "conv2", train.images)
    collect = time.perf_counter() - t0
    cfg = SAEConfig(n_features=64, k=4, steps=args.steps, batch_size=args.batch_size, lr=args.lr)  # defaults: the committed recipe
    t0 = time.perf_counter()
    sae = train_topk_sae(x, cfg, progress=False)
    seconds = time.perf_counter() - t0
    ref_after = reference_matmul_seconds()
    from vision_interp.features import Dictionary

    m = reconstruction_metrics(Dictionary(sae, "conv2"), layer_samples(model, "conv2", test.images))
    print(f"threads              {torch.get_num_threads()}")
    print(f"samples              {len(x)} (5000 images x 14 x 14 positions, 16 channels)")
    print(f"collect seconds      {collect:.1f}")
    print(f"train seconds        {seconds:.1f}  ({args.steps} steps x {cfg.batch_size}, lr {cfg.lr}; target < 120; ratio to target {seconds / 120:.2f})")
    print(f"steps per second     {args.steps / seconds:.1f}")
    print(f"total seconds        {collect + seconds:.1f}")
    print(f"held-out FVU         {m['fvu']:.4f}   mean L0 {m['mean_l0']:.2f}   dead {m['dead_features']}")
    print(f"reference matmul     {ref_before:.2f} s before, {ref_after:.2f} s after (10 x 1024^2 matmuls; load indicator)")


if __name__ == "__main__":
    main()
