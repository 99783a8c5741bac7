"""CLI: ``attribute``, ``attribute-layer``, ``attribution-check``."""

from __future__ import annotations

import argparse
import ast
import math
import re
from typing import Any, Callable

from ..zoo.spec import model_spec
from ..cli_common import (Formatter, UsageError, add_data_dir, add_model, check_output_file, existing_file, int_arg,
                          text_arg)

MAX_IMAGES = 10_000  # images per run (the MNIST test set's size); more is refused before anything loads

EXAMPLES = """\
examples:
  vision-interp attribute --index 0..7 --method integrated_gradients --out ig.png
  vision-interp attribute --index 0..7 --target conv2:5 --method saliency --out conv2_5.png
  vision-interp attribute --model inceptionv1 --image dog.jpg --target 208 --method gradcam --out cam.png
  vision-interp attribute --index 0..999 --class-means --method saliency --out class_means.png
  vision-interp attribute-layer --index 3 --layer pool2 --top 5 --out blocks.png
  vision-interp attribution-check --index 0..31 --check completeness --n-steps 64
"""


def _add_inputs(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_data_dir(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--index", type=text_arg(200), default=None,
                     help="MNIST test-set images: '5', '0..15' (inclusive) or '1,4,9' (default: 0)")
    src.add_argument("--image", type=existing_file, action="append", default=None,
                     help="image file (repeatable); converted to the model's channels and resized to its input size")
    p.add_argument("--target", type=text_arg(300), default=None,
                   help="class index or label, 'label' (the true MNIST labels), or a unit 'layer:channel[@y,x]' "
                        "(a channel without position = its spatial mean); default: the predicted class")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-steps", type=int_arg(1, 10_000), default=None, help="integration steps (integrated gradients, conductance)")
    p.add_argument("--batch-size", type=int_arg(1, 4096), default=32, help="images per batch (bounds memory)")
    p.add_argument("--option", type=text_arg(1000), action="append", default=[], metavar="KEY=VALUE",
                   help="extra Captum option, VALUE as a Python literal (e.g. stdevs=0.2, "
                        "sliding_window_shapes=(1,6,6)); repeatable")


def register(sub: argparse._SubParsersAction) -> None:
    from .layer import LAYER_METHODS
    from .methods import METHODS

    methods = "\n".join(f"  {k:22s} {v}" for k, v in METHODS.items())
    p = sub.add_parser("attribute", help="attribute a class or hidden unit to the input pixels (heatmaps)",
                       description="Attribution maps with Captum behind one interface.\n\nmethods:\n" + methods,
                       epilog=EXAMPLES, formatter_class=Formatter)
    _add_inputs(p)
    p.add_argument("--method", type=text_arg(100), default="integrated_gradients", help="attribution method (see above)")
    p.add_argument("--layer", type=text_arg(300), default=None, help="conv layer for gradcam / guided_gradcam (default: the last spatial one)")
    p.add_argument("--class-means", action="store_true",
                   help="instead of per-image maps, save the mean attribution of each class (towards the true label)")
    p.add_argument("--out", default="attribution.png", help="output PNG")
    p.add_argument("--scale", type=int_arg(1, 64), default=None, help="enlarge the picture (default: small images x4)")
    _add_options(p)
    p.set_defaults(func=_attribute)

    layer_methods = "\n".join(f"  {k:22s} {v}" for k, v in LAYER_METHODS.items())
    p = sub.add_parser("attribute-layer", help="which channels / positions of a hidden layer drive a class or a later unit",
                       description="Building-blocks attribution: the contribution of every channel and position of "
                                   "--layer to --target, with the top channels and their share.\n\nmethods:\n" + layer_methods,
                       epilog=EXAMPLES, formatter_class=Formatter)
    _add_inputs(p)
    p.add_argument("--layer", type=text_arg(300), required=True, help="hidden layer to attribute to (e.g. pool2, mixed4a)")
    p.add_argument("--method", type=text_arg(100), default="integrated_gradients")
    p.add_argument("--top", type=int_arg(1, 10_000), default=5, help="number of top channels to list")
    p.add_argument("--out", default=None, help="optional PNG: the layer's spatial map over each input")
    _add_options(p)
    p.set_defaults(func=_attribute_layer)

    p = sub.add_parser("attribution-check", help="sanity checks: IG completeness and model randomization",
                       description="completeness: sum of IG attributions vs f(x) - f(baseline).\n"
                                   "randomization: Spearman rank correlation of attributions between the trained model "
                                   "and copies randomized layer by layer from the top (Adebayo et al. 2018).",
                       epilog=EXAMPLES, formatter_class=Formatter)
    _add_inputs(p)
    p.add_argument("--check", choices=("completeness", "randomization", "both"), default="both")
    p.add_argument("--method", type=text_arg(100), default="saliency", help="method for the randomization test")
    _add_options(p)
    p.set_defaults(func=_check)


_INDEX_RE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$|^\s*\d+(\s*,\s*\d+)*\s*,?\s*$")


def _parse_index(text: str | None, n_max: int = MAX_IMAGES) -> list[int]:
    """'N', 'A..B' (inclusive) or 'A,B,C' -> indices, bounded before any list is built."""
    text = (text or "0").strip()
    m = _INDEX_RE.match(text)
    if not m:
        raise UsageError(f"--index {text!r}: expected 'N', 'A..B' or 'A,B,C' with non-negative integers")
    if m.group(1) is not None:
        a, b = int(m.group(1)), int(m.group(2))
        if b < a:
            raise UsageError(f"--index {text!r} selects no images (the end {b} is before the start {a})")
        if b - a + 1 > MAX_IMAGES:
            raise UsageError(f"--index {text!r} selects {b - a + 1} images; at most {MAX_IMAGES} per run")
        if b >= n_max:
            raise UsageError(f"--index {b} is out of range: the MNIST test set has indices 0..{n_max - 1}")
        return list(range(a, b + 1))
    idx = [int(t) for t in text.split(",") if t.strip()]
    if len(idx) > MAX_IMAGES:
        raise UsageError(f"--index lists {len(idx)} images; at most {MAX_IMAGES} per run")
    bad = [i for i in idx if not 0 <= i < n_max]
    if bad:
        raise UsageError(f"--index {bad[0]} is out of range: the MNIST test set has indices 0..{n_max - 1}")
    return idx


def _read_images(args: argparse.Namespace) -> list:
    """Decode every --image before the model loads (size limit, truncation, format)."""
    from ..images import read_image

    if args.image and len(args.image) > MAX_IMAGES:
        raise UsageError(f"--image given {len(args.image)} times; at most {MAX_IMAGES} per run")
    return [read_image(path, what="--image") for path in (args.image or [])]


def _load_inputs(args: argparse.Namespace, model, pictures: list) -> tuple[Any, Any, list[str]]:
    """Images (N, C, H, W), their labels (or None) and names for printing."""
    import torch

    from ..images import image_tensor

    shape = tuple(model_spec(model).input_shape or (3, 224, 224))
    if pictures:
        return torch.stack([image_tensor(im, shape) for im in pictures]), None, [str(p) for p in args.image]
    if shape != (1, 28, 28):
        raise UsageError(f"--index reads the MNIST test set, which does not fit {args.model} (input {shape}); give --image")
    from ..data import load_mnist

    test = load_mnist("test", args.data_dir)
    idx = _parse_index(args.index, len(test))
    sel = torch.tensor(idx)
    return test.images[sel], test.labels[sel], [f"test[{i}]" for i in idx]


def _target(args: argparse.Namespace, labels) -> Any:
    from ._model import parse_target_string

    if args.target is None:
        return None
    if args.target.strip().lower() == "label":
        if labels is None:
            raise UsageError("--target label needs dataset images (--index), not --image")
        return labels
    return parse_target_string(args.target)


# ------------------------------------------------------------------ --option KEY=VALUE

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _int_in(lo: int, hi: int) -> tuple[Callable[[Any], bool], str]:
    what = f"a positive integer (at most {hi})" if lo == 1 else f"an integer from {lo} to {hi}"
    return (lambda v: _is_int(v) and lo <= v <= hi), what


def _positive_ints(v: Any) -> bool:
    items = v if isinstance(v, tuple) else (v,)
    return bool(items) and all(_is_int(i) and 1 <= i <= 100_000 for i in items)


def _positive_numbers(v: Any) -> bool:
    items = v if isinstance(v, tuple) else (v,)
    return bool(items) and all(_is_number(i) and i > 0 for i in items)


def _one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


_BOOL = (lambda v: isinstance(v, bool)), "True or False"
# What each Captum option accepts from the command line; keys not listed go to the API, which refuses unknown ones.
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n_steps": _int_in(1, 10_000),
    "internal_batch_size": _int_in(1, 100_000),
    "method": _one_of("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"),
    "baselines": (_is_number, "a finite number (the constant baseline image value)"),
    "stdevs": (_positive_numbers, "a finite number > 0, or a tuple of them"),
    "nt_samples": _int_in(1, 10_000),
    "nt_samples_batch_size": _int_in(1, 10_000),
    "nt_type": _one_of("smoothgrad", "smoothgrad_sq", "vargrad"),
    "draw_baseline_from_distrib": _BOOL,
    "base": ((lambda v: isinstance(v, str)), "a method name, e.g. saliency"),
    "multiply_by_inputs": _BOOL,
    "eps": ((lambda v: _is_number(v) and v > 0), "a finite number > 0"),
    "patch_size": _int_in(1, 10_000),
    "sliding_window_shapes": (_positive_ints, "a tuple of positive integers (C, H, W), e.g. (1,6,6)"),
    "strides": (_positive_ints, "a positive integer or a tuple of them (C, H, W)"),
    "perturbations_per_eval": _int_in(1, 10_000),
    "show_progress": _BOOL,
    "interpolate_mode": _one_of("nearest", "bilinear", "bicubic", "area"),
    "relu_attributions": _BOOL,
    "attr_dim_summation": _BOOL,
    "abs": _BOOL,
    "layer": ((lambda v: isinstance(v, str)), "a layer name"),
}
# Options the command line sets itself, or that change what Captum returns.
REFUSED_OPTIONS = {
    "target": "use --target",
    "inputs": "use --index or --image",
    "additional_forward_args": "not available from the command line",
    "feature_mask": "not available from the command line; use patch_size",
    "return_convergence_delta": "use `vision-interp attribution-check --check completeness`",
}


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value.strip()


def _options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """--option KEY=VALUE pairs, each value checked against what the Captum option accepts."""
    opts: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--option {item!r}: expected KEY=VALUE, e.g. stdevs=0.2")
        if key in REFUSED_OPTIONS:
            raise UsageError(f"--option {key}: not accepted here ({REFUSED_OPTIONS[key]})")
        if key in opts:
            raise UsageError(f"--option {key} is given twice")
        v = _literal(value)
        if isinstance(v, list):
            v = tuple(v)
        if key in OPTION_RULES:
            ok, valid = OPTION_RULES[key]
            if not ok(v):
                raise UsageError(f"--option {key}={value.strip()}: {key} must be {valid}")
        opts[key] = v
    if args.n_steps is not None:
        if "n_steps" in opts:
            raise UsageError("n_steps is given both as --n-steps and as --option n_steps=...; give one")
        opts["n_steps"] = args.n_steps
    if getattr(args, "layer", None) and method in ("gradcam", "guided_gradcam"):
        opts["layer"] = args.layer
    return opts


def _check_windows(opts: dict[str, Any], x) -> None:
    """Occlusion windows and strides must fit the input (Captum fails with an assertion otherwise)."""
    shape = tuple(x.shape[1:])
    for key in ("sliding_window_shapes", "strides"):
        v = opts.get(key)
        if isinstance(v, tuple):
            if len(v) != len(shape):
                raise UsageError(f"--option {key}={v}: needs {len(shape)} numbers (C, H, W) for inputs of shape {shape}")
            if any(a > b for a, b in zip(v, shape)):
                raise UsageError(f"--option {key}={v}: larger than the input {shape}; each entry must be <= the input's")
    patch = opts.get("patch_size")
    if patch is not None and patch > min(shape[-2:]):
        raise UsageError(f"--option patch_size={patch}: larger than the input ({shape[-2]} x {shape[-1]})")


def _check_common(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Checks shared by the three commands, before the model loads; returns the Captum options."""
    opts = _options(args, method)
    if args.image is None:
        _parse_index(args.index)  # syntax and size; the range is checked against the data set later
    return opts


def _attribute(args: argparse.Namespace) -> int:
    from ..cli_common import load_model_from_args
    from .. import images as vimg
    from .methods import attribute_dataset, canonical_method, class_mean_attributions
    from .pictures import class_mean_grid, save_attribution_png

    method = canonical_method(args.method)
    if args.layer and method not in ("gradcam", "guided_gradcam"):
        raise UsageError(f"--layer applies to gradcam and guided_gradcam, not {method}; see attribute-layer for layer attribution")
    if args.class_means and args.image:
        raise UsageError("--class-means needs dataset images with labels (--index A..B), not --image")
    opts = _check_common(args, method)
    out = check_output_file(args.out, "--out", (".png",))
    pictures = _read_images(args)
    model = load_model_from_args(args)
    x, labels, names = _load_inputs(args, model, pictures)
    _check_windows(opts, x)
    if args.class_means:
        means, counts = class_mean_attributions(model, x, labels, method, n_classes=10, batch_size=args.batch_size,
                                                progress=not args.no_progress, **opts)
        path = vimg.save_png(class_mean_grid(means), out, scale=args.scale or 4)
        print("images per class: " + ", ".join(f"{k}: {int(c)}" for k, c in enumerate(counts)))
        print(f"wrote {path}")
        return 0
    target = _target(args, labels)
    attr = attribute_dataset(model, x, target, method, batch_size=args.batch_size, progress=not args.no_progress, **opts)
    import torch

    with torch.no_grad():
        pred = model(x).argmax(1)
    class_names = model_spec(model).class_names
    for i, name in enumerate(names):
        p = int(pred[i])
        pname = class_names[p] if class_names and p < len(class_names) else str(p)
        lab = f" label {int(labels[i])}" if labels is not None else ""
        print(f"{name}:{lab} predicted {pname}; sum of attributions {float(attr[i].sum()):+.4g}, max |a| {float(attr[i].abs().max()):.4g}")
    path = save_attribution_png(out, x, attr, scale=args.scale)
    print(f"wrote {path} ({method}; target {args.target or 'predicted class'}; columns: input | attribution | overlay)")
    return 0


def _attribute_layer(args: argparse.Namespace) -> int:
    from ..cli_common import load_model_from_args
    from .. import images as vimg
    from .layer import layer_attribution
    from .pictures import layer_map_overlay

    opts = _check_common(args, "")
    out = check_output_file(args.out, "--out", (".png",)) if args.out else None
    pictures = _read_images(args)
    model = load_model_from_args(args)
    x, labels, names = _load_inputs(args, model, pictures)
    target = _target(args, labels)
    la = layer_attribution(model, x, args.layer, target, args.method, **opts)
    for i, name in enumerate(names):
        print(f"{name}: " + la.describe(args.top, index=i))
    if out:
        pics = layer_map_overlay(x, la.spatial)
        small = x.shape[-2] < 112
        path = vimg.save_png(vimg.make_grid(pics, ncols=min(len(pics), 8)), out, scale=4 if small else 1)
        print(f"wrote {path} (where in each image {la.layer} contributes: red raises, blue lowers the target)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..cli_common import load_model_from_args
    from .methods import canonical_method
    from .sanity import ig_completeness, randomization_test

    method = canonical_method(args.method)
    opts = _check_common(args, method)
    if args.n_steps is not None and method != "integrated_gradients":
        opts.pop("n_steps")  # --n-steps then only sets the completeness check's steps
    pictures = _read_images(args)
    model = load_model_from_args(args)
    x, labels, _ = _load_inputs(args, model, pictures)
    _check_windows(opts, x)
    target = _target(args, labels)
    if args.check in ("completeness", "both"):
        n_steps = args.n_steps if args.n_steps is not None else 50
        res = ig_completeness(model, x, target, n_steps=n_steps, internal_batch_size=args.batch_size * 8)
        print(res)
    if args.check in ("randomization", "both"):
        print(randomization_test(model, x, target, method, **opts))
    return 0
