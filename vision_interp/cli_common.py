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
    "model_label",
    "input_shape_arg",
    "model_kwargs_arg",
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


MODEL_HELP = ("zoo name (mnist_cnn, inceptionv1), a zoo checkpoint file, or your own model: package.module:factory "
              "(importable, e.g. via PYTHONPATH) or path/to/file.py:factory, where the factory returns the nn.Module")


def _model_arg(text: str) -> str:
    """argparse ``type=``: a zoo name, an existing checkpoint file, or a factory written MODULE:FACTORY / FILE.py:FACTORY."""
    from .zoo.registry import MODELS, factory_syntax_problem, is_factory_spec

    text = text_arg(1000)(text)
    if text in MODELS:
        return text
    p = Path(text).expanduser()
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{p} is a folder; give a zoo name ({', '.join(MODELS)}), a checkpoint file "
                                         "or package.module:factory")
    if p.exists():
        check_input_file(p, None, parse_time=True)
        return text
    if ":" in text:
        problem = factory_syntax_problem(text)
        if problem:
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}")
        if is_factory_spec(text) and text.rpartition(":")[0].endswith(".py"):
            check_input_file(text.rpartition(":")[0], None, parse_time=True)  # the model file: no such file, folder, empty
        return text
    from .units import close_names

    near = close_names(text, MODELS)
    raise argparse.ArgumentTypeError(
        f"unknown model {text!r}: not a zoo name ({', '.join(MODELS)}), no such file, and not a factory "
        "(package.module:factory or path/to/file.py:factory)." + (f" Did you mean {', '.join(near)}?" if near else ""))


def input_shape_arg(text: str) -> tuple[int, int, int]:
    """argparse ``type=``: ``C,H,W`` (three positive integers), e.g. 3,32,32."""
    from .zoo.registry import MAX_INPUT_CHANNELS, MAX_INPUT_SIDE

    text = text_arg(60)(text)
    parts = [t.strip() for t in text.replace("x", ",").split(",")]
    if len(parts) != 3 or not all(_INT_RE.match(t) and int(t) >= 1 for t in parts):
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive integers, e.g. 3,32,32), got {text!r}")
    c, h, w = (int(t) for t in parts)
    if c > MAX_INPUT_CHANNELS or h > MAX_INPUT_SIDE or w > MAX_INPUT_SIDE:
        raise argparse.ArgumentTypeError(f"{text!r}: channels go up to {MAX_INPUT_CHANNELS} and sides up to {MAX_INPUT_SIDE} pixels")
    return (c, h, w)


def model_kwargs_arg(text: str) -> dict:
    """argparse ``type=``: a JSON object of keyword arguments for the factory, e.g. '{"width": 16}'."""
    import json

    text = text_arg(20_000)(text)
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"is not valid JSON ({e}); write an object, e.g. '{{\"width\": 16}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object of keyword arguments (e.g. '{{\"width\": 16}}'), "
                                         f"got a JSON {type(value).__name__}")
    bad = [k for k in value if not k.isidentifier()]
    if bad:
        raise argparse.ArgumentTypeError(f"key {bad[0]!r} is not a Python argument name")
    return value


def add_model(p: argparse.ArgumentParser, default: str | None = "mnist_cnn") -> None:
    """--model (zoo name, checkpoint or factory), --model-kwargs, --weights, --input-shape, --random-weights."""
    p.add_argument("--model", type=_model_arg, default=default, required=default is None, help=MODEL_HELP)
    p.add_argument("--model-kwargs", type=model_kwargs_arg, default=None, metavar="JSON",
                   help="with --model MODULE:FACTORY: keyword arguments for the factory, a JSON object")
    p.add_argument("--weights", type=existing_file, default=None, metavar="FILE",
                   help="a state dict (.safetensors, or a torch file read with weights_only=True) loaded into the model: "
                        "your factory's model (every tensor must fit) or the zoo model's checkpoint (e.g. inception5h.pth)")
    p.add_argument("--input-shape", type=input_shape_arg, default=None, metavar="C,H,W",
                   help="the input a model that declares none takes (spec.input_shape / an input_shape attribute on the "
                        "model or its module), e.g. 3,32,32")
    p.add_argument("--random-weights", action="store_true",
                   help="zoo models: use randomly initialised weights instead of the trained/pretrained ones")


_LOAD_FLAGS = {"name_or_path": "--model", "weights": "--weights", "model_kwargs": "--model-kwargs",
               "input_shape": "--input-shape", "pretrained": "--random-weights"}


def load_model_from_args(args: argparse.Namespace):
    """Build the model named by --model (with --model-kwargs, --weights, --input-shape, --random-weights).

    Shared by every vision command. Every failure is one line naming the flag (exit code 2); a model that
    still declares no input shape is refused with what to add.
    """
    from .io import CorruptFileError
    from .zoo import load_model
    from .zoo.registry import ModelLoadError, is_factory_spec
    from .zoo.spec import model_spec

    text = str(args.model)
    factory = is_factory_spec(text) and not Path(text).expanduser().is_file()
    weights = getattr(args, "weights", None)
    model_kwargs = getattr(args, "model_kwargs", None)
    if weights is not None and args.random_weights:
        raise UsageError("--weights and --random-weights contradict each other; give one")
    if model_kwargs is not None and not factory:
        raise UsageError(f"--model-kwargs applies to --model package.module:factory; {text} is not a factory")
    if factory and args.random_weights:
        raise UsageError(f"--random-weights applies to zoo models; {text} builds its own weights "
                         "(load others with --weights FILE)")
    kwargs = {}
    if args.model == "inceptionv1" and getattr(args, "data_dir", None):
        kwargs["data_dir"] = args.data_dir
    try:
        model = load_model(args.model, pretrained=not args.random_weights, weights=weights, model_kwargs=model_kwargs,
                           input_shape=getattr(args, "input_shape", None), **kwargs)
    except ModelLoadError as e:
        flag = _LOAD_FLAGS.get(e.arg, "--model")
        raise UsageError(f"{flag} {text if flag == '--model' else _flag_value(args, flag)}: {e.detail}") from None
    except CorruptFileError as e:  # a checkpoint given as --model: its message starts with the file
        raise UsageError(f"--model {e}" if str(e).startswith(text) else f"--model {text}: {e}") from None
    if not model_spec(model).input_shape:
        raise UsageError(f"--model {text}: the model declares no input shape (spec.input_shape, or an input_shape "
                         "attribute on the model or its module); add --input-shape C,H,W, e.g. --input-shape 3,32,32")
    return model


def _flag_value(args: argparse.Namespace, flag: str) -> str:
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        import json

        return json.dumps(value)
    return str(value)


def model_label(args: argparse.Namespace, model) -> str:
    """How results name the model: the name it declares (``spec.name`` / ``model_name``), else what --model said."""
    from .zoo.spec import model_spec

    name = model_spec(model).name
    return name if name and name != type(model).__name__ else str(args.model)


MNIST_SHAPE = (1, 28, 28)


def model_input_shape(model) -> tuple[int, ...]:
    from .zoo.spec import model_spec

    return tuple(model_spec(model).input_shape or ())


def add_dataset(p: argparse.ArgumentParser, what: str) -> None:
    """--dataset DIR: the images a command trains or measures on, for a model that does not take MNIST digits."""
    p.add_argument("--dataset", type=existing_dir, default=None, metavar="DIR",
                   help=f"a folder of images (searched recursively; resized and centre-cropped to the model's input) to {what}; "
                        "the first images train, the last fifth (at most --test-images) is held out, and the model's own "
                        "predictions stand in for labels. Default: MNIST, for models that take 1x28x28 digits")


def folder_split(args: argparse.Namespace, model, flag: str = "--dataset"):
    """``(train_images, test_images, test_labels, description)`` from the --dataset folder at the model's input.

    The held-out part is the last fifth (at least one image, at most --test-images); the labels are the
    model's own predictions (a folder has no class indices), so "accuracy" figures read as agreement with
    the unreplaced model.
    """
    import torch

    from .data.folder import ImageFolder

    shape = model_input_shape(model)
    limit = getattr(args, "train_images", 10_000) + getattr(args, "test_images", 10_000)
    ds = ImageFolder(Path(args.dataset), tuple(shape), limit)
    n = len(ds)
    if n < 2:
        raise UsageError(f"{flag} {args.dataset}: {n} image; at least 2 are needed (one to train on, one held out)")
    n_test = min(getattr(args, "test_images", 10_000), max(1, n // 5))
    n_train = min(getattr(args, "train_images", 10_000), n - n_test)
    images = torch.stack([ds[i] for i in range(n_train + n_test)])
    train, test = images[:n_train], images[n_train:]
    from .trace import model_device_dtype

    device, dtype = model_device_dtype(model)
    with torch.no_grad():
        out = model(test.to(device=device, dtype=dtype))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise UsageError(f"{flag}: the model's output is {type(out).__name__}"
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}, not (N, classes); the held-out "
                         "figures compare class predictions")
    labels = out.argmax(1).cpu()
    desc = (f"{Path(args.dataset).name}: {n_train} images to train, {n_test} held out; labels = the model's own predictions")
    return train, test, labels, desc


def require_mnist_data(args: argparse.Namespace, model, what: str) -> None:
    """Refuse MNIST defaults for a model that does not take 1x28x28 digits, saying what to add."""
    shape = model_input_shape(model)
    if shape != MNIST_SHAPE and getattr(args, "dataset", None) is None:
        raise UsageError(f"--model {args.model} takes {'x'.join(map(str, shape))} inputs, and {what} uses MNIST digits "
                         "by default; add --dataset DIR (a folder of images)")


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
