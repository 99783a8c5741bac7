"""Transcoder timings: training time per block, graph time per input, intervention time.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/transcoders.py [--steps 2000] [--graphs 5]

Budgets (issue 26): training <= 3 min per block on 2 cores, a graph <= 2 s per input on CPU.
Training uses the MNIST blocks' configurations (steps overridable) on the first --train-images images.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--train-images", type=int, default=10000)
    ap.add_argument("--graphs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vision_interp.data import load_mnist
    from vision_interp.features import GraphBuilder, load_transcoder, measure_interventions, train_transcoder
    from vision_interp.features.tc_build import MNIST_BLOCKS
    from vision_interp.zoo import mnist_cnn

    model = mnist_cnn()
    train = load_mnist("train", limit=args.train_images)
    test = load_mnist("test", limit=max(1, args.graphs))
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    for in_layer, out_layer, name, cfg in MNIST_BLOCKS:
        t0 = time.perf_counter()
        tc = train_transcoder(model, in_layer, out_layer, train.images, replace(cfg, steps=args.steps), progress=False)
        print(f"train {tc.feature_layer}: {time.perf_counter() - t0:.1f} s ({args.steps} steps, {args.train_images} images, "
              f"{cfg.n_features} features, k={cfg.k})")
    tcs = [load_transcoder(n) for _, _, n, _ in MNIST_BLOCKS]
    t0 = time.perf_counter()
    builder = GraphBuilder(model, tcs)
    print(f"graph builder setup: {time.perf_counter() - t0:.3f} s")
    graph_s, int_s, nodes = [], [], []
    for i in range(args.graphs):
        t0 = time.perf_counter()
        g = builder.build(test.images[i], int(test.labels[i]))
        graph_s.append(time.perf_counter() - t0)
        nodes.append(len(g.nodes))
        te = g.total_effects()
        feats = sorted((j for j, n in enumerate(g.nodes) if n["kind"] == "feature"), key=lambda j: -abs(float(te[j])))[:10]
        t0 = time.perf_counter()
        measure_interventions(model, tcs, test.images[i], g, feats)
        int_s.append(time.perf_counter() - t0)
    print(f"graph per input: mean {sum(graph_s) / len(graph_s):.3f} s, max {max(graph_s):.3f} s over {len(graph_s)} inputs "
          f"(mean {sum(nodes) / len(nodes):.0f} nodes)")
    print(f"interventions (10 nodes, one batched pass) per input: mean {sum(int_s) / len(int_s) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
