"""CLI: ``train-mnist``, ``models``, ``layers``."""

from __future__ import annotations

import argparse

from .spec import model_spec
from ..cli_common import SEED, Formatter, add_data_dir, add_model, check_output_dir, float_arg, int_arg

MNIST_TRAIN_IMAGES = 60000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-mnist", help="train the small MNIST CNN and write checkpoint + model card",
                       description="Train the MNIST CNN deterministically from a seed and write "
                                   "mnist_cnn.safetensors, mnist_cnn.json and mnist_cnn.md (model card). The training state is "
                                   "saved after every epoch (OUT/mnist_cnn.partial/); rerunning the same command resumes.",
                       formatter_class=Formatter)
    add_data_dir(p)
    p.add_argument("--out", default="models", help="output folder (checked before training)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--epochs", type=int_arg(1, 1000), default=6)
    p.add_argument("--batch-size", type=int_arg(1, MNIST_TRAIN_IMAGES), default=128)
    p.add_argument("--lr", type=float_arg(0, 10, lo_open=True), default=3e-3)
    p.add_argument("--c1", type=int_arg(1, 1024), default=8, help="conv1 channels")
    p.add_argument("--c2", type=int_arg(1, 1024), default=16, help="conv2 channels")
    p.add_argument("--limit", type=int_arg(1, MNIST_TRAIN_IMAGES), default=None, help="train on the first N images only")
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

    check_output_dir(args.out, "--out")  # before a minute of training, not after
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
    from ..capture import LayerNotReachedError
    from ..cli_common import load_model_from_args
    from ..units import layer_names, layer_shape

    model = load_model_from_args(args)
    aliases = model_spec(model).layer_aliases
    for name in layer_names(model, include_aliases=False):
        try:
            shape = "x".join(map(str, layer_shape(model, name)))
        except (LayerNotReachedError, ValueError):
            shape = "(not on the forward path)"
        alias = [a for a, t in aliases.items() if t == name]
        print(f"{name:40s} {shape:16s} {'= ' + ', '.join(alias) if alias else ''}")
    return 0
