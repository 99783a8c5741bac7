"""Hostile input for the MNIST exercise's library code: the completeness baselines (issue 37). The shared runner
(tests/test_api_hostile.py) checks that the model comes back exactly as it was."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from vision_interp.features.completeness import completeness_baselines
from vision_interp.units import UnknownLayerError

from hostile_support import NF, TE, VE, Case

CLAUSES = [{"digit": 0, "channel": 4, "positions": [23, 26]}, {"digit": 1, "channel": 6, "positions": [24]}]


def _labels(e: SimpleNamespace) -> torch.Tensor:
    with torch.no_grad():
        return e.m(e.x).argmax(1)


def _baselines(e: SimpleNamespace, **kw: Any) -> dict:
    lab = _labels(e)
    return completeness_baselines(e.m, kw.pop("layer", "pool2"), kw.pop("clauses", CLAUSES), kw.pop("images", e.x),
                                  kw.pop("labels", lab), kw.pop("selection_images", e.x), kw.pop("selection_labels", lab), **kw)


B = completeness_baselines
CASES: list[Case] = [
    Case(B, "a model name", lambda e: completeness_baselines("mnist", "pool2", CLAUSES, e.x, _labels(e), e.x, _labels(e)), TE, "model"),
    Case(B, "layer 5", lambda e: _baselines(e, layer=5), TE, "layer"),
    Case(B, "layer 'conv9'", lambda e: _baselines(e, layer="conv9"), UnknownLayerError, "conv9"),
    Case(B, "layer 'conv2' (a ReLU and a max pool before the logits)", lambda e: _baselines(e, layer="conv2"), VE, "linear"),
    Case(B, "clauses a dict", lambda e: _baselines(e, clauses=CLAUSES[0]), TE, "clauses"),
    Case(B, "clauses naming no cell", lambda e: _baselines(e, clauses=[{"digit": 0, "channel": 4, "positions": []}]), VE, "clauses"),
    Case(B, "a clause past the layer (position 49 of 49)", lambda e: _baselines(e, clauses=[{**CLAUSES[0], "positions": [49]}]), VE, "clauses"),
    Case(B, "NaN images", lambda e: _baselines(e, images=e.nan), NF, "images"),
    Case(B, "NaN selection_images", lambda e: _baselines(e, selection_images=e.nan), NF, "selection_images"),
    Case(B, "float labels", lambda e: _baselines(e, labels=torch.tensor([3.0, 4.0])), VE, "labels"),
    Case(B, "selection_labels for 3 images given 2", lambda e: _baselines(e, selection_labels=torch.tensor([1, 2, 3])), VE, "labels"),
    Case(B, "label 10 of 10 classes", lambda e: _baselines(e, labels=torch.tensor([3, 10])), VE, "labels"),
    Case(B, "random_seeds 1 (no spread)", lambda e: _baselines(e, random_seeds=1), VE, "random_seeds"),
    Case(B, "random_seeds 2.5", lambda e: _baselines(e, random_seeds=2.5), TE, "random_seeds"),
    Case(B, "seed -1", lambda e: _baselines(e, seed=-1), VE, "seed"),
    Case(B, "batch_size 0", lambda e: _baselines(e, batch_size=0), VE, "batch_size"),
    Case(B, "the mixed-mode model, labels = its predictions", lambda e: _baselines(e, random_seeds=3),
         lambda r: (r["model"]["accuracy"] == 1.0 and len(r["random"]["draws"]) == 3
                    and all(v is None or v <= 1.0 + 1e-9 for v in r["named"]["normalised"].values())),
         "accuracy 1.0, 3 random draws, normalised figures at most 1 or undefined"),
]
