"""What every ``vision-interp`` command shares: the parser class, typed argument validators,
output-path checks and model loading.

``cli.py`` (the dispatcher) and the subpackages' ``commands.py`` modules import from here and
never from each other. The rule for commands: every argument is checked before any work starts,
and an error names the argument, what was wrong, and what is valid.

Validators for ``add_argument(type=...)`` (argparse prefixes the message with the argument name):

* :func:`int_arg` ``(lo, hi)`` - ASCII integer within [lo, hi];
* :func:`float_arg` ``(lo, hi, lo_open=, hi_open=)`` - finite float within the range;
* :func:`text_arg` ``(max_len)`` - printable ASCII text (unit names, channel lists, ...);
* :func:`existing_file`, :func:`existing_dir` - input paths.

Checks to call in a handler before work (they raise :class:`UsageError`, exit code 2):
:func:`check_output_file`, :func:`check_output_dir`, :func:`check_input_file`, :func:`check_batch_pixels`.
Folders that a failed run created on the way to its outputs are removed again by the dispatcher
(only when empty; :func:`remove_created_dirs`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

__all__ = [
    "UsageError",
    "Parser",
    "Formatter",
    "int_arg",
    "float_arg",
    "text_arg",
    "existing_file",
    "existing_dir",
    "SEED",
    "MAX_SEED",
    "add_data_dir",
    "add_model",
    "check_output_file",
    "check_output_dir",
    "check_input_file",
    "remove_created_dirs",
    "check_batch_pixels",
    "load_model_from_args",
    "unit_arg",
    "names_arg",
]

MAX_SEED = 2**32 - 1
MAX_BATCH_PIXELS = 2**26  # images x height x width per optimisation batch (64 images of 1024 px): a few GB with grads
MAX_CHANNEL = 999_999  # bound for channel numbers in lists and ranges (real layers have a few thousand)
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


class UsageError(ValueError):
    """Bad command-line input found before any work: the dispatcher prints it and exits with 2."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the hand-written line breaks of descriptions."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (what was wrong) plus where to look for what is valid."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n  (see '{self.prog} --help' for the valid arguments)\n")
        raise SystemExit(2)


def _range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"from {lo} to {hi}" if not (lo_open or hi_open) else \
            f"{'>' if lo_open else '>='} {lo} and {'<' if hi_open else '<='} {hi}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return "any value"


def int_arg(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse ``type=``: an integer written in ASCII digits, within [lo, hi]."""

    if lo == 1:
        want = "a positive integer" + (f" (at most {hi})" if hi is not None else "")
    elif lo == 0:
        want = "a non-negative integer" + (f" (at most {hi})" if hi is not None else "")
    else:
        want = f"an integer {_range_text(lo, hi)}"

    def parse(text: str) -> int:
        if not _INT_RE.match(text.strip()):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        v = int(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {v}")
        return v

    parse.__name__ = "integer"
    return parse


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a finite number (no nan/inf) within the range (open ends with ``lo_open``/``hi_open``)."""

    def parse(text: str) -> float:
        want = f"a finite number {_range_text(lo, hi, lo_open, hi_open)}"
        if not _FLOAT_RE.match(text.strip()):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        v = float(text)
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r} (too large)")
        bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
        bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
        if bad_lo or bad_hi:
            raise argparse.ArgumentTypeError(f"must be {want}, got {v:g}")
        return v

    parse.__name__ = "number"
    return parse


def text_arg(max_len: int = 500) -> Callable[[str], str]:
    """argparse ``type=``: printable ASCII (unit and layer names, lists); refuses look-alike digits and control characters."""

    def parse(text: str) -> str:
        if len(text) > max_len:
            raise argparse.ArgumentTypeError(f"is {len(text)} characters long; at most {max_len} are accepted")
        bad = [c for c in text if not (c.isascii() and c.isprintable())]
        if bad:
            raise argparse.ArgumentTypeError(
                f"contains the character {bad[0]!r} (U+{ord(bad[0]):04X}); only printable ASCII is valid "
                "(digits 0-9, letters, punctuation)")
        return text

    parse.__name__ = "text"
    return parse


SEED = int_arg(0, MAX_SEED)


def existing_file(text: str) -> Path:
    """argparse ``type=``: a readable, non-empty regular file."""
    return check_input_file(text, None, parse_time=True)


def existing_dir(text: str) -> Path:
    """argparse ``type=``: an existing directory."""
    p = Path(text).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"no such directory: {p}")
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{p} is a file, not a directory")
    return p


def check_input_file(path: str | os.PathLike, flag: str | None, *, parse_time: bool = False) -> Path:
    """A readable, non-empty regular file, else :class:`UsageError` naming ``flag``."""
    p = Path(path).expanduser()
    problem = None
    if not p.exists():
        problem = f"no such file: {p}"
    elif p.is_dir():
        problem = f"{p} is a directory; give a file"
    elif not p.is_file():
        problem = f"{p} is not a regular file"
    else:
        try:
            with open(p, "rb") as f:
                empty = not f.read(1)
        except OSError as e:
            problem = f"cannot read {p} ({e.strerror})"
        else:
            if empty:
                problem = f"{p} is empty (0 bytes)"
    if problem:
        if parse_time:
            raise argparse.ArgumentTypeError(problem)
        raise UsageError(f"{flag}: {problem}" if flag else problem)
    return p


# ------------------------------------------------------------------ output paths

_created_candidates: list[Path] = []


def _missing_ancestors(p: Path) -> tuple[Path, list[Path]]:
    """The nearest existing ancestor of ``p`` (or ``p``) and the missing folders below it, outermost first."""
    missing: list[Path] = []
    cur = p
    while not cur.exists() and not cur.is_symlink():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    return cur, missing[::-1]


def _probe_writable(folder: Path, flag: str) -> None:
    """Create and delete a temporary file in ``folder``: the only test that also catches read-only mounts."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".vision_interp_probe."):
            pass
    except OSError as e:
        raise UsageError(f"{flag}: cannot write in {folder} ({e.strerror or e}); choose a writable location") from None


def _check_path_text(path: str | os.PathLike, flag: str) -> Path:
    """Refuse path text the file system cannot take: NUL bytes, or a name longer than the limit (255 bytes)."""
    text = os.fspath(path)
    if "\x00" in text:
        raise UsageError(f"{flag}: the path contains a NUL character, which no file name may hold")
    p = Path(text).expanduser()
    for part in p.parts:
        if len(os.fsencode(part)) > 255:
            raise UsageError(f"{flag}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; "
                             "file and folder names may be at most 255 bytes")
    return p


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output folder that is a file, lies under a file, or is not writable - before any work.

    Nothing is created; the folders that will be created are remembered so a failed run removes them.
    """
    p = _check_path_text(path, flag)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag}: {p} is a file; give a folder (it is created if missing)")
    base, missing = _missing_ancestors(p)
    if not base.is_dir():
        raise UsageError(f"{flag}: {p} cannot be created because {base} is a file, not a folder")
    _probe_writable(base, flag)
    _created_candidates.extend(missing)
    return p


def check_output_file(path: str | os.PathLike, flag: str = "--out", suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse an output file that is a folder, lies under a file, or cannot be written - before any work."""
    p = _check_path_text(path, flag)
    if not p.name or p.is_dir() or str(path).endswith(("/", os.sep)):
        raise UsageError(f"{flag}: {p} is a folder; give a file name" + (f" ending in {suffixes[0]}" if suffixes else ""))
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{flag}: {p} should end in {' or '.join(suffixes)}")
    if p.exists() and not p.is_file():
        raise UsageError(f"{flag}: {p} exists and is not a regular file")
    check_output_dir(p.parent, flag)
    return p


def check_batch_pixels(images: int | None, size: int | None, flags: str) -> None:
    """Refuse a batch whose pixel count alone would exhaust memory (images x size x size > MAX_BATCH_PIXELS)."""
    if images is not None and size is not None and images * size * size > MAX_BATCH_PIXELS:
        raise UsageError(f"{flags}: {images} images of {size} x {size} px is {images * size * size:,} pixels per batch; "
                         f"at most {MAX_BATCH_PIXELS:,} (e.g. 64 images of 1024 px); lower one of them")


def remove_created_dirs() -> list[Path]:
    """Remove (deepest first) the folders recorded by the output checks that are still empty; forget the rest."""
    removed = []
    for d in sorted(set(_created_candidates), key=lambda q: len(q.parts), reverse=True):
        try:
            d.rmdir()  # only succeeds on an empty folder: results already written are kept
            removed.append(d)
        except OSError:
            pass
    _created_candidates.clear()
    return removed


def forget_created_dirs() -> None:
    _created_candidates.clear()


# ------------------------------------------------------------------ shared arguments


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=existing_dir, default=None,
                   help="data directory with mnist/raw, gpt2_tokenizer, inceptionv1 "
                        "(default: $VISION_INTERP_DATA, else ~/.cache/vision_interp/data)")


def _model_arg(text: str) -> str:
    from .zoo.registry import MODELS

    text = text_arg(1000)(text)
    if text in MODELS:
        return text
    p = Path(text).expanduser()
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{p} is a folder; give a zoo name ({', '.join(MODELS)}) or a checkpoint file")
    if p.exists():
        check_input_file(p, None, parse_time=True)
        return text
    from .units import close_names

    near = close_names(text, MODELS)
    raise argparse.ArgumentTypeError(
        f"unknown model {text!r}: not a zoo name ({', '.join(MODELS)}) and no such file."
        + (f" Did you mean {', '.join(near)}?" if near else ""))


def add_model(p: argparse.ArgumentParser, default: str | None = "mnist_cnn") -> None:
    p.add_argument("--model", type=_model_arg, default=default, required=default is None,
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


def unit_arg(text: str) -> str:
    """argparse ``type=``: a unit or layer address in the grammar of :mod:`vision_interp.units` (syntax only)."""
    from .units import parse_unit

    text = text_arg(300)(text)
    try:
        parse_unit(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def names_arg(text: str) -> str:
    """argparse ``type=``: a comma-separated list of layer names / unit ranges (printable ASCII, no empty items)."""
    text = text_arg(5000)(text)
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("is empty; give one or more comma-separated names")
    for number in re.findall(r"[0-9]+", text):
        if int(number) > MAX_CHANNEL:  # far beyond any real layer; refused before a range is expanded
            raise argparse.ArgumentTypeError(f"contains the number {number[:20]}{'...' if len(number) > 20 else ''}, "
                                             f"larger than any layer's channel count (channel numbers go up to {MAX_CHANNEL})")
    return text
