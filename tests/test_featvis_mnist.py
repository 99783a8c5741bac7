"""On the committed MNIST CNN, every conv channel's visualization beats every test image on that channel."""

from __future__ import annotations

import pytest
import torch

from vision_interp.capture import capture
from vision_interp.featvis import visualize_layer


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("layer, n_channels", [("conv1", 8), ("conv2", 16)])
def test_visualization_excites_channel_more_than_every_test_image(trained_mnist, mnist_test, layer, n_channels):
    """Measure: the channel's mean over all spatial positions of the layer output (the conv, pre-ReLU),
    the same quantity the channel objective maximises, for the rendered image and for each of the
    10,000 test images. Criterion asserted: the visualization beats the *maximum* over the test set."""
    res = visualize_layer(trained_mnist, layer, objective="channel", steps=64, progress=False)
    assert res.images.shape == (n_channels, 1, 28, 28)
    with torch.no_grad():
        test_means = capture(trained_mnist, mnist_test.images, [layer])[layer].mean(dim=(2, 3))  # (10000, C)
        vis_means = capture(trained_mnist, res.images, [layer])[layer].mean(dim=(2, 3)).diagonal()  # channel i of image i
    assert torch.allclose(vis_means, res.activations, atol=1e-4)
    best_test = test_means.max(0).values
    margin = vis_means - best_test
    assert (margin > 0).all(), f"channels where a test image wins: {(margin <= 0).nonzero().flatten().tolist()}; margin {margin}"


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_neuron_visualization_beats_every_test_image_at_that_neuron(trained_mnist, mnist_test, layer):
    """The MNIST default objective is the centre neuron. Without robustness transforms the optimum is
    exact, so the rendered image must beat all 10,000 test images at that very neuron."""
    res = visualize_layer(trained_mnist, layer, objective="neuron", transforms=None, steps=64, progress=False)
    with torch.no_grad():
        t = capture(trained_mnist, mnist_test.images, [layer])[layer]
        v = capture(trained_mnist, res.images, [layer])[layer]
    h, w = t.shape[-2:]
    best_test = t[:, :, h // 2, w // 2].max(0).values
    vis = v[torch.arange(len(v)), torch.arange(len(v)), h // 2, w // 2]
    assert torch.allclose(vis, res.activations, atol=1e-4)
    assert (vis > best_test).all(), f"margins {vis - best_test}"
    assert "neuron" in res.descriptions[0] and f"@{h // 2},{w // 2}" in res.descriptions[0]
