"""A gallery of a layer whose receptive field the trace cannot give (or that sees the whole input) is built
with whole-image dataset examples, and says so in its manifest and pages, instead of refusing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vision_interp as vi


class _Net(nn.Module):
    """conv -> (upsampling: unknown field | GroupNorm: global field | nothing) -> conv -> ReLU."""

    input_shape = (1, 12, 12)

    def __init__(self, mode: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        if self.mode == "upsample":
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        elif self.mode == "groupnorm":
            h = self.norm(h)
        return self.act(self.conv2(h))


@pytest.mark.parametrize("mode, reason", [("upsample", "interpolate()"), ("groupnorm", "whole input"), ("plain", None)])
def test_examples_fall_back_to_whole_images_and_say_so(tmp_path, mode, reason):
    m = _Net(mode).eval()
    data = torch.rand(10, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    out = tmp_path / mode
    res = vi.make_gallery(m, ["act:0-1"], out, dataset=data, steps=2, batch=2, diverse=0, negative=False,
                          connections=0, examples=3, progress=False, model_name=f"net-{mode}")
    assert res.complete
    manifest = json.loads((out / "manifest.json").read_text())
    rf = manifest["layers"][0]["receptive_field"]
    with torch.no_grad():
        best = m(data)[:, 0].flatten(1).max(1).values
    top = manifest["units"]["act:0"]["examples"]["top"]
    assert top[0]["index"] == int(best.argmax())
    layer_page = (out / manifest["layers"][0]["page"]).read_text()
    if reason is None:  # a known field: crops, as before
        assert not rf["whole_image"] and (rf["height"], rf["width"]) == (5, 5)
        assert all("patch" in e for e in top) and "receptive field 5x5 px" in layer_page
        return
    assert rf["whole_image"] and reason in rf["reason"] and (rf["height"], rf["width"]) == (12, 12)
    assert all("patch" not in e and e["image"] for e in top)  # the example is the whole dataset image
    assert "examples are whole images" in layer_page and reason in layer_page
    unit_page = (out / manifest["units"]["act:0"]["files"]["page"]).read_text()
    assert "Pictures are whole images" in unit_page
