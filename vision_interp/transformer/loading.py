"""Load GPT-2-architecture models and the GPT-2 tokenizer without ever executing pickled code.

Three ways to name a model:

* ``"induction_2l"`` (or ``"toy"``): the small 2-layer model trained by ``vision-interp train-induction``
  and committed under ``models/induction_2l/``;
* a local directory holding ``config.json`` plus ``model.safetensors`` (or a ``pytorch_model.bin``,
  read with ``torch.load(weights_only=True)``, so a pickle with code in it is refused);
* a Hugging Face hub name (``gpt2``, ``gpt2-medium``, ``openai-community/gpt2``...), for users with
  internet; only safetensors weights are accepted from the hub.

Models come back in eval mode with **eager** attention: with the default SDPA kernel the attention
probabilities are never materialised, so every attention score would silently be missing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from .. import io as vio
from .. import resources

__all__ = [
    "TOY_MODEL_NAME",
    "TOY_MODEL_DIR",
    "NotGPT2Error",
    "load_gpt2",
    "load_gpt2_tokenizer",
    "save_gpt2",
    "check_gpt2_config",
]

TOY_MODEL_NAME = "induction_2l"
TOY_MODEL_DIR = resources.find_model(TOY_MODEL_NAME) or resources.models_search_path()[0] / TOY_MODEL_NAME
_TOY_ALIASES = {TOY_MODEL_NAME, "toy", "induction-2l"}
_HUB_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
KNOWN_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")


class NotGPT2Error(ValueError):
    """The checkpoint is not a GPT-2 architecture (the head scores read GPT-2's fused c_attn/c_proj weights)."""


def check_gpt2_config(config: object, where: str = "the model") -> None:
    """Refuse anything that is not a plain GPT-2 decoder before any weights are read."""
    model_type = getattr(config, "model_type", None) if not isinstance(config, dict) else config.get("model_type")
    if model_type != "gpt2":
        raise NotGPT2Error(
            f"{where} has model_type {model_type!r}, not 'gpt2'. The induction analysis needs a GPT-2 architecture "
            "(GPT2LMHeadModel: gpt2, gpt2-medium, distilgpt2, or a checkpoint trained with that config)."
        )
    get = (lambda k: config.get(k)) if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    if get("add_cross_attention"):
        raise NotGPT2Error(f"{where} is a GPT-2 with cross-attention (an encoder-decoder part); use a decoder-only GPT-2")


def _read_config_json(directory: Path) -> dict:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{directory} has no config.json; a GPT-2 model directory needs config.json plus model.safetensors "
            "(as written by save_pretrained or `vision-interp train-induction`)"
        )
    cfg = vio.load_json(cfg_path)
    if not isinstance(cfg, dict):
        raise NotGPT2Error(f"{cfg_path} is not a JSON object")
    return cfg


def _check_safetensors_files(directory: Path) -> list[Path]:
    """The safetensors files of ``directory``, each opened and its header checked against its size, before loading.

    A sharded index may only name ``.safetensors`` shards in the same folder: a pickled ``.bin`` shard is refused
    (unpickling can run code), as is a missing one.
    """
    from safetensors import safe_open

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    else:
        idx = vio.load_json(index)
        weight_map = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
            raise vio.CorruptFileError(f"{index}: expected a JSON object with a non-empty 'weight_map' of tensor -> shard file")
        files = []
        for shard in sorted(set(weight_map.values())):
            p = directory / shard
            if Path(shard).name != shard:
                raise vio.CorruptFileError(f"{index}: shard {shard!r} is not a file name in {directory}")
            if not shard.endswith(".safetensors"):
                raise vio.CorruptFileError(
                    f"{index}: shard {shard!r} is not a .safetensors file. Only safetensors weights are loaded "
                    "(pickled .bin files can run code when read); convert the shards to safetensors "
                    "(model.save_pretrained(dir, safe_serialization=True) where you trust the file)")
            if not p.is_file():
                raise vio.CorruptFileError(f"{index}: shard {shard} is missing from {directory}")
            files.append(p)
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    st.get_slice(key)  # touches every tensor's header entry; data offsets are checked on open
        except Exception as e:
            raise vio.CorruptFileError(
                f"{f}: not a valid safetensors file ({(str(e).splitlines() or [type(e).__name__])[0]}); "
                "it may be truncated or damaged; re-download or re-save it") from e
        if f.stat().st_size == 0:
            raise vio.CorruptFileError(f"{f} is empty (0 bytes); re-download or re-save it")
    return files


def _check_loading_info(info: dict, files: list[Path]) -> None:
    """transformers fills missing weights with random values and only warns: refuse that (a silent wrong model)."""
    missing = [k for k in info.get("missing_keys", []) if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    mismatched = [str(k[0]) if isinstance(k, (tuple, list)) else str(k) for k in info.get("mismatched_keys", [])]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:5]}")
    if mismatched:
        problems.append(f"tensors of the wrong shape {mismatched[:5]}")
    if problems:
        raise vio.CorruptFileError(
            f"{', '.join(str(f) for f in files)} does not match its config.json: {'; '.join(problems)}. "
            "Use the config.json saved with these weights")


def _finish(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    for name, p in model.named_parameters():  # NaN/inf weights would make every score meaningless
        if not bool(torch.isfinite(p).all()):
            raise vio.CorruptFileError(f"the model's weights hold NaN or infinite values (first in {name}); "
                                       "the checkpoint is broken, e.g. from a diverged training run")
    model.set_attn_implementation("eager")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device)


def _load_local(directory: Path, device: str | torch.device) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg_dict = _read_config_json(directory)
    check_gpt2_config(cfg_dict, where=str(directory / "config.json"))
    if (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file():
        files = _check_safetensors_files(directory)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar on stderr for a 2-layer model is noise
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its warnings about missing weights are replaced by _check_loading_info's error
        try:
            model, info = GPT2LMHeadModel.from_pretrained(str(directory), use_safetensors=True, local_files_only=True,
                                                          attn_implementation="eager", output_loading_info=True)
        except Exception as e:  # transformers / safetensors raise many types; name the files and what to do
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise vio.CorruptFileError(
                f"{', '.join(str(f) for f in files)}: the weights could not be loaded ({type(e).__name__}: {first}); "
                "the file may be truncated or not match config.json; re-download or re-save the model") from e
        finally:
            hf_logging.set_verbosity(verbosity)
        _check_loading_info(info, files)
        return _finish(model, device)
    bin_path = directory / "pytorch_model.bin"
    if not bin_path.is_file():
        raise FileNotFoundError(f"{directory} has config.json but no model.safetensors or pytorch_model.bin")
    # weights_only=True: a pickle that would run code raises CorruptFileError instead of executing.
    state = vio.load_state_dict(bin_path)
    config = GPT2Config.from_pretrained(str(directory), local_files_only=True)
    model = GPT2LMHeadModel(config)
    fixed = {}
    for k, v in state.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of old checkpoints
            continue
        fixed[k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"] = v
    missing, unexpected = model.load_state_dict(fixed, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise vio.CorruptFileError(
            f"{bin_path} does not match its config.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.tie_weights()
    return _finish(model, device)


def load_gpt2(name_or_path: str | os.PathLike = TOY_MODEL_NAME, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ``GPT2LMHeadModel`` in eval mode with eager attention, from a directory, the toy name, or a hub name.

    Errors come before any weights are read: a missing path is a FileNotFoundError, a config that is
    not GPT-2 a :class:`NotGPT2Error`.
    """
    name = str(name_or_path)
    if name in _TOY_ALIASES:
        weights = resources.find_model(f"{TOY_MODEL_NAME}/model.safetensors")
        if weights is None:
            where = ", ".join(str(r) for r in resources.models_search_path())
            raise FileNotFoundError(
                f"the committed toy model {TOY_MODEL_NAME}/ is missing (looked in {where}); "
                "recreate it with `vision-interp train-induction`"
            )
        return _load_local(weights.parent, device)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_local(path, device)
    if path.exists():
        raise FileNotFoundError(f"{path} is a file; pass the model *directory* (config.json + model.safetensors)")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or not _HUB_RE.match(name):
        raise FileNotFoundError(
            f"no model directory at {path}. Pass a folder with config.json + model.safetensors, "
            f"{TOY_MODEL_NAME!r} for the committed toy model, or a hub name such as {', '.join(KNOWN_HUB_NAMES)}"
        )
    return _load_hub(name, device)


def _load_hub(name: str, device: str | torch.device) -> torch.nn.Module:
    from transformers import AutoConfig, GPT2LMHeadModel

    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as e:
        raise FileNotFoundError(
            f"{name!r} is neither a local directory nor a model that could be fetched from the Hugging Face hub ({e}). "
            f"Without internet, download it once elsewhere and pass the directory; known names: {', '.join(KNOWN_HUB_NAMES)}"
        ) from e
    check_gpt2_config(config, where=f"hub model {name!r}")
    model = GPT2LMHeadModel.from_pretrained(name, use_safetensors=True, attn_implementation="eager")
    return _finish(model, device)


def load_gpt2_tokenizer(tokenizer_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None):
    """``GPT2TokenizerFast`` from ``vocab.json`` + ``merges.txt`` (``tokenizer_dir``, else ``<data>/gpt2_tokenizer``).

    Local files only, never the network: ``"Hello world"`` encodes to ``[15496, 995]``.
    """
    from transformers import GPT2TokenizerFast

    if tokenizer_dir is None:
        from ..data.paths import data_dir as _data_dir

        tokenizer_dir = _data_dir(data_dir) / "gpt2_tokenizer"
    d = Path(tokenizer_dir).expanduser()
    vocab, merges = d / "vocab.json", d / "merges.txt"
    missing = [p.name for p in (vocab, merges) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"GPT-2 tokenizer files {', '.join(missing)} not found in {d}; pass --tokenizer-dir "
                                "pointing at a folder with vocab.json and merges.txt")
    # transformers >= 5 takes the file paths as vocab=/merges= (vocab_file=/merges_file= are silently ignored there)
    try:
        return GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    except TypeError:  # transformers 4.x
        return GPT2TokenizerFast(vocab_file=str(vocab), merges_file=str(merges))


def check_model(model: torch.nn.Module) -> None:
    """Refuse a model the scores cannot read: not a GPT-2, or attention that is not materialised."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "transformer") or not hasattr(model, "lm_head"):
        raise TypeError(f"expected a transformers GPT2LMHeadModel, got {type(model).__name__}")
    check_gpt2_config(config, where=type(model).__name__)


def save_gpt2(model: torch.nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` atomically, loadable by :func:`load_gpt2` and ``from_pretrained``.

    The tied unembedding (``lm_head.weight`` = ``wte``) is stored once.
    """
    check_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(model.config.to_json_string(use_diff=False))
    cfg.pop("_attn_implementation_autoset", None)
    cfg["architectures"] = ["GPT2LMHeadModel"]
    vio.atomic_write_text(out / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    vio.save_state_dict(out / "model.safetensors", state, metadata={"format": "pt"})
    return out
