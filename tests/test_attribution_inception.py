"""Every attribution method on InceptionV1 (random weights) at 224x224, kept cheap.

Most methods target the unit mixed3a:7, so the forward pass stops after mixed3a (capture's early
exit); saliency and Grad-CAM also run on a class logit through the whole network.
"""

from __future__ import annotations

import pytest
import torch

from vision_interp.attribution import METHODS, UnsupportedModelError, attribute, layer_attribution
from vision_interp.zoo import inceptionv1

CHEAP = {
    "integrated_gradients": {"n_steps": 2},
    "smoothgrad": {"nt_samples": 2},
    "occlusion": {"sliding_window_shapes": (3, 112, 112), "strides": (3, 112, 112), "perturbations_per_eval": 4},
    "feature_ablation": {"patch_size": 112, "perturbations_per_eval": 4},
}


@pytest.fixture(scope="module")
def model():
    return inceptionv1(pretrained=False)


def test_every_method_on_inceptionv1(model):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for method in METHODS:
        if method == "deeplift":  # LocalResponseNorm and MaxPoolSame have no DeepLift rule: refused, measured
            with pytest.raises(UnsupportedModelError, match=r"localresponsenorm0 \(LocalResponseNorm"):
                attribute(model, x, "mixed3a:7", method)
            continue
        a = attribute(model, x, "mixed3a:7", method, **CHEAP.get(method, {}))
        assert a.shape == x.shape and torch.isfinite(a).all(), method
    cam = attribute(model, x, 5, "gradcam")  # default layer: mixed5b, the last spatial layer
    assert cam.shape == x.shape and (cam >= 0).all()
    sal = attribute(model, x, 5, "saliency")
    assert sal.shape == x.shape and sal.abs().sum() > 0
    # mixed3a:100 is in the 3x3 branch (channels 64..191), which the 3x3 bottleneck feeds
    la = layer_attribution(model, x, "mixed3a_3x3_bottleneck_pre_relu", "mixed3a:100", "gradient_x_activation")
    assert la.tensor.shape == (1, 96, 28, 28) and len(la.top_channels(3)[0]) == 3
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks


# branch channel ranges: mixed4a = 1x1 0..191 | 3x3 192..395 | 5x5 396..443 | pool 444..507;
# mixed5b = 1x1 0..383 | 3x3 384..767 | 5x5 768..895 | pool 896..1023
BRANCHES = {
    "mixed4a": [("mixed4a_1x1", 0, 192), ("mixed4a_3x3", 192, 396), ("mixed4a_5x5", 396, 444), ("mixed4a_pool_reduce", 444, 508)],
    "mixed5b": [("mixed5b_1x1", 0, 384), ("mixed5b_3x3", 384, 768), ("mixed5b_5x5", 768, 896), ("mixed5b_pool_reduce", 896, 1024)],
}


def test_gradcam_reads_a_layer_upstream_of_each_branch_unit(model):
    """The layer is chosen by data flow: the branch that computes the channel, never a sibling that
    finishes later. Each branch's most active channel is used (with random weights many deep
    channels are dead, and a dead unit's Grad-CAM is zero by definition)."""
    from vision_interp.attribution._model import prepare
    from vision_interp.capture import capture
    from vision_interp.units import resolve_unit

    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    prep = prepare(model, x)
    with torch.no_grad():
        acts = capture(model, x, list(BRANCHES))
    for block, branches in BRANCHES.items():
        mean = acts[block][0].mean((1, 2))
        for branch, lo, hi in branches:
            unit = f"{block}:{lo + int(mean[lo:hi].argmax())}"
            assert prep.last_spatial_layer(resolve_unit(model, unit), what="Grad-CAM") == branch, unit
            cam = attribute(model, x, unit, "gradcam")
            assert cam.shape == x.shape and cam.abs().sum() > 0, unit


def test_layer_attribution_refuses_a_branch_that_does_not_feed_the_unit(model):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"does not feed channel 476 of 'mixed4a'.*mixed4a_pool_reduce"):
        layer_attribution(model, x, "mixed4a_1x1", target="mixed4a:476")
    with pytest.raises(ValueError, match="does not feed"):
        attribute(model, x, "mixed4a:10", "gradcam", layer="mixed4a_3x3")
