"""CLI: ``attribute``, ``attribute-layer``, ``attribution-check``."""

from __future__ import annotations

import argparse
import ast
from typing import Any

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
    from ..cli import add_data_dir, add_model

    add_model(p)
    add_data_dir(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--index", default=None,
                     help="MNIST test-set images: '5', '0..15' (inclusive) or '1,4,9' (default: 0)")
    src.add_argument("--image", action="append", default=None,
                     help="image file (repeatable); converted to the model's channels and resized to its input size")
    p.add_argument("--target", default=None,
                   help="class index or label, 'label' (the true MNIST labels), or a unit 'layer:channel[@y,x]' "
                        "(a channel without position = its spatial mean); default: the predicted class")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-steps", type=int, default=None, help="integration steps (integrated gradients, conductance)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (bounds memory)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Captum option, VALUE as a Python literal (e.g. stdevs=0.2, "
                        "sliding_window_shapes=(1,6,6)); repeatable")


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import Formatter
    from .layer import LAYER_METHODS
    from .methods import METHODS

    methods = "\n".join(f"  {k:22s} {v}" for k, v in METHODS.items())
    p = sub.add_parser("attribute", help="attribute a class or hidden unit to the input pixels (heatmaps)",
                       description="Attribution maps with Captum behind one interface.\n\nmethods:\n" + methods,
                       epilog=EXAMPLES, formatter_class=Formatter)
    _add_inputs(p)
    p.add_argument("--method", default="integrated_gradients", help="attribution method (see above)")
    p.add_argument("--layer", default=None, help="conv layer for gradcam / guided_gradcam (default: the last spatial one)")
    p.add_argument("--class-means", action="store_true",
                   help="instead of per-image maps, save the mean attribution of each class (towards the true label)")
    p.add_argument("--out", default="attribution.png", help="output PNG")
    p.add_argument("--scale", type=int, default=None, help="enlarge the picture (default: small images x4)")
    _add_options(p)
    p.set_defaults(func=_attribute)

    layer_methods = "\n".join(f"  {k:22s} {v}" for k, v in LAYER_METHODS.items())
    p = sub.add_parser("attribute-layer", help="which channels / positions of a hidden layer drive a class or a later unit",
                       description="Building-blocks attribution: the contribution of every channel and position of "
                                   "--layer to --target, with the top channels and their share.\n\nmethods:\n" + layer_methods,
                       epilog=EXAMPLES, formatter_class=Formatter)
    _add_inputs(p)
    p.add_argument("--layer", required=True, help="hidden layer to attribute to (e.g. pool2, mixed4a)")
    p.add_argument("--method", default="integrated_gradients")
    p.add_argument("--top", type=int, default=5, help="number of top channels to list")
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
    p.add_argument("--method", default="saliency", help="method for the randomization test")
    _add_options(p)
    p.set_defaults(func=_check)


def _parse_index(text: str | None, n_max: int) -> list[int]:
    text = (text or "0").strip()
    try:
        if ".." in text:
            a, b = (int(t) for t in text.split(".."))
            idx = list(range(a, b + 1))
        else:
            idx = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--index {text!r}: expected 'N', 'A..B' or 'A,B,C' with integers") from None
    if not idx:
        raise ValueError(f"--index {text!r} selects no images")
    bad = [i for i in idx if not 0 <= i < n_max]
    if bad:
        raise ValueError(f"--index {bad[0]} is out of range: the MNIST test set has indices 0..{n_max - 1}")
    return idx


def _load_inputs(args: argparse.Namespace, model) -> tuple[Any, Any, list[str]]:
    """Images (N, C, H, W), their labels (or None) and names for printing."""
    import numpy as np
    import torch
    from PIL import Image

    shape = tuple(getattr(model, "input_shape", (3, 224, 224)))
    if args.image:
        imgs, names = [], []
        for path in args.image:
            try:
                with Image.open(path) as im:
                    im = im.convert("L" if shape[0] == 1 else "RGB").resize((shape[2], shape[1]), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except FileNotFoundError:
                raise FileNotFoundError(f"--image {path}: no such file") from None
            except OSError as e:
                raise ValueError(f"--image {path}: not a readable image ({e})") from None
            t = torch.from_numpy(arr)
            imgs.append(t[None] if t.ndim == 2 else t.permute(2, 0, 1))
            names.append(str(path))
        return torch.stack(imgs), None, names
    if shape != (1, 28, 28):
        raise ValueError(f"--index reads the MNIST test set, which does not fit {args.model} (input {shape}); give --image")
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
            raise ValueError("--target label needs dataset images (--index), not --image")
        return labels
    return parse_target_string(args.target)


def _options(args: argparse.Namespace, method: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            opts[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            opts[key.strip()] = value
    if args.n_steps is not None:
        opts["n_steps"] = args.n_steps
    if getattr(args, "layer", None) and method in ("gradcam", "guided_gradcam"):
        opts["layer"] = args.layer
    return opts


def _attribute(args: argparse.Namespace) -> int:
    from ..cli import load_model_from_args
    from .methods import attribute_dataset, canonical_method, class_mean_attributions
    from .pictures import class_mean_grid, save_attribution_png
    from .. import images as vimg

    method = canonical_method(args.method)
    if args.layer and method not in ("gradcam", "guided_gradcam"):
        raise ValueError(f"--layer applies to gradcam and guided_gradcam, not {method}; see attribute-layer for layer attribution")
    model = load_model_from_args(args)
    x, labels, names = _load_inputs(args, model)
    opts = _options(args, method)
    if args.class_means:
        if labels is None:
            raise ValueError("--class-means needs dataset images with labels (--index A..B)")
        means, counts = class_mean_attributions(model, x, labels, method, n_classes=10, batch_size=args.batch_size,
                                                progress=not args.no_progress, **opts)
        path = vimg.save_png(class_mean_grid(means), args.out, scale=args.scale or 4)
        print("images per class: " + ", ".join(f"{k}: {int(c)}" for k, c in enumerate(counts)))
        print(f"wrote {path}")
        return 0
    target = _target(args, labels)
    attr = attribute_dataset(model, x, target, method, batch_size=args.batch_size, progress=not args.no_progress, **opts)
    import torch

    with torch.no_grad():
        pred = model(x).argmax(1)
    class_names = getattr(model, "class_names", None)
    for i, name in enumerate(names):
        p = int(pred[i])
        pname = class_names[p] if class_names and p < len(class_names) else str(p)
        lab = f" label {int(labels[i])}" if labels is not None else ""
        print(f"{name}:{lab} predicted {pname}; sum of attributions {float(attr[i].sum()):+.4g}, max |a| {float(attr[i].abs().max()):.4g}")
    path = save_attribution_png(args.out, x, attr, scale=args.scale)
    print(f"wrote {path} ({method}; target {args.target or 'predicted class'}; columns: input | attribution | overlay)")
    return 0


def _attribute_layer(args: argparse.Namespace) -> int:
    from ..cli import load_model_from_args
    from .layer import layer_attribution
    from .pictures import layer_map_overlay
    from .. import images as vimg

    model = load_model_from_args(args)
    x, labels, names = _load_inputs(args, model)
    opts = _options(args, "")
    target = _target(args, labels)
    la = layer_attribution(model, x, args.layer, target, args.method, **opts)
    for i, name in enumerate(names):
        print(f"{name}: " + la.describe(args.top, index=i))
    if args.out:
        pics = layer_map_overlay(x, la.spatial)
        small = x.shape[-2] < 112
        path = vimg.save_png(vimg.make_grid(pics, ncols=min(len(pics), 8)), args.out, scale=4 if small else 1)
        print(f"wrote {path} (where in each image {la.layer} contributes: red raises, blue lowers the target)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..cli import load_model_from_args
    from .sanity import ig_completeness, randomization_test

    model = load_model_from_args(args)
    x, labels, _ = _load_inputs(args, model)
    target = _target(args, labels)
    if args.check in ("completeness", "both"):
        res = ig_completeness(model, x, target, n_steps=args.n_steps or 50, internal_batch_size=args.batch_size * 8)
        print(res)
    if args.check in ("randomization", "both"):
        from .methods import canonical_method

        opts = _options(args, args.method)
        if args.n_steps is not None and canonical_method(args.method) != "integrated_gradients":
            opts.pop("n_steps")
        print(randomization_test(model, x, target, args.method, **opts))
    return 0
