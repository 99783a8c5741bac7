"""A trained dictionary with its card: train on a layer, measure, save, load by name.

A :class:`Dictionary` is the TopK SAE module plus what it was trained on (model, layer, data) and
what was measured (the card). Files: ``<name>.safetensors`` (tensors) + ``<name>.json`` (card) +
``<name>.md`` (readable card), written atomically; :func:`load_dictionary` takes a name under
``models/features/`` or a path.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import io as vio
from .. import resources
from ..checks import FileContentError, check_images, check_instance, check_state_dict
from .sae import SAEConfig, TopKSAE, train_topk_sae

__all__ = ["Dictionary", "FEATURES_DIR", "layer_samples", "train_dictionary", "save_dictionary", "load_dictionary"]

FEATURES_SUBDIR = "features"  # named dictionaries live in <models folder>/features (vision_interp.resources)
FEATURES_DIR = resources.find_model(FEATURES_SUBDIR) or resources.models_search_path()[0] / FEATURES_SUBDIR
FORMAT = "vision_interp.features/1"


@dataclass
class Dictionary:
    """A sparse dictionary for one layer. ``module`` maps ``(N, C, H, W) -> (N, F, H, W)``."""

    module: TopKSAE
    layer: str  # source layer (module path)
    card: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # short; the pictures are in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)

    @property
    def n_features(self) -> int:
        return self.module.n_features

    @property
    def k(self) -> int:
        return self.module.k

    @property
    def feature_layer(self) -> str:
        """The name the features get when attached with the default suffix."""
        return self.card.get("feature_layer") or f"{self.layer}/sae"

    @property
    def directions(self) -> torch.Tensor:
        """Decoder directions ``(F, C)``: feature f adds ``z_f * directions[f]`` to the layer."""
        return self.module.directions

    @property
    def encoder(self) -> torch.Tensor:
        """Encoder rows ``(F, C)`` in the layer's units: pre-activation_f = encoder[f] . x + const."""
        return self.module.W_enc.detach() / self.module.scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decode(z)


def layer_activations(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The layer's output on ``images``, batched, detached, on the CPU: ``(N, C, H, W)`` or ``(N, C)``.
    Through the package's one dataset loop (checked images, eval mode, no gradients)."""
    from ..capture import capture_dataset
    from ..errors import check_model
    from ..units import resolve_layer

    check_model(model)
    _check_layer_name(layer)
    if not isinstance(images, torch.Tensor) and not (isinstance(images, (list, tuple)) and images
                                                      and all(isinstance(b, torch.Tensor) for b in images)):
        from ..checks import InputTypeError

        raise InputTypeError(f"images: expected a tensor (N, C, H, W) (or a list of such batches), got {type(images).__name__}")
    path = resolve_layer(model, layer)
    return torch.cat([cache[path].float().cpu() for _, cache in capture_dataset(model, images, [path], batch_size=batch_size)])


def _check_layer_name(layer: object, arg: str = "layer") -> None:
    from ..checks import InputTypeError

    if not isinstance(layer, str):
        raise InputTypeError(f"{arg}: expected a layer name (e.g. 'conv2'), got {type(layer).__name__} {layer!r}")


def as_samples(acts: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N*H*W, C)`` (spatial positions as samples); ``(N, C)`` unchanged."""
    from ..checks import InputTypeError

    if not isinstance(acts, torch.Tensor):
        raise InputTypeError(f"acts: expected a tensor (N, C, H, W) or (N, C), got {type(acts).__name__}")
    if acts.ndim == 2:
        return acts
    if acts.ndim != 4:
        raise ValueError(f"acts: expected (N, C, H, W) or (N, C) activations, got {tuple(acts.shape)}")
    return acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])


def layer_samples(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """A layer's activations on ``images`` as samples ``(M, C)``, one per image and position."""
    return as_samples(layer_activations(model, layer, images, batch_size))


def train_dictionary(model: nn.Module, layer: str, images: torch.Tensor, config: SAEConfig = SAEConfig(), *,
                     data: str = "", progress: bool = True) -> Dictionary:
    """Train a TopK SAE on ``layer``'s activations over ``images`` (positions as samples)."""
    from ..checks import InputTypeError
    from ..errors import check_model
    from ..units import resolve_layer

    check_model(model)
    _check_layer_name(layer)
    path = resolve_layer(model, layer)
    check_images(images, model, arg="images", allow_single=False)
    check_instance(config, SAEConfig, "config")
    config.validate(1)
    if not isinstance(data, str):
        raise InputTypeError(f"data: expected a description (str), got {type(data).__name__}")
    if not isinstance(progress, bool):
        raise InputTypeError(f"progress: expected True or False, got {type(progress).__name__} {progress!r}")
    x = layer_samples(model, path, images)
    t0 = time.perf_counter()
    sae = train_topk_sae(x, config, progress=progress)
    seconds = time.perf_counter() - t0
    card = {
        "format": FORMAT,
        "kind": "topk_sae",
        "layer": path,
        "feature_layer": f"{path}/sae",
        "n_features": config.n_features,
        "d_in": int(x.shape[1]),
        "k": config.k,
        "config": asdict(config),
        "data": data or f"{len(images)} images",
        "samples": int(x.shape[0]),
        "training_seconds": round(seconds, 2),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    return Dictionary(sae, path, card)


def _bare_name(name_or_path: str | os.PathLike) -> str | None:
    """The name when ``name_or_path`` names a dictionary in the models folder rather than a path, else None."""
    p = Path(name_or_path)
    if p.suffix in (".safetensors", ".json") or p.parent != Path(".") or p.exists() or Path(f"{p}.safetensors").is_file():
        return None
    return p.name


def check_name_or_path(value: object, arg: str) -> None:
    """A name or a path: a non-empty ``str`` or an ``os.PathLike`` (an int, a tensor, a Dictionary are refused)."""
    from ..checks import InputError, InputTypeError

    if not isinstance(value, (str, os.PathLike)):
        raise InputTypeError(f"{arg}: expected a name or a path (str or pathlib.Path), got {type(value).__name__} {value!r}")
    if not str(os.fspath(value)).strip():
        raise InputError(f"{arg}: an empty name; give a name (e.g. 'mnist_cnn_conv2_sae') or a path")


def _path_for(name_or_path: str | os.PathLike, *, saving: bool = False, arg: str = "name_or_path") -> Path:
    """Base path (no suffix): a path as given, or a bare name looked up along the models search path
    (loading) or placed in the user's models folder (saving; never inside an installed package)."""
    check_name_or_path(name_or_path, arg)
    name = _bare_name(name_or_path)
    if name is None:
        p = Path(name_or_path)
        return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    if saving:
        return resources.user_models_dir() / FEATURES_SUBDIR / name
    found = resources.find_model(f"{FEATURES_SUBDIR}/{name}.safetensors")
    return found.with_suffix("") if found else resources.models_search_path()[0] / FEATURES_SUBDIR / name


def save_dictionary(dictionary: Dictionary, out: str | os.PathLike) -> Path:
    """Write ``out.safetensors`` + ``out.json`` + ``out.md`` (``out`` without suffix, or a bare name
    for ``features/<name>`` in :func:`vision_interp.resources.user_models_dir`). Returns the safetensors path."""
    check_instance(dictionary, Dictionary, "dictionary")
    check_instance(dictionary.module, TopKSAE, "dictionary.module")
    base = _path_for(out, saving=True, arg="out")
    m = dictionary.module
    meta = {"format": FORMAT, "layer": dictionary.layer, "n_features": str(m.n_features), "k": str(m.k), "d_in": str(m.d_in)}
    weights = vio.save_state_dict(base.with_suffix(".safetensors"), m.state_dict(), metadata=meta)
    card = dict(dictionary.card)
    card["weights_sha256"] = vio.sha256_file(weights)
    vio.save_json(base.with_suffix(".json"), card)
    vio.atomic_write_text(base.with_suffix(".md"), _card_markdown(base.name, card))
    return weights


def _card_markdown(name: str, card: dict) -> str:
    import json

    lines = [f"# Dictionary card: {name}", "", "A TopK sparse autoencoder on one layer (vision_interp.features).", "",
             "| field | value |", "| --- | --- |"]
    for key, value in card.items():
        if key == "metrics":
            continue
        lines.append(f"| {key} | {value if isinstance(value, str) else json.dumps(value)} |")
    metrics = card.get("metrics") or {}
    if metrics:
        lines += ["", "## Metrics (held-out data)", "", "| metric | value |", "| --- | --- |"]
        for key, value in metrics.items():
            if isinstance(value, (int, float, str)):
                lines.append(f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def load_dictionary(name_or_path: str | os.PathLike) -> Dictionary:
    """A dictionary by name (``features/<name>`` along the models search path of :mod:`vision_interp.resources`)
    or path (with or without ``.safetensors``)."""
    base = _path_for(name_or_path)
    weights, card_path = base.with_suffix(".safetensors"), base.with_suffix(".json")
    if not weights.is_file():
        known = [p.stem for p in resources.list_model_files(FEATURES_SUBDIR, "*.safetensors")]
        raise FileNotFoundError(f"no dictionary at {weights}; known names: {', '.join(known) or 'none'}")
    if not card_path.is_file():
        raise FileNotFoundError(f"dictionary card {card_path} is missing")
    card = vio.load_json(card_path)
    if not isinstance(card, dict):
        raise FileContentError(f"{card_path}: holds a JSON {type(card).__name__}; expected a dictionary card (a JSON object)")
    if card.get("format") != FORMAT:
        raise ValueError(f"{card_path}: not a vision_interp dictionary card (format {card.get('format')!r}, expected {FORMAT!r})")
    sd = vio.load_state_dict(weights)
    shape = sd["W_enc"].shape if "W_enc" in sd and sd["W_enc"].ndim == 2 else (None, None)
    n_features, d_in = shape
    check_state_dict(sd, {"W_enc": (None, None), "b_enc": (n_features,), "W_dec": (n_features, d_in), "b_dec": (d_in,),
                          "scale": ()}, weights)
    k = card.get("k")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_features:
        raise FileContentError(f"{card_path}: 'k' is {k!r}; expected an integer in 1..{n_features} (the number of features)")
    if not isinstance(card.get("layer"), str) or not card["layer"]:
        raise FileContentError(f"{card_path}: 'layer' is {card.get('layer')!r}; expected the layer name the dictionary reads")
    sae = TopKSAE(int(d_in), int(n_features), int(card["k"]))
    sae.load_state_dict(sd, strict=True)
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return Dictionary(sae, card["layer"], card)


def dictionary_from_directions(directions: torch.Tensor, layer: str, k: int, *, encoder: torch.Tensor | None = None,
                               bias: torch.Tensor | None = None) -> Dictionary:
    """A dictionary with given unit directions (tests, planted cases): encoder = decoder unless given."""
    from ..checks import InputError, InputTypeError, check_int, check_matrix

    check_matrix(directions, "directions")
    f, c = directions.shape
    if not directions.is_floating_point():
        raise InputTypeError(f"directions: dtype {directions.dtype}; expected floating point directions (F, C)")
    if bool((directions.norm(dim=1) == 0).any()):
        raise InputError("directions: a zero row; every direction needs a length to be normalized")
    if not isinstance(layer, str) or not layer:
        raise InputTypeError(f"layer: expected the source layer's name, got {type(layer).__name__} {layer!r}")
    k = check_int(k, "k", minimum=1, maximum=f)
    for arg, t, shape in (("encoder", encoder, (f, c)), ("bias", bias, (f,))):
        if t is not None:
            check_matrix(t, arg, ndim=len(shape))
            if tuple(t.shape) != shape:
                raise InputError(f"{arg}: shape {tuple(t.shape)}; expected {shape} for {f} directions of {c} channels")
    sae = TopKSAE(c, f, k)
    with torch.no_grad():
        sae.W_dec.copy_(directions / directions.norm(dim=1, keepdim=True))
        sae.W_enc.copy_(encoder if encoder is not None else sae.W_dec)
        if bias is not None:
            sae.b_enc.copy_(bias)
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return Dictionary(sae, layer, {"format": FORMAT, "kind": "given", "layer": layer, "n_features": f, "k": k})


