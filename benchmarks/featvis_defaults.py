"""Feature-visualization defaults that fit the model: pictures measured on a real trained RGB model and on MNIST.

Models:

* MTCNN's ONet (facenet-pytorch's shipped weights; ``tests/third_party.py``): 48x48 RGB faces, PReLU,
  ceil-mode pools, a Linear head, so it takes 48x48 only. Units: channel means of ``net.prelu3`` (4 channels),
  ``net.prelu4`` (3), ``net.conv3`` and ``net.conv4`` (1 each), and the face logit (``class_logit("face")``, the
  model's own output). Real examples: ``real_examples()`` (75 crops of the Grace Hopper portrait, 72 crops of
  matplotlib's other sample pictures).
* The committed MNIST CNN (99.20%): centre neurons of conv1 (4 units) and conv2 (6), as the MNIST default
  renders them, and the logit of class 3. Real examples: the first 2,000 test images.

Per configuration, all units in one batch, seed 0, one thread:

* **saturated**: share of the final pictures' channel values at exactly 0 or 255 in the 8-bit picture
  that is saved (``round(255 x)``);
* **HF**: share of spectral power (image mean removed) above half Nyquist (radial frequency > 0.25
  cycles/pixel), mean over images and channels;
* **act / best real**: the unit's activation on its picture over its largest activation on any real
  example (median and minimum over units); **beats**: units whose picture beats every real example;
* **robust**: the activation under a random size-preserving jitter of the picture (a reflect-padded shift of
  up to 2 px and a zoom of 0.9-1.1 about the centre; 8 draws, the same for every configuration) over the
  unjittered activation, mean over units: 1.0 = the picture's effect survives small shifts, near 0 = an
  adversarial pixel pattern;
* **s**: wall time of the render.

Usage: ``python benchmarks/featvis_defaults.py`` (about two minutes on one core) prints a markdown table
per model; ``--json PATH`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vision_interp.featvis import channel, class_logit, evaluate_objective, neuron, preset, render  # noqa: E402
from vision_interp.featvis.settings import default_preset  # noqa: E402
from vision_interp.featvis.transform import Compose, Jitter, Pad, RandomScale  # noqa: E402

from featvis import high_frequency_share  # noqa: E402  (the featvis benchmark's measure, one definition)

ONET_UNITS = ["net.prelu3:0", "net.prelu3:7", "net.prelu3:20", "net.prelu3:41", "net.prelu4:3", "net.prelu4:60",
              "net.prelu4:100", "net.conv3:12", "net.conv4:10"]
MNIST_UNITS = ["conv1:0", "conv1:2", "conv1:4", "conv1:6", "conv2:0", "conv2:3", "conv2:5", "conv2:6", "conv2:9", "conv2:12"]

# name -> settings; "old default" and "new default" are labelled in the table
CONFIGS = {
    "fast-small": preset("fast-small"),
    "smooth-small": preset("smooth-small"),
    "lucid+small": preset("lucid", transforms="small"),
    "lucid+none": preset("lucid", transforms="none"),
    "exact": preset("exact"),
}


def saturated_share(images: torch.Tensor) -> float:
    """Share of the 8-bit picture's channel values at exactly 0 or 255."""
    q = (images.clamp(0, 1) * 255).round()
    return float(((q == 0) | (q == 255)).float().mean())


JITTER = Compose([Pad(2, fill="reflect"), Jitter(4), RandomScale([0.9 + 0.02 * i for i in range(11)])])


def robust_ratio(model: torch.nn.Module, objective, image: torch.Tensor, draws: int = 8, seed: int = 0) -> float:
    """Mean activation of ``objective`` over ``draws`` size-preserving jitters of ``image`` (1, C, H, W), over its clean one."""
    gen = torch.Generator().manual_seed(seed)
    batch = JITTER(image.expand(draws, -1, -1, -1).contiguous(), gen)
    jittered = float(evaluate_objective(model, objective, batch).mean())
    clean = float(evaluate_objective(model, objective, image)[0])
    return jittered / clean if clean > 0 else float("nan")


def best_real(model: torch.nn.Module, objectives, real: torch.Tensor, chunk: int = 500) -> list[float]:
    """Each objective's largest value over the real examples."""
    out = []
    for obj in objectives:
        vals = torch.cat([evaluate_objective(model, obj, real[i:i + chunk]) for i in range(0, len(real), chunk)])
        out.append(float(vals.max()))
    return out


def measure(model: torch.nn.Module, objectives, units: list[str], real: torch.Tensor, settings, input_shape) -> dict:
    """Render every objective in one batch with ``settings`` and measure the pictures (see the module docstring)."""
    t0 = time.perf_counter()
    res = render(model, list(objectives), settings, input_shape=tuple(input_shape), progress=False)
    seconds = time.perf_counter() - t0
    images = res.images
    best = best_real(model, objectives, real)
    acts = [float(evaluate_objective(model, o, images[i:i + 1])[0]) for i, o in enumerate(objectives)]
    ratios = [a / b for a, b in zip(acts, best) if b > 0]
    robust = [robust_ratio(model, o, images[i:i + 1]) for i, o in enumerate(objectives)]
    robust = [r for r in robust if r == r]
    return {
        "settings": res.settings,
        "seconds": seconds,
        "saturated": saturated_share(images),
        "hf": high_frequency_share(images),
        "act_over_best_median": statistics.median(ratios),
        "act_over_best_min": min(ratios),
        "beats": sum(a > b for a, b in zip(acts, best)),
        "units": len(objectives),
        "robust": statistics.mean(robust),
        "per_unit": {u: {"act": a, "best_real": b} for u, a, b in zip(units, acts, best)},
        "images": images,
    }


def onet_setup():
    import third_party as tp

    model = tp.onet()
    objectives = [channel(u) for u in ONET_UNITS] + [class_logit("face")]
    return model, objectives, ONET_UNITS + ["face logit"], tp.real_examples(), (3, 48, 48)


def mnist_setup():
    import os

    import vision_interp as vi
    from vision_interp.data import load_mnist

    model = vi.mnist_cnn(pretrained=True)
    objectives = [neuron(u) for u in MNIST_UNITS] + [class_logit(3)]
    data_dir = os.environ.get("VISION_INTERP_DATA") or str(ROOT.parent / "shared" / "data")
    real = load_mnist("test", data_dir, limit=2000, download=False).images
    return model, objectives, MNIST_UNITS + ["logit 3"], real, (1, 28, 28)


def table(name: str, model, results: dict[str, dict]) -> str:
    new, why = default_preset(model)
    lines = [f"### {name} (default: `{new}`, {why})", "",
             "| configuration | steps | s | saturated | HF | act / best real (median, min) | beats every real example | robust |",
             "|---|---|---|---|---|---|---|---|"]
    for cfg, r in results.items():
        label = cfg + (" (default)" if r["settings"]["preset"] == new and cfg == new else "")
        lines.append(f"| {label} | {r['settings']['steps']} | {r['seconds']:.1f} | {r['saturated']:.3f} | {r['hf']:.3f} | "
                     f"{r['act_over_best_median']:.2f}, {r['act_over_best_min']:.2f} | {r['beats']}/{r['units']} | {r['robust']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--images", default=None, help="folder for a PNG per model: one row of pictures per configuration")
    ap.add_argument("--models", default="onet,mnist")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict[str, dict] = {}
    for key in args.models.split(","):
        model, objectives, units, real, shape = {"onet": onet_setup, "mnist": mnist_setup}[key]()
        results = {cfg: measure(model, objectives, units, real, s, shape) for cfg, s in CONFIGS.items()}
        print(table({"onet": "MTCNN ONet (trained, 48x48 RGB)", "mnist": "MNIST CNN (trained, 28x28 grayscale)"}[key], model, results))
        print()
        if args.images:
            save_rows(Path(args.images) / f"featvis_defaults_{key}.png", results)
        out[key] = {cfg: {k: v for k, v in r.items() if k != "images"} for cfg, r in results.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def save_rows(path: Path, results: dict[str, dict], scale: int = 3) -> None:
    """One row of pictures per configuration, in the table's order."""
    from vision_interp.images import save_png

    rows = [torch.cat(list(r["images"]), dim=2) for r in results.values()]
    grid = torch.cat(rows, dim=1)
    save_png(grid.expand(3, -1, -1) if grid.shape[0] == 1 else grid, path, scale=scale)

if __name__ == "__main__":
    main()
