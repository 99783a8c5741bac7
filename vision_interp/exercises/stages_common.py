"""What every mechanism stage of the MNIST exercise shares: rounding for results.json, a Pearson
correlation, the activations of the evaluation images (captured once) and short unit names."""

from __future__ import annotations

import numpy as np
import torch


def _r(x: float, nd: int = 3) -> float:
    x = float(x)
    return round(x, nd) if np.isfinite(x) else (1e9 if x > 0 else -1e9)



def _pearson(a, b) -> float:
    a = np.asarray(a, float).ravel()
    b = np.asarray(b, float).ravel()
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 1e-12 else 0.0



def _acts(ex) -> dict:
    if not hasattr(ex, "_acts"):
        from ..capture import capture

        with torch.no_grad():
            ex._acts = capture(ex.model, ex.x, ["conv1", "pool1", "conv2", "pool2"], detach=True)
    return ex._acts



def _short(name: str, n: int = 26) -> str:
    return name if len(name) <= n else name[: n - 1] + "."
