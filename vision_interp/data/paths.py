"""Where data lives: an explicit argument, then ``$VISION_INTERP_DATA``, then a user cache dir.

The project never ships datasets; it reads them from a data directory (CI points at
``../shared/data``) and downloads them for real users into the cache when missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..io import cache_dir

__all__ = ["DATA_ENV", "data_dir", "find_data_file"]

DATA_ENV = "VISION_INTERP_DATA"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory to use: ``explicit``, else ``$VISION_INTERP_DATA``, else ``<cache>/data``."""
    if explicit:
        p = Path(explicit).expanduser()
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"data directory {p} is a file, not a folder; pass the folder that holds the data")
        if not p.is_dir():
            raise FileNotFoundError(f"data directory {p} does not exist; pass an existing folder to --data-dir")
        return p
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"${DATA_ENV} points at {p}, which does not exist")
        return p
    return cache_dir() / "data"


def find_data_file(relative: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """``relative`` inside the data directory if it exists there, else None."""
    try:
        p = data_dir(explicit) / relative
    except FileNotFoundError:
        return None
    return p if p.is_file() else None
