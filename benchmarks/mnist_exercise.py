"""Wall time of the full MNIST exercise on this machine: committed checkpoint, then --retrain.

Targets (2-core CPU): under 3 minutes with the checkpoint, under 8 minutes with --retrain.
On a shared machine compare CPU seconds as well as wall seconds (both are printed, with the load average).

    python benchmarks/mnist_exercise.py [--data-dir DIR] [--out DIR] [--skip-retrain] [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from vision_interp.exercises import ExerciseConfig, run_mnist_exercise


def _run(label: str, **kw) -> float:
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_mnist_exercise(ExerciseConfig(progress=False, **kw))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in res["timing_seconds"].items() if k != "total")
    print(f"load average {os.getloadavg()[0]:.1f}; {label}: {dt:.1f} s wall, {cpu:.1f} s CPU (accuracy {100 * res['evaluation']['accuracy']:.2f}%; {stages})", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="default: $VISION_INTERP_DATA")
    ap.add_argument("--out", default=None, help="where the checkpoint run writes its report (default: a temp dir)")
    ap.add_argument("--skip-retrain", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        t1 = _run("checkpoint (target < 180 s)", out=args.out or os.path.join(tmp, "ckpt"), data_dir=args.data_dir, quick=args.quick)
        if not args.skip_retrain:
            t2 = _run("--retrain   (target < 480 s)", out=os.path.join(tmp, "retrain"), data_dir=args.data_dir, quick=args.quick, retrain=True)
            print(f"summary: checkpoint {t1:.0f} s, retrain {t2:.0f} s; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
