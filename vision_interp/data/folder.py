"""A folder of images as a dataset (ImageNet validation, your own photos), read lazily.

Images are found recursively (``.png .jpg .jpeg .bmp .gif .webp``), sorted by relative path so
indices are stable, and each is resized (shorter side) and centre-cropped to the model's input.
A label is the image's parent folder name when the images sit in sub-folders (ImageNet's
``n01440764/...`` layout), else None. Nothing is held in memory beyond one batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

__all__ = ["ImageFolder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass
class ImageFolder:
    """``ImageFolder(root, (3, 224, 224))``: ``len(ds)``, ``ds[i]`` -> (C, H, W) in [0, 1], ``ds.batches(64)``."""

    root: Path
    shape: tuple[int, int, int]
    limit: int | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise ValueError(f"--dataset {self.root}: no such directory (give a folder of images)")
        files = sorted((p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=lambda p: p.relative_to(self.root).as_posix())
        if self.limit is not None:
            files = files[: self.limit]
        if not files:
            raise ValueError(f"--dataset {self.root}: no images found ({', '.join(IMAGE_SUFFIXES)}), searched recursively")
        self.files = files
        nested = any(p.parent != self.root for p in files)
        self.labels = [p.parent.name for p in files] if nested else None
        self.name = _safe_name(self.root.name)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        c, h, w = self.shape
        try:
            with Image.open(self.files[i]) as im:
                im = im.convert("L" if c == 1 else "RGB")
                scale = max(h / im.height, w / im.width)
                im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.BILINEAR)
                left, top = (im.width - w) // 2, (im.height - h) // 2
                arr = np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
        except OSError as e:
            raise ValueError(f"--dataset: cannot read image {self.files[i]}: {e}") from e
        t = torch.from_numpy(arr)
        return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()

    def take(self, indices) -> torch.Tensor:
        return torch.stack([self[int(i)] for i in indices]) if len(indices) else torch.zeros((0, *self.shape))

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for s in range(0, len(self), batch_size):
            yield self.take(range(s, min(s + batch_size, len(self))))


def _safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name).strip("_")
    return keep[:40] or "images"


def is_image_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()
