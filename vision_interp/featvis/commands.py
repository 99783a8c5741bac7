"""CLI: ``vision-interp visualize`` (one unit, or many channels of a layer) writing PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .settings import PRECISIONS, PRESETS
from ..cli_common import (SEED, Formatter, UsageError, add_data_dir, add_model, check_batch_pixels, check_output_dir,
                          check_output_file, float_arg, int_arg, names_arg, unit_arg)

# figures from benchmarks/precision.py (docs/featvis.md, "Precision"), one thread, torch 2.13 CPU
PRECISION_HELP = (
    "fp32 (default on every machine: the same settings and pictures everywhere); bf16 = bfloat16 autocast for the model: "
    "time per step vs fp32 0.61-0.76x (InceptionV1) and 0.71-0.77x (MNIST) on a CPU with native bf16 (AVX512-BF16), "
    "8.9-9.3x and 2.4-2.7x where oneDNN emulates it (capped at AVX2); units end within 10%% of fp32's activation, mean unchanged "
    "(0.997-1.000x); auto = bf16 where native bf16 or CUDA is found, else fp32, recorded as precision_rule "
    "(see 'vision-interp doctor', docs/featvis.md)")
DEVICES = ("cpu", "cuda", "auto")
DEVICE_HELP = "where to render (default: the model's device, the CPU for zoo models, on every machine); auto = CUDA when available"
MAX_SIZE = 2048  # pixels per side: a batch of 2048^2 Fourier images already needs gigabytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize",
        help="feature visualization of a unit or of a layer's channels (PNG)",
        description=(
            "Optimise images that maximally excite a unit (--unit conv2:5, mixed4a:476@7,7) or each of\n"
            "several channels of a layer (--layer conv2 --channels 0-7), with per-model defaults\n"
            "(InceptionV1: Fourier + decorrelated colour + Lucid's transforms at 224 px, 256 steps;\n"
            "MNIST CNN: Fourier, no transforms, a pixel polish at 28x28, 112 steps).\n"
            "--preset lucid is Lucid's 512-step recipe, the reference (docs/featvis.md).\n\n"
            "examples:\n"
            "  vision-interp visualize --model mnist_cnn --unit conv2:5 --out conv2_5.png\n"
            "  vision-interp visualize --model mnist_cnn --layer conv2 --channels 0-7 --out-dir vis/\n"
            "  vision-interp visualize --model inceptionv1 --unit mixed4a:476 --steps 512 --out 476.png"
        ),
        formatter_class=Formatter,
    )
    add_model(p)
    add_data_dir(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--unit", type=unit_arg, help="unit layer:channel[@y,x] (a bare layer name means DeepDream on it)")
    what.add_argument("--layer", type=unit_arg, help="render each channel of this layer (see --channels)")
    p.add_argument("--channels", type=names_arg, default=None, help="with --layer: e.g. 0-7 or 1,3,5 (default: all)")
    p.add_argument("--steps", type=int_arg(1, 100_000), default=None, help="optimisation steps, coarse-phase steps included (default: the preset's: 256 InceptionV1, 112 MNIST)")
    p.add_argument("--size", type=int_arg(8, MAX_SIZE), default=None, help="image size in pixels (default: the model's input size)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--lr", type=float_arg(0, 100, lo_open=True), default=None, help="Adam learning rate (default: per model)")
    p.add_argument("--param", choices=["fft", "pixel"], default=None, help="image parameterization (default: per model)")
    p.add_argument("--transforms", choices=["standard", "small", "none"], default=None, help="robustness transforms (default: per model)")
    p.add_argument("--negative", action="store_true", help="minimise the unit instead of maximising it")
    p.add_argument("--diversity", type=float_arg(0, 1e6), default=0.0, help="with --layer: weight of a diversity term (renders --per-unit images per channel)")
    p.add_argument("--per-unit", type=int_arg(1, 64), default=None, help="with --diversity: images per channel (default 4)")
    p.add_argument("--batch-size", type=int_arg(1, 1024), default=None, help="with --layer: images per optimisation batch")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="render settings preset (default: per model: 'fast-small' for grayscale below 96 px; 'smooth-256' from 96 px "
                        "when the model takes the standard transforms' 12 px larger canvas; else 'smooth-small', the same "
                        "basis with size-preserving shifts; docs/featvis.md); "
                        "'lucid' = Lucid's 512-step recipe, the reference; 'pyramid' = most steps on tiled half-size images "
                        "(faster climb, 2x2-periodic pictures; docs/featvis.md)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    prec.add_argument("--bf16", action="store_true", help="the same as --precision bf16")
    p.add_argument("--device", choices=DEVICES, default=None, help=DEVICE_HELP)
    p.add_argument("--scale", type=int_arg(1, 64), default=None, help="enlarge PNGs by this factor (default: 8 for images under 64 px)")
    p.add_argument("--out", default=None, help="with --unit: output PNG (default: <unit>.png)")
    p.add_argument("--out-dir", default=".", help="with --layer: folder for <layer>_<channel>.png files")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_visualize)


def checked_device(device: str | None) -> str | None:
    """--device as a torch device name ("auto" resolved), or a usage error when CUDA is asked for and absent."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine (see 'vision-interp doctor'); use --device cpu or auto")
    return device


def _unit_file_name(unit: str) -> str:
    return f"{unit.replace(':', '_').replace('@', '_at_').replace(',', '_')}.png"


def _check_args(args: argparse.Namespace) -> None:
    """Everything that can be wrong with the arguments, before the model loads."""
    if args.unit and (args.channels or args.diversity or args.per_unit):
        raise UsageError("--channels, --diversity and --per-unit go with --layer, not --unit")
    if args.unit:
        if args.out_dir != ".":
            raise UsageError("--out-dir goes with --layer; with --unit give --out FILE.png")
        args.out = check_output_file(args.out or _unit_file_name(args.unit), "--out", (".png",))
    else:
        if args.out:
            raise UsageError("--out goes with --unit; with --layer give --out-dir FOLDER")
        check_batch_pixels(args.batch_size, args.size, "--batch-size with --size")
        check_output_dir(args.out_dir, "--out-dir")


def _visualize(args: argparse.Namespace) -> int:
    from ..cli_common import load_model_from_args
    from ..images import make_grid, save_png
    from .render import visualize, visualize_layer

    _check_args(args)
    device = checked_device(args.device)
    model = load_model_from_args(args)
    kw: dict = {"device": device}
    if args.lr is not None:
        kw["lr"] = args.lr
    if args.param:
        kw["param"] = args.param
    if args.transforms:
        kw["transforms"] = args.transforms
    if args.precision or args.bf16:
        kw["precision"] = args.precision or "bf16"
    common = dict(settings=args.preset, steps=args.steps, size=args.size, seed=args.seed, progress=not args.no_progress, **kw)
    if args.unit:
        from .objectives import as_objective

        obj = -as_objective(args.unit) if args.negative else args.unit
        res = visualize(model, obj, **common)
        scale = args.scale or (8 if res.images.shape[-1] < 64 else 1)
        out = Path(args.out)
        save_png(res.images[0], out, scale=scale)
        print(f"{res.descriptions[0]}: objective {float(res.values[0]):.4g} after {res.steps} steps ({res.seconds:.1f} s) -> {out}")
        return 0
    res = visualize_layer(model, args.layer, args.channels, negative=args.negative, diversity=args.diversity,
                          images_per_unit=args.per_unit, batch_size=args.batch_size, **common)
    scale = args.scale or (8 if res.images.shape[-1] < 64 else 1)
    out_dir = Path(args.out_dir)
    k = res.images_per_unit
    written = []
    for i, (img, unit) in enumerate(zip(res.images, res.units or [])):
        suffix = f"_{i % k}" if k > 1 else ""
        written.append(save_png(img, out_dir / f"{unit.replace(':', '_')}{'_neg' if args.negative else ''}{suffix}.png", scale=scale))
    grid = save_png(make_grid(res.images, ncols=k if k > 1 else None), out_dir / f"{args.layer}{'_neg' if args.negative else ''}_grid.png", scale=scale)
    for unit, act in list(zip(res.units or [], res.activations.tolist()))[::k]:
        print(f"{unit}: activation {act:.4g}")
    print(f"wrote {len(written)} PNGs and {grid} ({res.steps} steps, {res.seconds:.1f} s)")
    return 0
