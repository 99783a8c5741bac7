"""Render every unit of some layers into a resumable, shardable gallery directory.

Design, in one paragraph: the units of each layer are cut into **fixed chunks** of ``batch``
consecutive channels (by channel index, regardless of shard), and each chunk is one *job*
rendered with seeds derived from ``(seed, layer, chunk)``. So a unit's pictures never depend on
which process, shard or resumed run rendered it. Each process appends finished jobs to its own
manifest part (``manifest.shard-I-of-N.json``, written atomically after the job's PNGs), so
parallel shards never race on one file and a killed run loses at most the job in flight. When
every job is recorded, the parts are merged into ``manifest.json`` (the single source of truth)
and the static site is written from it alone (:mod:`vision_interp.gallery.site`).

Layout of a gallery directory::

    manifest.json                      every unit: files, objective values, examples, connections
    index.html, layers/<slug>.html, units/<slug>/<channel>.html, static/gallery.css
    img/<slug>/<channel>/{main,negative,diverse-J,patch-J}.png
    data/<dataset>-<index>.png         dataset images, shared by all units
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .. import io as vio
from ..images import save_png
from ..zoo.spec import model_spec
from ..units import layer_shape, resolve_layer, resolve_unit

__all__ = [
    "GallerySettings",
    "GalleryResult",
    "SettingsMismatchError",
    "IncompleteGalleryError",
    "make_gallery",
    "assemble",
    "parse_shard",
    "gallery_layers",
    "MANIFEST",
    "FORMAT",
]

FORMAT = "vision_interp.gallery/1"
MANIFEST = "manifest.json"
_PART_RE = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.json$")
# what a gallery directory may contain besides hidden temporary files
_OWN_NAMES = {"index.html", "static", "layers", "units", "img", "data", MANIFEST}


class SettingsMismatchError(ValueError):
    """The output directory holds a gallery made with other settings (refused without overwrite)."""


@dataclass(frozen=True)
class GallerySettings:
    """Everything that determines a gallery's pictures; stored in the manifest and compared on resume.

    ``batch`` is part of the settings because units are rendered in fixed chunks of that size.
    """

    steps: int | None = None  # optimisation steps; None = featvis's default for the model (128 MNIST, 256 InceptionV1)
    size: int | None = None  # image side; None = the model's input size
    batch: int = 8
    seed: int = 0
    diverse: int = 4  # diverse visualizations per unit (0 = none)
    diversity_weight: float = 5.0  # weight of the diversity term (minus mean Gram cosine similarity) vs the channel mean
    negative: bool = True
    examples: int = 8  # top-activating dataset examples per unit (0 = none)
    examples_limit: int | None = None  # use only the first N dataset images (quick runs)
    connections: int = 6  # strongest input/output connections per sign (0 = none)
    objective: str | None = None  # "channel" (spatial mean) or "neuron" (centre); None = featvis's default for the model

    def validate(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if self.size is not None and self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        for name in ("diverse", "examples", "connections"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.diverse == 1:
            raise ValueError("diverse must be 0 (none) or at least 2: diversity pushes several images of a unit apart")
        if self.objective not in (None, "channel", "neuron"):
            raise ValueError(f"objective must be 'channel' or 'neuron', got {self.objective!r}")
        if self.examples_limit is not None and self.examples_limit < 1:
            raise ValueError(f"examples_limit must be positive, got {self.examples_limit}")


@dataclass
class GalleryResult:
    """What a call to :func:`make_gallery` did."""

    out_dir: Path
    complete: bool  # every job of every shard is done and the site is assembled
    rendered_units: int  # rendered by this call
    skipped_units: int  # already done (resume)
    seconds: float
    manifest: dict | None = field(default=None, repr=False)

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"


# --------------------------------------------------------------------------------------------
# small helpers


def parse_shard(spec: str | Sequence[int] | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); None reads torchrun's ``RANK``/``WORLD_SIZE`` (default 0/1)."""
    if spec is None:
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            return 0, 1
        spec = f"{rank}/{world}"
    if isinstance(spec, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if not m:
            raise ValueError(f"shard must be 'i/n' like '0/4', got {spec!r}")
        i, n = int(m[1]), int(m[2])
    else:
        i, n = (int(v) for v in spec)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n} is invalid: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return i, n


def _derive_seed(seed: int, *parts: Any) -> int:
    """A stable 31-bit seed from the base seed and a job's identity (independent of shard/order)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def slugify(name: str) -> str:
    """A file-system-safe, collision-free name for a layer (hostile names get a hash suffix)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "layer"
    if slug != name:
        slug = f"{slug[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return slug


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the state dict (names, shapes, bytes): a changed checkpoint is a changed setting."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        # reshape(-1): a 0-dim tensor (e.g. BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def gallery_layers(model: nn.Module) -> list[str]:
    """The layers meant by ``--layers all``: the model spec's ``gallery_layers`` if it declares them
    (InceptionV1: conv2d0-2 and the mixed blocks), else every Conv2d and Linear module in order."""
    declared = model_spec(model).gallery_layers
    if declared:
        return list(declared)
    return [n for n, m in model.named_modules() if n and isinstance(m, (nn.Conv2d, nn.Linear))]


def _split_layer_spec(spec: str) -> tuple[str, list[int] | None]:
    """``"mixed4a"`` -> all channels; ``"mixed4a:0-15"`` or ``"conv2:3"`` -> that channel slice."""
    m = re.fullmatch(r"(.+?):(\d+)(?:-(\d+))?", spec.strip())
    if not m:
        return spec.strip(), None
    first, last = int(m[2]), int(m[3] if m[3] is not None else m[2])
    if last < first:
        raise ValueError(f"channel slice in {spec!r} is empty: write 'layer:first-last' with first <= last")
    return m[1], list(range(first, last + 1))


def _class_label(model: nn.Module, path: str, channel: int) -> str | None:
    """Class name of a logit unit (layer aliased 'logits' or the last Linear), else None."""
    names = getattr(model, "class_names", None)
    aliases = getattr(model, "layer_aliases", {}) or {}
    if not names or aliases.get("logits") != path or channel >= len(names):
        return None
    return str(names[channel])


# --------------------------------------------------------------------------------------------
# manifest parts


def _part_name(i: int, n: int) -> str:
    return f"manifest.shard-{i}-of-{n}.json"


def _read_state(out: Path) -> tuple[dict | None, list[dict]]:
    """(manifest.json or None, parts). Parts are read *before* manifest.json: assembly writes
    manifest.json before deleting parts, so a part that vanished is always covered by it."""
    parts = []
    for p in sorted(out.glob("manifest.shard-*-of-*.json")):
        if not _PART_RE.match(p.name):
            continue
        try:
            parts.append(vio.load_json(p))
        except FileNotFoundError:
            continue
    final = vio.load_json(out / MANIFEST) if (out / MANIFEST).is_file() else None
    return final, parts


def _done_units(final: dict | None, parts: list[dict]) -> tuple[set[str], dict[str, dict]]:
    jobs: set[str] = set()
    units: dict[str, dict] = {}
    for src in ([final] if final else []) + parts:
        jobs.update(src.get("jobs_done", []))
        for key, entry in src.get("units", {}).items():
            units.setdefault(key, entry)
    return jobs, units


def _describe_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _describe_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return diffs


def _clear_gallery(out: Path) -> None:
    """Remove what a gallery run writes (only our own names; other files are left alone)."""
    for p in out.iterdir():
        if p.name in _OWN_NAMES or _PART_RE.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def _check_out_dir(out: Path, identity: dict, overwrite: bool) -> None:
    """Refuse an existing gallery made with other settings, or a folder that is not a gallery."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    final, parts = _read_state(out)
    existing = [s for s in ([final] if final else []) + parts]
    if existing:
        for src in existing:
            old = {"model": src.get("model"), "layers": src.get("layer_names"), "settings": src.get("settings"), "format": src.get("format")}
            if old != identity:
                if overwrite:
                    _clear_gallery(out)
                    return
                diffs = _describe_diff(old, identity)
                raise SettingsMismatchError(
                    f"{out} already holds a gallery made with different settings ({'; '.join(diffs[:6])}). "
                    "Rerun with the original settings to resume, pass --overwrite (overwrite=True) to replace it, "
                    "or choose another output directory."
                )
        return
    foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in _OWN_NAMES]
    if foreign and not overwrite:
        raise ValueError(
            f"{out} is not empty and holds no gallery manifest ({', '.join(sorted(foreign)[:5])}); "
            "choose an empty or new directory, or pass --overwrite to write into it anyway"
        )


# --------------------------------------------------------------------------------------------
# dataset examples


@dataclass
class _Dataset:
    name: str
    images: torch.Tensor  # (N, C, H, W) in [0, 1]
    labels: list[str] | None


def _auto_dataset(model: nn.Module, data_dir: str | os.PathLike | None, limit: int | None) -> _Dataset | None:
    """MNIST test images for models that take (1, 28, 28) inputs; None for other models."""
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if shape != (1, 28, 28):
        return None
    from ..data.mnist import load_mnist

    split = load_mnist("test", data_dir, limit=limit)
    names = getattr(model, "class_names", None) or [str(d) for d in range(10)]
    return _Dataset("mnist-test", split.images, [str(names[int(y)]) for y in split.labels])


# --------------------------------------------------------------------------------------------
# rendering one job


def _render(model, layer: str, channels: Sequence[int], settings: "GallerySettings", size: int | None, seed: int, *,
            negative: bool = False, diverse: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk through featvis; returns images (N,C,H,W) in [0,1], objective values (N,) and
    raw channel activations (N,), unit-major with ``diverse`` images per channel when diverse > 1.

    The whole chunk is one optimisation (``batch_size`` covers it), so a unit's picture is fixed by
    (seed, layer, chunk) and never by which shard or resumed run rendered it.
    """
    from ..featvis import visualize_layer

    kw: dict[str, Any] = dict(negative=negative, steps=settings.steps, size=size, seed=seed, progress=False, objective=settings.objective)
    if diverse > 1:
        kw.update(diversity=settings.diversity_weight, images_per_unit=diverse, batch_size=max(settings.batch, diverse))
    else:
        kw.update(batch_size=len(channels))
    res = visualize_layer(model, layer, list(channels), **kw)
    acts = res.activations if res.activations is not None else res.values
    return res.images.detach().cpu(), res.values.detach().cpu().float(), acts.detach().cpu().float()


_CONNECTION_ERRORS = (ValueError, KeyError, IndexError, NotImplementedError, RuntimeError, TypeError)


def _layer_connections(model: nn.Module, layer: "_LayerInfo", k: int, paths_to_names: dict[str, str]) -> tuple[dict[int, dict], str | None]:
    """Every channel's strongest input/output connections from the circuit inspectors (one
    expanded-weight tensor per direction and layer), as ``{channel: {"inputs": ..., "outputs": ...}}``,
    plus a note when a direction is unsupported (no adjacent layer, a non-linear path, no circuits
    module): those are skipped, not fatal. Unit names are mapped to this gallery's layer names so the
    site can link them."""
    if k <= 0:
        return {}, None
    try:
        from ..circuits import layer_top_connections
    except ImportError as e:
        return {}, f"circuit inspectors unavailable ({e})"
    by_channel: dict[int, dict] = {}
    notes = []
    for direction in ("inputs", "outputs"):
        try:
            rows = layer_top_connections(model, layer.path, k=k, direction=direction)
        except _CONNECTION_ERRORS as e:
            notes.append(f"no {direction}: {e}")
            continue
        for c, row in enumerate(rows):
            entry = {}
            for sign in ("excitatory", "inhibitory"):
                items = []
                for unit, strength in row.get(sign, []):
                    other, _, ch = str(unit).rpartition(":")
                    try:
                        other = paths_to_names.get(resolve_layer(model, other), other)
                    except ValueError:
                        pass
                    items.append([f"{other}:{ch}", float(strength)])
                entry[sign] = items
            entry["layer"] = paths_to_names.get(row.get("layer", ""), row.get("layer"))
            by_channel.setdefault(c, {})[direction] = entry
    return by_channel, "; ".join(notes) or None


@dataclass
class _LayerInfo:
    name: str
    path: str
    slug: str
    shape: tuple[int, ...]
    channels: list[int]  # all channels, or the slice asked for with 'layer:first-last'

    @property
    def units(self) -> int:
        return len(self.channels)

    @property
    def spec(self) -> str:
        """The name, plus the channel slice when not every channel is included."""
        if self.channels == list(range(int(self.shape[0]))):
            return self.name
        return f"{self.name}:{self.channels[0]}-{self.channels[-1]}"


def _job_id(layer: _LayerInfo, chunk: int) -> str:
    return f"{layer.name}#{chunk}"


def _run_job(model, layer: _LayerInfo, chunk: int, settings: GallerySettings, size: int | None, out: Path,
             dataset: _Dataset | None, rf, written_data: set[int], connections: tuple[dict[int, dict], str | None]) -> dict[str, dict]:
    """Render one chunk of a layer, write its PNGs, and return its manifest entries."""
    start = chunk * settings.batch
    channels = layer.channels[start : start + settings.batch]
    base = _derive_seed(settings.seed, layer.name, chunk)
    main_img, main_val, main_act = _render(model, layer.name, channels, settings, size, _derive_seed(base, "main"))
    neg = div = None
    if settings.negative:
        neg = _render(model, layer.name, channels, settings, size, _derive_seed(base, "negative"), negative=True)
    if settings.diverse > 1:
        div = _render(model, layer.name, channels, settings, size, _derive_seed(base, "diverse"), diverse=settings.diverse)
    top = None
    if dataset is not None and settings.examples > 0:
        from ..data.examples import top_activating

        top = top_activating(model, layer.path, dataset.images, k=settings.examples, channels=channels)

    entries: dict[str, dict] = {}
    for j, c in enumerate(channels):
        rel = f"img/{layer.slug}/{c}"
        files: dict[str, Any] = {"page": f"units/{layer.slug}/{c}.html", "main": f"{rel}/main.png"}
        save_png(main_img[j], out / files["main"])
        values: dict[str, Any] = {"main": float(main_val[j])}
        activations: dict[str, Any] = {"main": float(main_act[j])}
        if neg is not None:
            files["negative"] = f"{rel}/negative.png"
            save_png(neg[0][j], out / files["negative"])
            values["negative"], activations["negative"] = float(neg[1][j]), float(neg[2][j])
        if div is not None:
            files["diverse"], values["diverse"], activations["diverse"] = [], [], []
            for d in range(settings.diverse):
                k = j * settings.diverse + d
                files["diverse"].append(f"{rel}/diverse-{d}.png")
                save_png(div[0][k], out / files["diverse"][-1])
                values["diverse"].append(float(div[1][k]))
                activations["diverse"].append(float(div[2][k]))
        examples = None
        if top is not None:
            from ..data.examples import crop_patches

            examples = []
            for e_i, ex in enumerate(top.for_channel(c)):
                idx = ex["index"]
                img_rel = f"data/{dataset.name}-{idx:05d}.png"
                if idx not in written_data and not (out / img_rel).is_file():
                    save_png(dataset.images[idx], out / img_rel)
                written_data.add(idx)
                item = {"index": idx, "value": ex["value"], "image": img_rel}
                if dataset.labels is not None:
                    item["label"] = dataset.labels[idx]
                if "position" in ex and rf is not None:
                    item["position"] = ex["position"]
                    patch = crop_patches(dataset.images[idx : idx + 1], torch.tensor([ex["position"]]), rf)[0]
                    item["patch"] = f"{rel}/patch-{e_i}.png"
                    save_png(patch, out / item["patch"])
                examples.append(item)
        unit = f"{layer.name}:{c}"
        entries[unit] = {
            "unit": unit,
            "layer": layer.name,
            "channel": c,
            "label": _class_label(model, layer.path, c),
            "job": _job_id(layer, chunk),
            "files": files,
            "values": values,
            "activations": activations,
            "examples": examples,
            "connections": connections[0].get(c),
            "connections_note": connections[1],
        }
    return entries


# --------------------------------------------------------------------------------------------
# the public entry points


def make_gallery(
    model: nn.Module,
    layers: Sequence[str] | str,
    out_dir: str | os.PathLike,
    *,
    settings: GallerySettings | None = None,
    model_name: str | None = None,
    shard: str | Sequence[int] | None = None,
    overwrite: bool = False,
    data_dir: str | os.PathLike | None = None,
    dataset: torch.Tensor | None | str = "auto",
    dataset_labels: Sequence[str] | None = None,
    progress: bool = True,
    assemble_site: bool = True,
    on_job_done: Callable[[str], None] | None = None,
    **overrides: Any,
) -> GalleryResult:
    """Render every unit of ``layers`` of ``model`` into ``out_dir`` and build the static site.

    Resumable (rerun the same call after an interruption), shardable (``shard="i/n"``; default
    from ``RANK``/``WORLD_SIZE``), refuses an existing gallery with other settings unless
    ``overwrite``. Settings may be given as ``settings=`` or as keyword overrides
    (``steps=64, batch=4``). ``dataset`` is "auto" (MNIST test images for 28x28 grayscale
    models), None (no dataset examples) or an image tensor (N, C, H, W) in [0, 1].
    ``on_job_done(job_id)`` is called after each finished, recorded job.
    """
    t0 = time.perf_counter()
    settings = settings or GallerySettings()
    if overrides:
        unknown = set(overrides) - set(GallerySettings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"make_gallery() got unknown settings {sorted(unknown)}; valid: {sorted(GallerySettings.__dataclass_fields__)}")
        settings = GallerySettings(**{**asdict(settings), **overrides})
    settings.validate()
    if settings.steps is None:
        from ..featvis import model_defaults

        settings = GallerySettings(**{**asdict(settings), "steps": int(model_defaults(model)["steps"])})
    shard_i, shard_n = parse_shard(shard)
    out = Path(out_dir)

    # --- validate everything before any work ---
    if isinstance(layers, str):
        layers = gallery_layers(model) if layers.strip() == "all" else [s.strip() for s in layers.split(",") if s.strip()]
    layers = list(dict.fromkeys(layers))
    if len({_split_layer_spec(s)[0] for s in layers}) != len(layers):
        raise ValueError(f"a layer appears twice in {layers}; give each layer once")
    if not layers:
        raise ValueError("no layers given: pass names like 'conv1,conv2' or 'all'")
    infos: list[_LayerInfo] = []
    slugs: set[str] = set()
    for spec in layers:
        name, channels = _split_layer_spec(spec)
        path = resolve_layer(model, name)  # unknown names: error with close names from units.py
        shape = layer_shape(model, path)
        resolve_unit(model, (name, 0))
        if channels is None:
            channels = list(range(int(shape[0])))
        else:
            for c in (channels[0], channels[-1]):
                resolve_unit(model, (name, c))  # out of range: the valid range, from units.py
        slug = slugify(name)
        if slug in slugs:
            slug = f"{slug}-{len(slugs)}"
        slugs.add(slug)
        infos.append(_LayerInfo(name, path, slug, tuple(int(s) for s in shape), channels))
    in_shape = tuple(getattr(model, "input_shape", ()) or ())
    size = settings.size or (in_shape[-1] if in_shape else 224)
    # without an explicit size, render at the model's own (C, H, W): non-square inputs stay non-square
    render_size = settings.size or (None if in_shape else 224)
    ds: _Dataset | None = None
    if settings.examples > 0:
        if isinstance(dataset, str):
            if dataset != "auto":
                raise ValueError(f"dataset must be 'auto', None or an image tensor, got {dataset!r}")
            ds = _auto_dataset(model, data_dir, settings.examples_limit)
        elif dataset is not None:
            if not isinstance(dataset, torch.Tensor) or dataset.ndim != 4:
                raise ValueError(f"dataset must be an image tensor (N, C, H, W) in [0, 1], got {getattr(dataset, 'shape', type(dataset).__name__)}")
            imgs = dataset[: settings.examples_limit] if settings.examples_limit else dataset
            labels = list(dataset_labels)[: len(imgs)] if dataset_labels is not None else None
            ds = _Dataset("data", imgs, labels)
    model_info = {
        "name": model_name or type(model).__name__,
        "class": type(model).__name__,
        "input_shape": list(in_shape),
        "weights_sha256": weights_fingerprint(model),
    }
    identity = {
        "format": FORMAT,
        "model": model_info,
        "layers": [i.spec for i in infos],
        "settings": {**asdict(settings), "size": size, "dataset": ds.name if ds else None},
    }
    _check_out_dir(out, identity, overwrite)

    # --- plan: fixed chunks by channel index; shard i takes every n-th job ---
    jobs = [(info, c) for info in infos for c in range(math.ceil(info.units / settings.batch))]
    mine = [job for g, job in enumerate(jobs) if g % shard_n == shard_i]
    out.mkdir(parents=True, exist_ok=True)
    part_path = out / _part_name(shard_i, shard_n)
    final, parts = _read_state(out)
    done_jobs, _ = _done_units(final, parts)
    own = next((p for p in parts if p.get("shard") == [shard_i, shard_n]), None)
    part = {
        "format": FORMAT,
        "shard": [shard_i, shard_n],
        "model": model_info,
        "layer_names": identity["layers"],
        "settings": identity["settings"],
        "jobs_done": list(own["jobs_done"]) if own else [],
        "units": dict(own["units"]) if own else {},
    }
    if final is None or not own:
        vio.save_json(part_path, part)  # claims the directory for these settings before any PNG

    def units_in(job) -> int:
        info, c = job
        return min(info.units, (c + 1) * settings.batch) - c * settings.batch

    todo = [job for job in mine if _job_id(*job) not in done_jobs]
    skipped = sum(units_in(j) for j in mine) - sum(units_in(j) for j in todo)
    rendered = 0
    rfs: dict[str, Any] = {}
    conns: dict[str, tuple[dict[int, dict], str | None]] = {}
    paths_to_names = {i.path: i.name for i in infos}
    written_data: set[int] = set()
    from tqdm.auto import tqdm

    total = sum(units_in(j) for j in mine)
    with tqdm(total=total, initial=skipped, desc=f"gallery {model_info['name']}" + (f" shard {shard_i}/{shard_n}" if shard_n > 1 else ""),
              unit="unit", disable=not progress) as bar:
        for info, chunk in todo:
            rf = None
            if ds is not None and len(info.shape) == 3:
                if info.name not in rfs:
                    from ..data.examples import receptive_field

                    rfs[info.name] = receptive_field(model, info.path)
                rf = rfs[info.name]
            if info.name not in conns:
                conns[info.name] = _layer_connections(model, info, settings.connections, paths_to_names)
            entries = _run_job(model, info, chunk, settings, render_size, out, ds, rf, written_data, conns[info.name])
            part["units"].update(entries)
            part["jobs_done"].append(_job_id(info, chunk))
            vio.save_json(part_path, part)  # the job counts as done only once this lands
            rendered += len(entries)
            bar.update(len(entries))
            if on_job_done is not None:
                on_job_done(_job_id(info, chunk))

    # record layer facts (receptive fields) for the site: cheap, deterministic, any shard can do it
    layer_meta = []
    for info in infos:
        meta: dict[str, Any] = {"name": info.name, "path": info.path, "slug": info.slug, "shape": list(info.shape), "units": info.units,
                                "channels": [info.channels[0], info.channels[-1]],
                                "page": f"layers/{info.slug}.html"}
        if ds is not None and len(info.shape) == 3:
            from ..data.examples import receptive_field

            rf = rfs.get(info.name) or receptive_field(model, info.path)
            meta["receptive_field"] = asdict(rf)
        layer_meta.append(meta)
    part["layers"] = layer_meta
    part["jobs_total"] = [_job_id(*j) for j in jobs]
    vio.save_json(part_path, part)

    manifest = None
    complete = False
    if assemble_site:
        try:
            manifest = assemble(out)
            complete = True
        except IncompleteGalleryError:
            complete = False
    return GalleryResult(out, complete, rendered, skipped, time.perf_counter() - t0, manifest)


class IncompleteGalleryError(RuntimeError):
    """Assembly was asked for while some shards' jobs are still missing."""


def assemble(out_dir: str | os.PathLike) -> dict:
    """Merge the manifest parts of a finished gallery into ``manifest.json`` and write the site.

    Raises :class:`IncompleteGalleryError` (listing missing jobs) if some shard has not finished.
    Idempotent: running it again gives the same files.
    """
    from .site import write_site

    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"no gallery directory at {out}")
    final, parts = _read_state(out)
    sources = ([final] if final else []) + parts
    if not sources:
        raise FileNotFoundError(f"{out} holds no gallery manifest (manifest.json or manifest.shard-*.json); render one first")
    ref = sources[0]
    for s in sources[1:]:
        if (s.get("model"), s.get("layer_names"), s.get("settings")) != (ref.get("model"), ref.get("layer_names"), ref.get("settings")):
            raise SettingsMismatchError(f"{out}: manifest parts were made with different settings; rerun the shards with one set of settings")
    jobs_done, units = _done_units(final, parts)
    layers = next((s["layers"] for s in sources if s.get("layers")), None)
    jobs_total = next((s["jobs_total"] for s in parts if s.get("jobs_total")), None)
    if jobs_total is None and final is not None:  # an assembled gallery lists all its jobs as done
        jobs_total = final["jobs_done"]
    if layers is None or jobs_total is None:
        raise IncompleteGalleryError(f"{out}: no shard has finished yet; run all shards before assembling")
    missing = [j for j in jobs_total if j not in jobs_done]
    if missing:
        shards = sorted({tuple(p["shard"]) for p in parts})
        raise IncompleteGalleryError(
            f"{out}: {len(missing)} of {len(jobs_total)} jobs are not done yet ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); shard parts present: {', '.join(f'{i}/{n}' for i, n in shards) or 'none'}. "
            "Run the missing shards (same command with their --shard), then assemble."
        )
    order = {info["name"]: k for k, info in enumerate(layers)}
    ordered = dict(sorted(units.items(), key=lambda kv: (order[kv[1]["layer"]], kv[1]["channel"])))
    manifest = {
        "format": FORMAT,
        "model": ref["model"],
        "layer_names": ref["layer_names"],
        "settings": ref["settings"],
        "layers": layers,
        "jobs_done": list(jobs_total),
        "units": ordered,
    }
    write_site(out, manifest)
    vio.save_json(out / MANIFEST, manifest)
    for p in out.glob("manifest.shard-*-of-*.json"):  # merged: manifest.json is now the source of truth
        if _PART_RE.match(p.name):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    return manifest
