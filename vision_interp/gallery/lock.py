"""A build lock for a gallery directory that survives kill -9 and works on shared file systems.

Each build process holds one lock file, ``.lock.shard-I-of-N`` (hidden, so it is never part of the
site), created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3+). It records the
owner's pid, hostname and process start time. A lock is **stale** when its host is this host and
its pid is dead, or alive but started at another time (the pid was reused); a stale lock is taken
over. A live lock of the same shard, or of a different shard count, is a conflict: the second build
waits (``wait`` seconds) or raises :class:`GalleryLockedError` with the owner's details. Locks of
other shards of the same count are fine: shards are meant to run at the same time.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GalleryLockedError", "BuildLock", "live_locks"]

_LOCK_RE = re.compile(r"^\.lock\.shard-(\d+)-of-(\d+)$")


class GalleryLockedError(RuntimeError):
    """Another live build holds the gallery directory (same shard, or another shard count)."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None where /proc is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat; the command name may hold spaces


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    path: Path
    pid: int
    hostname: str
    started: str | None  # process start time (ticks since boot) where known
    created: float  # wall-clock time the lock was taken
    shard: tuple[int, int]

    def stale(self) -> bool:
        """Dead (or reused) pid on this host. Locks of other hosts are never judged stale here."""
        if self.hostname != socket.gethostname():
            return False
        if not _pid_alive(self.pid):
            return True
        return self.started is not None and _process_start(self.pid) not in (None, self.started)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.created))  # local time, zone named
        return f"pid {self.pid} on {self.hostname}, shard {self.shard[0]}/{self.shard[1]}, since {when} ({self.path.name})"


def _read(path: Path) -> LockInfo | None:
    try:
        d = json.loads(path.read_text())
        return LockInfo(path, int(d["pid"]), str(d["hostname"]), d.get("started"), float(d["created"]), tuple(d["shard"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):  # torn write by a killed owner: treat as stale
        return LockInfo(path, -1, socket.gethostname(), None, path.stat().st_mtime if path.exists() else 0.0, (0, 0))


def live_locks(out: Path) -> list[LockInfo]:
    """Every lock in ``out`` whose owner is (or may be) alive."""
    found = []
    if out.is_dir():
        for p in sorted(out.iterdir()):
            if _LOCK_RE.match(p.name):
                info = _read(p)
                if info is not None and not (info.pid == -1 or info.stale()):
                    found.append(info)
    return found


class BuildLock:
    """``with BuildLock(out, (i, n), wait=0):`` holds the shard's lock for the block."""

    def __init__(self, out: Path, shard: tuple[int, int], wait: float = 0.0, poll: float = 0.5):
        self.out, self.shard, self.wait, self.poll = Path(out), tuple(shard), float(wait), poll
        self.path = self.out / f".lock.shard-{self.shard[0]}-of-{self.shard[1]}"
        self._content: str | None = None

    def _conflicts(self) -> list[LockInfo]:
        return [i for i in live_locks(self.out) if i.path != self.path and i.shard[1] != self.shard[1]]

    def _try_create(self) -> bool:
        content = json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(), "started": _process_start(os.getpid()),
                              "created": time.time(), "shard": list(self.shard)})
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        self._content = content
        return True

    def _remove_stale(self) -> None:
        """Delete the locks of dead builds (any shard): they would otherwise stay in the directory forever."""
        for p in sorted(self.out.iterdir()):
            if not _LOCK_RE.match(p.name):
                continue
            info = _read(p)
            if info is None or not (info.pid == -1 or info.stale()):
                continue
            try:
                if _read(p) == info:  # unchanged since judged stale: not a fresh lock of a racer
                    os.unlink(p)
            except FileNotFoundError:
                pass

    def acquire(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        while True:
            others = self._conflicts()
            if not others:
                self._remove_stale()
                if self._try_create():
                    others = self._conflicts()  # a build of another shard count started meanwhile
                    if not others:
                        return
                    self.release()
                else:
                    holder = _read(self.path)
                    others = [holder] if holder is not None else []
            if others and time.monotonic() >= deadline:
                raise GalleryLockedError(
                    f"{self.out} is being built by another process ({'; '.join(o.describe() for o in others)}). "
                    + ("Waited {:.0f} s. ".format(self.wait) if self.wait else "")
                    + "Wait for it to finish (or pass --wait-lock SECONDS), or, if that process is gone and was on another "
                    "host, delete the lock file named above."
                )
            time.sleep(self.poll)

    def release(self) -> None:
        try:
            if self._content is not None and self.path.read_text() == self._content:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._content = None

    def __enter__(self) -> "BuildLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
