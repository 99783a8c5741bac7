"""Feature-visualization defaults that fit the model (issue 35): the preset is a function of what the model is
(input size, channels, whether it takes the standard transforms' larger canvas), wherever its size was declared;
on a real trained RGB model (MTCNN's ONet) the default's pictures beat every real crop without saturating; the
MNIST default is unchanged; class names and the logits layer come from the model's spec."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import vision_interp as vi
from vision_interp.featvis import PRESETS, channel, class_logit, default_settings, evaluate_objective, render, resolve_settings, visualize
from vision_interp.featvis.objectives import bound_layer
from vision_interp.featvis.settings import default_preset
from vision_interp.zoo.spec import ModelSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import featvis_defaults as bench  # noqa: E402
import third_party as tp  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def onet() -> nn.Module:
    if tp.facenet_dir() is None:
        pytest.skip("facenet-pytorch is not installed (make installs it with --no-deps)")
    return tp.onet()


class Undeclared(nn.Module):
    """The same network with no spec and no input_shape/class_names attributes: the size comes from the caller."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class FullyConv(nn.Module):
    """RGB, global average pooling: takes any size."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.spec = ModelSpec(input_shape=(3, size, size))
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class FixedSize(FullyConv):
    """RGB with a Linear head on the flattened map: takes its declared size only."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.pool = nn.MaxPool2d(8)
        self.fc = nn.Linear(4 * ((size - 2) // 8) ** 2, 2)


def test_default_preset_is_what_the_model_is_wherever_the_size_is_declared(onet, trained_mnist):
    """Issue 35: ``spec.input_shape`` gave 'fast-small' and ``input_shape=`` gave 'smooth-256' for the same model."""
    # ONet declares (3, 48, 48); the same net without the declaration gets the same default from input_shape= / size=
    bare = Undeclared(onet)
    declared = default_settings(onet)
    assert declared.preset == "smooth-small" and declared.transforms == "small" and declared.input_shape == (3, 48, 48)
    assert default_settings(bare, (3, 48, 48)) == declared
    assert resolve_settings(bare, None, {"input_shape": (3, 48, 48)}) == declared
    assert resolve_settings(onet, None, {"input_shape": (3, 48, 48)}) == declared
    res = visualize(bare, "inner.net.prelu3:0", size=48, input_shape=(3, 48, 48), steps=1, progress=False)
    assert res.settings == declared.replace(steps=1).to_dict()
    # MNIST: unchanged, from its spec or from the caller
    mnist = default_settings(trained_mnist)
    assert mnist == PRESETS["fast-small"].replace(input_shape=(1, 28, 28), decorrelate=False)
    assert default_settings(Undeclared(trained_mnist), (1, 28, 28)) == mnist
    # large inputs: the standard transforms when the model takes the 12 px larger canvas, the size-preserving set when not
    assert default_preset(FullyConv(96))[0] == "smooth-256"
    assert default_preset(FixedSize(96))[0] == "smooth-small"
    assert default_preset(FixedSize(96), (3, 96, 96)) == default_preset(Undeclared(FixedSize(96)), (3, 96, 96))
    assert default_preset(FullyConv(32))[0] == "smooth-small"  # small colour input, whatever it takes
    # the large-input default when nothing says the size (the caller must give one, as before)
    assert default_settings(bare).preset == "smooth-256" and default_settings(bare).input_shape is None


def test_standard_transforms_on_a_fixed_size_model_name_the_set_that_fits(onet):
    """The error used to say 'pass input_shape=...'; a fixed-size model needs the size-preserving transforms instead."""
    steps = []
    for objective in ("net.dense6_1:1", class_logit("face"), "net.dense5:3"):
        with pytest.raises(ValueError, match="transforms='small'") as info:
            render(onet, objective, "lucid", steps=3, progress=False, on_step=lambda s, v: steps.append(s))
        assert "pass input_shape" not in str(info.value) and "48x48" in str(info.value) and "60x60" in str(info.value)
    assert steps == []  # refused before any step
    with pytest.raises(ValueError, match="transforms='small'"):
        vi.visualize_layer(onet, "net.dense5", [0], "lucid", steps=1, progress=False)
    # a layer off the computation path at every size keeps its own error
    with pytest.raises(vi.LayerNotReachedError, match="never ran"):
        render(onet, "net.dense6_2:0", "smooth-small", steps=1, progress=False)


def test_onet_default_beats_every_real_crop_without_saturating(onet):
    """On the trained RGB face model the default reaches an activation above the best real crop at every unit
    tried, with under 5% of the picture's 8-bit values at 0 or 255 (measured 0.5%, benchmarks/featvis_defaults.py);
    the old default ('fast-small') fails that bound (measured 65%)."""
    units = ["net.prelu3:7", "net.prelu4:3", "net.conv4:10"]
    objectives = [channel(u) for u in units] + [class_logit("face")]
    real = tp.real_examples()
    best = bench.best_real(onet, objectives, real)
    res = render(onet, objectives, steps=128, progress=False)
    assert res.settings["preset"] == "smooth-small"
    acts = [float(evaluate_objective(onet, o, res.images[i:i + 1])[0]) for i, o in enumerate(objectives)]
    assert all(a > b > 0 for a, b in zip(acts, best)), (acts, best)
    assert bench.saturated_share(res.images) < 0.05
    assert bench.robust_ratio(onet, objectives[0], res.images[:1]) > 0.6
    old = render(onet, objectives, "fast-small", progress=False)
    assert bench.saturated_share(old.images) > 0.3  # the bound tells the two apart


def test_mnist_default_still_reaches_past_every_real_example(trained_mnist, mnist_test):
    """The MNIST default is unchanged ('fast-small') and its centre-neuron pictures still beat the test images."""
    from vision_interp.featvis import neuron

    objectives = [neuron("conv1:2"), neuron("conv2:5")]
    best = bench.best_real(trained_mnist, objectives, mnist_test.images[:2000])
    res = render(trained_mnist, objectives, progress=False)
    assert res.settings["preset"] == "fast-small"
    assert all(float(v) > b for v, b in zip(res.values, best))


class SoftmaxHead(nn.Module):
    """Declares its logits layer in a ModelSpec; its output is probabilities (a softmax after the head)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.spec = ModelSpec(input_shape=(1, 8, 8), class_names=("a", "b", "c", "d"), logits_layer="head")
        self.conv = nn.Conv2d(1, 3, 3)
        self.head = nn.Linear(3 * 6 * 6, 4)
        self.probs = nn.Softmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probs(self.head(self.conv(x).flatten(1)))


def test_class_logit_reads_names_and_logits_layer_from_the_spec(onet, trained_mnist):
    x = tp.face_crops()[:4]
    with torch.no_grad():
        face = onet(x)[:, 1]  # the column attribute(onet, x, target=1) differentiates
    for c in ("face", "Face", 1):
        obj = class_logit(c)
        obj.check(onet, (3, 48, 48), 4)
        assert torch.allclose(evaluate_objective(onet, obj, x), face, atol=1e-5)
    assert bound_layer(onet, class_logit(1).layers[0]) == "net.dense6_1"  # no declared logits: the module returning the output
    assert bound_layer(trained_mnist, class_logit(7).layers[0]) == "fc"  # MNIST declares its 'logits' alias
    m = SoftmaxHead()
    obj = class_logit("c")
    obj.check(m, (1, 8, 8), 1)
    x8 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = m.head(m.conv(x8).flatten(1))
    assert torch.allclose(evaluate_objective(m, obj, x8), logits[:, 2], atol=1e-6)  # spec.logits_layer, not the softmax
    with pytest.raises(ValueError, match="unknown class 'e'"):
        class_logit("e").check(m, (1, 8, 8), 1)
    with pytest.raises(vi.UnitRangeError, match="valid classes are 0..3"):
        class_logit(4).check(m, (1, 8, 8), 1)
    with pytest.raises(TypeError, match="class c"):
        class_logit(1.5)
    with pytest.raises(TypeError, match="class c"):
        class_logit(1.0)
