"""Finished stages of the MNIST exercise, kept on disk so that a rerun after a failure redoes only the rest.

Each mechanism stage's output (its entries in ``results``, its figure records, the attributes it sets
on the exercise for later stages, and the random-generator states after it) is written atomically to
``<out>/.stages/<stage>.json`` as soon as the stage finishes. The file records a fingerprint of the
checkpoint, the data, the resolved configuration and the package/torch versions; a file with another
fingerprint is ignored. Encoding is plain JSON with tags for tuples, non-string dict keys, numpy arrays
and tensors, so a reused stage restores exactly the Python objects the stage made (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import io as vio

STAGE_DIR = ".stages"
# Attributes of the exercise that are set up before the cached stages (or are caches) and never stored.
_NOT_STORED = {"cfg", "out", "fig_dir", "results", "figures", "gen", "model", "_acts", "_sel_pool2"}


def fingerprint(parts: dict[str, Any]) -> str:
    """A short hash of everything a stage's output depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StageCache:
    """Reads and writes ``<out>/.stages/<key>.json`` for one fingerprint."""

    def __init__(self, out: Path, key: str):
        self.folder = Path(out) / STAGE_DIR
        self.key = key
        self.reused: list[str] = []

    def _path(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def run(self, ex: Any, stage: str, fn: Callable[[Any], None], timed: Callable[[Callable[[], None]], float]) -> tuple[bool, float]:
        """Restore ``stage`` when a matching record exists, else run it (through ``timed``) and store it.

        Returns ``(reused, seconds)``; ``seconds`` is the time the stage took when it was computed.
        """
        rec = self._load(stage, ex.out)
        if rec is not None:
            _restore(ex, rec)
            self.reused.append(stage)
            return True, float(rec["seconds"])
        before_results = {k: id(v) for k, v in ex.results.items()}
        before_attrs = dict(vars(ex))
        n_figures = len(ex.figures)
        seconds = timed(lambda: fn(ex))
        rec = {
            "fingerprint": self.key, "stage": stage, "seconds": seconds,
            "results": {k: v for k, v in ex.results.items() if before_results.get(k) != id(v)},
            "figures": ex.figures[n_figures:],
            "attrs": {k: v for k, v in vars(ex).items() if k not in _NOT_STORED and before_attrs.get(k, _MISSING) is not v},
            "rng": {"generator": ex.gen.get_state(), "torch": torch.get_rng_state()},
        }
        try:
            text = json.dumps(encode(rec)) + "\n"
        except TypeError as e:  # the stage keeps something JSON cannot hold: the run goes on, the stage is not resumable
            print(f"mnist-exercise: stage {stage} cannot be stored for resuming ({e}); a rerun will recompute it", file=sys.stderr)
            return False, seconds
        vio.atomic_write_text(self._path(stage), text)
        return False, seconds

    def _load(self, stage: str, out: Path) -> dict | None:
        path = self._path(stage)
        if not path.is_file():
            return None
        try:
            rec = decode(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, KeyError):  # truncated by hand or from another version: recompute
            return None
        if not isinstance(rec, dict) or rec.get("fingerprint") != self.key:
            return None
        if not all((Path(out) / f["file"]).is_file() for f in rec["figures"]):
            return None  # a figure was deleted since: redraw it with the stage
        return rec

    def clear(self) -> None:
        """Called once the final results are written: the stage files are no longer needed."""
        shutil.rmtree(self.folder, ignore_errors=True)


class _Missing:
    pass


_MISSING = _Missing()


def _restore(ex: Any, rec: dict) -> None:
    ex.results.update(rec["results"])
    ex.figures.extend(rec["figures"])
    for k, v in rec["attrs"].items():
        setattr(ex, k, v)
    ex.gen.set_state(rec["rng"]["generator"])
    torch.set_rng_state(rec["rng"]["torch"])


# =============================================================================== exact JSON round trip

def encode(o: Any) -> Any:
    """JSON-ready form of ``o`` that :func:`decode` turns back into equal objects of the same types."""
    if o is None or isinstance(o, (bool, str)) or type(o) in (int, float):
        return o
    if isinstance(o, torch.Tensor):
        t = o.detach().cpu()
        return {"__tensor__": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "data": t.flatten().tolist()}
    if isinstance(o, np.ndarray):
        if o.dtype == object:
            raise TypeError("cannot store a numpy object array")
        return {"__ndarray__": o.dtype.str, "shape": list(o.shape), "data": o.ravel().tolist()}
    if isinstance(o, np.generic):
        return {"__npscalar__": o.dtype.str, "value": o.item()}
    if isinstance(o, tuple):
        return {"__tuple__": [encode(v) for v in o]}
    if isinstance(o, list):
        return [encode(v) for v in o]
    if isinstance(o, Path):
        return {"__path__": str(o)}
    if isinstance(o, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in o):
            return {k: encode(v) for k, v in o.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in o.items()]}
    raise TypeError(f"cannot store a {type(o).__name__} in a stage record")


def decode(o: Any) -> Any:
    if isinstance(o, list):
        return [decode(v) for v in o]
    if not isinstance(o, dict):
        return o
    if "__tensor__" in o:
        return torch.tensor(o["data"], dtype=getattr(torch, o["__tensor__"])).reshape(o["shape"])
    if "__ndarray__" in o:
        return np.asarray(o["data"], dtype=np.dtype(o["__ndarray__"])).reshape(o["shape"])
    if "__npscalar__" in o:
        return np.dtype(o["__npscalar__"]).type(o["value"])
    if "__tuple__" in o:
        return tuple(decode(v) for v in o["__tuple__"])
    if "__path__" in o:
        return Path(o["__path__"])
    if "__items__" in o:
        return {decode(k): decode(v) for k, v in o["__items__"]}
    return {k: decode(v) for k, v in o.items()}
