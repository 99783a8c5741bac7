"""What a render returns: the images, how well each achieved its objective, snapshots and the
settings used, with saving to PNG and JSON; and the error raised when the objective stops being finite."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import images as vimages
from .. import io as vio


class NonFiniteObjectiveError(RuntimeError):
    """The objective became NaN or infinite during optimisation."""


@dataclass
class RenderResult:
    """Rendered images and how well each achieved its objective.

    ``images``: (N, C, H, W) float in [0, 1] on CPU. ``values``: (N,) the objective of each
    batch element evaluated on its final image without transforms (higher = better achieved).
    ``history``: (steps, N) the objective at each step (on the transformed images that step).
    ``activations``: (N,) the raw unit activation (channel mean) for visualize/visualize_layer,
    also when the objective was negated or had a diversity term; None for plain render().
    ``units``: the unit string of each image for visualize/visualize_layer (repeated
    ``images_per_unit`` times, unit-major: image ``u * images_per_unit + j``).
    ``settings``: the whole :class:`RenderSettings` used, as a dict (``RenderSettings.to_dict()``,
    including the preset name); ``seed``: the seed. :meth:`to_dict` records all of it.
    """

    images: torch.Tensor
    values: torch.Tensor
    descriptions: list[str]
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    history: torch.Tensor | None = None
    activations: torch.Tensor | None = None
    units: list[str] | None = None
    images_per_unit: int = 1
    seconds: float = 0.0
    steps: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __repr__(self) -> str:  # short; the pictures are in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)

    def _repr_png_(self) -> bytes | None:
        from ..display import png
        return png(self)

    def __len__(self) -> int:
        return self.images.shape[0]

    def pil(self, scale: int = 1) -> list:
        """The images as PIL images (nearest-neighbour enlarged by ``scale``)."""
        return [vimages.to_pil(vimages.upscale(img, scale)) for img in self.images]

    def numpy(self) -> list:
        """The images as uint8 arrays (H, W, 3) or (H, W)."""
        return [vimages.to_numpy_image(img) for img in self.images]

    def save(self, directory: str | os.PathLike, names: Sequence[str] | None = None, *, scale: int = 1) -> list[Path]:
        """Write one PNG per image (atomically); names default to ``NNN_<description>.png``."""
        d = Path(directory)
        if names is not None and len(names) != len(self):
            raise ValueError(f"got {len(names)} names for {len(self)} images")
        names = list(names) if names is not None else [f"{i:03d}_{_slug(desc)}.png" for i, desc in enumerate(self.descriptions)]
        return [vimages.save_png(img, d / (n if n.endswith(".png") else n + ".png"), scale=scale) for img, n in zip(self.images, names)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: settings (whole), seed, steps, seconds, and per image its unit/description, value and activation."""
        acts = self.activations.tolist() if self.activations is not None else [None] * len(self)
        units = self.units or [None] * len(self)
        return {
            "settings": dict(self.settings), "seed": self.seed, "steps": self.steps, "seconds": round(self.seconds, 3),
            "images": [{"description": d, "unit": u, "value": float(v), "activation": a}
                       for d, u, v, a in zip(self.descriptions, units, self.values.tolist(), acts)],
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` atomically, with the machine's facts (``environment``, as ``vision-interp doctor``)."""
        from ..environment import environment_report

        return vio.save_json(path, {**self.to_dict(), "environment": environment_report(browser=False)})


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", text).replace(":", "-").strip("_")[:80] or "image"
