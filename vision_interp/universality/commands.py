"""CLI: ``universality`` (train seed models, match units across them, write the report)."""

from __future__ import annotations

import argparse

from ..cli_common import Formatter, UsageError, add_data_dir, check_output_dir, existing_dir, float_arg, int_arg, names_arg, text_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("universality", help="match units and dictionary features across MNIST CNNs that differ only in seed",
                       description="Train (or reuse) N MNIST CNNs that differ only in their seed plus a shuffled-label "
                                   "control, match every unit of every layer across them by activation correlation on "
                                   "test images (positions whose receptive field holds ink, the amount of ink "
                                   "partialled out; all positions reported for comparison) (best match + optimal "
                                   "one-to-one matching), for neurons and for "
                                   "dictionary features, against a shuffled-label and a random-weights control, and "
                                   "write a report page.",
                       formatter_class=Formatter)
    add_data_dir(p)
    p.add_argument("--models-dir", type=existing_dir, default=None,
                   help="folder of the seed models (default: the package's models/universality; --train writes to "
                        "the user's models folder, which is the clone's models/ in a checkout)")
    p.add_argument("--seeds", type=text_arg(200), default="0,1,2,3", help="comma-separated seeds (N >= 2)")
    p.add_argument("--epochs", type=int_arg(1, 100), default=2, help="training epochs per model (when training)")
    p.add_argument("--train", action="store_true", help="train missing seed models (existing ones with the same config are kept)")
    p.add_argument("--layers", type=names_arg, default="conv1,conv2", help="layers whose neurons are matched")
    p.add_argument("--feature-layer", type=text_arg(200), default="conv2", help="train/load a dictionary on this layer of every model ('' = none)")
    p.add_argument("--images", type=int_arg(2, 10_000), default=2000, help="first N MNIST test images")
    p.add_argument("--threshold", type=float_arg(-1, 1), default=0.5, help="correlation counted as a match")
    p.add_argument("--groups", type=int_arg(0, 64), default=4, help="matched unit groups pictured per layer")
    p.add_argument("--steps", type=int_arg(0, 100_000), default=64, help="feature-visualization steps for the pictures (0 = no pictures)")
    p.add_argument("--out", type=text_arg(1000), default="galleries/universality")
    p.set_defaults(func=_universality)


def _universality(args: argparse.Namespace) -> int:
    from .seeds import seed_models_dir
    from .run import run_universality
    from .study import UniversalityConfig

    parts = [s.strip() for s in args.seeds.split(",") if s.strip()]
    if not all(p.isascii() and p.isdigit() and int(p) < 2**32 for p in parts):
        raise UsageError(f"--seeds {args.seeds!r}: write comma-separated integers from 0 to {2**32 - 1}, e.g. 0,1,2,3")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) < 2:
        raise UsageError(f"--seeds {args.seeds!r}: needs at least two different seeds")
    check_output_dir(args.out, "--out")
    config = UniversalityConfig(layers=tuple(s.strip() for s in args.layers.split(",") if s.strip()),
                                feature_layer=args.feature_layer or None, images=args.images, threshold=args.threshold)
    config.validate()
    models_dir = args.models_dir or seed_models_dir(seeds, train=args.train)
    index = run_universality(seeds, models_dir, args.out, config, data_dir=args.data_dir, train=args.train,
                             epochs=args.epochs, groups=args.groups, steps=args.steps)
    print(f"wrote {index}")
    return 0
