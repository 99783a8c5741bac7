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


def publish_transcoder_site(model: nn.Module, tcs: list[Transcoder], out_dir: str | os.PathLike, *, names: list[str],
                            steps: int = 64, data_dir: str | os.PathLike | None = None, progress: bool = True,
                            analysis: str | None = None) -> Path:
    """A gallery per transcoder, one attribution graph per digit linking into them, and ``out_dir/index.html``."""
    import html

    from .. import io as vio
    from .tc_graph_io import write_digit_graphs

    out = Path(out_dir)
    galleries = [publish_transcoder_gallery(model, tc, out, steps=steps, data_dir=data_dir, progress=progress).parent for tc in tcs]
    write_digit_graphs(model, tcs, out / "graphs", data_dir=data_dir, galleries=galleries, transcoder_names=names)
    items = [f'<li><a href="{g.name}/index.html">{html.escape(tc.feature_layer)}</a>: {tc.n_features} features, '
             f'{html.escape(tc.in_layer)} &rarr; {html.escape(tc.out_layer)}</li>' for g, tc in zip(galleries, tcs)]
    items.append('<li><a href="graphs/index.html">attribution graphs, one per digit</a></li>')
    if analysis:
        items.append(f'<li><a href="{html.escape(analysis)}">analysis: interventions against the graphs, sparsity</a></li>')
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Transcoder features</title></head><body>"
            f"<h1>Transcoder features of {html.escape(str(tcs[0].card.get('model', 'the model')))}</h1><ul>{''.join(items)}</ul></body></html>\n")
    return vio.atomic_write_text(out / "index.html", page)
