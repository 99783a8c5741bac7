"""Time to train the MNIST CNN to >= 99.0% test accuracy on this machine (target: <= 3 minutes).

Usage: python benchmarks/train_mnist.py [--data-dir DIR] [--epochs 6] [--seed 0]
Prints wall time, test accuracy, and steps per second.
"""

from __future__ import annotations

import argparse
import time

import torch

from vision_interp.data import load_mnist
from vision_interp.zoo.mnist_cnn import TrainConfig, evaluate, train_mnist_cnn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    train = load_mnist("train", args.data_dir, download=False)
    test = load_mnist("test", args.data_dir, download=False)
    cfg = TrainConfig(seed=args.seed, epochs=args.epochs)
    t0 = time.perf_counter()
    model = train_mnist_cnn(train.images, train.labels, cfg, progress=False)
    seconds = time.perf_counter() - t0
    acc = evaluate(model, test.images, test.labels)["accuracy"]
    steps = cfg.epochs * ((len(train) + cfg.batch_size - 1) // cfg.batch_size)
    print(f"threads            {torch.get_num_threads()}")
    print(f"epochs             {cfg.epochs}")
    print(f"train seconds      {seconds:.1f}  (target <= 180; ratio to target {seconds / 180:.2f})")
    print(f"steps per second   {steps / seconds:.1f}")
    print(f"test accuracy      {acc:.4f}  (target >= 0.9900)")


if __name__ == "__main__":
    main()
