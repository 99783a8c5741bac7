"""Gallery throughput: units per minute for the full MNIST CNN gallery and seconds per unit for an
InceptionV1 slice (random weights) with dataset examples from a folder of images.

    python benchmarks/gallery.py                       # default settings (slow on a CPU for InceptionV1)
    python benchmarks/gallery.py --steps 16            # quick: fewer optimisation steps
    python benchmarks/gallery.py --skip-mnist --steps 4 --units 8                     # InceptionV1 at 224 px, extrapolated
    python benchmarks/gallery.py --skip-mnist --steps 16 --size 128 --diverse 0      # InceptionV1 "small settings"
    python benchmarks/gallery.py --skip-inception

Each run renders into a fresh temporary directory with everything a gallery does (main, negative
and diverse visualizations, dataset examples for MNIST, connections, the site). With --steps the
figure is also extrapolated to the default number of steps (rendering time is linear in steps;
the fixed costs - examples, connections, PNG and HTML - are measured with --steps 1 and kept).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch


def run(model, layers: str, name: str, steps: int | None, data_dir: str | None, **kw) -> tuple[float, int, int]:
    from vision_interp.featvis import model_defaults
    from vision_interp.gallery import make_gallery

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = make_gallery(model, layers, os.path.join(tmp, "g"), steps=steps, model_name=name, data_dir=data_dir, progress=False, **kw)
        seconds = time.perf_counter() - t0
    return seconds, res.rendered_units, steps or int(model_defaults(model)["steps"])


def report(label: str, model, layers: str, steps: int | None, data_dir: str | None, **kw) -> None:
    from vision_interp.featvis import model_defaults

    default_steps = int(model_defaults(model)["steps"])
    secs, units, used = run(model, layers, label, steps, data_dir, **kw)
    line = f"{label:28s} {units:4d} units  {used:4d} steps  {secs:8.1f} s  {60 * units / secs:8.2f} units/min  {secs / units:7.2f} s/unit"
    if used != default_steps:
        fixed, _, _ = run(model, layers, label, 1, data_dir, **kw)
        per_step = max(secs - fixed, 0.0) / (used - 1) if used > 1 else 0.0
        est = fixed + per_step * (default_steps - 1)
        line += (f"\n{'':28s} fixed costs (1 step) {fixed:.1f} s, {per_step:.2f} s per step for {units} units; extrapolated to the "
                 f"default {default_steps} steps: {60 * units / est:.2f} units/min, {est / units:.1f} s/unit")
    print(line, flush=True)


def _random_folder(root: str, n: int) -> None:
    """n random RGB images of assorted sizes in two class folders (a stand-in for ImageNet validation)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = os.path.join(root, f"class{i % 2}")
        os.makedirs(d, exist_ok=True)
        h, w = (int(v) for v in rng.integers(200, 400, 2))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(d, f"{i}.jpg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps (default: featvis's default per model)")
    ap.add_argument("--inception-layer", default="mixed4a")
    ap.add_argument("--units", type=int, default=16, help="InceptionV1 units to render")
    ap.add_argument("--size", type=int, default=None, help="InceptionV1 render size (default 224)")
    ap.add_argument("--diverse", type=int, default=4, help="diverse images per unit (InceptionV1)")
    ap.add_argument("--images", type=int, default=32, help="random images generated as the InceptionV1 dataset folder")
    ap.add_argument("--skip-inception", action="store_true")
    ap.add_argument("--skip-mnist", action="store_true")
    ap.add_argument("--data-dir", default=os.environ.get("VISION_INTERP_DATA"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()} {os.cpu_count()} cpus, "
          f"cuda={torch.cuda.is_available()}")
    from vision_interp.zoo import inceptionv1, mnist_cnn

    if not args.skip_mnist:
        report("mnist_cnn all (34 units)", mnist_cnn(), "all", args.steps, args.data_dir)
    if not args.skip_inception:
        layer = f"{args.inception_layer}:0-{args.units - 1}"
        with tempfile.TemporaryDirectory() as folder:
            _random_folder(folder, args.images)
            report(f"inceptionv1 {layer}", inceptionv1(pretrained=False), layer, args.steps, args.data_dir,
                   dataset=folder, size=args.size, diverse=args.diverse)


if __name__ == "__main__":
    main()
