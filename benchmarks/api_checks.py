"""What the API's argument checks and model-state guard cost per call: ``capture`` vs the raw capture.

    python benchmarks/api_checks.py [--repeats 200] [--threads 1]

``capture(model, x, layer)`` checks the images (dtype, shape, channels, finiteness, range [0, 1]),
takes the model's lock, records every module's mode and every parameter's ``requires_grad``, runs in
eval mode and restores everything; ``capture._capture`` only runs the hooks. Both are timed on the
same inputs, alternating, and the median per call is printed, with the difference: the overhead
of the checks and the guard. Cases: the MNIST CNN at batch 1 and 256 (up to ``conv2``), and an
untrained InceptionV1 (224 px, batch 1, up to ``mixed3a``; about 200 modules to record).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vision_interp as vi
from vision_interp.capture import _capture


def _time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("mnist_cnn, batch 1, conv2", vi.mnist_cnn(), torch.rand(1, 1, 28, 28, generator=gen), "conv2", args.repeats),
        ("mnist_cnn, batch 256, conv2", vi.mnist_cnn(), torch.rand(256, 1, 28, 28, generator=gen), "conv2", args.repeats // 4),
        ("inceptionv1 (untrained), 224 px, batch 1, mixed3a", vi.inceptionv1(pretrained=False).eval(),
         torch.rand(1, 3, 224, 224, generator=gen), "mixed3a", max(5, args.repeats // 20)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median seconds per call")
    print(f"{'case':<52s} {'raw':>10s} {'checked':>10s} {'overhead':>10s}")
    for name, model, x, layer, n in cases:
        path = vi.resolve_layer(model, layer)
        with torch.no_grad():
            vi.capture(model, x, layer)  # warm: trace cached, allocations done
            raw = checked = 0.0
            raws, checks = [], []
            for _ in range(3):  # alternate, keep the fastest of three medians (the machine may be shared)
                raws.append(_time(lambda: _capture(model, x, [path]), n))
                checks.append(_time(lambda: vi.capture(model, x, layer), n))
            raw, checked = min(raws), min(checks)
        print(f"{name:<52s} {raw * 1e3:9.3f}ms {checked * 1e3:9.3f}ms {(checked - raw) * 1e6:8.1f}us")


if __name__ == "__main__":
    main()
