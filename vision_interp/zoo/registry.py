"""Model names -> constructors, so that the CLI and galleries accept ``mnist_cnn``, ``inceptionv1`` or a path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torch import nn

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
        from .. import io as vio

        sd = vio.load_state_dict(path)
        if "conv1.weight" in sd and "fc.weight" in sd:
            return _mnist(True, path=path)
        if "softmax2_pre_activation_matmul.weight" in sd:
            return _inception(True, weights=path, **kwargs)
        raise ValueError(f"{path}: unrecognised state dict (keys like {', '.join(list(sd)[:4])}); load your model in Python and pass the nn.Module")
    from ..units import close_names

    near = close_names(key, MODELS)
    raise ValueError(
        f"unknown model {key!r}: not a zoo name ({', '.join(MODELS)}) and no such file."
        + (f" Did you mean {', '.join(near)}?" if near else "")
    )
