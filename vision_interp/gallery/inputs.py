"""What the user hands a gallery build, checked before any work: the dataset (MNIST for 28x28
grayscale models, a folder, a tensor), the unit labels file, and the CLI's model, checkpoint and
links."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import io as vio
from ..units import resolve_layer
from ..zoo.spec import model_spec
from .dataset import GalleryDataset
from .plan import _LayerInfo


def _auto_dataset(model: nn.Module, data_dir: str | os.PathLike | None, limit: int | None) -> GalleryDataset | None:
    """MNIST test images for models that take (1, 28, 28) inputs; None for other models."""
    shape = tuple(model_spec(model).input_shape or ())
    if shape != (1, 28, 28):
        return None
    from ..data.mnist import load_mnist

    split = load_mnist("test", data_dir, limit=limit)
    names = model_spec(model).class_names or tuple(str(d) for d in range(10))
    return GalleryDataset.from_tensor("mnist-test", split.images, [str(names[int(y)]) for y in split.labels])


def _make_dataset(model: nn.Module, dataset: Any, labels: Sequence[str] | None, data_dir, limit: int | None,
                  in_shape: tuple) -> GalleryDataset | None:
    """"auto" | None | an image tensor (N, C, H, W) in [0, 1] | a folder of images | a GalleryDataset."""
    if dataset is None:
        return None
    if isinstance(dataset, GalleryDataset):
        return dataset
    if isinstance(dataset, str) and dataset == "auto":
        return _auto_dataset(model, data_dir, limit)
    if isinstance(dataset, (str, os.PathLike)):
        from ..data.folder import ImageFolder

        if not in_shape:
            raise ValueError("a dataset folder needs the model's input shape (C, H, W) (model.input_shape or its spec)")
        return GalleryDataset.from_folder(ImageFolder(Path(dataset), tuple(in_shape), limit))
    if not isinstance(dataset, torch.Tensor) or dataset.ndim != 4:
        raise ValueError(f"dataset must be 'auto', None, a folder of images or an image tensor (N, C, H, W) in [0, 1], "
                         f"got {getattr(dataset, 'shape', type(dataset).__name__)}")
    imgs = dataset[:limit] if limit else dataset
    labs = list(labels)[: len(imgs)] if labels is not None else None
    return GalleryDataset.from_tensor("data", imgs, labs)


def load_labels(labels: str | os.PathLike | dict | None, model: nn.Module, infos: Sequence["_LayerInfo"]) -> dict[str, dict] | None:
    """A labels file (JSON ``{"conv2:4": {"name": ..., "note": ...}}``) checked against the gallery's
    units (layer aliases or module paths are mapped to the gallery's layer names)."""
    if labels is None:
        return None
    where = "labels"
    if not isinstance(labels, dict):
        where = f"--labels {labels}"
        p = Path(labels)
        if not p.is_file():
            raise ValueError(f"{where}: no such file (give a JSON file like {{\"conv2:4\": {{\"name\": \"...\", \"note\": \"...\"}}}})")
        labels = vio.load_json(p)
        if not isinstance(labels, dict):
            raise ValueError(f"{where}: expected a JSON object mapping units to {{name, note}}, got {type(labels).__name__}")
    by_path = {i.path: i for i in infos}
    out: dict[str, dict] = {}
    for key, value in labels.items():
        layer, _, ch = str(key).rpartition(":")
        if not layer or not ch.isdigit():
            raise ValueError(f"{where}: key {key!r} is not a unit like 'conv2:4'")
        try:
            info = by_path.get(resolve_layer(model, layer))
        except ValueError:
            info = None
        if info is None or int(ch) not in info.channels:
            raise ValueError(f"{where}: unit {key!r} is not in this gallery (layers: {', '.join(i.spec for i in infos)})")
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name", ""), str) or not isinstance(value.get("note", ""), str):
            raise ValueError(f"{where}: {key!r} must map to {{\"name\": text, \"note\": text}}, got {value!r}")
        entry = {k: value[k] for k in ("name", "note") if value.get(k)}
        if entry:
            out[f"{info.name}:{int(ch)}"] = entry
    return dict(sorted(out.items(), key=lambda kv: ([i.name for i in infos].index(kv[0].rpartition(":")[0]), int(kv[0].rpartition(":")[2]))))


def cli_inputs(args) -> tuple[nn.Module, Path | None, list[tuple[str, str]] | None]:
    """The model (with --weights), the checkpoint file whose sha256 the index shows, and --link pairs;
    every argument is checked before the model loads."""
    links = None
    if args.link:
        links = []
        for item in args.link:
            title, sep, href = item.partition("=")
            if not sep or not title.strip() or not href.strip():
                raise ValueError(f"--link {item!r}: write TITLE=HREF, e.g. 'MNIST exercise report=../mnist_exercise/report.html'")
            links.append((title.strip(), href.strip()))
    if args.dataset is not None and not Path(args.dataset).is_dir():
        raise ValueError(f"--dataset {args.dataset}: no such directory (give a folder of images)")
    if args.labels is not None and not Path(args.labels).is_file():
        raise ValueError(f"--labels {args.labels}: no such file")
    if args.executor == "ray":
        from .executors import require_ray

        require_ray()
    from ..cli_common import load_model_from_args

    model = load_model_from_args(args)  # --model, --weights, --model-kwargs, --input-shape, --random-weights
    checkpoint: Path | None = None
    if getattr(args, "weights", None) is not None:
        checkpoint = Path(args.weights).expanduser()
    elif not args.random_weights:
        if Path(str(args.model)).is_file():
            checkpoint = Path(str(args.model))
        elif args.model == "mnist_cnn" and model_spec(model).weights_file:
            checkpoint = Path(model_spec(model).weights_file)  # the committed file the zoo loaded
    return model, checkpoint, links
