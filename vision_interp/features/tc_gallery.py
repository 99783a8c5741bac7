"""A feature gallery for a transcoder: the ordinary gallery builder on the model with the features attached."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .replacement import attached_transcoder
from .transcoders import Transcoder

__all__ = ["publish_transcoder_gallery"]


def publish_transcoder_gallery(model: nn.Module, tc: Transcoder, out_dir: str | os.PathLike, *, steps: int = 64, batch: int = 16,
                               examples: int = 8, data_dir: str | os.PathLike | None = None, overwrite: bool = False,
                               progress: bool = True) -> Path:
    """``vision_interp.gallery.make_gallery`` for layer ``"<block>/tc"`` into ``out_dir/<block>_tc``
    (feature visualizations with straight-through gradients, top dataset examples); returns its index."""
    from ..gallery import make_gallery

    out = Path(out_dir) / tc.feature_layer.replace("/", "_")
    with attached_transcoder(model, tc, gradient="linear") as a:
        make_gallery(model, [a.name], out, steps=steps, batch=batch, diverse=0, negative=True, examples=examples,
                     data_dir=data_dir, progress=progress, model_name=tc.card.get("model"), overwrite=overwrite)
    return out / "index.html"
