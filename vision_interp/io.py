"""Files: atomic writes, safe tensor loading, checksums, and downloads into a cache.

Every file the package writes goes through :func:`atomic_open` (write to a temporary file in the
same folder, fsync, then ``os.replace``), so a crash never leaves a half-written file under the
final name. Loading never unpickles code: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import torch

__all__ = [
    "ChecksumError",
    "CorruptFileError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_json",
    "load_json",
    "sha256_file",
    "save_state_dict",
    "load_state_dict",
    "cache_dir",
    "download",
    "make_parents",
    "remove_empty_dirs",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


class ChecksumError(ValueError):
    """A file's sha256 does not match the expected one."""


class CorruptFileError(ValueError):
    """A file is truncated or not in the format it claims to be."""


def make_parents(path: str | os.PathLike) -> list[Path]:
    """Create the missing folders above ``path``; return the ones created, outermost first.

    Pass the list to :func:`remove_empty_dirs` when the write fails, so no empty folder is left behind.
    """
    missing: list[Path] = []
    cur = Path(path).parent
    while not cur.exists() and cur.parent != cur:
        missing.append(cur)
        cur = cur.parent
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove the given folders, deepest first, where they are empty (others are kept untouched)."""
    for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path`` atomically.

    On any exception the temporary file is deleted and ``path`` is left as it was.
    """
    if "r" in mode or "a" in mode:
        raise ValueError("atomic_open is for writing whole files ('w' or 'wb')")
    path = Path(path)
    created = make_parents(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except BaseException:
        remove_empty_dirs(created)
        raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual permissions
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        remove_empty_dirs(created)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def save_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write JSON atomically (sorted keys are not forced, so insertion order is kept)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot encode {type(o).__name__} as JSON")


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e}); delete it or restore it from a backup") from e


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_state_dict(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Save tensors atomically: safetensors for ``.safetensors``, else a plain torch state dict."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        atomic_write_bytes(path, save(tensors, metadata=dict(metadata or {})))
    else:
        with atomic_open(path, "wb") as f:
            torch.save(tensors, f)
    return path


def load_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load tensors without executing code; a truncated or foreign file gives a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device=str(map_location)))
        except Exception as e:  # safetensors raises its own error types
            raise CorruptFileError(f"{path}: not a valid safetensors file ({e}); it may be truncated, re-download it") from e
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol chatter; a refusal is reported below
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CorruptFileError(
            f"{path}: cannot be read as a torch state dict with weights_only=True ({type(e).__name__}: {e}). "
            "It may be truncated, corrupt, or contain pickled code (which is refused); re-download it."
        ) from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptFileError(f"{path}: expected a mapping of names to tensors, got {type(obj).__name__}")
    return dict(obj)


def save_resume_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """A long run's training state (tensors, plain values, optimizer dicts), written atomically:
    a crash mid-write keeps the previous state."""
    with atomic_open(path, "wb") as f:
        torch.save(dict(state), f)


def load_resume_state(path: str | os.PathLike, fingerprint: str, who: str) -> dict | None:
    """The state saved at ``path`` when it exists and its ``"fingerprint"`` matches; else None, saying
    why on stderr (the run then starts afresh). Loaded with ``weights_only=True``: never unpickled."""
    import sys

    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign: never trusted
        print(f"{who}: ignoring unreadable resume state {path} ({type(e).__name__}); starting from scratch", file=sys.stderr)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        print(f"{who}: resume state {path} is for a different configuration; starting from scratch", file=sys.stderr)
        return None
    return state


def cache_dir() -> Path:
    """Where downloads go: ``$VISION_INTERP_CACHE``, else ``$XDG_CACHE_HOME/vision_interp``, else ``~/.cache/vision_interp``."""
    env = os.environ.get("VISION_INTERP_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vision_interp"


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` when given.

    The bytes go to a temporary file first; only a complete, verified file is moved to ``dest``.
    A short read (fewer bytes than Content-Length) or a wrong hash raises and leaves no file.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    created = make_parents(dest)
    h = hashlib.sha256()
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "vision_interp"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, atomic_open(dest, "wb") as f:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=not progress) as bar:
                while block := resp.read(1 << 20):
                    f.write(block)
                    h.update(block)
                    got += len(block)
                    bar.update(len(block))
            if total is not None and got != total:
                raise CorruptFileError(f"download of {url} was truncated: got {got} of {total} bytes; try again")
            digest = h.hexdigest()
            if sha256 is not None and digest.lower() != sha256.lower():
                raise ChecksumError(
                    f"sha256 mismatch for {url}: expected {sha256}, got {digest}. The file was not saved; "
                    "the server may have sent a different or damaged file."
                )
    except BaseException as e:
        remove_empty_dirs(created)
        if isinstance(e, urllib.error.URLError):
            raise ConnectionError(f"could not download {url}: {e.reason}. Check the network, or pass a local file path instead.") from e
        if isinstance(e, (TimeoutError, ConnectionResetError)):  # a stalled or dropped connection mid-transfer
            raise ConnectionError(f"download of {url} stalled or was cut off ({e}); try again, or pass a local file path") from e
        raise
    return dest
