"""Time of the universality matching (no training, no pictures): correlations + Hungarian matching
for every pair of the committed seed models, conv1 and conv2, on 2000 test images; the verdict
measure alone (informative positions, ink amount partialled out) and with the two comparison
measures the report also prints.

Usage: python benchmarks/universality.py [--data-dir DIR] [--images 2000]
Prints seconds per layer and for one 64 x 64 exact assignment.
"""

from __future__ import annotations

import argparse
import time

import torch

from vision_interp.data import load_mnist
from vision_interp.universality.matching import linear_assignment, match_layer, shared_samples
from vision_interp.universality.seeds import load_seed_models
from vision_interp.universality.study import UniversalityConfig, collect_samples, run_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--images", type=int, default=2000)
    args = ap.parse_args()
    models = load_seed_models()
    images = load_mnist("test", args.data_dir, download=False, limit=args.images).images
    print(f"threads            {torch.get_num_threads()}")
    print(f"models             {len(models)} ({len(models) * (len(models) - 1)} ordered pairs)")
    for layer, positions in (("conv1", 28 * 28), ("conv2", 14 * 14)):
        t0 = time.perf_counter()
        index = shared_samples(len(images), positions, 200_000)
        samples = {n: collect_samples(m, layer, images, index) for n, m in models.items()}
        collect = time.perf_counter() - t0
        t0 = time.perf_counter()
        match_layer(samples, layer=layer)
        print(f"{layer:6s} all positions: collect {collect:.2f} s, match {time.perf_counter() - t0:.2f} s")
        for compare in (False, True):
            config = UniversalityConfig(layers=(layer,), feature_layer=None, images=args.images, compare=compare)
            t0 = time.perf_counter()
            run_study(models, {}, images, config, log=lambda _: None)
            what = "verdict + comparison measures" if compare else "verdict measure only"
            print(f"{layer:6s} run_study, {what}: {time.perf_counter() - t0:.2f} s")
    cost = torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    linear_assignment(cost)
    print(f"hungarian 64x64    {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
