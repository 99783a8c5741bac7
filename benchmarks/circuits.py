"""Circuits timings: full expanded weights mixed3a -> mixed3b of InceptionV1, and top connections
for every unit of a layer. Random weights (timing does not depend on the values).

    python benchmarks/circuits.py [--threads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vision_interp.circuits import expanded_weights, layer_top_connections, trace_graph
    from vision_interp.zoo import MnistCNN, inceptionv1

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeat}")
    torch.manual_seed(0)
    inc = inceptionv1(pretrained=False)
    t = time.perf_counter()
    trace_graph(inc)
    print(f"InceptionV1 graph trace (one forward at 224x224, cached per model): {time.perf_counter() - t:.2f} s")
    s, e = timed(lambda: expanded_weights(inc, "mixed3a", "mixed3b"), args.repeat)
    print(f"expanded weights mixed3a -> mixed3b, full tensor {tuple(e.shape)}: {s:.2f} s")
    s, _ = timed(lambda: expanded_weights(inc, "mixed3a", "mixed3b", dst_channels=[17]), args.repeat)
    print(f"expanded weights mixed3a -> mixed3b, one unit (1, 256, 5, 5): {s * 1000:.0f} ms")
    s, e = timed(lambda: expanded_weights(inc, "conv2d2", "mixed3a"), args.repeat)
    print(f"expanded weights conv2d2 -> mixed3a (through max pool + LRN), full {tuple(e.shape)}: {s:.2f} s")
    s, tc = timed(lambda: layer_top_connections(inc, "mixed3b", k=8), args.repeat)
    print(f"top connections (k=8, both signs) for all {len(tc)} units of mixed3b from mixed3a: {s:.2f} s")
    m = MnistCNN().eval()
    s, e = timed(lambda: expanded_weights(m, "conv1", "conv2"), args.repeat)
    print(f"MnistCNN expanded weights conv1 -> conv2 {tuple(e.shape)}: {s * 1000:.0f} ms")
    s, tc = timed(lambda: layer_top_connections(m, "conv2", k=8), args.repeat)
    print(f"MnistCNN top connections for all {len(tc)} units of conv2: {s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
