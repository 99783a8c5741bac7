"""Tiny models for the gallery tests (shared by test_gallery*.py)."""

from __future__ import annotations

import torch
from torch import nn

HOSTILE = '<script>alert("x")</script>'


class TinyNet(nn.Module):
    """Two small convs on 1x12x12 inputs; the second is registered under an HTML-hostile name."""

    input_shape = (1, 12, 12)

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleDict({"conv": nn.Conv2d(1, 5, 3, padding=1), HOSTILE: nn.Conv2d(5, 3, 3, padding=1)})
        self.relu = nn.ReLU()
        self.layer_aliases = {"conv": "blocks.conv", "evil": f"blocks.{HOSTILE}"}
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[HOSTILE](self.relu(self.blocks["conv"](x)))


def tiny_dataset(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Random 1x12x12 images with two classes, for dataset examples in the tiny galleries."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 12, 12), generator=g), ["odd" if i % 2 else "even" for i in range(n)]
