"""Top-activating dataset examples and receptive-field patches."""

from __future__ import annotations

import pytest
import torch

from vision_interp.capture import capture
from vision_interp.data.examples import crop_patches, receptive_field, top_activating
from vision_interp.units import UnitRangeError
from vision_interp.zoo import MnistCNN


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MnistCNN().eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(70, 1, 28, 28, generator=g)


def test_top_k_matches_brute_force_and_ignores_batching(model, images):
    with torch.no_grad():
        act = capture(model, images, ["conv2"], detach=True)["conv2"]  # (N, 16, 14, 14)
    per_image = act.flatten(2).amax(2)  # (N, 16)
    chans = [0, 5, 15]
    res = top_activating(model, "conv2", images, k=4, channels=chans, batch_size=16)
    res_one = top_activating(model, "conv2", images, k=4, channels=chans, batch_size=70)
    assert torch.equal(res.indices, res_one.indices) and torch.equal(res.positions, res_one.positions)
    for row, c in enumerate(chans):
        expect = torch.sort(per_image[:, c], descending=True, stable=True)
        assert res.indices[row].tolist() == expect.indices[:4].tolist()
        assert torch.allclose(res.values[row], expect.values[:4])
        for j, idx in enumerate(res.indices[row].tolist()):
            y, x = res.positions[row, j].tolist()
            assert act[idx, c, y, x] == per_image[idx, c]  # the position is where the maximum is
    ex = res.for_channel(5)
    assert [e["index"] for e in ex] == res.indices[1].tolist() and len(ex[0]["position"]) == 2


def test_non_spatial_layer_and_short_dataset(model, images):
    res = top_activating(model, "logits", images[:3], k=5)
    assert res.positions is None and res.channels == list(range(10))
    assert res.indices[:, 3:].eq(-1).all()  # only 3 images exist
    assert len(res.for_channel(2)) == 3 and "position" not in res.for_channel(2)[0]
    with torch.no_grad():
        logits = model(images[:3])
    assert res.indices[4, 0] == logits[:, 4].argmax()


def test_bad_channel_and_k(model, images):
    with pytest.raises(UnitRangeError, match="0..15"):
        top_activating(model, "conv2", images, channels=[16])
    with pytest.raises(ValueError, match="k must be"):
        top_activating(model, "conv2", images, k=0)


def test_receptive_fields_of_the_mnist_cnn(model):
    rf1 = receptive_field(model, "conv1")
    assert (rf1.height, rf1.width, rf1.stride_y, rf1.top) == (5, 5, 1, -2)
    rf2 = receptive_field(model, "conv2")  # 5x5 conv after 2x2 pool after 5x5 conv: 14 px, stride 2
    assert (rf2.height, rf2.width, rf2.stride_y, rf2.stride_x, rf2.top, rf2.left) == (14, 14, 2, 2, -6, -6)
    with pytest.raises(ValueError, match="no spatial"):
        receptive_field(model, "fc")


def test_patch_is_exactly_what_the_position_sees(model):
    rf = receptive_field(model, "conv2")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 28, 28, generator=g)
    pos = torch.tensor([[7, 2]])  # near the left border: the box starts at column -2
    patch = crop_patches(x, pos, rf)[0]
    y0, x0, y1, x1 = rf.box(7, 2)
    assert patch.shape == (1, 14, 14) and (y0, x0) == (8, -2)
    assert torch.equal(patch[:, :, :2], torch.zeros(1, 14, 2))  # zero padding outside the image
    assert torch.equal(patch[:, :, 2:], x[0, :, y0:y1, 0:x1])
    # changing pixels outside the box leaves the activation at that position unchanged
    outside = x.clone()
    mask = torch.ones_like(outside, dtype=torch.bool)
    mask[..., y0:y1, max(x0, 0):x1] = False
    outside[mask] = torch.rand(int(mask.sum()), generator=g)
    with torch.no_grad():
        a = capture(model, torch.cat([x, outside]), ["conv2"], detach=True)["conv2"][:, :, 7, 2]
    assert torch.allclose(a[0], a[1], atol=1e-5)


def test_images_follow_the_model_dtype(model, images):
    """Dataset batches are moved to the model's device and dtype (here a float64 copy of the model)."""
    import copy

    m64 = copy.deepcopy(model).double()
    res64 = top_activating(m64, "conv2", images, k=3, channels=[1, 2])
    res32 = top_activating(model, "conv2", images, k=3, channels=[1, 2])
    assert torch.equal(res64.indices, res32.indices)
    assert torch.allclose(res64.values, res32.values, atol=1e-4)
