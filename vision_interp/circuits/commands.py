"""CLI: ``weights`` (kernel grids + top connections), ``circuit`` (diagram), ``groups`` (NMF)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..zoo.spec import model_spec
from ..cli_common import (SEED, Formatter, UsageError, add_data_dir, add_model, check_output_dir, existing_file, int_arg,
                          unit_arg)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights", help="weights between two layers: kernel grid PNG and top connections",
        description="Direct weights (one weighted layer between the two layers) or expanded weights (the "
                    "linearized path: ReLU -> identity, max pool -> average pool, LRN skipped) between --from "
                    "and --to, drawn red (+) / blue (-). With --unit, only that unit's kernels and its strongest "
                    "excitatory and inhibitory connections.\n\n"
                    "example: vision-interp weights --model mnist_cnn --from conv1 --to conv2 --unit conv2:3 --out out/",
        formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    p.add_argument("--from", dest="src", type=unit_arg, required=True, help="source layer (e.g. conv1, mixed3a)")
    p.add_argument("--to", dest="dst", type=unit_arg, required=True, help="destination layer (e.g. conv2, mixed3b)")
    p.add_argument("--unit", type=unit_arg, default=None, help="a unit of --to (its inputs) or of --from (its outputs), e.g. conv2:3")
    p.add_argument("--kind", choices=("auto", "direct", "expanded"), default="auto",
                   help="auto: direct when one weighted layer separates the layers, else expanded")
    p.add_argument("-k", "--top", type=int_arg(1, 10_000), default=8, help="connections to list per sign")
    p.add_argument("--max-units", type=int_arg(1, 4096), default=64, help="rows drawn in the full grid (no --unit)")
    p.add_argument("--scale", type=int_arg(1, 64), default=6, help="pixels per kernel tap")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_weights)

    p = sub.add_parser(
        "circuit", help="circuit diagram (PNG + HTML) of one unit and its strongest inputs",
        description="The unit's strongest excitatory and inhibitory inputs, each shown by its feature "
                    "visualization above the expanded weight kernel that connects it to the unit.\n\n"
                    "example: vision-interp circuit --model mnist_cnn --unit conv2:3 --out out/",
        formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    p.add_argument("--unit", type=unit_arg, required=True, help="the unit, e.g. conv2:3 or mixed3b:17")
    p.add_argument("--from", dest="src", type=unit_arg, default=None, help="input layer (default: the previous layer of units)")
    p.add_argument("-k", "--top", type=int_arg(1, 1000), default=4, help="inputs per sign")
    p.add_argument("--thumbnails", choices=("featvis", "dataset", "none"), default="featvis",
                   help="pictures of the units: feature visualizations, top MNIST test patches, or none")
    p.add_argument("--steps", type=int_arg(1, 100_000), default=None, help="feature visualization steps (default: the model's)")
    p.add_argument("--size", type=int_arg(8, 1024), default=96, help="tile size in pixels")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_circuit)

    p = sub.add_parser(
        "groups", help="neuron groups: NMF of a layer's activations on one image",
        description="Factorize the layer's (post-ReLU) activations on one input into a few non-negative groups "
                    "and draw each group's map over the input, plus the channel loadings.\n\n"
                    "example: vision-interp groups --model mnist_cnn --layer relu2 --index 0 --groups 4 --out out/",
        formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    p.add_argument("--layer", type=unit_arg, required=True, help="a post-ReLU spatial layer, e.g. relu2, mixed4a")
    p.add_argument("--image", type=existing_file, default=None, help="an image file (resized to the model's input size)")
    p.add_argument("--index", type=int_arg(0, 9999), default=0, help="MNIST test image index (when no --image)")
    p.add_argument("--groups", type=int_arg(1, 256), default=4, help="number of NMF groups")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_groups)


def _print_ranked(title: str, ranked: dict) -> None:
    print(title)
    for kind in ("excitatory", "inhibitory"):
        items = ", ".join(f"{u} {s:+.4f}" for u, s in ranked[kind]) or "(none)"
        print(f"  {kind:11s} {items}")


def _weights(args: argparse.Namespace) -> int:
    from ..cli_common import load_model_from_args
    from ..io import save_json, save_state_dict
    from ..units import parse_unit, resolve_layer, resolve_unit
    from .diagram import save_kernel_grid
    from .graph import CircuitError
    from .weights import direct_weights, expanded_weights, rank_connections

    check_output_dir(args.out, "--out")
    model = load_model_from_args(args)
    src_path, dst_path = resolve_layer(model, args.src), resolve_layer(model, args.dst)
    unit = None
    if args.unit:
        unit = resolve_unit(model, args.unit, require_channel=True)
        if unit.layer not in (src_path, dst_path):
            raise ValueError(f"--unit {args.unit} is in layer {parse_unit(args.unit).layer!r}, which is neither --from {args.src} nor --to {args.dst}")
    kind = args.kind
    if kind in ("auto", "direct"):
        try:
            w = direct_weights(model, args.src, args.dst)
            kind = "direct"
        except CircuitError:
            if kind == "direct":
                raise
            kind = "expanded"
    if kind == "expanded":
        if unit is not None and unit.layer == dst_path:
            w = expanded_weights(model, args.src, args.dst, dst_channels=[unit.channel])
        elif unit is not None:
            w = expanded_weights(model, args.src, args.dst, src_channels=[unit.channel])
        else:
            w = expanded_weights(model, args.src, args.dst, progress=True)
    elif unit is not None:
        w = w[[unit.channel]] if unit.layer == dst_path else w[:, [unit.channel]]
    out = Path(args.out)
    stem = f"{kind}_{args.src}_to_{args.dst}" + (f"_{args.unit.replace(':', '_')}" if unit else "")
    print(f"{kind} weights {args.src} -> {args.dst}: shape {tuple(w.shape)} (C_to, C_from, kh, kw)")
    report: dict = {"from": args.src, "to": args.dst, "kind": kind, "shape": list(w.shape)}
    if unit is not None and unit.layer == dst_path:
        ranked = rank_connections(w[0], args.src, args.top)
        _print_ranked(f"strongest inputs of {args.unit}:", ranked)
        report["connections"] = {args.unit: ranked}
        grid = w
    elif unit is not None:
        ranked = rank_connections(w[:, 0], args.dst, args.top)
        _print_ranked(f"strongest outputs of {args.unit}:", ranked)
        report["connections"] = {args.unit: ranked}
        grid = w.transpose(0, 1)
    else:
        report["connections"] = {}
        for c in range(w.shape[0]):
            ranked = rank_connections(w[c], args.src, args.top)
            report["connections"][f"{args.dst}:{c}"] = ranked
            if c < args.max_units:
                ex = ranked["excitatory"][0] if ranked["excitatory"] else ("-", 0.0)
                inh = ranked["inhibitory"][0] if ranked["inhibitory"] else ("-", 0.0)
                print(f"  {args.dst}:{c:<5d} strongest + {ex[0]} {ex[1]:+.4f}   strongest - {inh[0]} {inh[1]:+.4f}")
        grid = w[: args.max_units]
    png = save_kernel_grid(grid, out / f"{stem}.png", scale=args.scale)
    tensors = save_state_dict(out / f"{stem}.safetensors", {"weights": w.detach().float().cpu().contiguous()},
                              metadata={"from": args.src, "to": args.dst, "kind": kind})
    js = save_json(out / f"{stem}.json", report)
    print(f"wrote {png}, {tensors}, {js}")
    return 0


def _circuit(args: argparse.Namespace) -> int:
    from ..cli_common import load_model_from_args
    from .diagram import circuit_diagram

    check_output_dir(args.out, "--out")
    model = load_model_from_args(args)
    dataset = None
    thumbs: object = None
    if args.thumbnails == "none":
        thumbs = False
    elif args.thumbnails == "dataset":
        if tuple(model_spec(model).input_shape or ()) != (1, 28, 28):
            raise ValueError("--thumbnails dataset uses the MNIST test set and needs an MNIST model; use featvis or none")
        from ..data import load_mnist

        dataset = load_mnist("test", args.data_dir, limit=2000).images
        from .diagram import _dataset_patches

        thumbs = _dataset_patches(model, dataset)
    fv = {"steps": args.steps} if args.steps else {}
    paths = circuit_diagram(model, args.unit, args.out, args.top, layer=args.src, thumbnails=thumbs, dataset=dataset,
                            featvis_kwargs=fv, size=args.size, progress=not args.no_progress)
    from ..io import load_json

    meta = load_json(paths["json"])
    _print_ranked(f"strongest inputs of {meta['unit']} from {meta['layer']}:", meta)
    print(f"wrote {paths['png']} and {paths['html']}")
    return 0


def _groups(args: argparse.Namespace) -> int:
    from ..cli_common import load_model_from_args
    from .groups import layer_neuron_groups, save_neuron_groups

    if args.image and args.index != 0:
        raise UsageError("give --image or --index, not both")
    check_output_dir(args.out, "--out")
    picture = None
    if args.image:
        from ..images import read_image

        picture = read_image(args.image, what="--image")  # size limit, truncation, format: before the model loads
    model = load_model_from_args(args)
    shape = tuple(model_spec(model).input_shape or ())
    if picture is not None:
        from ..images import image_tensor

        x = image_tensor(picture, shape if shape else (len(picture.getbands()), picture.height, picture.width))
    else:
        if shape != (1, 28, 28):
            raise UsageError("without --image, the MNIST test set is used, which needs an MNIST model; pass --image PATH")
        from ..data import load_mnist

        test = load_mnist("test", args.data_dir)
        if not 0 <= args.index < len(test.images):
            raise UsageError(f"--index {args.index} out of range: the MNIST test set has {len(test.images)} images (0..{len(test.images) - 1})")
        x = test.images[args.index]
    res = layer_neuron_groups(model, x[None], args.layer, args.groups, seed=args.seed)
    out = Path(args.out)
    png = save_neuron_groups(res, out / f"groups_{args.layer}_{args.groups}.png", image=x)
    print(f"{args.groups} groups of {args.layer}: relative reconstruction error {res.error:.4f}")
    for g in range(args.groups):
        chans = ", ".join(f"{c} ({v:.2f})" for c, v in res.top_channels(g, 5))
        print(f"  group {g}: top channels {chans}")
    print(f"wrote {png}")
    return 0
