"""Every attribution method on InceptionV1 (random weights) at 224x224, kept cheap.

Most methods target the unit mixed3a:7, so the forward pass stops after mixed3a (capture's early
exit); saliency and Grad-CAM also run on a class logit through the whole network.
"""

from __future__ import annotations

import pytest
import torch

from vision_interp.attribution import METHODS, attribute, layer_attribution
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
