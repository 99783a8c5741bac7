"""``vision-interp``: a thin dispatcher over the Python API.

Each subpackage contributes its subcommands through a ``commands.py`` module with a
``register(subparsers)`` function; shared helpers live in :mod:`vision_interp.cli_common`
(commands never import this module, so there is no import cycle).

Exit codes: 0 success, 1 a failure during the work, 2 bad input (usage), 130 interrupted.
No traceback reaches the user unless ``--debug`` is given (before or after the command name).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Sequence

from . import __version__
from .cli_common import Formatter, Parser, UsageError, forget_created_dirs, remove_created_dirs

COMMAND_MODULES = (
    "vision_interp.zoo.commands",
    "vision_interp.featvis.commands",
    "vision_interp.attribution.commands",
    "vision_interp.circuits.commands",
    "vision_interp.gallery.commands",
    "vision_interp.exercises.commands",
    "vision_interp.transformer.commands",
    "vision_interp.features.commands",
    "vision_interp.features.tc_commands",
    "vision_interp.features.serve_commands",
    "vision_interp.universality.commands",
    "vision_interp.doctor",
)

EPILOG = """\
Units are written layer:channel[@y,x], e.g. mixed4a:476 or conv2:5@3,4.
Data (MNIST, GPT-2 tokenizer, InceptionV1 labels) is read from --data-dir, else $VISION_INTERP_DATA,
else ~/.cache/vision_interp/data (downloaded there with checksums when missing).
Run 'vision-interp COMMAND --help' for each command's options.
Exit codes: 0 done, 1 failed while working, 2 bad arguments or input files, 130 interrupted.
"""

DEBUG_HELP = "on an unexpected error, show the full Python traceback (also accepted after the command name)"

# Errors that mean "the input was wrong" (exit 2); anything else raised during the work exits 1.
USAGE_ERRORS = (UsageError, ValueError, LookupError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vision-interp",
        description="Mechanistic interpretability for vision models (and induction heads in GPT-2).",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():  # --debug after the command name too, without overriding one given before
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _one_line(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str):
        text = e.args[0]
    else:
        text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= 600 else line[:597] + "..."


def report_error(command: str, e: BaseException, debug: bool) -> int:
    """Print ``e`` as one line (plus a hint for unexpected errors); return the exit code."""
    prog = f"vision-interp {command}"
    if debug:
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    if isinstance(e, USAGE_ERRORS):
        print(f"{prog}: error: {_one_line(e) or type(e).__name__}", file=sys.stderr)
        return 2
    what = "out of memory" if isinstance(e, MemoryError) else (_one_line(e) or "(no message)")
    print(f"{prog}: failed: {type(e).__name__}: {what}", file=sys.stderr)
    if not debug:
        print("  (this is unexpected; rerun with --debug to see the traceback, and report it if it looks like a bug)",
              file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or an argument error (2), already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    forget_created_dirs()
    rc = 1
    try:
        rc = int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; finished files are kept and a rerun resumes where possible", file=sys.stderr)
        rc = 130
    except Exception as e:  # noqa: BLE001 - the one place that turns every error into a message
        rc = report_error(args.command, e, debug)
    finally:
        if rc != 0:
            remove_created_dirs()  # only empty folders this run would have created
        forget_created_dirs()
    return rc


if __name__ == "__main__":
    sys.exit(main())
