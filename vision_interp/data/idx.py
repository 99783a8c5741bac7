"""Read IDX files (the MNIST format), raw or gzipped, with numpy, checking everything.

Format: 2 zero bytes, a type code (0x08 = uint8, ...), the number of dimensions, then one
big-endian uint32 per dimension, then the data. A wrong magic number, a truncated body or
trailing bytes give an error that names the file and what is wrong.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..io import CorruptFileError

__all__ = ["read_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike, expect_shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read an IDX file into a numpy array; ``expect_shape`` (None = any) is checked if given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise CorruptFileError(f"{path}: gzip data is corrupt or truncated ({e})") from e
    if len(raw) < 4:
        raise CorruptFileError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise CorruptFileError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (expected 0000 + type code 08/09/0b/0c/0d/0e + ndim)"
        )
    dtype = np.dtype(_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptFileError(f"{path}: header truncated (needs {header} bytes, file has {len(raw)})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(raw) - header
    if body < n_bytes:
        raise CorruptFileError(
            f"{path}: truncated: header says shape {shape} ({n_bytes} data bytes) but only {body} bytes follow"
        )
    if body > n_bytes:
        raise CorruptFileError(f"{path}: {body - n_bytes} unexpected trailing bytes after shape {shape}")
    arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)
    if expect_shape is not None:
        ok = len(expect_shape) == len(shape) and all(e is None or e == s for e, s in zip(expect_shape, shape))
        if not ok:
            raise CorruptFileError(f"{path}: shape {shape} does not match the expected {expect_shape}")
    return arr.astype(dtype.newbyteorder("="), copy=False)
