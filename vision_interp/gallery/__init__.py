"""Neuron galleries: every unit of some layers rendered into a static, offline website.

``make_gallery(model, ["conv1", "conv2"], "galleries/mnist_cnn")`` renders in fixed batches,
verifies and resumes after interruptions (every file's sha256 is in the manifest), locks the
directory against a second concurrent build, splits across shards (``shard="0/2"``) or Ray tasks
(``executor="ray"``), and assembles ``index.html``, one page per layer and one per unit from
``manifest.json``.
"""

from .build import (
    GalleryResult,
    GallerySettings,
    IncompleteGalleryError,
    SettingsMismatchError,
    assemble,
    gallery_layers,
    load_labels,
    make_gallery,
    parse_shard,
    render_fingerprint,
)
from .lock import GalleryLockedError
from .site import write_site

__all__ = [
    "GalleryLockedError",
    "GalleryResult",
    "GallerySettings",
    "IncompleteGalleryError",
    "SettingsMismatchError",
    "assemble",
    "gallery_layers",
    "load_labels",
    "make_gallery",
    "parse_shard",
    "render_fingerprint",
    "write_site",
]
