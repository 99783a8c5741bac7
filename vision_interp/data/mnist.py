"""MNIST from a data directory (``<data>/mnist/raw``), downloaded with checksums for users who lack it.

Images come back as float tensors in [0, 1] of shape (N, 1, 28, 28) and labels as int64 (N,).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import io as vio
from .idx import read_idx
from .paths import DATA_ENV, data_dir

__all__ = ["MNIST_FILES", "MNIST_MIRRORS", "mnist_dir", "load_mnist", "ensure_mnist", "MnistSplit", "data_checksum",
           "MnistUnavailableError"]

# name: (sha256 of the uncompressed file, md5 of the canonical .gz, number of items)
MNIST_FILES = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 60000),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", "d53e105ee54ea40749a09fcbcd1e9432", 60000),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", "9fb629c4189551a2d022fa330f9573f3", 10000),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", "ec29112dd5afa0611ce80d1b7f02629c", 10000),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class MnistUnavailableError(FileNotFoundError, ConnectionError):
    """MNIST is not in the data directory and could not be downloaded (no network, or every mirror failed).

    A FileNotFoundError (the CLI reports it as bad input, exit 2) and, for callers that catch download
    failures, a ConnectionError.
    """


def _unavailable(folder: Path, missing: list[str], why: str) -> MnistUnavailableError:
    """One line: where MNIST was looked for, why it is not there, and how to point at the files."""
    why = why if len(why) <= 200 else why[:197] + "..."
    return MnistUnavailableError(
        f"MNIST not found in {folder} (missing {', '.join(missing)}) and {why}; pass --data-dir DIR or set "
        f"${DATA_ENV}=DIR, where DIR/mnist/raw/ holds the four MNIST files (train-images-idx3-ubyte etc., .gz or not)"
    )


@dataclass
class MnistSplit:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


def mnist_dir(data: str | os.PathLike | None = None) -> Path:
    return data_dir(data) / "mnist" / "raw"


def _find(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def ensure_mnist(data: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True) -> Path:
    """Make sure the four MNIST files exist in the data directory, downloading missing ones.

    Downloads go through the mirrors in turn; the uncompressed bytes of each ``.gz`` are checked
    against their known sha256 before being written (atomically). (The canonical ``.gz`` md5s are
    kept in ``MNIST_FILES`` for reference; a mirror may recompress, so the content hash decides.)
    """
    import hashlib

    folder = mnist_dir(data)
    missing = [n for n in MNIST_FILES if _find(folder, n) is None]
    if not missing:
        return folder
    if not download:
        raise _unavailable(folder, missing, "downloading is off")
    created = vio.make_parents(folder / next(iter(MNIST_FILES)))  # removed again when nothing could be downloaded
    try:
        for name in missing:
            sha = MNIST_FILES[name][0]
            errors = []
            for mirror in MNIST_MIRRORS:
                tmp = folder / f".{name}.gz.download"
                try:
                    vio.download(mirror + name + ".gz", tmp, progress=progress)
                    raw = gzip.decompress(tmp.read_bytes())
                    if hashlib.sha256(raw).hexdigest() != sha:
                        raise vio.ChecksumError(f"sha256 mismatch for the contents of {mirror}{name}.gz")
                    vio.atomic_write_bytes(folder / name, raw)
                    break
                except Exception as e:  # try the next mirror, report the failures at the end
                    errors.append(str(getattr(e.__cause__, "reason", None) or e))  # "Name or service not known"
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                raise _unavailable(folder, missing, f"could not be downloaded from {len(errors)} mirrors ({'; '.join(dict.fromkeys(errors))})")
    except BaseException:
        vio.remove_empty_dirs(created)
        raise
    return folder


def data_checksum(data: str | os.PathLike | None = None) -> str:
    """sha256 over the four uncompressed files' hashes: identifies the exact data a model saw."""
    import hashlib

    folder = mnist_dir(data)
    h = hashlib.sha256()
    for name in MNIST_FILES:
        p = _find(folder, name)
        if p is None:
            raise FileNotFoundError(f"{folder / name} is missing")
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        h.update(hashlib.sha256(raw).hexdigest().encode())
    return h.hexdigest()


def load_mnist(split: str = "train", data: str | os.PathLike | None = None, *, download: bool = True, limit: int | None = None) -> MnistSplit:
    """Load the ``"train"`` (60000) or ``"test"`` (10000) split as tensors."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    folder = ensure_mnist(data, download=download)
    prefix = "train" if split == "train" else "t10k"
    n = MNIST_FILES[f"{prefix}-images-idx3-ubyte"][2]
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"), expect_shape=(None, 28, 28))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"), expect_shape=(None,))
    if len(images) != len(labels):
        raise vio.CorruptFileError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    if len(images) != n:
        raise vio.CorruptFileError(f"{folder}: expected {n} {split} images, found {len(images)}")
    if labels.max() > 9:
        raise vio.CorruptFileError(f"{folder}: label values must be 0..9, found {int(labels.max())}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(np.array(images, copy=True)).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    return MnistSplit(x, y)
