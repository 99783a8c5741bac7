"""Render every unit of some layers into a verified, locked, resumable, shardable gallery directory.

Design: the units of each layer are cut into **fixed chunks** of ``batch`` consecutive channels
(by channel index, regardless of shard or executor), and each chunk is one *job* rendered with
seeds derived from ``(seed, layer, chunk)``, so a unit's pictures never depend on which process,
shard, Ray worker or resumed run rendered it. A job's files are written atomically, then the job
is recorded with every file's sha256 in the process's manifest part
(``manifest.shard-I-of-N.json``); so a killed run loses at most the job in flight. A rerun
**verifies** every recorded file against its sha256 and re-renders the jobs whose files are
missing or corrupt, and removes orphan temporary files. A lock per shard (pid, hostname, start
time; a dead pid is stale) makes a second build of the same shard wait or exit. When every job is
recorded the parts are merged into ``manifest.json`` (the single source of truth) and the static
site is written from it alone (:mod:`vision_interp.gallery.site`).

Layout of a gallery directory::

    manifest.json                      every unit: files (+ sha256), values, examples, weights, connections
    index.html, layers/<slug>.html, units/<slug>/<channel>.html, static/gallery.css
    img/<slug>/<channel>/{main,negative,diverse-J,top-J,bottom-J,weights,conn-in-J,conn-out-J}.png
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
from ..environment import environment_report
from ..images import save_png
from ..units import layer_shape, resolve_layer, resolve_unit
from ..zoo.spec import model_spec
from .dataset import GalleryDataset, LayerStats, layer_stats
from .lock import BuildLock, GalleryLockedError, live_locks
from .weights import LayerWeights, aggregate_connections, kernel_picture, layer_weights, unit_weight_picture

__all__ = [
    "GalleryLockedError",
    "render_fingerprint",
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

FORMAT = "vision_interp.gallery/2"
MANIFEST = "manifest.json"
_PART_RE = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.json$")
# what a gallery directory may contain besides hidden temporary files
_OWN_NAMES = {"index.html", "static", "layers", "units", "img", "data", MANIFEST}
_TEMP_RE = re.compile(r"^\..+\.part$")  # vision_interp.io's atomic-write temporaries


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
    examples: int = 8  # top- and bottom-activating dataset examples per unit (0 = none)
    examples_limit: int | None = None  # use only the first N dataset images (quick runs)
    connections: int = 6  # connected units listed per direction, by total weight mass (0 = none)
    objective: str | None = None  # "channel" (spatial mean) or "neuron" (centre); None = featvis's default for the model
    precision: str = "fp32"  # "fp32", "bf16" or "auto" (resolved on the rendering machine; recorded in settings.render)

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
        _check_precision(self.precision)


def _check_precision(precision: str) -> None:
    from ..featvis.settings import PRECISIONS

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")


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
    """Class name of a logit unit (the spec's logits layer), else None."""
    spec = model_spec(model)
    names = spec.class_names
    if not names or spec.logits_layer is None or channel >= len(names):
        return None
    try:
        if resolve_layer(model, spec.logits_layer) != path:
            return None
    except ValueError:
        return None
    return str(names[channel])


def render_fingerprint(model: nn.Module, settings: "GallerySettings") -> dict:
    """What featvis will actually use to render: its ``RenderSettings`` for this model (preset,
    precision, param, transforms, lr, schedule...) with the gallery's steps and objective, and the
    device ``render`` resolves. A resumed build on another device or precision is refused, because
    its pictures would differ."""
    from ..featvis.settings import default_settings, pick_device, resolve_precision

    rs = default_settings(model)
    changes = {k: v for k, v in (("steps", settings.steps), ("objective", settings.objective)) if v is not None}
    rs = rs.replace(**changes, precision=settings.precision)
    device = pick_device(model, rs)
    rs, _rule = resolve_precision(rs, device)  # "auto": what this machine picks (a resume that picks otherwise is refused)
    d = rs.to_dict()
    d["device"] = device.type
    return d


# --------------------------------------------------------------------------------------------
# manifest parts, verification, temporary files


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


def _recorded_jobs(final: dict | None, parts: list[dict]) -> dict[str, dict[str, dict]]:
    """job id -> {unit: entry} of every recorded job. Parts override manifest.json: a rerun that
    re-renders a corrupt job records it in its part, which is newer than the assembled manifest."""
    jobs: dict[str, dict[str, dict]] = {}
    for src in ([final] if final else []) + parts:
        done = set(src.get("jobs_done", []))
        by_job: dict[str, dict[str, dict]] = {j: {} for j in done}
        for key, entry in src.get("units", {}).items():
            if entry.get("job") in done:
                by_job[entry["job"]][key] = entry
        jobs.update(by_job)
    return jobs


class _Verifier:
    """Checks recorded files against their sha256 (each path hashed once per process)."""

    def __init__(self, out: Path):
        self.out = out
        self._known: dict[str, str | None] = {}

    def sha(self, rel: str) -> str | None:
        if rel not in self._known:
            p = self.out / rel
            self._known[rel] = vio.sha256_file(p) if p.is_file() else None
        return self._known[rel]

    def forget(self, rels) -> None:
        for r in rels:
            self._known.pop(r, None)

    def bad_files(self, entries: dict[str, dict]) -> list[str]:
        """Files of these units that are missing or whose bytes changed since they were recorded."""
        bad = []
        for entry in entries.values():
            hashes = entry.get("sha256")
            if not hashes:  # recorded by an older format: nothing to verify against
                bad.append(f"{entry.get('unit')} (no checksums)")
                continue
            bad += [rel for rel, h in hashes.items() if self.sha(rel) != h]
        return bad


def _remove_temp_files(out: Path, since: float, only_under: list[Path] | None) -> list[Path]:
    """Delete orphan atomic-write temporaries (``.NAME.XXXX.part``) older than ``since`` (this
    build's lock time; newer ones belong to a build that started after us). With ``only_under``,
    only below those folders (other shards are running and own the rest)."""
    roots = only_under if only_under is not None else [out]
    removed = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in root.rglob(".*.part"):
            try:
                if _TEMP_RE.match(p.name) and p.is_file() and p.stat().st_mtime < since:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                pass
    return removed


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
# datasets and labels


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


# --------------------------------------------------------------------------------------------
# rendering one job (the part an executor runs; pure function of its arguments)


def render_job(model: nn.Module, layer: str, channels: Sequence[int], settings: "GallerySettings", size: int | None,
               base_seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The feature visualizations of one chunk: {"main", "negative"?, "diverse"?} -> (images, values, activations)."""
    out = {"main": _render(model, layer, channels, settings, size, _derive_seed(base_seed, "main"))}
    if settings.negative:
        out["negative"] = _render(model, layer, channels, settings, size, _derive_seed(base_seed, "negative"), negative=True)
    if settings.diverse > 1:
        out["diverse"] = _render(model, layer, channels, settings, size, _derive_seed(base_seed, "diverse"), diverse=settings.diverse)
    return out


def _render(model, layer: str, channels: Sequence[int], settings: "GallerySettings", size: int | None, seed: int, *,
            negative: bool = False, diverse: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk through featvis; returns images (N,C,H,W) in [0,1], objective values (N,) and
    raw channel activations (N,), unit-major with ``diverse`` images per channel when diverse > 1.

    The whole chunk is one optimisation (``batch_size`` covers it), so a unit's picture is fixed by
    (seed, layer, chunk) and never by which shard or resumed run rendered it.
    """
    from ..featvis import visualize_layer

    kw: dict[str, Any] = dict(negative=negative, steps=settings.steps, size=size, seed=seed, progress=False, objective=settings.objective,
                              precision=settings.precision)
    if diverse > 1:
        kw.update(diversity=settings.diversity_weight, images_per_unit=diverse, batch_size=max(settings.batch, diverse))
    else:
        kw.update(batch_size=len(channels))
    res = visualize_layer(model, layer, list(channels), **kw)
    acts = res.activations if res.activations is not None else res.values
    return res.images.detach().cpu(), res.values.detach().cpu().float(), acts.detach().cpu().float()


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


@dataclass
class _LayerContext:
    """Per-layer facts computed once per process: dataset statistics, receptive field, weights."""

    stats: LayerStats | None
    rf: Any
    weights: LayerWeights | None


class _Writer:
    """Writes a job's files atomically and remembers each file's sha256 for the manifest."""

    def __init__(self, out: Path, verifier: _Verifier):
        self.out, self.verifier, self.hashes = out, verifier, {}

    def png(self, img: torch.Tensor, rel: str) -> str:
        save_png(img, self.out / rel)
        self.verifier.forget([rel])
        self.hashes[rel] = self.verifier.sha(rel)
        return rel


def _example_items(kind: str, picks: list[dict], info: _LayerInfo, ctx: _LayerContext, ds: GalleryDataset, rel: str,
                   w: _Writer, written_data: set[int]) -> list[dict]:
    """Top or bottom examples of one unit: shared dataset images + receptive-field crops."""
    items = []
    imgs = ds.take([p["index"] for p in picks]) if picks else None
    for j, p in enumerate(picks):
        idx = p["index"]
        img_rel = f"data/{ds.name}-{idx:05d}.png"
        if idx not in written_data:  # (re)written once per process: also repairs a corrupt shared image
            w.png(imgs[j], img_rel)
            written_data.add(idx)
        else:
            w.hashes[img_rel] = w.verifier.sha(img_rel)
        item = {"index": idx, "value": p["value"], "image": img_rel}
        if ds.labels is not None:
            item["label"] = ds.labels[idx]
        if "position" in p and ctx.rf is not None:
            from ..data.examples import crop_patches

            item["position"] = p["position"]
            patch = crop_patches(imgs[j : j + 1], torch.tensor([p["position"]]), ctx.rf)[0]
            item["patch"] = w.png(patch, f"{rel}/{kind}-{j}.png")
        items.append(item)
    return items


def _connections(lw: LayerWeights, c: int, k: int, rel: str, w: _Writer) -> dict:
    out = {}
    for direction, tensor, other in (("inputs", lw.inputs, lw.src), ("outputs", lw.outputs, lw.dst)):
        if tensor is None or k <= 0:
            continue
        kernels = tensor[c] if direction == "inputs" else tensor[:, c]
        rows = aggregate_connections(kernels, other, k)
        vmax = max((float(kernels[r["index"]].abs().max()) for r in rows), default=0.0)
        for j, r in enumerate(rows):
            r["picture"] = w.png(kernel_picture(kernels[r.pop("index")], vmax), f"{rel}/conn-{'in' if direction == 'inputs' else 'out'}-{j}.png")
        kh, kw_ = kernels.shape[-2:]
        out[direction] = {"layer": other, "kernel": [int(kh), int(kw_)], "rows": rows}
    return out


def _finish_job(model, info: _LayerInfo, chunk: int, settings: GallerySettings, rendered: dict, out: Path,
                ds: GalleryDataset | None, ctx: _LayerContext, written_data: set[int], verifier: _Verifier) -> dict[str, dict]:
    """Write one rendered chunk's PNGs (visualizations, examples, weights, connections) and return its manifest entries."""
    start = chunk * settings.batch
    channels = info.channels[start : start + settings.batch]
    entries: dict[str, dict] = {}
    for j, c in enumerate(channels):
        w = _Writer(out, verifier)
        rel = f"img/{info.slug}/{c}"
        files: dict[str, Any] = {"page": f"units/{info.slug}/{c}.html", "main": w.png(rendered["main"][0][j], f"{rel}/main.png")}
        values: dict[str, Any] = {"main": float(rendered["main"][1][j])}
        activations: dict[str, Any] = {"main": float(rendered["main"][2][j])}
        if "negative" in rendered:
            neg = rendered["negative"]
            files["negative"] = w.png(neg[0][j], f"{rel}/negative.png")
            values["negative"], activations["negative"] = float(neg[1][j]), float(neg[2][j])
        if "diverse" in rendered:
            div = rendered["diverse"]
            files["diverse"], values["diverse"], activations["diverse"] = [], [], []
            for d in range(settings.diverse):
                k = j * settings.diverse + d
                files["diverse"].append(w.png(div[0][k], f"{rel}/diverse-{d}.png"))
                values["diverse"].append(float(div[1][k]))
                activations["diverse"].append(float(div[2][k]))
        entry: dict[str, Any] = {"unit": f"{info.name}:{c}", "layer": info.name, "channel": c,
                                 "label": _class_label(model, info.path, c), "job": _job_id(info, chunk)}
        if ds is not None and ctx.stats is not None:
            entry["examples"] = {kind: _example_items(kind, getattr(ctx.stats, kind)(c, settings.examples), info, ctx, ds, rel, w, written_data)
                                 for kind in ("top", "bottom")}
            entry["range"] = ctx.stats.range(c)
            entry["histogram"] = ctx.stats.histogram(c)
            entry["class_histogram"] = ctx.stats.class_histogram(c, ds.labels)
        else:
            entry["examples"] = None
        if ctx.weights is not None:
            pic = unit_weight_picture(ctx.weights, c)
            if pic is not None:
                files["weights"] = w.png(pic[0], f"{rel}/weights.png")
                entry["weights_caption"] = pic[1]
            entry["connections"] = _connections(ctx.weights, c, settings.connections, rel, w) or None
            entry["connections_note"] = "; ".join(ctx.weights.notes) or None
        entry.update(files=files, values=values, activations=activations, sha256=dict(sorted(w.hashes.items())))
        entries[entry["unit"]] = entry
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
    checkpoint: str | os.PathLike | None = None,
    shard: str | Sequence[int] | None = None,
    overwrite: bool = False,
    data_dir: str | os.PathLike | None = None,
    dataset: Any = "auto",
    dataset_labels: Sequence[str] | None = None,
    labels: str | os.PathLike | dict | None = None,
    links: Sequence[tuple[str, str]] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    wait_lock: float = 0.0,
    progress: bool = True,
    assemble_site: bool = True,
    on_job_done: Callable[[str], None] | None = None,
    **overrides: Any,
) -> GalleryResult:
    """Render every unit of ``layers`` of ``model`` into ``out_dir`` and build the static site.

    Resumable and self-verifying (rerun the same call: recorded files are checked against their
    sha256, missing or corrupt ones re-rendered), locked (a second build of the same shard waits
    ``wait_lock`` seconds, then raises :class:`GalleryLockedError`), shardable (``shard="i/n"``;
    default from ``RANK``/``WORLD_SIZE``), with ``executor="ray"`` rendering batches as Ray tasks
    (``ray.init(address=ray_address)``). Settings may be given as ``settings=`` or as keyword
    overrides (``steps=64, batch=4``). ``dataset``: "auto" (MNIST test images for 28x28 grayscale
    models), None, a folder of images, or an image tensor (N, C, H, W) in [0, 1]. ``labels``: a
    JSON file or dict ``{"conv2:4": {"name", "note"}}``; ``links``: (title, href) pairs shown on
    the index (e.g. the report). ``checkpoint``: the weights file whose sha256 the index shows.
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
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if executor == "ray":
        from .executors import require_ray

        require_ray()
    if settings.steps is None:
        from ..featvis import model_defaults

        settings = GallerySettings(**{**asdict(settings), "steps": int(model_defaults(model)["steps"])})
    shard_i, shard_n = parse_shard(shard)
    out = Path(out_dir)

    # --- validate everything before any work ---
    infos = _layer_infos(model, layers)
    in_shape = tuple(model_spec(model).input_shape or ())
    size = settings.size or (in_shape[-1] if in_shape else 224)
    # without an explicit size, render at the model's own (C, H, W): non-square inputs stay non-square
    render_size = settings.size or (None if in_shape else 224)
    ds = _make_dataset(model, dataset, dataset_labels, data_dir, settings.examples_limit, in_shape) if settings.examples > 0 else None
    label_map = load_labels(labels, model, infos)
    link_list = [[str(t), str(h)] for t, h in links] if links is not None else None
    model_info = {
        "name": model_name or type(model).__name__,
        "class": type(model).__name__,
        "input_shape": list(in_shape),
        "weights_sha256": weights_fingerprint(model),
        "checkpoint_sha256": vio.sha256_file(checkpoint) if checkpoint is not None else None,
    }
    identity = {
        "format": FORMAT,
        "model": model_info,
        "layers": [i.spec for i in infos],
        # precision is recorded resolved, in "render" (fp32 unless asked: galleries made before it existed match)
        "settings": {**{k: v for k, v in asdict(settings).items() if k != "precision"}, "size": size, "dataset": ds.name if ds else None,
                     "dataset_sha256": ds.fingerprint if ds else None, "render": render_fingerprint(model, settings)},
    }
    out_existed = out.exists()
    if out_existed and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    try:
        with BuildLock(out, (shard_i, shard_n), wait=wait_lock) as lock:
            _check_out_dir(out, identity, overwrite)
            rendered, skipped, complete, manifest = _build_locked(
                model, infos, out, settings, render_size, ds, identity, (shard_i, shard_n), lock, label_map, link_list,
                executor, ray_address, progress, assemble_site, on_job_done)
    except BaseException:
        if not out_existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before any work: leave no empty directory behind
        raise
    return GalleryResult(out, complete, rendered, skipped, time.perf_counter() - t0, manifest)


def _layer_infos(model: nn.Module, layers: Sequence[str] | str) -> list[_LayerInfo]:
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
    return infos


def _build_locked(model, infos, out: Path, settings: GallerySettings, render_size, ds, identity: dict, shard: tuple[int, int],
                  lock: BuildLock, label_map, link_list, executor: str, ray_address, progress: bool, assemble_site: bool,
                  on_job_done) -> tuple[int, int, bool, dict | None]:
    shard_i, shard_n = shard
    others_running = [l for l in live_locks(out) if l.path != lock.path]
    lock_time = lock.path.stat().st_mtime
    jobs = [(info, c) for info in infos for c in range(math.ceil(info.units / settings.batch))]
    mine = [job for g, job in enumerate(jobs) if g % shard_n == shard_i]
    unit_dirs = [out / "img" / info.slug / str(ch) for info, c in mine
                 for ch in info.channels[c * settings.batch : (c + 1) * settings.batch]]
    _remove_temp_files(out, lock_time, unit_dirs if others_running else None)

    part_path = out / _part_name(shard_i, shard_n)
    final, parts = _read_state(out)
    recorded = _recorded_jobs(final, parts)
    verifier = _Verifier(out)
    own = next((p for p in parts if p.get("shard") == [shard_i, shard_n]), None)
    part = {
        "format": FORMAT,
        "shard": [shard_i, shard_n],
        "model": identity["model"],
        "layer_names": identity["layers"],
        "settings": identity["settings"],
        "jobs_done": list(own["jobs_done"]) if own else [],
        "units": dict(own["units"]) if own else {},
        "environment": environment_report(browser=False),  # the machine that rendered (not part of the identity: resuming elsewhere is allowed)
    }
    if label_map is not None:
        part["labels"] = label_map
    elif own and "labels" in own:
        part["labels"] = own["labels"]
    if link_list is not None:
        part["links"] = link_list
    elif own and "links" in own:
        part["links"] = own["links"]

    def units_in(job) -> int:
        info, c = job
        return min(info.units, (c + 1) * settings.batch) - c * settings.batch

    todo, repaired = [], []
    for job in mine:
        jid = _job_id(*job)
        if jid not in recorded:
            todo.append(job)
        elif verifier.bad_files(recorded[jid]):
            todo.append(job)
            repaired.append(jid)
    for jid in repaired:  # forget the bad record in our part; the re-render records it afresh
        if jid in part["jobs_done"]:
            part["jobs_done"].remove(jid)
        part["units"] = {k: e for k, e in part["units"].items() if e.get("job") != jid}
    vio.save_json(part_path, part)  # claims the directory for these settings before any PNG
    skipped = sum(units_in(j) for j in mine) - sum(units_in(j) for j in todo)
    if repaired and progress:
        print(f"re-rendering {len(repaired)} job(s) with missing or corrupt files: {', '.join(repaired[:5])}"
              f"{', ...' if len(repaired) > 5 else ''}")

    contexts: dict[str, _LayerContext] = {}
    paths_to_names = {i.path: i.name for i in infos}
    written_data: set[int] = set()

    def context(info: _LayerInfo) -> _LayerContext:
        if info.name not in contexts:
            stats = rf = None
            if ds is not None:
                stats = layer_stats(model, info.path, info.channels, ds)
                if len(info.shape) == 3:
                    from ..data.examples import receptive_field

                    rf = receptive_field(model, info.path)
            lw = layer_weights(model, info.path, paths_to_names, settings.connections > 0)
            contexts[info.name] = _LayerContext(stats, rf, lw)
        return contexts[info.name]

    def record(job, rendered_tensors) -> int:
        info, chunk = job
        entries = _finish_job(model, info, chunk, settings, rendered_tensors, out, ds, context(info), written_data, verifier)
        part["units"].update(entries)
        part["jobs_done"].append(_job_id(info, chunk))
        vio.save_json(part_path, part)  # the job counts as done only once this lands
        if on_job_done is not None:
            on_job_done(_job_id(info, chunk))
        return len(entries)

    from tqdm.auto import tqdm

    from .executors import run_jobs

    rendered = 0
    total = sum(units_in(j) for j in mine)
    with tqdm(total=total, initial=skipped, desc=f"gallery {identity['model']['name']}" + (f" shard {shard_i}/{shard_n}" if shard_n > 1 else ""),
              unit="unit", disable=not progress) as bar:
        specs = [(job, job[0].name, job[0].channels[job[1] * settings.batch : (job[1] + 1) * settings.batch],
                  _derive_seed(settings.seed, job[0].name, job[1])) for job in todo]
        for job, result in run_jobs(executor, model, specs, settings, render_size, ray_address):
            n = record(job, result)
            rendered += n
            bar.update(n)

    # record layer facts (receptive fields, weight sources) for the site: deterministic, any shard can do it
    layer_meta = []
    for info in infos:
        meta: dict[str, Any] = {"name": info.name, "path": info.path, "slug": info.slug, "shape": list(info.shape), "units": info.units,
                                "channels": [info.channels[0], info.channels[-1]], "page": f"layers/{info.slug}.html"}
        if ds is not None and len(info.shape) == 3:
            from ..data.examples import receptive_field

            rf = contexts[info.name].rf if info.name in contexts else receptive_field(model, info.path)
            meta["receptive_field"] = asdict(rf)
        layer_meta.append(meta)
    part["layers"] = layer_meta
    part["jobs_total"] = [_job_id(*j) for j in jobs]
    part["dataset"] = {"name": ds.name, "size": ds.size, "labelled": ds.labels is not None} if ds is not None else None
    vio.save_json(part_path, part)

    manifest, complete = None, False
    if assemble_site:
        try:
            manifest = assemble(out, _verifier=verifier)
            complete = True
        except IncompleteGalleryError:
            complete = False
    return rendered, skipped, complete, manifest


class IncompleteGalleryError(RuntimeError):
    """Assembly was asked for while some shards' jobs are still missing (or hold corrupt files)."""


def _latest(sources: list[dict], key: str) -> Any:
    """The value of ``key`` from the newest source that has it (parts are newer than manifest.json)."""
    for s in reversed(sources):
        if key in s:
            return s[key]
    return None


def assemble(out_dir: str | os.PathLike, *, labels: str | os.PathLike | dict | None = None,
             _verifier: _Verifier | None = None) -> dict:
    """Merge the manifest parts of a finished gallery into ``manifest.json`` and write the site.

    Every recorded file is checked against its sha256 first. Raises :class:`IncompleteGalleryError`
    (listing missing jobs or corrupt files) if some shard has not finished or a file was damaged.
    Idempotent: running it again gives the same files. ``labels`` replaces the gallery's labels.
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
    recorded = _recorded_jobs(final, parts)
    layers = _latest(sources, "layers")
    jobs_total = next((s["jobs_total"] for s in parts if s.get("jobs_total")), None)
    if jobs_total is None and final is not None:  # an assembled gallery lists all its jobs as done
        jobs_total = final["jobs_done"]
    if layers is None or jobs_total is None:
        raise IncompleteGalleryError(f"{out}: no shard has finished yet; run all shards before assembling")
    missing = [j for j in jobs_total if j not in recorded]
    shards = sorted({tuple(p["shard"]) for p in parts})
    if missing:
        raise IncompleteGalleryError(
            f"{out}: {len(missing)} of {len(jobs_total)} jobs are not done yet ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); shard parts present: {', '.join(f'{i}/{n}' for i, n in shards) or 'none'}. "
            "Run the missing shards (same command with their --shard), then assemble."
        )
    verifier = _verifier or _Verifier(out)
    corrupt = {j: verifier.bad_files(recorded[j]) for j in jobs_total}
    corrupt = {j: b for j, b in corrupt.items() if b}
    if corrupt:
        files = [f for b in corrupt.values() for f in b]
        raise IncompleteGalleryError(
            f"{out}: {len(files)} recorded file(s) are missing or changed ({', '.join(files[:4])}{', ...' if len(files) > 4 else ''}) "
            f"in job(s) {', '.join(list(corrupt)[:5])}; rerun the build (same command) to re-render them."
        )
    units = {k: e for j in jobs_total for k, e in recorded[j].items()}
    order = {info["name"]: k for k, info in enumerate(layers)}
    ordered = dict(sorted(units.items(), key=lambda kv: (order[kv[1]["layer"]], kv[1]["channel"])))
    if labels is not None:
        label_map = _labels_for_manifest(labels, layers, ordered)
    else:
        label_map = _latest(sources, "labels") or {}
    manifest = {
        "format": FORMAT,
        "model": ref["model"],
        "layer_names": ref["layer_names"],
        "settings": ref["settings"],
        "layers": layers,
        "dataset": _latest(sources, "dataset"),
        "labels": label_map,
        "links": _latest(sources, "links") or [],
        "environment": _latest(sources, "environment"),
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


def _labels_for_manifest(labels, layers: list[dict], units: dict[str, dict]) -> dict[str, dict]:
    """Labels given at assembly time (no model at hand): keys must name units of this gallery."""
    raw = labels if isinstance(labels, dict) else None
    where = "labels"
    if raw is None:
        where = f"--labels {labels}"
        if not Path(labels).is_file():
            raise ValueError(f"{where}: no such file")
        raw = vio.load_json(labels)
    by_path = {l["path"]: l["name"] for l in layers}
    out = {}
    for key, value in raw.items():
        layer, _, ch = str(key).rpartition(":")
        unit = f"{by_path.get(layer, layer)}:{ch}"
        if unit not in units:
            raise ValueError(f"{where}: unit {key!r} is not in this gallery (layers: {', '.join(l['name'] for l in layers)})")
        value = {"name": value} if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {key!r} must map to {{\"name\": text, \"note\": text}}")
        entry = {k: str(value[k]) for k in ("name", "note") if value.get(k)}
        if entry:
            out[unit] = entry
    return dict(sorted(out.items(), key=lambda kv: list(units).index(kv[0])))


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
    checkpoint: Path | None = None
    if args.weights is not None:
        checkpoint = Path(args.weights).expanduser()
        if not checkpoint.is_file():
            raise ValueError(f"--weights {args.weights}: no such file")
        if args.random_weights:
            raise ValueError("--weights and --random-weights contradict each other; give one")
        kwargs: dict[str, Any] = {"data_dir": args.data_dir} if args.model == "inceptionv1" and args.data_dir else {}
        return _zoo_with_weights(args.model, checkpoint, kwargs), checkpoint, links
    from ..cli_common import load_model_from_args

    model = load_model_from_args(args)
    if not args.random_weights:
        if Path(str(args.model)).is_file():
            checkpoint = Path(str(args.model))
        elif args.model == "mnist_cnn":
            from ..zoo.mnist_cnn import DEFAULT_CHECKPOINT  # the committed file (a path constant, not a model class)

            checkpoint = DEFAULT_CHECKPOINT
    return model, checkpoint, links


def _zoo_with_weights(name: str, path: Path, kwargs: dict) -> nn.Module:
    from ..zoo import load_model

    if name == "inceptionv1":
        return load_model("inceptionv1", weights=path, **kwargs)
    if name == "mnist_cnn":
        return load_model("mnist_cnn", path=path)
    return load_model(str(path), **kwargs)
