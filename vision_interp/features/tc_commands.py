"""CLI: ``transcoder`` (train / measure / gallery of conv-block transcoders) and ``graph`` (one attribution graph)."""

from __future__ import annotations

import argparse

from ..cli_common import (MNIST_SHAPE, SEED, Formatter, UsageError, add_data_dir, add_dataset, add_model, check_output_dir,
                          float_arg, int_arg, load_model_from_args, model_input_shape, model_label, names_arg, text_arg)

DEFAULT_TRANSCODERS = ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc")


def register(sub: argparse._SubParsersAction) -> None:
    _register_transcoder(sub)
    _register_graph(sub)


def _register_transcoder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcoder", help="train conv-block transcoders (features LAYER/tc:F), measure them, build their galleries",
                       description="Train a TopK transcoder per conv block (block input -> block output) on MNIST training "
                                   "images, measure them on held-out test images (FVU, L0, dead features, accuracy with each "
                                   "block and with all blocks replaced) and save NAME.safetensors + NAME.json + NAME.md under "
                                   "models/features/. Default blocks: the MNIST CNN's input -> pool1 and pool1 -> pool2. A block "
                                   "already saved with the same configuration is reused (resume).\n\n"
                                   "Your own model: --model package.module:factory --block input pool1 my_b1 --block pool1 pool2 my_b2 "
                                   "--dataset DIR (images at the model's input; see 'vision-interp layers --model ...' for names)",
                       formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    p.add_argument("--block", nargs=3, action="append", metavar=("IN", "OUT", "NAME"), type=names_arg, default=None,
                   help="a block: input layer ('input' for the model input), output layer, file name (repeatable, in order)")
    p.add_argument("--features", type=int_arg(1, 65_536), default=None, help="features per block (default: 64 / 128 for the MNIST blocks)")
    p.add_argument("--k", type=int_arg(1, 65_536), default=None, help="active features per position (default: 4 / 8)")
    p.add_argument("--skip", action="store_true", help="add a linear skip term (input -> output, the encoder's geometry)")
    p.add_argument("--steps", type=int_arg(1, 10_000_000), default=None, help="training steps per block (default 2000)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--train-images", type=int_arg(1, 60_000), default=10000)
    p.add_argument("--test-images", type=int_arg(1, 10_000), default=10000)
    p.add_argument("--show", action="store_true", help="print the saved cards instead of training")
    p.add_argument("--gallery", type=text_arg(1000), default=None, metavar="DIR",
                   help="also write a feature gallery per transcoder (DIR/<block>_tc/), one attribution graph per digit "
                        "(DIR/graphs/) and DIR/index.html")
    p.add_argument("--gallery-steps", type=int_arg(1, 100_000), default=64, help="feature-visualization steps per unit in the gallery")
    p.add_argument("--analysis", type=text_arg(1000), default=None, metavar="DIR",
                   help="also write DIR/analysis.json + DIR/README.md: graph sizes, error share, interventions vs graph "
                        "predictions, global-circuit sparsity (blocks must form a chain)")
    p.add_argument("--analysis-images", type=int_arg(1, 10_000), default=50, help="test images (graphs) for --analysis")
    add_dataset(p, "train and measure the transcoders on")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_transcoder)


def _blocks(args: argparse.Namespace) -> list:
    from dataclasses import replace

    from .tc_build import MNIST_BLOCKS
    from .transcoder import TranscoderConfig

    if args.block:
        base = [(a, b, n, TranscoderConfig(n_features=args.features or 64, k=args.k or 4)) for a, b, n in args.block]
    else:
        if args.model != "mnist_cnn":
            raise UsageError(f"--model {args.model}: give its blocks with --block IN OUT NAME, in order ('input' for the model "
                             "input), e.g. --block input pool1 my_b1 --block pool1 pool2 my_b2 (layer names: 'vision-interp layers "
                             f"--model {args.model}'); the default blocks are the MNIST CNN's")
        base = list(MNIST_BLOCKS)
    out = []
    for a, b, n, cfg in base:
        cfg = replace(cfg, seed=args.seed, skip=args.skip or cfg.skip,
                      **{k: v for k, v in (("n_features", args.features), ("k", args.k), ("steps", args.steps)) if v is not None})
        if cfg.k > cfg.n_features:
            raise UsageError(f"--k {cfg.k}: at most --features ({cfg.n_features}) features can be active per position")
        out.append((a, b, n, cfg))
    return out


def _transcoder(args: argparse.Namespace) -> int:
    from .tc_build import build_transcoders
    from .transcoders import load_transcoder

    blocks = _blocks(args)
    if args.analysis:
        for (_, out_a, _, _), (in_b, _, name, _) in zip(blocks, blocks[1:]):
            if in_b != out_a:
                raise UsageError(f"--analysis needs chained blocks: {name} starts at {in_b!r}, the block before ends at {out_a!r}")
    for flag in ("gallery", "analysis"):
        if getattr(args, flag):
            check_output_dir(getattr(args, flag), f"--{flag}")
    model = load_model_from_args(args)
    mnist = model_input_shape(model) == MNIST_SHAPE
    for flag in ("gallery", "analysis"):
        if getattr(args, flag) and not (mnist and args.dataset is None):
            raise UsageError(f"--{flag} draws one graph per MNIST digit and needs an MNIST model and data; for --model {args.model} "
                             "build a graph per image with 'vision-interp graph --image FILE --transcoders ...' and a gallery of "
                             "the features with 'vision-interp gallery'")
    if args.show:
        tcs = [load_transcoder(n) for _, _, n, _ in blocks]
    elif args.dataset is not None:
        tcs = _build_on_folder(args, model, blocks)
    else:
        from ..cli_common import require_mnist_data

        require_mnist_data(args, model, "the transcoder command")
        tcs = build_transcoders(model, blocks, data_dir=args.data_dir, train_images=args.train_images,
                                test_images=args.test_images, model_name=model_label(args, model), progress=not args.no_progress)
    for tc in tcs:
        _print_card(tc.card)
    if args.gallery:
        from .tc_gallery import publish_transcoder_site

        import os

        analysis = os.path.relpath(os.path.join(args.analysis, "README.md"), args.gallery) if args.analysis else None
        path = publish_transcoder_site(model, tcs, args.gallery, names=[n for _, _, n, _ in blocks], steps=args.gallery_steps,
                                       data_dir=args.data_dir, progress=not args.no_progress, analysis=analysis)
        print(f"wrote {path} (a gallery per transcoder, graphs per digit)")
    if args.analysis:
        from .tc_report import write_analysis

        print(f"wrote {write_analysis(model, tcs, args.analysis, n_images=args.analysis_images, data_dir=args.data_dir)}")
    return 0


def _build_on_folder(args: argparse.Namespace, model, blocks: list) -> list:
    """``build_transcoders`` on the images of --dataset (train on the first, measure on the held-out rest);
    a block saved with the same configuration, data and weights is reused."""
    from pathlib import Path

    from ..cli_common import folder_split
    from .build import _weights_hash
    from .replacement import measure_transcoders
    from .tc_build import _saved_matches
    from .transcoders import _resolve_block, save_transcoder, train_transcoder

    for in_layer, out_layer, _, config in blocks:  # every block checked before any training
        _resolve_block(model, in_layer, out_layer)
        config.validate()
    train, test, labels, desc = folder_split(args, model)
    model_hash = _weights_hash(model)
    tcs = []
    for in_layer, out_layer, name, config in blocks:
        data = f"{desc}; every position of {out_layer}"
        tc = _saved_matches(name, in_layer, out_layer, config, data, model_hash)
        if tc is None:
            tc = train_transcoder(model, in_layer, out_layer, train, config, data=data, progress=not args.no_progress)
            tc.card["model"] = model_label(args, model)
            tc.card["model_weights_sha256"] = model_hash
            save_transcoder(tc, name)  # saved before measuring: a rerun resumes from here
            print(f"trained {tc.feature_layer} ({in_layer} -> {out_layer}) in {tc.card['training_seconds']} s")
        else:
            print(f"{tc.feature_layer}: {Path(name).name} already trained with this configuration; reusing it")
        tcs.append(tc)
    metrics = measure_transcoders(model, tcs, test, labels)
    for (_, _, name, _), tc in zip(blocks, tcs):
        tc.card["metrics"] = {**metrics[tc.feature_layer], "accuracy": metrics["accuracy"],
                              "accuracy_all_replaced": metrics["accuracy_all_replaced"],
                              "replaced_together": [t.feature_layer for t in tcs]}
        tc.card["metrics_data"] = f"{desc} (accuracy = agreement with the unreplaced model)"
        save_transcoder(tc, name)
    return tcs


def _print_card(card: dict) -> None:
    m = card.get("metrics", {})
    print(f"{card.get('feature_layer')}: {card.get('in_layer')} -> {card.get('out_layer')}, {card.get('n_features')} features, "
          f"k = {card.get('k')}, skip = {card.get('skip')}, trained on {card.get('data')} in {card.get('training_seconds')} s")
    for key in ("fvu", "mean_l0", "dead_features", "accuracy", "accuracy_replaced", "accuracy_all_replaced"):
        if key in m:
            print(f"  {key:24s} {m[key]}")


def _register_graph(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="attribution graph of one input and one logit through the transcoders",
                       description="Build the attribution graph of one input for one target logit through a chain of "
                                   "transcoders (nodes: pixel groups, active features, error nodes, the logit; edges: exact "
                                   "direct effects with the sparse and max-pool selections frozen), prune it by influence, and "
                                   "write DIR/graph.json (+ DIR/index.html, the graph page). An existing graph of the same "
                                   "input, target and transcoders is kept (resume).",
                       formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=text_arg(1000), default=None, help="an image file (converted to the model's input)")
    src.add_argument("--index", type=int_arg(0, 9999), default=None, help="an MNIST test-set image by index")
    p.add_argument("--target", type=text_arg(20), required=True, help="logit index, or 'label' (the test label) or 'pred' (the prediction)")
    p.add_argument("--transcoders", nargs="+", type=names_arg, default=None,
                   help="transcoder names under models/features/ (or paths), in block order, the first starting at the "
                        "model input (default, for mnist_cnn only: " + " ".join(DEFAULT_TRANSCODERS) + ")")
    p.add_argument("--out", type=text_arg(1000), required=True, metavar="DIR")
    p.add_argument("--threshold", type=float_arg(0, 1, lo_open=True), default=0.8, help="influence share the pruned graph keeps")
    p.add_argument("--pixel-group", type=int_arg(1, 64), default=4, help="pixel nodes are GxG groups of input pixels")
    p.add_argument("--gallery", type=text_arg(1000), action="append", default=None, metavar="DIR",
                   help="a feature gallery (made by 'transcoder --gallery') whose pages the node cards link to (repeatable)")
    p.set_defaults(func=_graph)


def _target(text: str) -> int | str:
    if text in ("label", "pred"):
        return text
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--target {text!r}: give a logit index (an integer), 'label' or 'pred'") from None


def _graph(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .tc_graph_io import write_graph
    from .transcoders import load_transcoder

    target = _target(args.target)
    if target == "label" and args.index is None:
        raise UsageError("--target label needs a dataset image (--index), not --image")
    from ..cli_common import check_input_file

    picture = None
    if args.image is not None:
        from ..images import read_image

        picture = read_image(check_input_file(args.image, "--image"), what="--image")
    for g in args.gallery or []:
        check_input_file(Path(g) / "manifest.json", "--gallery")
    out = check_output_dir(args.out, "--out")
    if args.transcoders is None:
        if args.model != "mnist_cnn":
            raise UsageError(f"--model {args.model}: give --transcoders NAME ... trained on this model, in block order from "
                             f"the input (make them with 'vision-interp transcoder --model {args.model} --block input LAYER NAME "
                             "... --dataset DIR'); the default transcoders are the MNIST CNN's")
        args.transcoders = list(DEFAULT_TRANSCODERS)
    tcs = [load_transcoder(n) for n in args.transcoders]
    model = load_model_from_args(args)
    image, label, name = _input(args, model, picture)
    if isinstance(target, int):
        n_logits = int(model(image[None]).shape[1])
        if not 0 <= target < n_logits:
            raise UsageError(f"--target {target}: the model has logits 0..{n_logits - 1}")
    elif target == "label":
        target = int(label)
    else:
        target = int(model(image[None]).argmax(1))
    path, reused = write_graph(model, tcs, image, target, Path(out), source=name, label=label, threshold=args.threshold,
                               pixel_group=args.pixel_group, transcoder_names=args.transcoders,
                               galleries=args.gallery or [], title=f"Attribution graph: {name}, logit {target}")
    print(f"{'kept existing' if reused else 'wrote'} {path}")
    return 0


def _input(args: argparse.Namespace, model, picture):
    from ..units import default_input_shape

    shape = default_input_shape(model)
    if picture is not None:
        from ..images import image_tensor

        return image_tensor(picture, shape), None, str(args.image)
    if tuple(shape) != MNIST_SHAPE:
        raise UsageError(f"--index reads the MNIST test set, which does not fit {args.model} (input {shape}); give --image")
    from ..data import load_mnist

    test = load_mnist("test", args.data_dir)
    return test.images[args.index], int(test.labels[args.index]), f"MNIST test[{args.index}]"
