"""Circuits for dictionary features: how a feature is computed and what it writes, through the
model's own weights (the public circuits API) and the dictionary's encoder and decoder.

A feature f adds ``z_f * d_f`` to its source layer (``d_f`` = decoder direction, ``(C,)``), so its
weights *to* any later layer are the expanded weights from the source layer contracted with
``d_f``; its pre-activation reads ``e_f . x`` (``e_f`` = encoder row), so its weights *from* an
earlier layer are the expanded weights into the source layer contracted with ``e_f``. Both are
exact for the linearised path the circuits module uses (ReLU = identity, max pool = average pool).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .dictionary import Dictionary

__all__ = ["feature_output_weights", "feature_input_weights", "feature_logit_weights", "feature_top_connections"]


def _check_feature(dictionary: Dictionary, feature: object) -> int:
    """An integer feature id of ``dictionary`` (a float, also ``3.0``, is refused, never truncated)."""
    from ..checks import check_index, check_instance
    from ..units import UnitRangeError

    check_instance(dictionary, Dictionary, "dictionary")
    f = check_index(feature, "feature", what="a feature id (an integer)")
    if not 0 <= f < dictionary.n_features:
        raise UnitRangeError(f"feature: {f} is out of range: valid features are 0..{dictionary.n_features - 1}")
    return f


def _check_common(model: object, dictionary: object, layer: object, input_shape: object) -> None:
    """The model, the dictionary, an optional layer name and an optional (C, H, W) input shape."""
    from ..checks import InputError, InputTypeError, check_index, check_instance, check_model

    check_model(model)
    check_instance(dictionary, Dictionary, "dictionary")
    if layer is not None and not isinstance(layer, str):
        raise InputTypeError(f"layer: expected a layer name or None, got {type(layer).__name__} {layer!r}")
    if input_shape is not None:
        if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list, torch.Size)) or len(input_shape) != 3:
            raise InputError(f"input_shape: {input_shape!r}; expected (C, H, W)")
        for v in input_shape:
            check_index(v, "input_shape", minimum=1, what="a size (a positive integer)")


def feature_output_weights(model: nn.Module, dictionary: Dictionary, feature: int, layer: str | None = None, *,
                           input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Weights from ``feature`` to every unit of ``layer`` (default: the next layer of units after the
    source layer): ``(C_dst, kh, kw)`` (or the dst's full spatial map for fully connected layers)."""
    from ..circuits import expanded_weights, next_layer

    _check_common(model, dictionary, layer, input_shape)
    f = _check_feature(dictionary, feature)
    dst = layer or next_layer(model, dictionary.layer, input_shape=input_shape)
    w = expanded_weights(model, dictionary.layer, dst, input_shape=input_shape)  # (C_dst, C_src, ...)
    return torch.einsum("dc...,c->d...", w.double(), dictionary.directions[f].double()).float()


def feature_input_weights(model: nn.Module, dictionary: Dictionary, feature: int, layer: str | None = None, *,
                          input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Weights from every unit of ``layer`` (default: the previous layer of units) into the
    feature's pre-activation: ``(C_src, kh, kw)``."""
    from ..circuits import expanded_weights, previous_layer

    _check_common(model, dictionary, layer, input_shape)
    f = _check_feature(dictionary, feature)
    src = layer or previous_layer(model, dictionary.layer, input_shape=input_shape)
    w = expanded_weights(model, src, dictionary.layer, input_shape=input_shape)  # (C_layer, C_src, kh, kw)
    return torch.einsum("cs...,c->s...", w.double(), dictionary.encoder[f].double()).float()


def feature_logit_weights(model: nn.Module, dictionary: Dictionary, feature: int | None = None, *,
                          input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """The classifier view of features: ``(n_classes, H, W)`` for one feature (``(F, n_classes, H, W)``
    for all): how a unit of the feature at each position moves each logit."""
    from ..circuits import classifier_view

    _check_common(model, dictionary, None, input_shape)
    if feature is not None:
        _check_feature(dictionary, feature)
    view = classifier_view(model, dictionary.layer, input_shape=input_shape).double()  # (K, C, H, W)
    dirs = dictionary.directions.double()
    if feature is None:
        return torch.einsum("kchw,fc->fkhw", view, dirs).float()
    f = _check_feature(dictionary, feature)
    return torch.einsum("kchw,c->khw", view, dirs[f]).float()


def feature_top_connections(model: nn.Module, dictionary: Dictionary, feature: int, k: int = 6,
                            direction: str = "outputs", layer: str | None = None) -> dict:
    """The feature's strongest excitatory / inhibitory connections (``circuits.rank_connections``)."""
    from ..checks import InputError, check_int
    from ..circuits import next_layer, previous_layer, rank_connections

    _check_common(model, dictionary, layer, None)
    _check_feature(dictionary, feature)
    k = check_int(k, "k", minimum=1)
    if direction not in ("inputs", "outputs"):
        raise InputError(f"direction: {direction!r}; must be 'inputs' or 'outputs'")
    if direction == "outputs":
        other = layer or next_layer(model, dictionary.layer)
        kernels = feature_output_weights(model, dictionary, feature, other)
    else:
        other = layer or previous_layer(model, dictionary.layer)
        kernels = feature_input_weights(model, dictionary, feature, other)
    return {"unit": f"{dictionary.feature_layer}:{feature}", "layer": other, "direction": direction,
            **rank_connections(kernels, other, k)}
