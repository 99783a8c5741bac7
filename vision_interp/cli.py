"""``vision-interp``: a thin command line over the Python API.

Each subpackage contributes its subcommands through a ``commands.py`` module with a
``register(subparsers)`` function; the handlers only parse arguments and call the API.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

COMMAND_MODULES = (
    "vision_interp.zoo.commands",
    "vision_interp.featvis.commands",
    "vision_interp.attribution.commands",
    "vision_interp.circuits.commands",
    "vision_interp.gallery.commands",
    "vision_interp.exercises.commands",
    "vision_interp.transformer.commands",
)

EPILOG = """\
Units are written layer:channel[@y,x], e.g. mixed4a:476 or conv2:5@3,4.
Data (MNIST, GPT-2 tokenizer, InceptionV1 labels) is read from --data-dir, else $VISION_INTERP_DATA,
else ~/.cache/vision_interp/data (downloaded there with checksums when missing).
Run 'vision-interp COMMAND --help' for each command's options.
"""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the hand-written line breaks of descriptions."""


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=os.environ.get("VISION_INTERP_DATA"),
                   help="data directory with mnist/raw, gpt2_tokenizer, inceptionv1 (env: VISION_INTERP_DATA)")


def add_model(p: argparse.ArgumentParser, default: str | None = "mnist_cnn") -> None:
    p.add_argument("--model", default=default, required=default is None,
                   help="zoo name (mnist_cnn, inceptionv1) or a checkpoint path")
    p.add_argument("--random-weights", action="store_true",
                   help="use randomly initialised weights instead of the trained/pretrained ones")


def load_model_from_args(args: argparse.Namespace):
    """Build the model named by --model / --random-weights (shared by every vision command)."""
    from .zoo import load_model

    kwargs = {}
    if args.model == "inceptionv1" and getattr(args, "data_dir", None):
        kwargs["data_dir"] = args.data_dir
    return load_model(args.model, pretrained=not args.random_weights, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vision-interp",
        description="Mechanistic interpretability for vision models (and induction heads in GPT-2).",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; finished files are kept and a rerun resumes where possible", file=sys.stderr)
        return 130
    except (ValueError, KeyError, IndexError, FileNotFoundError, ConnectionError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"vision-interp {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
