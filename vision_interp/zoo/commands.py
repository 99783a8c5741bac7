"""CLI: ``train-mnist``, ``models``, ``layers``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import Formatter, add_data_dir, add_model

    p = sub.add_parser("train-mnist", help="train the small MNIST CNN and write checkpoint + model card",
                       description="Train the MNIST CNN deterministically from a seed and write "
                                   "mnist_cnn.safetensors, mnist_cnn.json and mnist_cnn.md (model card).",
                       formatter_class=Formatter)
    add_data_dir(p)
    p.add_argument("--out", default="models", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--c1", type=int, default=8, help="conv1 channels")
    p.add_argument("--c2", type=int, default=16, help="conv2 channels")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)

    p = sub.add_parser("models", help="list the model zoo", formatter_class=Formatter)
    p.set_defaults(func=_models)

    p = sub.add_parser("layers", help="list a model's layer names with output shapes",
                       description="Every name accepted wherever a layer or unit is asked for, with its output shape.",
                       formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    p.set_defaults(func=_layers)


def _train(args: argparse.Namespace) -> int:
    from .mnist_cnn import TrainConfig, train_and_save

    if args.epochs <= 0 or args.batch_size <= 0:
        raise ValueError("--epochs and --batch-size must be positive")
    cfg = TrainConfig(seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, c1=args.c1, c2=args.c2, limit=args.limit)
    card = train_and_save(args.data_dir, args.out, cfg, progress=not args.no_progress)
    print(f"test accuracy {card['test_accuracy']:.4f} after {card['training_seconds']} s; wrote {args.out}/mnist_cnn.safetensors, .json, .md")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .registry import list_models

    for name, desc in list_models().items():
        print(f"{name:14s} {desc}")
    return 0


def _layers(args: argparse.Namespace) -> int:
    from ..cli import load_model_from_args
    from ..units import layer_names, layer_shape
    from ..capture import LayerNotReachedError

    model = load_model_from_args(args)
    aliases = getattr(model, "layer_aliases", {})
    for name in layer_names(model, include_aliases=False):
        try:
            shape = "x".join(map(str, layer_shape(model, name)))
        except (LayerNotReachedError, ValueError):
            shape = "(not on the forward path)"
        alias = [a for a, t in aliases.items() if t == name]
        print(f"{name:40s} {shape:16s} {'= ' + ', '.join(alias) if alias else ''}")
    return 0
