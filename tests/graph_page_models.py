"""Models and graphs for the attribution-graph page's browser tests (tests/test_graph_page_browser.py).

A real architecture that is not the MNIST CNN: RGB 32 x 32 inputs, four conv blocks (conv, per-channel PReLU,
2 x 2 max pool; torchvision-style module paths, so the page's layer names are long), a linear head. Its four
transcoders are trained with the package's own trainer, briefly and seeded, on structured synthetic images
(smooth colour blobs plus noise), so the graph, its pruning and its page come from the real pipeline.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from vision_interp.features.transcoder import TranscoderConfig
from vision_interp.features.transcoders import Transcoder, train_transcoder

FOUR_BLOCK_SHAPES = [(8, 16, 16), (12, 8, 8), (16, 4, 4), (16, 2, 2)]  # each block's output (C, H, W)


class Block(nn.Module):
    """conv 3x3 (padding 1) -> PReLU (one slope per channel) -> max pool 2 x 2: halves the map."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.act = nn.PReLU(c_out, init=0.15)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.conv(x)))


class FourBlockNet(nn.Module):
    """3 x 32 x 32 -> four blocks (16, 8, 4, 2 px maps) -> flatten -> linear, 6 classes. Seeded weights; the slopes
    differ per channel so the PReLUs are not one shared LeakyReLU."""

    input_shape = (3, 32, 32)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        chans = [3] + [c for c, _, _ in FOUR_BLOCK_SHAPES]
        self.features = nn.Sequential(*[Block(a, b) for a, b in zip(chans, chans[1:])])
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(16 * 2 * 2, 6)
        with torch.no_grad():
            for i, blk in enumerate(self.features):
                blk.act.weight.copy_(torch.linspace(0.05, 0.3, blk.act.weight.numel()) + 0.02 * i)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def blob_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """``n`` structured RGB images in [0, 1]: smooth colour blobs (bilinear from 6 x 6) plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.85 * smooth + 0.15 * torch.rand(n, 3, size, size, generator=gen)).clamp(0, 1)


def frozen(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: how the transcoders are trained and the graphs built."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def four_block_transcoders(model: FourBlockNet, images: torch.Tensor, steps: int = 150) -> list[Transcoder]:
    """One transcoder per block (input -> features.0.pool -> ... -> features.3.pool), seeded, ``steps`` each."""
    outs = [f"features.{i}.pool" for i in range(len(model.features))]
    ins = ["input"] + outs[:-1]
    sizes = [24, 32, 32, 24]
    return [train_transcoder(model, a, b, images, TranscoderConfig(n_features=nf, k=4, steps=steps, batch_size=16, seed=i),
                             progress=False)
            for i, (a, b, nf) in enumerate(zip(ins, outs, sizes))]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for the block, then as before: on a loaded machine two threads that contend
    train these small transcoders about ten times slower than one (measured: 13 s against 1.1 s for 50 steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
