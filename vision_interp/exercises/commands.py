"""CLI: ``mnist-exercise``."""

from __future__ import annotations

import argparse

from ..cli_common import SEED, Formatter, UsageError, add_data_dir, check_output_dir, existing_file, int_arg, text_arg


def _checkpoint_arg(text: str):
    """argparse ``type=``: an existing, non-empty checkpoint file."""
    from pathlib import Path

    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"no MNIST CNN checkpoint at {text}; give an existing .safetensors file, "
                                         "or --retrain to train one")
    return existing_file(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mnist-exercise",
        help="run the whole MNIST interpretability exercise and write a report",
        description="Load (or --retrain) the MNIST CNN, evaluate it, then run feature visualization, filter analysis,\n"
                    "attribution, circuits and ablation experiments, and write report.html, report.md, results.json\n"
                    "and figures/*.png to --out. Findings are generated from the measured numbers.\n"
                    "Each finished stage is kept in --out/.stages until the end: a rerun after a failure reuses them.",
        formatter_class=Formatter,
    )
    p.add_argument("--out", default="galleries/mnist_exercise", help="output folder")
    add_data_dir(p)
    p.add_argument("--checkpoint", type=_checkpoint_arg, default=None, help="MNIST CNN checkpoint (.safetensors); default: the committed one")
    p.add_argument("--retrain", action="store_true", help="train a fresh CNN from --seed (about a minute) instead of loading the checkpoint")
    p.add_argument("--quick", action="store_true", help="fewer images and optimisation steps (for tests; numbers are real but noisier)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--classes", type=text_arg(100), default=None, help="digits whose circuit to trace, e.g. '0,7' (default 0,7; quick: 0)")
    p.add_argument("--channels-per-class", type=int_arg(1, 16), default=3, help="pool2 channels named per digit and ablated")
    p.add_argument("--random-draws", type=int_arg(1, 1000), default=None, help="random channel sets per control (default 20, quick 6)")
    p.add_argument("--threads", type=int_arg(1, 1024), default=None, help="torch CPU threads for the run (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or stage messages")
    p.set_defaults(func=_run)


def _parse_classes(spec: str | None) -> tuple[int, ...] | None:
    if spec is None:
        return None
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError("--classes is empty; give comma-separated digits like '0,7'")
    bad = [s for s in items if s not in "0123456789" or len(s) != 1]
    if bad:
        raise UsageError(f"--classes: {bad[0]!r} is not a digit; give comma-separated digits 0..9 like '0,7'")
    out = tuple(int(s) for s in items)
    if len(set(out)) != len(out):
        raise UsageError(f"--classes {spec!r} repeats a digit")
    return out


def _check_checkpoint(path) -> None:
    """Load the checkpoint once (a fraction of a second) so a corrupt or foreign file is refused before the run."""
    from ..zoo import load_model

    model = load_model(path)
    if tuple(getattr(model, "input_shape", ())) != (1, 28, 28):
        raise UsageError(f"--checkpoint {path}: not a MNIST CNN checkpoint (input {tuple(getattr(model, 'input_shape', ()))})")


def _run(args: argparse.Namespace) -> int:
    from .mnist import ExerciseConfig, run_mnist_exercise

    classes = _parse_classes(args.classes)
    if args.checkpoint and args.retrain:
        raise UsageError("--checkpoint and --retrain exclude each other: --retrain trains a fresh CNN instead of loading one")
    if args.checkpoint:
        _check_checkpoint(args.checkpoint)
    check_output_dir(args.out, "--out")
    cfg = ExerciseConfig(out=args.out, data_dir=args.data_dir, checkpoint=args.checkpoint, retrain=args.retrain, quick=args.quick,
                         seed=args.seed, progress=not args.no_progress, circuit_classes=classes,
                         k_channels=args.channels_per_class, random_draws=args.random_draws, threads=args.threads)
    res = run_mnist_exercise(cfg)
    s = res["ablations"]["summary"]
    print(f"accuracy {100 * res['evaluation']['accuracy']:.2f}%; named channels beat random ones for "
          f"{s['classes_named_beats_random_margin']}/10 digits; wrote {args.out}/report.html, report.md, results.json "
          f"({res['timing_seconds']['total']:.0f} s)")
    return 0
