"""Hostile input for the attribution API (``vision_interp.attribution.__all__``): every argument of every
public function, the method guards (DeepLift's rules, guided backprop's ReLU), and deletion/insertion.
Collected by ``tests/test_api_hostile.py`` (which also checks that the shared models come back unchanged)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vision_interp import attribution as A
from vision_interp.attribution.guards import UnsupportedModelError
from vision_interp.units import UnitRangeError

from hostile_support import NF, TE, VE, Case, IE, is_tensor_shape


class PReLUNet(nn.Module):
    """Two PReLU activations (negative slopes) and a max pool: DeepLift needs its rules for both."""

    input_shape = (1, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.act1 = nn.Conv2d(1, 6, 3, padding=1), nn.PReLU()
        self.conv2, self.act2 = nn.Conv2d(6, 6, 3, padding=1), nn.PReLU()
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(6 * 36, 3)
        with torch.no_grad():
            self.act1.weight.fill_(-0.5)
            self.act2.weight.fill_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act2(self.conv2(self.act1(self.conv1(x))))).flatten(1))


class NormNet(nn.Module):
    """A GroupNorm after the activation: no DeepLift rule covers it."""

    input_shape = (1, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.act, self.norm = nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.GroupNorm(1, 6)
        self.fc = nn.Linear(6 * 144, 3)
        nn.init.normal_(self.conv.weight, std=0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.act(self.conv(x))).flatten(1))


def extend_env(e) -> None:
    e.prelu = PReLUNet().eval()
    e.norm = NormNet().eval()
    e.x12 = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    e.attr = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(4))


def _perm(n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.stack([torch.randperm(784, generator=g) for _ in range(n)])


def _complete(e) -> bool:
    """DeepLift on the PReLU net adds up to f(x) - f(baseline) (with the rules of attribution.guards)."""
    a = A.attribute(e.prelu, e.x12, 1, "deeplift")
    with torch.no_grad():
        diff = e.prelu(e.x12)[:, 1] - e.prelu(torch.zeros_like(e.x12))[:, 1]
    return bool(torch.allclose(a.flatten(1).sum(1), diff, rtol=1e-3, atol=1e-5))


CASES: list[Case] = [
    # ------------------------------------------------------------------ attribute: every argument
    Case(A.attribute, "a string instead of a model", lambda e: A.attribute("mnist_cnn", e.x, 3, "saliency"), TE, "model"),
    Case(A.attribute, "target=3.5 (never truncated)", lambda e: A.attribute(e.m, e.x, 3.5, "saliency"), TE, "target"),
    Case(A.attribute, "target=np.float64(3.0)", lambda e: A.attribute(e.m, e.x, np.float64(3.0), "saliency"), TE, "target"),
    Case(A.attribute, "target=np.int64(3) (an integer id)", lambda e: A.attribute(e.m, e.x, np.int64(3), "saliency"),
         is_tensor_shape(2, 1, 28, 28), "finite (2, 1, 28, 28)"),
    Case(A.attribute, "target=-1", lambda e: A.attribute(e.m, e.x, -1, "saliency"), IE, "target"),
    Case(A.attribute, "per-example target out of range", lambda e: A.attribute(e.m, e.x, [1, 10], "saliency"), IE, "target"),
    Case(A.attribute, "target unit channel 16 of 16", lambda e: A.attribute(e.m, e.x, "conv2:16", "saliency"), UnitRangeError, "0..15"),
    Case(A.attribute, "target unit with a float channel", lambda e: A.attribute(e.m, e.x, ("conv2", 2.5), "saliency"), TE, "target"),
    Case(A.attribute, "a method that is not a string", lambda e: A.attribute(e.m, e.x, 3, 7), VE, "method"),
    Case(A.attribute, "a baseline string", lambda e: A.attribute(e.m, e.x, 3, "integrated_gradients", baselines="black"), TE, "baselines"),
    Case(A.attribute, "a bool baseline", lambda e: A.attribute(e.m, e.x, 3, "deeplift", baselines=True), TE, "baselines"),
    Case(A.attribute, "an infinite baseline", lambda e: A.attribute(e.m, e.x, 3, "deeplift", baselines=float("inf")), NF, "baselines"),
    Case(A.attribute, "n_steps=2.5", lambda e: A.attribute(e.m, e.x, 3, "integrated_gradients", n_steps=2.5), TE, "n_steps"),
    Case(A.attribute, "an unknown option", lambda e: A.attribute(e.m, e.x, 3, "saliency", steps=5), VE, "steps"),
    Case(A.attribute, "deeplift eps=0", lambda e: A.attribute(e.m, e.x, 3, "deeplift", eps=0.0), VE, "eps"),
    Case(A.attribute, "deeplift multiply_by_inputs='yes'", lambda e: A.attribute(e.m, e.x, 3, "deeplift", multiply_by_inputs="yes"), TE, "multiply_by_inputs"),
    Case(A.attribute, "unsupported='ignore'", lambda e: A.attribute(e.m, e.x, 3, "deeplift", unsupported="ignore"), VE, "unsupported"),
    Case(A.attribute, "unsupported= for a method without rules", lambda e: A.attribute(e.m, e.x, 3, "saliency", unsupported="warn"), VE, "unsupported"),
    Case(A.attribute, "gradcam on a layer that does not feed the target", lambda e: A.attribute(e.m, e.x, "conv1:0", "gradcam", layer="conv2"), VE, "conv2"),
    # ------------------------------------------------------------------ method guards
    Case(A.attribute, "deeplift on PReLU (rescale rule: complete)", _complete, lambda r: r is True, "sum = f(x) - f(baseline)"),
    Case(A.attribute, "deeplift on a GroupNorm net (refused, measured gap)", lambda e: A.attribute(e.norm, e.x12, 1, "deeplift"),
         UnsupportedModelError, "norm (GroupNorm"),
    Case(A.attribute, "guided_gradcam on a net with no nn.ReLU", lambda e: A.attribute(e.prelu, e.x12, 1, "guided_gradcam"),
         UnsupportedModelError, "act1 (PReLU"),
    Case(A.attribute, "smoothgrad over guided_gradcam on PReLU", lambda e: A.attribute(e.prelu, e.x12, 1, "smoothgrad", base="guided_gradcam", nt_samples=2),
         UnsupportedModelError, "nn.ReLU"),
    Case(A.layer_attribution, "layer deeplift after a GroupNorm (refused)", lambda e: A.layer_attribution(e.norm, e.x12, "conv", 1, "deeplift"),
         UnsupportedModelError, "GroupNorm"),
    Case(A.layer_attribution, "layer deeplift on the MNIST CNN's pool1 (complete)", lambda e: float((
        A.layer_attribution(e.m, e.x, "pool1", 3, "deeplift").total.double()
        - A.ig_completeness(e.m, e.x, 3, n_steps=4).output_difference).abs().max()),
         lambda r: r < 1e-3, "sum = f(x) - f(baseline)"),
    # ------------------------------------------------------------------ batches and class means
    Case(A.attribute_batches, "progress='no'", lambda e: A.attribute_batches(e.m, e.x, 3, "saliency", progress="no"), TE, "progress"),
    Case(A.attribute_batches, "batch_size=1.5", lambda e: A.attribute_batches(e.m, e.x, 3, "saliency", batch_size=1.5), TE, "batch_size"),
    Case(A.attribute_batches, "target=2.5", lambda e: A.attribute_batches(e.m, e.x, 2.5, "saliency"), TE, "target"),
    Case(A.attribute_batches, "guided_gradcam on PReLU (refused before the loop)", lambda e: A.attribute_batches(e.prelu, e.x12, 1, "guided_gradcam"),
         UnsupportedModelError, "PReLU"),
    Case(A.attribute_dataset, "an unknown method", lambda e: A.attribute_dataset(e.m, e.x, 3, "saliancy", progress=False), VE, "saliency"),
    Case(A.attribute_dataset, "a list instead of images", lambda e: A.attribute_dataset(e.m, [0.5], 3, "saliency", progress=False), TE, "inputs"),
    Case(A.class_mean_attributions, "float labels (never truncated)", lambda e: A.class_mean_attributions(e.m, e.x, torch.tensor([1.5, 2.0]), "saliency", progress=False), TE, "labels"),
    Case(A.class_mean_attributions, "n_classes=2.0", lambda e: A.class_mean_attributions(e.m, e.x, torch.tensor([1, 0]), "saliency", n_classes=2.0, progress=False), TE, "n_classes"),
    Case(A.class_mean_attributions, "n_classes=0", lambda e: A.class_mean_attributions(e.m, e.x, torch.tensor([1, 0]), "saliency", n_classes=0, progress=False), VE, "n_classes"),
    Case(A.class_mean_attributions, "3 labels for 2 images", lambda e: A.class_mean_attributions(e.m, e.x, torch.tensor([1, 0, 2]), "saliency", progress=False), VE, "labels"),
    # ------------------------------------------------------------------ layer and unit attribution
    Case(A.layer_attribution, "an unknown layer", lambda e: A.layer_attribution(e.m, e.x, "conv9", 3), VE, "conv9"),
    Case(A.layer_attribution, "target=3.0", lambda e: A.layer_attribution(e.m, e.x, "conv2", 3.0), TE, "target"),
    Case(A.layer_attribution, "an unknown method", lambda e: A.layer_attribution(e.m, e.x, "conv2", 3, "gradcam"), VE, "integrated_gradients"),
    Case(A.layer_attribution, "unsupported= for conductance", lambda e: A.layer_attribution(e.m, e.x, "conv2", 3, "conductance", unsupported="warn"), VE, "unsupported"),
    Case(A.unit_attribution, "a target unit without a channel", lambda e: A.unit_attribution(e.m, e.x, "conv1", "conv2"), VE, "target_unit"),
    Case(A.unit_attribution, "a float channel", lambda e: A.unit_attribution(e.m, e.x, "conv1", "conv2:1.5"), VE, "conv2:1.5"),
    Case(A.unit_attribution, "a source layer after the target", lambda e: A.unit_attribution(e.m, e.x, "pool2", "conv2:1"), VE, "pool2"),
    # ------------------------------------------------------------------ sanity checks
    Case(A.ig_completeness, "target=3.5", lambda e: A.ig_completeness(e.m, e.x, 3.5), TE, "target"),
    Case(A.ig_completeness, "an unknown integration rule", lambda e: A.ig_completeness(e.m, e.x, 3, method="simpson"), VE, "method"),
    Case(A.ig_completeness, "internal_batch_size=0", lambda e: A.ig_completeness(e.m, e.x, 3, internal_batch_size=0), VE, "internal_batch_size"),
    Case(A.ig_completeness, "n_steps=8.0", lambda e: A.ig_completeness(e.m, e.x, 3, n_steps=8.0), TE, "n_steps"),
    Case(A.randomization_test, "layers as one string", lambda e: A.randomization_test(e.m, e.x1, 3, layers="fc"), TE, "layers"),
    Case(A.randomization_test, "an empty layer list", lambda e: A.randomization_test(e.m, e.x1, 3, layers=[]), VE, "layers"),
    Case(A.randomization_test, "seed=1.5", lambda e: A.randomization_test(e.m, e.x1, 3, seed=1.5), TE, "seed"),
    Case(A.randomization_test, "absolute='yes'", lambda e: A.randomization_test(e.m, e.x1, 3, absolute="yes"), TE, "absolute"),
    Case(A.randomization_test, "target=2.0", lambda e: A.randomization_test(e.m, e.x1, 2.0), TE, "target"),
    Case(A.spearman, "maps of different shapes", lambda e: A.spearman(e.x, e.x[:1]), VE, "shape"),
    Case(A.spearman, "a list instead of a tensor", lambda e: A.spearman([1, 2], e.x), TE, "a"),
    Case(A.spearman, "a NaN map", lambda e: A.spearman(e.nan, e.x), NF, "a"),
    # ------------------------------------------------------------------ deletion / insertion
    Case(A.deletion_insertion, "NaN attributions", lambda e: A.deletion_insertion(e.m, e.x, 3, e.attr.masked_fill(e.attr > 0.9, float("nan"))), NF, "attributions"),
    Case(A.deletion_insertion, "infinite attributions", lambda e: A.deletion_insertion(e.m, e.x, 3, e.attr.masked_fill(e.attr > 0.9, float("inf"))), NF, "attributions"),
    Case(A.deletion_insertion, "an order with repeated indices", lambda e: A.deletion_insertion(e.m, e.x, 3, order=torch.zeros(2, 784, dtype=torch.long)), VE, "permutation"),
    Case(A.deletion_insertion, "an order past the last value", lambda e: A.deletion_insertion(e.m, e.x, 3, order=_perm() + 1), VE, "permutation"),
    Case(A.deletion_insertion, "a float order", lambda e: A.deletion_insertion(e.m, e.x, 3, order=_perm().float()), TE, "order"),
    Case(A.deletion_insertion, "an order of the wrong shape", lambda e: A.deletion_insertion(e.m, e.x, 3, order=_perm()[:, :100]), VE, "order"),
    Case(A.deletion_insertion, "targets=3.5 (never truncated)", lambda e: A.deletion_insertion(e.m, e.x, 3.5, e.attr), TE, "targets"),
    Case(A.deletion_insertion, "float per-image targets", lambda e: A.deletion_insertion(e.m, e.x, torch.tensor([1.0, 2.0]), e.attr), TE, "targets"),
    Case(A.deletion_insertion, "targets=-1", lambda e: A.deletion_insertion(e.m, e.x, -1, e.attr), IE, "targets"),
    Case(A.deletion_insertion, "3 targets for 2 images", lambda e: A.deletion_insertion(e.m, e.x, [1, 2, 3], e.attr), VE, "targets"),
    Case(A.deletion_insertion, "a NaN replacement", lambda e: A.deletion_insertion(e.m, e.x, 3, e.attr, replacement=float("nan")), NF, "replacement"),
    Case(A.deletion_insertion, "a replacement of the wrong shape", lambda e: A.deletion_insertion(e.m, e.x, 3, e.attr, replacement=torch.zeros(1, 1, 28, 28)), VE, "replacement"),
    Case(A.deletion_insertion, "fractions as a string", lambda e: A.deletion_insertion(e.m, e.x, 3, e.attr, fractions="0.5"), TE, "fractions"),
    Case(A.deletion_insertion, "empty fractions", lambda e: A.deletion_insertion(e.m, e.x, 3, e.attr, fractions=()), VE, "fractions"),
    Case(A.deletion_insertion, "a random order (the control, mixed-mode model)", lambda e: A.deletion_insertion(e.m, e.x, [3, 4], order=_perm(), fractions=(0.0, 1.0)),
         lambda r: len(r.deletion) == 2 and all(0 <= v <= 1 for v in r.deletion + r.insertion), "two finite probabilities per curve"),
    # ------------------------------------------------------------------ pictures
    Case(A.overlays, "alpha=1.5", lambda e: A.overlays(e.x, e.attr, alpha=1.5), VE, "alpha"),
    Case(A.overlays, "a list of inputs", lambda e: A.overlays([0.5], e.attr), TE, "inputs"),
    Case(A.attribution_grid, "per_row=0", lambda e: A.attribution_grid(e.x, e.attr, per_row=0), VE, "per_row"),
    Case(A.attribution_grid, "per_row=2.0", lambda e: A.attribution_grid(e.x, e.attr, per_row=2.0), TE, "per_row"),
    Case(A.save_attribution_png, "scale=0", lambda e: A.save_attribution_png(e.tmp / "s.png", e.x, e.attr, scale=0), VE, "scale"),
    Case(A.save_attribution_png, "a path that is a number", lambda e: A.save_attribution_png(3, e.x, e.attr), TE, "path"),
    Case(A.class_mean_grid, "shared_scale='yes'", lambda e: A.class_mean_grid(e.attr, shared_scale="yes"), TE, "shared_scale"),
    Case(A.class_mean_grid, "ncols=0", lambda e: A.class_mean_grid(e.attr, ncols=0), VE, "ncols"),
    Case(A.layer_map_overlay, "a 4-D spatial map", lambda e: A.layer_map_overlay(e.x, torch.rand(2, 1, 7, 7)), VE, "spatial"),
    Case(A.layer_map_overlay, "alpha=-0.1", lambda e: A.layer_map_overlay(e.x, torch.rand(2, 7, 7), alpha=-0.1), VE, "alpha"),
    Case(A.heatmaps, "a list", lambda e: A.heatmaps([1.0]), TE, "attributions"),
]
