"""CLI: ``vision-interp gallery`` (render, resume, shard, assemble)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..cli_common import (SEED, Formatter, UsageError, add_data_dir, add_model, check_batch_pixels, check_output_dir,
                          existing_dir, existing_file, float_arg, int_arg, names_arg, text_arg)
from ..featvis.commands import DEVICE_HELP, DEVICES, PRECISION_HELP, checked_device
from ..featvis.settings import PRECISIONS

DESCRIPTION = """\
Render every unit of the chosen layers and write a static site (index.html, one page per layer,
one per unit) plus manifest.json, viewable offline from the file system.

Resume: rerun the same command after an interruption; finished batches are kept.
Settings that differ from an existing --out directory are refused unless --overwrite.

Shards: --shard i/n renders every n-th batch (i counts from 0), so n processes or machines can
write into one --out directory (a shared file system) at the same time. Without --shard, torchrun's
RANK and WORLD_SIZE are used, e.g. on one machine:
    torchrun --standalone --nproc-per-node 4 -m vision_interp gallery --model inceptionv1 --layers mixed4a --out galleries/in4a
or by hand:
    for i in 0 1 2 3; do vision-interp gallery ... --shard $i/4 & done; wait
The last shard to finish assembles the site; `vision-interp gallery --assemble --out DIR` does it explicitly.
Slurm job arrays: `#SBATCH --array=0-15` and `--shard $SLURM_ARRAY_TASK_ID/16` (see docs/gallery.md).
Ray: --executor ray [--ray-address auto] runs render batches as Ray tasks (optional extra: pip install 'vision_interp[ray]').

Any model: --model package.module:factory (or path/to/file.py:factory) with --input-shape C,H,W
where the model declares none, --weights FILE for a state dict, --dataset DIR for its examples.
Titles and the manifest use the model's declared name (spec.name), else the --model text.

Every file is recorded with its sha256: a rerun verifies them, re-renders missing or corrupt ones
and removes orphan temporary files. A second build of the same shard exits (or waits --wait-lock s).
"""


def _shard_arg(text: str) -> str:
    """argparse ``type=``: 'i/n' with 0 <= i < n <= 10000."""
    m = re.fullmatch(r"\s*([0-9]{1,6})\s*/\s*([0-9]{1,6})\s*", text)
    if not m or not int(m[1]) < int(m[2]) <= 10_000:
        raise argparse.ArgumentTypeError(f"expected 'i/n' with 0 <= i < n <= 10000 (e.g. 0/4), got {text!r}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gallery", help="render a neuron gallery (static site) for some layers",
                       description=DESCRIPTION, formatter_class=Formatter)
    add_model(p)
    add_data_dir(p)
    p.add_argument("--layers", type=names_arg, default=None, help="comma-separated layer names, or 'all' (required unless --assemble)")
    p.add_argument("--out", required=True, help="output directory (e.g. galleries/NAME)")
    p.add_argument("--steps", type=int_arg(1, 100_000), default=None, help="optimisation steps (default: featvis's default for the model)")
    p.add_argument("--objective", type=text_arg(20), choices=["channel", "neuron"], default=None,
                   help="what each unit's picture maximises: the channel's spatial mean, or its centre neuron "
                        "(default: featvis's choice for the model: neuron for MNIST-sized inputs, channel for large ones)")
    p.add_argument("--size", type=int_arg(8, 2048), default=None, help="image side in pixels (default: the model's input size)")
    p.add_argument("--batch", type=int_arg(1, 1024), default=8, help="units per optimisation batch (part of the settings: fixes the pictures)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--diverse", type=int_arg(0, 64), default=4, help="diverse visualizations per unit (0 = none)")
    p.add_argument("--diversity-weight", type=float_arg(0, 1e6), default=None, help="weight of the diversity objective")
    p.add_argument("--no-negative", action="store_true", help="skip the negative (minimising) visualizations")
    p.add_argument("--examples", type=int_arg(0, 1000), default=8, help="top- and bottom-activating dataset examples per unit (0 = none; MNIST models, or --dataset)")
    p.add_argument("--examples-limit", type=int_arg(1, 10_000_000), default=None, help="search only the first N dataset images")
    p.add_argument("--connections", type=int_arg(0, 1000), default=6, help="connected units listed per direction (inputs, outputs), strongest first (0 = none)")
    p.add_argument("--shard", type=_shard_arg, default=None, help="render shard i of n, written 'i/n' (default: $RANK/$WORLD_SIZE, else 0/1)")
    p.add_argument("--dataset", type=existing_dir, default=None, help="folder of images for dataset examples (any layout, searched recursively; "
                                                    "sub-folder names are the labels), default: MNIST test set for MNIST models")
    p.add_argument("--labels", type=existing_file, default=None, help='JSON file {"conv2:4": {"name": ..., "note": ...}} of unit labels')
    p.add_argument("--link", action="append", default=None, metavar="TITLE=HREF", type=text_arg(2000),
                   help="a link shown on the index, e.g. 'MNIST exercise report=../mnist_exercise/report.html' (repeatable)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="where render batches run (ray: optional extra)")
    p.add_argument("--ray-address", type=text_arg(500), default=None, help="ray.init(address=...): 'auto' or ray://host:10001 (default: a local Ray)")
    p.add_argument("--wait-lock", type=float_arg(0, 86400), default=0.0, help="seconds to wait for another build of the same shard to finish")
    p.add_argument("--overwrite", action="store_true", help="replace an existing gallery made with other settings")
    p.add_argument("--assemble", action="store_true", help="only merge the shards' manifests and write the site")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    p.add_argument("--device", choices=DEVICES, default=None, help=DEVICE_HELP)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_gallery)


def _gallery(args: argparse.Namespace) -> int:
    from .build import GallerySettings, IncompleteGalleryError, assemble, make_gallery

    if args.assemble:
        if not Path(args.out).is_dir():
            raise UsageError(f"--out {args.out}: no gallery folder there to assemble; render one first")
        check_output_dir(args.out, "--out")
        try:
            manifest = assemble(args.out, labels=args.labels)
        except IncompleteGalleryError as e:
            raise ValueError(str(e)) from None
        print(f"assembled {len(manifest['units'])} units into {args.out}/index.html")
        return 0
    if not args.layers:
        raise UsageError("--layers is required (e.g. --layers conv1,conv2 or --layers all)")

    kw = dict(steps=args.steps, size=args.size, batch=args.batch, seed=args.seed, diverse=args.diverse,
              negative=not args.no_negative, examples=args.examples, examples_limit=args.examples_limit,
              connections=args.connections, objective=args.objective, precision=args.precision)
    if args.diversity_weight is not None:
        kw["diversity_weight"] = args.diversity_weight
    settings = GallerySettings(**kw)
    settings.validate()  # bad numbers are reported before the model loads
    check_batch_pixels(args.batch * max(1, args.diverse), args.size, "--batch x --diverse with --size")
    check_output_dir(args.out, "--out")
    from .build import cli_inputs

    device = checked_device(args.device)  # before the model loads
    model, checkpoint, links = cli_inputs(args)
    if device is not None:
        model.to(device)
    from ..cli_common import model_label

    name = model_label(args, model) + (" (random weights)" if args.random_weights else "")
    res = make_gallery(model, args.layers, args.out, settings=settings, model_name=name, shard=args.shard,
                       overwrite=args.overwrite, data_dir=args.data_dir, progress=not args.no_progress,
                       checkpoint=checkpoint, dataset=args.dataset or "auto", labels=args.labels, links=links,
                       executor=args.executor, ray_address=args.ray_address, wait_lock=args.wait_lock)
    done = f"rendered {res.rendered_units} units" + (f" ({res.skipped_units} already done)" if res.skipped_units else "")
    if res.complete:
        print(f"{done} in {res.seconds:.1f} s; open {res.index}")
    else:
        print(f"{done} in {res.seconds:.1f} s; other shards are still missing: when all are done, run "
              f"`vision-interp gallery --assemble --out {args.out}` (or the last shard assembles automatically)")
    return 0
