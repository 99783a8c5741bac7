"""What a gallery build will do, decided before any work: its settings, the layers and channel
slices it covers, the fixed jobs (chunks of ``batch`` channels) and their seeds, shards, and the
fingerprints (weights, featvis render settings) that identify a gallery on resume."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..units import layer_shape, resolve_layer, resolve_unit
from ..zoo.spec import model_spec

FORMAT = "vision_interp.gallery/2"


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

    def __repr__(self) -> str:  # one line; the drawing lives in display (imported here only, never the reverse)
        from ..display import text

        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html

        return html(self)


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
    from ..checks import check_instance
    from ..featvis.settings import default_settings, pick_device, resolve_precision

    check_instance(settings, GallerySettings, "settings")
    declared = model_spec(model).input_shape
    shape = (int(declared[0]), int(settings.size), int(settings.size)) if settings.size and declared else None
    rs = default_settings(model, shape)  # the preset visualize_layer(size=settings.size) picks at the gallery's size
    changes = {k: v for k, v in (("steps", settings.steps), ("objective", settings.objective)) if v is not None}
    rs = rs.replace(**changes, precision=settings.precision)
    device = pick_device(model, rs)
    rs, _rule = resolve_precision(rs, device)  # "auto": what this machine picks (a resume that picks otherwise is refused)
    d = rs.to_dict()
    d["device"] = device.type
    return d


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
