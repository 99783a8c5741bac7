"""A rendered job's files and manifest entries: each unit's pictures, its top and bottom dataset
examples with receptive-field crops, its weights and connections, written atomically with their
sha256."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..images import save_png
from .dataset import GalleryDataset, LayerStats
from .manifest import _Verifier
from .plan import GallerySettings, _class_label, _job_id, _LayerInfo
from .weights import LayerWeights, aggregate_connections, kernel_picture, unit_weight_picture


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
            item["position"] = p["position"]
        if "position" in p and ctx.rf is not None and not ctx.rf.whole_image:  # whole images: the image is the example
            from ..data.examples import crop_patches

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
