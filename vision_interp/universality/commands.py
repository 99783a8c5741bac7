"""CLI: ``universality`` (train seed models, match units across them, write the report)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import Formatter, add_data_dir

    p = sub.add_parser("universality", help="match units and dictionary features across MNIST CNNs that differ only in seed",
                       description="Train (or reuse) N MNIST CNNs that differ only in their seed plus a shuffled-label "
                                   "control, match every unit of every layer across them by activation correlation on "
                                   "test images (best match + optimal one-to-one matching), for neurons and for "
                                   "dictionary features, against a shuffled-label and a random-weights control, and "
                                   "write a report page.",
                       formatter_class=Formatter)
    add_data_dir(p)
    p.add_argument("--models-dir", default=None, help="folder of the seed models (default: models/universality)")
    p.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds (N >= 2)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs per model (when training)")
    p.add_argument("--train", action="store_true", help="train missing seed models (existing ones with the same config are kept)")
    p.add_argument("--layers", default="conv1,conv2", help="layers whose neurons are matched")
    p.add_argument("--feature-layer", default="conv2", help="train/load a dictionary on this layer of every model ('' = none)")
    p.add_argument("--images", type=int, default=2000, help="first N MNIST test images")
    p.add_argument("--threshold", type=float, default=0.5, help="correlation counted as a match")
    p.add_argument("--groups", type=int, default=4, help="matched unit groups pictured per layer")
    p.add_argument("--steps", type=int, default=64, help="feature-visualization steps for the pictures (0 = no pictures)")
    p.add_argument("--out", default="galleries/universality")
    p.set_defaults(func=_universality)


def _universality(args: argparse.Namespace) -> int:
    from .seeds import SEED_MODELS_DIR
    from .run import run_universality
    from .study import UniversalityConfig

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if len(seeds) < 2:
        raise ValueError(f"--seeds needs at least two seeds, got {seeds}")
    config = UniversalityConfig(layers=tuple(s.strip() for s in args.layers.split(",") if s.strip()),
                                feature_layer=args.feature_layer or None, images=args.images, threshold=args.threshold)
    config.validate()
    if args.groups < 0 or args.steps < 0:
        raise ValueError("--groups and --steps must be >= 0")
    index = run_universality(seeds, args.models_dir or SEED_MODELS_DIR, args.out, config, data_dir=args.data_dir,
                             train=args.train, epochs=args.epochs, groups=args.groups, steps=args.steps)
    print(f"wrote {index}")
    return 0
