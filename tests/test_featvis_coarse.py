"""Coarse-to-fine rendering: phases on smaller images, tiled up, continued at full size.

The properties that make it sound: a parameterization can be rebuilt exactly from the images it
produced (so a phase continues from where the last one got, not from an approximation), tiling a
periodic image does not change a translation-invariant objective (so the coarse climb carries over
to the full size), and everything is validated before the first step.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision_interp.featvis import RenderSettings, channel, neuron, preset, render
from vision_interp.featvis.param import FourierParam, PixelParam
from vision_interp.featvis.render import tile_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("valid", ["sigmoid", "clamp"])
@pytest.mark.parametrize("channels, decorrelate", [(3, True), (3, False), (1, False)])
@pytest.mark.parametrize("size", [(32, 32), (17, 30)])
def test_fourier_param_rebuilt_from_its_images_gives_them_back(valid, channels, decorrelate, size):
    start = FourierParam((2, channels, *size), sd=0.5, decay_power=1.25, seed=3, decorrelate=decorrelate, valid=valid)
    images = start().detach()
    again = FourierParam.from_images(images, decay_power=1.25, decorrelate=decorrelate, valid=valid)
    assert torch.allclose(again(), images, atol=2e-6)
    pixels = PixelParam.from_images(images, valid=valid, decorrelate=decorrelate)
    assert torch.allclose(pixels(), images, atol=2e-6) and pixels.decorrelate == (decorrelate and channels == 3)


def test_tiling_repeats_the_image_and_crops_to_size():
    x = torch.rand(2, 3, 5, 4)
    t = tile_images(x, (12, 9))
    assert t.shape == (2, 3, 12, 9)
    assert torch.equal(t[..., :5, :4], x) and torch.equal(t[..., 5:10, 4:8], x) and torch.equal(t[..., 10:, 8:], x[..., :2, :1])
    assert torch.equal(tile_images(x, (5, 4)), x)


class CircularConv(nn.Module):
    """A conv with circular padding: its channel mean is exactly the same on an image and on its tiling."""

    def __init__(self, c: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(c, 4, 5, padding=2, padding_mode="circular")
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_coarse_result_carries_over_to_full_size_exactly(param):
    """No full-size steps: the final image is the coarse phases' result tiled up, and its judged
    (full-size) value equals the objective the last coarse step reached (circular padding makes the
    channel mean translation-invariant, so tiling does not change it). The phases chain: the first
    recorded value of phase 2 continues from phase 1's last image (no restart from noise)."""
    model = CircularConv()
    s = preset("lucid", param=param, transforms="none", steps=18, input_shape=(3, 32, 32),
               coarse_phases=((4, 2 / 3, 0.05), (2, 1 / 3, 0.05)))
    objs = [channel("conv:0"), channel("conv:3")]
    res = render(model, objs, s, thresholds=[12, 18], progress=False)
    assert s.phase_steps() == [12, 6] and s.main_steps == 0 and res.steps == 18 and res.history.shape == (18, 2)
    assert res.images.shape == (2, 3, 32, 32) and res.snapshots[12].shape == (2, 3, 32, 32)
    with torch.no_grad():
        last = torch.stack([o({"conv": model.conv(res.snapshots[18])[:, :]})[i] for i, o in enumerate(objs)])
    assert torch.allclose(res.values, last, atol=1e-4)
    # the history records the objective before each step's update: the phase boundary does not fall back
    assert bool((res.history[12] >= res.history[11] - 1e-3).all()), res.history[10:14]
    assert bool((res.values > res.history[0]).all())
    # the 8x8 phase's snapshot is periodic with period 8 at full size
    snap = res.snapshots[12]
    assert torch.equal(snap[..., :8, :8], snap[..., 8:16, 16:24])


def test_coarse_phases_are_bit_reproducible_and_recorded():
    model = CircularConv()
    s = preset("lucid", steps=9, input_shape=(3, 32, 32), coarse_phases=((2, 5 / 9, 0.1),))
    assert (s.phase_steps(), s.main_steps) == ([5], 4)
    a, b = (render(model, [channel("conv:1"), channel("conv:2")], s, seed=7, progress=False) for _ in range(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert a.settings["coarse_phases"] == [[2, 5 / 9, 0.1]] and RenderSettings.from_dict(a.settings) == s
    c = render(model, [channel("conv:1"), channel("conv:2")], s, seed=8, progress=False)
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("phases", [((1, 0.5, 0.05),), ((2, 0, 0.05),), ((2, 1.5, 0.05),), ((2, 0.5, 0.0),), ((2, 0.5),),
                                    ((True, 0.5, 0.05),), ((2, 0.6, 0.05), (4, 0.6, 0.05)), "fast"])
def test_bad_coarse_phases_are_clear_errors(phases):
    with pytest.raises(ValueError, match="coarse_phases"):
        RenderSettings(coarse_phases=phases)
    with pytest.raises(ValueError, match="add up to more than 1"):
        RenderSettings(coarse_phases=((2, 0.9, 0.05),), polish_fraction=0.2)


def test_phase_steps_add_up_and_the_polish_comes_out_of_the_full_size_steps():
    s = RenderSettings(steps=100, coarse_phases=((4, 0.333, 0.05), (2, 0.333, 0.05)), polish_fraction=0.1)
    assert s.phase_steps() == [33, 34] and s.coarse_steps == 67 and s.polish_steps == 10 and s.main_steps == 23
    tiny = s.replace(steps=3)
    assert sum(tiny.phase_steps()) + tiny.main_steps + tiny.polish_steps == 3 and min(tiny.phase_steps() + [tiny.main_steps]) >= 0


def test_a_model_that_rejects_the_coarse_size_is_refused_before_any_step():
    """A flatten + linear head only takes its own size: the coarse phase is refused up front, naming it."""
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 3))
    steps = []
    with pytest.raises(ValueError, match=r"coarse phase 0 \(1/2 of the side: 16x16"):
        render(model, channel("2:0"), "lucid", transforms="none", input_shape=(3, 32, 32), steps=3,
               coarse_phases=((2, 0.5, 0.05),), progress=False, on_step=lambda i, v: steps.append(i))
    assert steps == []


def test_a_coarse_size_too_small_for_the_model_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 2, 5), nn.ReLU())
    with pytest.raises(ValueError, match=r"coarse phase 0 \(1/8 of the side: 4x4.*coarse_phases=\(\)"):
        render(model, 2 * channel("0:0") + channel("0:1"), "lucid", transforms="none", input_shape=(3, 32, 32), steps=2,
               coarse_phases=((8, 0.5, 0.05),), progress=False)  # 4x4 images: smaller than the 5x5 kernel


def test_a_given_parameterization_cannot_be_combined_with_coarse_phases():
    model = CircularConv()
    p = FourierParam((1, 3, 32, 32))
    with pytest.raises(ValueError, match="coarse_phases"):
        render(model, channel("conv:0"), "lucid", param=p, input_shape=(3, 32, 32), steps=2, coarse_phases=((2, 0.5, 0.05),),
               progress=False)


def test_objectives_that_read_one_position_are_refused_with_coarse_phases():
    """A tiled smaller image does not stand in for one position: refused before any work, with the way out;
    a combination containing a neuron reads a position too, a channel mean does not."""
    from vision_interp.zoo import inceptionv1

    model = inceptionv1(pretrained=False)
    steps = []
    with pytest.raises(ValueError, match=r"reads one position.*coarse_phases=\(\)"):
        render(model, neuron("mixed3a:5@1,1"), "pyramid", input_shape=(3, 64, 64), steps=3, progress=False,
               on_step=lambda i, v: steps.append(i))
    with pytest.raises(ValueError, match=r"reads one position"):
        render(model, channel("mixed3a:1") - 0.5 * neuron("mixed3a:2@1,1"), "pyramid", input_shape=(3, 64, 64), steps=3,
               progress=False, on_step=lambda i, v: steps.append(i))
    assert steps == []
    assert (channel("mixed3a:1") - 0.5 * neuron("mixed3a:2@1,1")).reads_position and not (2 * channel("mixed3a:1")).reads_position
    assert not (-channel("mixed3a:1") / 2).reads_position and (-neuron("mixed3a:1")).reads_position
