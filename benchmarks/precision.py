"""fp32 vs bf16 autocast for feature visualization: speed, activation reached, batch independence.

Says first whether this machine has native bf16 (``vision_interp.environment.native_bf16``: oneDNN's
AVX512-BF16/AMX kernels, or CUDA) and prints the CPU facts behind it, so figures from two machines
can be told apart. Where the OS does not list CPU flags the answer rests on oneDNN alone, and the
script says so.

Measured, per precision (the same seeds for both):
  (a) MNIST CNN (trained), default preset ``fast-small`` on all 24 conv units in one batch: mean
      activation reached, its ratio to fp32's, and s/step/image;
  (b) batch independence, MNIST conv2:0,5,6,12 rendered as one batch vs one at a time (the test
      ``test_batched_rendering_matches_single``'s settings: 48 steps, sigmoid, small transforms;
      and the default ``fast-small``): max and mean |batched - alone| / max|alone|;
      and, as the yardstick, each unit alone over seeds 0-3: max (max - min) / max|alone|;
  (c) repeatability: the same call twice, max |difference| of the images;
  (d) InceptionV1 (He-init random weights; pretrained weights are not needed for a speed figure),
      ``smooth-256`` at ``--size`` px, a batch of 4 channel units: s/step/image (median of
      ``--rounds`` rounds of ``--steps`` steps, fp32 and bf16 interleaved so machine load hits both).

The case "CPU without native bf16" can be measured on a CPU that has it by capping oneDNN:
``ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/precision.py`` (oneDNN then emulates bf16, and
``native_bf16()`` reports it absent). Figures: docs/featvis.md, "Precision and hardware".

Usage: python benchmarks/precision.py [--size 224] [--steps 4] [--rounds 3] [--threads 1] [--skip-inception]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vision_interp.environment import cpu_capabilities, environment_report, native_bf16  # noqa: E402
from vision_interp.featvis import render, visualize_layer  # noqa: E402

PRECISIONS = ("fp32", "bf16")
BATCH_CHANNELS = [0, 5, 6, 12]
TEST_KW = dict(steps=48, progress=False, valid="sigmoid", transforms="small")


def describe_machine() -> None:
    caps = cpu_capabilities()
    env = environment_report(browser=False)
    print(f"cpu: {caps['processor']} ({caps['machine']}), torch kernels {caps['torch_cpu_capability']}, "
          f"threads {env['threads']['torch_threads']}, torch {env['torch']['version']}")
    if caps["flags"] is None:
        print("cpu flags: not listed by this OS; native bf16 below rests on oneDNN's answer alone")
    else:
        print("cpu flags: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in caps["flags"].items()))
    if caps["mkldnn_bf16"] is None:
        print("native bf16 (oneDNN): this torch cannot tell; the figures below say what bf16 costs here, not why")
    else:
        print(f"native bf16 (oneDNN): {caps['mkldnn_bf16']}")
    print(f"native_bf16('cpu') = {native_bf16('cpu')} (what precision='auto' picks from)")


def mnist_quality(model) -> dict[str, tuple[float, float]]:
    """precision -> (mean activation over the 24 conv units, s/step/image)."""
    out = {}
    for prec in PRECISIONS:  # warm-up: oneDNN builds its kernels on first use
        visualize_layer(model, "conv2", [0], steps=4, progress=False, precision=prec)
    for prec in PRECISIONS:
        acts, seconds, n = [], 0.0, 0
        for layer in ("conv1", "conv2"):
            t0 = time.perf_counter()
            r = visualize_layer(model, layer, seed=0, progress=False, precision=prec)
            seconds += time.perf_counter() - t0
            acts.append(r.activations)
            n += len(r.activations) * r.steps
        out[prec] = (float(torch.cat(acts).mean()), seconds / n)
    return out


def batch_independence(model, kw: dict) -> dict[str, tuple[float, float]]:
    """precision -> (max, mean) of |batched - alone| / max|alone| over the four units."""
    out = {}
    for prec in PRECISIONS:
        batched = visualize_layer(model, "conv2", BATCH_CHANNELS, precision=prec, **kw).activations
        alone = torch.cat([visualize_layer(model, "conv2", [c], precision=prec, **kw).activations for c in BATCH_CHANNELS])
        scale = float(alone.abs().max())
        d = (batched - alone).abs() / scale
        out[prec] = (float(d.max()), float(d.mean()))
    return out


def seed_spread(model, kw: dict, seeds=(0, 1, 2, 3)) -> dict[str, float]:
    """precision -> max over units of (max - min over seeds) / max|alone|: how much a unit's result moves
    with its start image alone, the yardstick for (b) (a batch gives each position another start image)."""
    out = {}
    for prec in PRECISIONS:
        runs = torch.stack([torch.cat([visualize_layer(model, "conv2", [c], precision=prec, seed=s, **kw).activations
                                       for c in BATCH_CHANNELS]) for s in seeds])
        out[prec] = float(((runs.max(0).values - runs.min(0).values) / runs.abs().max()).max())
    return out


def repeatability(model) -> dict[str, float]:
    out = {}
    for prec in PRECISIONS:
        a = visualize_layer(model, "conv2", BATCH_CHANNELS, precision=prec, **TEST_KW).images
        b = visualize_layer(model, "conv2", BATCH_CHANNELS, precision=prec, **TEST_KW).images
        out[prec] = float((a - b).abs().max())
    return out


def inception_speed(size: int, steps: int, rounds: int) -> dict[str, float]:
    """precision -> median s/step/image over rounds (interleaved)."""
    from benchmarks.featvis import he_init
    from vision_interp.zoo import inceptionv1

    model = he_init(inceptionv1(pretrained=False))
    units = ["mixed3b:30", "mixed4a:97", "mixed4d:100", "mixed5b:200"]
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for prec in PRECISIONS:  # warm-up (oneDNN primitive creation)
        render(model, units, "smooth-256", steps=1, progress=False, precision=prec, input_shape=(3, size, size))
    for _ in range(rounds):
        for prec in PRECISIONS:
            t0 = time.perf_counter()
            render(model, units, "smooth-256", steps=steps, progress=False, precision=prec, input_shape=(3, size, size))
            times[prec].append((time.perf_counter() - t0) / (steps * len(units)))
    return {p: statistics.median(v) for p, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-inception", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the figures in docs/featvis.md: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    describe_machine()
    from vision_interp.zoo import mnist_cnn

    model = mnist_cnn(pretrained=True)
    q = mnist_quality(model)
    print("\n(a) MNIST fast-small, 24 conv units: mean activation, ratio to fp32, s/step/image")
    for p, (act, sps) in q.items():
        print(f"  {p}: {act:.4f}  {act / q['fp32'][0]:.4f}x  {sps * 1e3:.3f} ms ({sps / q['fp32'][1]:.2f}x fp32's time)")
    print("\n(b) batch independence, conv2:0,5,6,12 batched vs alone: max / mean |diff| / max|alone|")
    for name, kw in (("48 steps, sigmoid, small transforms", TEST_KW), ("default fast-small", dict(progress=False))):
        for p, (mx, mean) in batch_independence(model, kw).items():
            print(f"  {name}, {p}: max {mx:.4f}, mean {mean:.4f}")
        for p, spread in seed_spread(model, kw).items():
            print(f"  {name}, {p}: alone, seeds 0-3: max spread {spread:.4f} (the start image's own effect)")
    print("\n(c) the same call twice: max |image difference|")
    for p, d in repeatability(model).items():
        print(f"  {p}: {d:.3g}")
    if not args.skip_inception:
        s = inception_speed(args.size, args.steps, args.rounds)
        print(f"\n(d) InceptionV1 (random He-init), smooth-256 at {args.size} px, batch 4: s/step/image")
        for p, v in s.items():
            print(f"  {p}: {v:.3f} s ({v / s['fp32']:.2f}x fp32's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
