"""CLI: ``features`` (train / show a sparse dictionary on a layer)."""

from __future__ import annotations

import argparse

from ..cli_common import (MNIST_SHAPE, SEED, Formatter, UsageError, add_data_dir, add_dataset, add_model, check_output_dir,
                          float_arg, int_arg, load_model_from_args, model_input_shape, model_label, names_arg, text_arg)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="train a TopK sparse dictionary on a layer; features become units LAYER/sae:F",
                       description="Train a TopK sparse autoencoder on a layer's activations over MNIST training images "
                                   "(spatial positions as samples), measure it on held-out test images (FVU, L0, dead "
                                   "features, accuracy with the layer reconstructed, class purity of features vs neurons) "
                                   "and save OUT.safetensors + OUT.json + OUT.md. With --show, print a saved card.\n\n"
                                   "Your own model: --model package.module:factory --layer LAYER --dataset DIR (images at the "
                                   "model's input).",
                       formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    p.add_argument("--layer", type=names_arg, default="conv2", help="source layer (module path)")
    p.add_argument("--out", type=text_arg(1000), default="mnist_cnn_conv2_sae", help="name under models/features/ or a path (no suffix)")
    p.add_argument("--features", type=int_arg(1, 65_536), default=64, help="dictionary size F")
    p.add_argument("--k", type=int_arg(1, 65_536), default=4, help="active features per position (TopK; at most --features)")
    from .sae import SAEConfig

    p.add_argument("--steps", type=int_arg(1, 10_000_000), default=SAEConfig.steps)
    p.add_argument("--batch-size", type=int_arg(1, 1_000_000), default=SAEConfig.batch_size)
    p.add_argument("--lr", type=float_arg(0, 10, lo_open=True), default=SAEConfig.lr)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--train-images", type=int_arg(1, 60_000), default=5000)
    p.add_argument("--test-images", type=int_arg(1, 10_000), default=10000)
    p.add_argument("--show", action="store_true", help="print the card of OUT instead of training")
    p.add_argument("--gallery", type=text_arg(1000), default=None, metavar="DIR",
                   help="also write the feature gallery (DIR/gallery) and the generated write-up (DIR/README.md, index.html)")
    p.add_argument("--gallery-steps", type=int_arg(1, 100_000), default=64, help="feature-visualization steps per unit in the gallery")
    add_dataset(p, "train and measure the dictionary on")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_features)


def _features(args: argparse.Namespace) -> int:
    from .dictionary import load_dictionary
    from .metrics import more_monosemantic_verdict
    from .sae import SAEConfig

    if args.k > args.features:
        raise UsageError(f"--k {args.k}: at most --features ({args.features}) features can be active per position")
    if args.gallery:
        check_output_dir(args.gallery, "--gallery")
    if args.show:
        d = load_dictionary(args.out)
        _print_card(d.card)
        if args.gallery:
            _publish(args, d)
        return 0
    config = SAEConfig(n_features=args.features, k=args.k, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    config.validate(1)
    from .build import build_dictionary

    model = load_model_from_args(args)
    if args.gallery and (model_input_shape(model) != MNIST_SHAPE or args.dataset is not None):
        raise UsageError(f"--gallery publishes on MNIST test images and needs an MNIST model and data; for --model {args.model} "
                         f"make a gallery of the features with 'vision-interp gallery --layers {args.layer}/sae' on an attached "
                         "dictionary from Python (features.attached)")
    if args.dataset is not None:
        d = _build_on_folder(args, model, config)
    else:
        from ..cli_common import require_mnist_data

        require_mnist_data(args, model, "the features command")
        d = build_dictionary(model, args.layer, args.out, config, data_dir=args.data_dir, train_images=args.train_images,
                             test_images=args.test_images, model_name=model_label(args, model), progress=not args.no_progress)
    _print_card(d.card)
    try:
        print(more_monosemantic_verdict(d.card["metrics"])[1])
    except ValueError as e:  # no purity medians: no verdict, said so
        print(f"no monosemanticity verdict: {e}")
    if args.gallery:
        _publish(args, d)
    return 0


def _build_on_folder(args: argparse.Namespace, model, config):
    """``build_dictionary`` on the images of --dataset: trained on the first, measured on the held-out rest."""
    from ..cli_common import folder_split
    from ..units import resolve_layer
    from .build import _weights_hash
    from .dictionary import layer_samples, save_dictionary, train_dictionary
    from .metrics import evaluate_dictionary

    resolve_layer(model, args.layer)  # before the images are read
    train, test, labels, desc = folder_split(args, model)
    d = train_dictionary(model, args.layer, train, config, progress=not args.no_progress,
                         data=f"{desc}; every position of {args.layer}")
    d.card["model"] = model_label(args, model)
    d.card["model_weights_sha256"] = _weights_hash(model)
    d.card["metrics"] = evaluate_dictionary(model, d, layer_samples(model, d.layer, train), test, labels,
                                           top=min(100, len(test)))  # purity over a unit's top images: no more than there are
    d.card["metrics_data"] = f"{desc} (accuracy = agreement with the unreplaced model)"
    save_dictionary(d, args.out)
    return d


def _publish(args: argparse.Namespace, d) -> None:
    from .build import publish_dictionary

    path = publish_dictionary(load_model_from_args(args), d, args.gallery, steps=args.gallery_steps, data_dir=args.data_dir,
                              progress=not args.no_progress)
    print(f"wrote {path} and {args.gallery}/gallery/index.html")


def _print_card(card: dict) -> None:
    m = card.get("metrics", {})
    print(f"{card.get('layer')}/sae: {card.get('n_features')} features, k = {card.get('k')}, trained on {card.get('data')} "
          f"in {card.get('training_seconds')} s")
    for key in ("fvu", "fvu_after_relu", "pca_fvu_rank_k", "nmf_rank_k_fvu_after_relu", "mean_l0", "dead_features",
                "test_accuracy", "test_accuracy_reconstructed"):
        if key in m:
            print(f"  {key:28s} {m[key]}")
