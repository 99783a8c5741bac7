"""RenderSettings as one value: presets, validation, recording, schedules, and the fixes that came with it."""

from __future__ import annotations

import json

import pytest
import torch

from vision_interp.featvis import RenderSettings, channel, neuron, preset, render, visualize, visualize_layer
from vision_interp.featvis.settings import PRESETS, default_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lucid_preset_is_lucids_recipe():
    """Lucid/Lucent render_vis defaults: param.image(fft=True, decorrelate=True, sd=0.01, decay_power=1),
    sigmoid, transform.standard_transforms, Adam(lr=0.05), 512 steps; fp32."""
    s = PRESETS["lucid"]
    assert (s.param, s.decorrelate, s.valid, s.sd, s.decay_power) == ("fft", True, "sigmoid", 0.01, 1.0)
    assert (s.transforms, s.optimizer, s.lr, s.schedule, s.steps, s.precision) == ("standard", "adam", 0.05, "constant", 512, "fp32")


def test_to_dict_is_whole_json_and_round_trips():
    s = preset("lucid-256", steps=7, input_shape=(3, 32, 32))
    d = s.to_dict()
    assert set(d) == set(RenderSettings.__dataclass_fields__) and d["preset"] == "lucid-256"
    assert RenderSettings.from_dict(json.loads(json.dumps(d))) == s


@pytest.mark.parametrize("change, message", [
    (dict(param="wavelet"), "param must be one of"),
    (dict(steps=-1), "steps must be an integer >= 0"),
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(polish_lr=float("nan")), "polish_lr must be a finite number > 0"),
    (dict(polish_fraction=1.0), r"polish_fraction must be a number in \[0, 1\)"),
    (dict(polish_valid="tanh"), "polish_valid must be one of"),
    (dict(betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\)"),
    (dict(schedule="step"), "schedule must be one of"),
    (dict(input_shape=(28, 28)), "input_shape must be"),
])
def test_bad_settings_are_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        RenderSettings(**change)


def test_unknown_options_and_presets_are_errors(trained_mnist):
    with pytest.raises(TypeError, match="unknown render option"):
        render(trained_mnist, "conv2:1", steps=1, lrr=0.1, progress=False)
    with pytest.raises(ValueError, match="unknown preset 'fastest'"):
        preset("fastest")


def test_cosine_schedule_decays_to_the_floor():
    s = RenderSettings(lr=0.4, schedule="cosine", steps=100, final_lr_fraction=0.1)
    assert s.lr_at(0) == pytest.approx(0.4) and s.lr_at(50) == pytest.approx(0.22) and s.lr_at(100) == pytest.approx(0.04)
    assert RenderSettings(lr=0.3).lr_at(77) == 0.3


def test_defaults_per_model_and_result_records_settings(trained_mnist, tmp_path):
    assert default_settings(trained_mnist).preset == "fast-small"
    res = visualize(trained_mnist, "conv2:3", steps=3, progress=False)
    assert res.settings == default_settings(trained_mnist).replace(steps=3).to_dict()
    path = res.save_json(tmp_path / "r.json")
    rec = json.loads(path.read_text())
    assert rec["settings"]["preset"] == "fast-small" and rec["images"][0]["unit"] == "conv2:3" and rec["seed"] == 0


def test_negated_objective_reports_the_units_own_activation(trained_mnist):
    """Issue 12 bug: visualize(m, -channel(u)).activations was the objective (-0.659), not u's activation (+0.659)."""
    from vision_interp.capture import capture

    res = visualize(trained_mnist, -channel("conv2:5"), steps=8, progress=False)
    with torch.no_grad():
        truth = capture(trained_mnist, res.images, ["conv2"])["conv2:5"].mean()
    assert torch.allclose(res.activations, truth.reshape(1), atol=1e-5)
    assert torch.allclose(res.values, -res.activations, atol=1e-5)
    scaled = visualize(trained_mnist, 2 * neuron("conv2:5"), steps=2, progress=False)
    assert torch.allclose(scaled.values, 2 * scaled.activations, atol=1e-5)
    assert visualize(trained_mnist, channel("conv2:5") + channel("conv2:6"), steps=1, progress=False).activations is None


def test_unit_is_parsed_and_resolved_once_not_per_step(trained_mnist, monkeypatch):
    """One visualize(): the unit string is parsed once and each layer name resolved at most once in
    featvis (cached per model); nothing in featvis parses or resolves during the steps."""
    import vision_interp.featvis.objectives as objectives

    calls = {"parse": 0, "resolve": 0}
    real_parse, real_resolve = objectives.parse_unit, objectives.resolve_layer

    def parse(spec):
        calls["parse"] += 1
        return real_parse(spec)

    def resolve(model, name):
        calls["resolve"] += 1
        return real_resolve(model, name)

    monkeypatch.setattr(objectives, "parse_unit", parse)
    monkeypatch.setattr(objectives, "resolve_layer", resolve)
    objectives._BOUND.pop(trained_mnist, None)
    counts = []
    visualize(trained_mnist, "conv2:4", steps=5, progress=False, on_step=lambda step, v: counts.append(dict(calls)))
    assert calls["parse"] == 1 and calls["resolve"] == 1
    assert counts[0] == counts[-1] == calls  # no parse/resolve during the 5 steps


def test_presets_are_bit_reproducible(trained_mnist):
    a = visualize_layer(trained_mnist, "conv2", [1, 4], steps=6, progress=False)
    b = visualize_layer(trained_mnist, "conv2", [1, 4], steps=6, progress=False)
    assert torch.equal(a.images, b.images)
    from vision_interp.zoo import inceptionv1

    model = inceptionv1(pretrained=False)
    kw = dict(input_shape=(3, 48, 48), steps=3, progress=False)
    x = render(model, [channel("mixed3a:1"), channel("mixed3a:2")], "lucid", schedule="cosine", **kw)
    y = render(model, [channel("mixed3a:1"), channel("mixed3a:2")], "lucid", schedule="cosine", **kw)
    assert torch.equal(x.images, y.images) and x.settings["preset"] == "lucid" and x.settings["schedule"] == "cosine"
    kw = dict(input_shape=(3, 64, 64), steps=8, polish_fraction=0.125, progress=False)  # with one polish step
    x, y = (render(model, [channel("mixed3a:1"), channel("mixed3a:2")], "smooth-256", **kw) for _ in range(2))
    assert torch.equal(x.images, y.images) and torch.equal(x.history, y.history) and x.settings["preset"] == "smooth-256"
    kw = dict(input_shape=(3, 64, 64), steps=11, progress=False)  # "pyramid": 10 steps at 32 px, 1 at 64 px
    x, y = (render(model, [channel("mixed3a:1"), channel("mixed3a:2")], "pyramid", **kw) for _ in range(2))
    assert torch.equal(x.images, y.images) and torch.equal(x.history, y.history) and x.settings["preset"] == "pyramid"
    p = PRESETS["pyramid"]
    assert (p.steps, p.phase_steps(), p.main_steps, p.polish_steps) == (704, [640], 64, 0)
    assert p.decay_power == 1.25 and p.lr == 0.02 and p.coarse_phases == ((2, 10 / 11, 0.05),)
    d = default_settings(model)
    assert (d.preset, d.steps, d.decay_power, d.polish_steps, d.coarse_phases) == ("smooth-256", 256, 1.25, 0, ())


def test_polish_steps_scale_with_steps_and_round_trip():
    s = preset("lucid", steps=64, polish_fraction=0.125)
    assert (s.steps, s.polish_steps, s.main_steps) == (64, 8, 56)
    assert s.replace(steps=200).polish_steps == 25 and s.replace(steps=3).polish_steps == 0
    assert RenderSettings.from_dict(s.to_dict()) == s and s.to_dict()["betas"] == [0.9, 0.999]
    assert preset("lucid").polish_steps == 0  # the reference recipe has no polish


def test_polish_runs_last_in_the_pixel_basis_without_transforms(trained_mnist):
    """The polish steps see the untransformed image: with transforms that would shift the image, the
    polish phase's recorded objective equals the clean objective of the image it started from (step by
    step it only rises for a linear conv1 unit), and the polish lifts the judged value."""
    kw = dict(transforms="small", steps=40, progress=False)
    none = render(trained_mnist, neuron("conv1:3"), polish_fraction=0.0, **kw)
    polished = render(trained_mnist, neuron("conv1:3"), polish_fraction=0.25, polish_valid="clamp", **kw)
    # identical main phase (30 steps), then 10 pixel steps
    assert torch.equal(none.history[:30], polished.history[:30])
    tail = polished.history[30:, 0]
    assert bool((tail[1:] >= tail[:-1] - 1e-5).all()), tail  # clean, deterministic ascent
    assert float(polished.values[0]) > float(none.values[0])
    assert polished.settings["polish_fraction"] == 0.25 and polished.settings["polish_valid"] == "clamp"


def test_polish_needs_a_model_that_takes_the_untransformed_image():
    """A model that only takes the transformed size cannot be polished on the clean image: refused up front."""
    from torch import nn

    class Exactly36(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            if x.shape[-1] != 36:
                raise ValueError("this model takes 36x36 inputs only")
            return self.conv(x)

    from vision_interp.featvis.transform import Compose, Pad

    with pytest.raises(ValueError, match="polish_steps=4 optimises the untransformed 32x32 image"):
        render(Exactly36(), channel("conv:0"), input_shape=(1, 32, 32), transforms=Compose([Pad(2)]), steps=8,
               polish_fraction=0.5, progress=False)
