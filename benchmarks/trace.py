"""Cost of the one model trace: building it (one tracked forward pass on zeros) against a plain
forward pass, measured interleaved in the same run, and the cost of cached questions.

    python benchmarks/trace.py [--repeats 3]

Prints seconds (best of ``repeats``) and ratios; no assertions (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import time

import torch

from vision_interp.trace import invalidate, trace
from vision_interp.units import layer_shape, resolve_unit
from vision_interp.zoo import inceptionv1, mnist_cnn


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, model, shape in [("mnist_cnn", mnist_cnn(pretrained=False), (1, 28, 28)),
                               ("inceptionv1", inceptionv1(), (3, 224, 224))]:
        x = torch.zeros(1, *shape)

        def plain() -> None:
            with torch.no_grad():
                model(x)

        def build() -> None:
            invalidate(model)
            trace(model, shape)

        t_plain = t_build = float("inf")
        for _ in range(args.repeats):  # interleaved, so that machine load hits both alike
            t_plain = min(t_plain, _best(plain, 1))
            t_build = min(t_build, _best(build, 1))
        trace(model, shape)
        layer = "mixed4a" if name == "inceptionv1" else "conv2"
        n = 200
        t_shape = _best(lambda: [layer_shape(model, layer) for _ in range(n)], args.repeats) / n
        t_resolve = _best(lambda: [resolve_unit(model, f"{layer}:3") for _ in range(n)], args.repeats) / n
        h = resolve_unit(model, f"{layer}:3")
        t_handle = _best(lambda: [resolve_unit(model, h) for _ in range(n)], args.repeats) / n
        print(f"{name}: plain forward {t_plain * 1e3:.1f} ms, trace build {t_build * 1e3:.1f} ms "
              f"(x{t_build / t_plain:.1f}); cached layer_shape {t_shape * 1e6:.0f} us, resolve_unit(str) "
              f"{t_resolve * 1e6:.0f} us, resolve_unit(handle) {t_handle * 1e6:.1f} us")


if __name__ == "__main__":
    main()
