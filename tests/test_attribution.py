"""Attribution: properties that must hold, not just "it runs"."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from vision_interp.attribution import (
    METHODS,
    attribute,
    attribute_dataset,
    class_mean_attributions,
    ig_completeness,
    layer_attribution,
    randomization_test,
    spearman,
    unit_attribution,
)
from vision_interp.capture import hooks
from vision_interp.units import UnitRangeError, UnknownLayerError

FAST = {
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"nt_samples": 3},
    "occlusion": {"sliding_window_shapes": (1, 7, 7), "strides": (1, 7, 7), "perturbations_per_eval": 16},
    "feature_ablation": {"patch_size": 7, "perturbations_per_eval": 16},
}


# ------------------------------------------------------------------------------------- models
class PlantedDetector(nn.Module):
    """A hand-set 3x3 'bright blob' detector: class 1 fires only where a bright patch sits."""

    input_shape = (1, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.fill_(-7.0)  # 9 bright pixels (sum 9) pass; background (<= 0.3 each) never does
            self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            self.fc.bias.zero_()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def planted_input(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    x[:, :, 4:8, 8:12] = 1.0  # a 4x4 bright patch; the detector fires at its 4 inner positions
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 8:12] = True
    return x, mask


class LinearHead(nn.Module):
    """Bias-free convs, then only linear maps after ``relu2``: layer attribution there is exact."""

    input_shape = (1, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * 36, 3)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))


class CleanNet(nn.Module):
    input_shape = (1, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4 * 144, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).flatten(1))


class MessyNet(CleanNet):
    """Same weights, but one in-place ReLU module reused for both activations (two Captum pitfalls)."""

    def __init__(self) -> None:
        super().__init__()
        del self.relu1, self.relu2
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv2(self.act(self.conv1(x)))).flatten(1))


def assert_no_hooks(model: nn.Module) -> None:
    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks, name
        assert not getattr(m, "_backward_pre_hooks", None), name


# ------------------------------------------------------------------------------ MNIST checks
def test_ig_completeness_on_trained_mnist(trained_mnist, mnist_test):
    x, y = mnist_test.images[:16], mnist_test.labels[:16]
    res = ig_completeness(trained_mnist, x, y, n_steps=100)
    assert res.output_difference.abs().min() > 1.0  # a real logit change to explain
    assert res.max_relative_error < 0.01, str(res)
    # too few steps is measurably worse: the check detects it
    coarse = ig_completeness(trained_mnist, x, y, n_steps=2, method="riemann_right")
    assert coarse.max_relative_error > res.max_relative_error


def test_every_method_on_mnist_cnn(trained_mnist, mnist_test):
    x, y = mnist_test.images[:4], mnist_test.labels[:4]
    for method in METHODS:
        for target in (y, "conv2:5", "conv2:5@3,4"):
            a = attribute(trained_mnist, x, target, method, **FAST.get(method, {}))
            assert a.shape == x.shape, (method, target)
            assert torch.isfinite(a).all() and a.abs().sum() > 0, (method, target)
    # input x gradient is exactly the signed gradient times the input
    grad = attribute(trained_mnist, x, y, "saliency", abs=False)
    assert torch.allclose(attribute(trained_mnist, x, y, "input_x_gradient"), grad * x, atol=1e-6)
    # a single (C, H, W) image gives a (C, H, W) answer, equal to the batched one
    one = attribute(trained_mnist, x[0], int(y[0]), "saliency")
    assert one.shape == x[0].shape and torch.allclose(one, attribute(trained_mnist, x, y, "saliency")[0])
    # class labels work as targets (MNIST labels are the digit strings)
    assert torch.allclose(attribute(trained_mnist, x[:1], "7", "saliency"), attribute(trained_mnist, x[:1], 7, "saliency"))
    assert_no_hooks(trained_mnist)
    assert not any(p.requires_grad for p in trained_mnist.parameters())


def test_unit_target_is_channel_spatial_mean(trained_mnist, mnist_test):
    x = mnist_test.images[:3]
    a = attribute(trained_mnist, x, "conv2:5", "saliency", abs=False)
    xr = x.clone().requires_grad_(True)
    act = trained_mnist.conv2(trained_mnist.pool1(trained_mnist.relu1(trained_mnist.conv1(trained_mnist.normalize(xr)))))
    (g,) = torch.autograd.grad(act[:, 5].mean((1, 2)).sum(), xr)
    assert torch.allclose(a, g, atol=1e-6)
    # with a position: that single neuron, whose receptive field is 13x13 input pixels around (6, 8)
    b = attribute(trained_mnist, x, "conv2:5@3,4", "saliency")
    nz = b[0, 0].nonzero()
    assert nz[:, 0].min() >= 6 - 6 and nz[:, 0].max() <= 6 + 7 and nz[:, 1].min() >= 8 - 6 and nz[:, 1].max() <= 8 + 7


def test_randomization_test_decorrelates(trained_mnist, mnist_test):
    x, y = mnist_test.images[:12], mnist_test.labels[:12]
    before = {k: v.clone() for k, v in trained_mnist.state_dict().items()}
    res = randomization_test(trained_mnist, x, y, "saliency")
    assert res.layers == ["fc", "conv2", "conv1"]
    assert res.correlations.shape == (3, 12)
    assert res.mean[-1] < 0.3, str(res)  # fully randomized: little rank agreement left
    # the statistic itself: identical maps correlate perfectly, reversed ranks at -1
    a = torch.rand(2, 50)
    assert torch.allclose(spearman(a, a), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(spearman(a, -a), -torch.ones(2, dtype=torch.float64))
    # the trained model is untouched
    assert all(torch.equal(before[k], v) for k, v in trained_mnist.state_dict().items())


def test_batches_and_class_means(trained_mnist, mnist_test):
    x, y = mnist_test.images[:13], mnist_test.labels[:13]
    full = attribute(trained_mnist, x, y, "saliency")
    batched = attribute_dataset(trained_mnist, x, y, "saliency", batch_size=5, progress=False)
    assert torch.allclose(full, batched, atol=1e-6)
    means, counts = class_mean_attributions(trained_mnist, x, y, "saliency", n_classes=10, batch_size=4, progress=False)
    assert counts.sum() == 13 and means.shape == (10, 1, 28, 28)
    for k in range(10):
        if counts[k]:
            assert torch.allclose(means[k], full[y == k].mean(0), atol=1e-5)
        else:
            assert means[k].abs().sum() == 0
    with pytest.raises(ValueError, match="out of range for n_classes=3"):
        class_mean_attributions(trained_mnist, x, y, "saliency", n_classes=3, progress=False)
    one = attribute_dataset(trained_mnist, x[0], y[:1], "saliency", progress=False)  # one (C, H, W) image
    assert one.shape == (1, 1, 28, 28) and torch.allclose(one[0], full[0], atol=1e-6)


# -------------------------------------------------------------------------- planted detector
@pytest.mark.parametrize(
    "method,options",
    [
        ("saliency", {}),
        ("integrated_gradients", {"n_steps": 64}),
        ("occlusion", {"sliding_window_shapes": (1, 2, 2), "strides": (1, 2, 2)}),
        ("smoothgrad", {"nt_samples": 8, "stdevs": 0.05}),
        ("deeplift", {}),
        ("feature_ablation", {"patch_size": 1}),
    ],
)
def test_planted_detector_mass_on_patch(method, options):
    model = PlantedDetector()
    x, mask = planted_input()
    assert (model(x).argmax(1) == 1).all()
    heat = attribute(model, x, 1, method, **options).sum(1).abs()
    share = heat[:, mask].sum(1) / heat.flatten(1).sum(1)
    assert (share >= 0.7).all(), (method, share)


# -------------------------------------------------------------------------- layer attribution
def test_layer_attribution_exact_for_linear_head():
    model = LinearHead()
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    target = 2
    la = layer_attribution(model, x, "relu2", target)
    with torch.no_grad():
        diff = model(x)[:, target] - model(torch.zeros_like(x))[:, target]
    assert la.tensor.shape == (3, 6, 12, 12)
    assert la.channels.shape == (3, 6) and la.spatial.shape == (3, 12, 12)
    torch.testing.assert_close(la.total, diff, rtol=1e-5, atol=1e-5)  # exact: the head is linear
    torch.testing.assert_close(la.spatial.flatten(1).sum(1), la.channels.sum(1), rtol=1e-5, atol=1e-5)
    ig_input = attribute(model, x, target, "integrated_gradients", n_steps=200).flatten(1).sum(1)
    torch.testing.assert_close(ig_input, la.total, rtol=0.01, atol=1e-3)

    # top channels agree with zeroing each channel for real (capture.hooks)
    def drop(c: int) -> torch.Tensor:
        def zero(_m, _i, out):
            out = out.clone()
            out[:, c] = 0
            return out

        with torch.no_grad(), hooks(model, {"relu2": zero}):
            return model(x)[:, target]

    with torch.no_grad():
        base = model(x)[:, target]
    effects = torch.stack([base - drop(c) for c in range(6)], 1)  # (N, C)
    torch.testing.assert_close(la.channels, effects, rtol=1e-4, atol=1e-5)
    top = la.top_channels(3)
    for i in range(3):
        assert [c for c, _, _ in top[i]] == effects[i].argsort(descending=True)[:3].tolist()
        shares = [s for _, _, s in top[i]]
        assert all(-1 <= s <= 1 for s in shares)
        assert abs(shares[0] - float(effects[i].max() / effects[i].abs().sum())) < 1e-5
    assert_no_hooks(model)


def test_layer_attribution_mnist_and_unit_to_unit(trained_mnist, mnist_test):
    x, y = mnist_test.images[:2], mnist_test.labels[:2]
    la = layer_attribution(trained_mnist, x, "pool2", y, n_steps=16)
    res = ig_completeness(trained_mnist, x, y, n_steps=64)
    torch.testing.assert_close(la.total.double(), res.output_difference, rtol=1e-4, atol=1e-4)  # fc is linear
    ua = unit_attribution(trained_mnist, x, "pool1", "conv2:5", n_steps=32)
    assert ua.tensor.shape == (2, 8, 14, 14)
    unit_ig = ig_completeness(trained_mnist, x, "conv2:5", n_steps=64)
    torch.testing.assert_close(ua.total.double(), unit_ig.output_difference, rtol=0.02, atol=1e-3)
    # gradient x activation at pool1 towards conv2:5 is exact (conv2 is linear in pool1) up to conv2's bias
    gxa = unit_attribution(trained_mnist, x, "pool1", "conv2:5", "gradient_x_activation")
    with torch.no_grad():
        act = trained_mnist.conv2(trained_mnist.pool1(trained_mnist.relu1(trained_mnist.conv1(trained_mnist.normalize(x)))))
    torch.testing.assert_close(gxa.total, act[:, 5].mean((1, 2)) - trained_mnist.conv2.bias[5], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="must run before"):
        unit_attribution(trained_mnist, x, "conv2", "conv1:3")


# ------------------------------------------------------------------- in-place / reused ReLUs
def test_inplace_and_reused_relu_are_repaired():
    clean, messy = CleanNet(), MessyNet()
    messy.load_state_dict(clean.state_dict(), strict=False)
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    for method in ("saliency", "integrated_gradients", "deeplift", "gradcam", "guided_gradcam"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the clean model gives no warning at all
            want = attribute(clean, x, 1, method)
        with pytest.warns(UserWarning, match=r"in-place.*act.*reused.*act x2.*unchanged"):
            got = attribute(messy, x, 1, method)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=method)
    with pytest.warns(UserWarning, match="repaired deep copy"):
        got = layer_attribution(messy, x, "conv1", 1, "deeplift").tensor
    torch.testing.assert_close(got, layer_attribution(clean, x, "conv1", 1, "deeplift").tensor)
    # the user's model is left as it was
    assert messy.act.inplace is True and type(messy) is MessyNet
    assert_no_hooks(messy)
    # the repair matters: Captum's DeepLift on the messy model directly does not give the clean answer
    from captum.attr import DeepLift

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            raw = DeepLift(messy).attribute(x.clone(), target=1)
            assert not torch.allclose(raw, attribute(clean, x, 1, "deeplift"), atol=1e-4)
        except RuntimeError:
            pass  # or it fails outright


# ------------------------------------------------------------------------------ bad input
class MLP(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


def test_errors_are_clear(trained_mnist, mnist_test):
    m, x = trained_mnist, mnist_test.images[:2]
    cases = [
        (dict(inputs=(x * 255).to(torch.uint8)), ValueError, "float images"),
        (dict(inputs=x[0, 0]), ValueError, r"\(N, C, H, W\)"),
        (dict(inputs=x.expand(-1, 3, -1, -1)), ValueError, "1-channel"),
        (dict(inputs=torch.rand(2, 1, 32, 32)), ValueError, "28x28"),
        (dict(target=10), IndexError, r"0\.\.9"),
        (dict(target=-1), IndexError, r"0\.\.9"),
        (dict(target="cat"), ValueError, "not a class label"),
        (dict(target="conv2"), ValueError, "is a layer"),
        (dict(target="conv9:1"), UnknownLayerError, "conv2"),
        (dict(target="conv2:99"), UnitRangeError, r"0\.\.15"),
        (dict(target="conv2:1@14,0"), UnitRangeError, r"0\.\.13"),
        (dict(target=[1, 2, 3]), ValueError, "2 integers"),
        (dict(method="gradcm"), ValueError, "Did you mean gradcam"),
        (dict(method="integrated_gradients", n_stepz=3), ValueError, "n_steps"),
        (dict(method="integrated_gradients", return_convergence_delta=True), ValueError, "ig_completeness"),
        (dict(method="gradcam", layer="fc"), ValueError, "spatial"),
        (dict(method="gradcam", layer="conv7"), UnknownLayerError, "Closest"),
        (dict(method="gradcam", layer="conv2", target="conv1:0"), ValueError, "must run before"),
    ]
    for kw, exc, pattern in cases:
        args = {"inputs": x, "target": 1, "method": "saliency"} | kw
        with pytest.raises(exc, match=pattern):
            attribute(m, args.pop("inputs"), args.pop("target"), args.pop("method"), **args)
    with pytest.raises(ValueError, match="needs a convolutional layer"):
        attribute(MLP(), torch.rand(2, 1, 8, 8), 0, "gradcam")
    with pytest.raises(ValueError, match="unknown option"):
        attribute_dataset(m, x, 1, "occlusion", window=3, progress=False)
    assert_no_hooks(m)
