"""Neuron galleries: every unit of some layers rendered into a static, offline website.

``make_gallery(model, ["conv1", "conv2"], "galleries/mnist_cnn")`` renders in fixed batches,
resumes after interruptions, splits across shards (``shard="0/2"``), and assembles
``index.html``, one page per layer and one per unit from ``manifest.json``.
"""

from .build import (
    GalleryResult,
    GallerySettings,
    IncompleteGalleryError,
    SettingsMismatchError,
    assemble,
    gallery_layers,
    make_gallery,
    parse_shard,
)
from .site import write_site

__all__ = [
    "GalleryResult",
    "GallerySettings",
    "IncompleteGalleryError",
    "SettingsMismatchError",
    "assemble",
    "gallery_layers",
    "make_gallery",
    "parse_shard",
    "write_site",
]
