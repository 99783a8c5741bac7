"""Model names -> constructors, so that the CLI and galleries accept ``mnist_cnn``, ``inceptionv1`` or a path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torch import nn

from ..io import CorruptFileError

__all__ = ["MODELS", "list_models", "load_model"]


def _mnist(pretrained: bool, **kw) -> nn.Module:
    from .mnist_cnn import mnist_cnn

    return mnist_cnn(pretrained=pretrained, **kw)


def _inception(pretrained: bool, **kw) -> nn.Module:
    from .inceptionv1 import inceptionv1

    return inceptionv1(pretrained=pretrained, **kw)


MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "mnist_cnn": (_mnist, "small MNIST CNN (conv1, conv2, fc); committed checkpoint in models/"),
    "inceptionv1": (_inception, "Lucid's inception5h; weights download on first use (random with --random-weights)"),
}


def list_models() -> dict[str, str]:
    return {k: v[1] for k, v in MODELS.items()}


def load_model(name_or_path: str | os.PathLike, *, pretrained: bool = True, **kwargs) -> nn.Module:
    """A zoo model by name, or a MNIST CNN / InceptionV1 checkpoint file (architecture inferred from its keys).

    ``pretrained=False`` gives random weights (useful for timing and tests).
    """
    key = str(name_or_path)
    if key in MODELS:
        return MODELS[key][0](pretrained, **kwargs)
    path = Path(key).expanduser()
    if path.is_file():
        return _load_checkpoint(path, **kwargs)
    from ..units import close_names

    near = close_names(key, MODELS)
    raise ValueError(
        f"unknown model {key!r}: not a zoo name ({', '.join(MODELS)}) and no such file."
        + (f" Did you mean {', '.join(near)}?" if near else "")
    )


def check_finite(sd: dict, path: Path) -> None:
    """Refuse weights with NaN or infinite values: every result computed from them would be meaningless."""
    import torch

    for name, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CorruptFileError(
                f"{path}: tensor {name} has {bad} of {t.numel()} values that are NaN or infinite; "
                "the checkpoint is broken (e.g. a diverged training run); retrain or use another file")


def _load_checkpoint(path: Path, **kwargs) -> nn.Module:
    """A MNIST CNN / InceptionV1 checkpoint: architecture from its keys, values checked, mismatches explained."""
    from .. import io as vio

    sd = vio.load_state_dict(path)  # safetensors or weights_only: never runs pickled code
    if "conv1.weight" in sd and "fc.weight" in sd:
        arch, build = "MNIST CNN", lambda: _mnist(True, path=path)
        fix = "retrain it (vision-interp train-mnist) or use the committed models/mnist_cnn.safetensors"
    elif "softmax2_pre_activation_matmul.weight" in sd:
        arch, build = "InceptionV1", lambda: _inception(True, weights=path, **kwargs)
        fix = "use the original inception5h.pth (or --model inceptionv1, which downloads it)"
    else:
        raise CorruptFileError(
            f"{path}: unrecognised state dict (keys like {', '.join(list(sd)[:4]) or '(none)'}); expected a MNIST CNN "
            "(conv1/conv2/fc) or InceptionV1 checkpoint. For another model, load it in Python and pass the nn.Module")
    check_finite(sd, path)
    try:
        return build()
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        if isinstance(e, CorruptFileError) and str(path) not in str(e):
            raise
        what = f"missing tensor {e.args[0]!r}" if isinstance(e, KeyError) and e.args else \
            " ".join(str(e).split())[:300] or type(e).__name__
        raise CorruptFileError(
            f"{path}: the tensors do not fit the {arch} architecture ({what}); the file may come from another "
            f"version of the model or be edited; {fix}") from e
