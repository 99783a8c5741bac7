"""Foundation: unit grammar, activation capture (early exit, hook hygiene), InceptionV1 structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vision_interp as vi
from vision_interp.capture import LayerNotReachedError, capture, hooks
from vision_interp.units import Unit, UnitRangeError, UnknownLayerError, parse_unit, resolve_unit
from vision_interp.zoo import MnistCNN, inceptionv1
from vision_interp.zoo.inceptionv1 import MIXED_BLOCKS


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return inceptionv1()


def _all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---------------------------------------------------------------- unit grammar

@pytest.mark.parametrize(
    "spec, unit",
    [
        ("mixed4a", Unit("mixed4a")),
        ("mixed4a:476", Unit("mixed4a", 476)),
        ("conv2:5@3,4", Unit("conv2", 5, (3, 4))),
        (" conv2 : 5 @ 3 , 4 ", Unit("conv2", 5, (3, 4))),
        (("conv2", 5), Unit("conv2", 5)),
        (("conv2", 5, (1, 2)), Unit("conv2", 5, (1, 2))),
        ("features.3:1", Unit("features.3", 1)),
    ],
)
def test_parse_unit(spec, unit):
    assert parse_unit(spec) == unit
    assert parse_unit(str(unit)) == unit  # printing round-trips


@pytest.mark.parametrize("bad", ["conv2:", "conv2:a", "conv2@1,2", "", ("conv2", "x"), ("conv2", None, (1, 2)), 5])
def test_parse_unit_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_unit(bad)


def test_unknown_layer_lists_close_names(inception):
    with pytest.raises(UnknownLayerError) as e:
        resolve_unit(inception, "mixd4a:3")
    msg = str(e.value)
    assert "mixed4a" in msg and "Closest" in msg


def test_channel_out_of_range_states_range(inception):
    with pytest.raises(UnitRangeError, match=r"0\.\.507 \(508 channels\)"):
        resolve_unit(inception, "mixed4a:508")
    with pytest.raises(UnitRangeError, match=r"valid y is 0\.\.13"):
        resolve_unit(inception, "mixed4a:3@14,0")
    assert resolve_unit(inception, "mixed4a:507@13,13") == Unit("mixed4a", 507, (13, 13))


def test_lucid_aliases_resolve(inception):
    assert vi.resolve_layer(inception, "mixed4a_3x3_pre_relu") == "mixed4a_3x3_pre_relu_conv"
    assert vi.resolve_layer(inception, "softmax2_pre_activation") == "softmax2_pre_activation_matmul"
    names = vi.layer_names(inception)
    for n in ["conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed5b", "mixed4a_3x3_pre_relu", "mixed4a_3x3_bottleneck"]:
        assert n in names


# ---------------------------------------------------------------- InceptionV1

def test_inception_matches_published_state_dict_layout(inception):
    sd = inception.state_dict()
    assert len(sd) == 116
    assert sum(v.numel() for v in sd.values()) == 7_066_380
    for key in ["conv2d0_pre_relu_conv.weight", "mixed3a_3x3_bottleneck_pre_relu_conv.weight", "softmax2_pre_activation_matmul.weight"]:
        assert key in sd
    assert sd["softmax2_pre_activation_matmul.weight"].shape == (1008, 1024)
    assert sd["conv2d0_pre_relu_conv.weight"].shape == (64, 3, 7, 7)


def test_inception_shapes_at_every_named_layer(inception):
    expected = {"conv2d0": (64, 112, 112), "maxpool0": (64, 56, 56), "conv2d1": (64, 56, 56), "conv2d2": (192, 56, 56), "maxpool1": (192, 28, 28)}
    sizes = {"mixed3a": 28, "mixed3b": 28, "mixed4a": 14, "mixed4b": 14, "mixed4c": 14, "mixed4d": 14, "mixed4e": 14, "mixed5a": 7, "mixed5b": 7}
    for name, (_cin, c1, _c3r, c3, _c5r, c5, cp) in MIXED_BLOCKS.items():
        s = sizes[name]
        expected[name] = (c1 + c3 + c5 + cp, s, s)
        expected[f"{name}_3x3_pre_relu"] = (c3, s, s)
        expected[f"{name}_pool_reduce"] = (cp, s, s)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        cache = capture(inception, x, list(expected), stop_early=False)
        logits = cache.output
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == (2, *shape), name
    assert logits.shape == (2, 1008)
    assert tuple(cache["mixed4a"].shape[1:]) == (508, 14, 14)


def test_inception_preprocessing_and_lrn_follow_tensorflow():
    """x*255-117 happens inside; LRN is x / (2 + 1e-4 * sum of 11 neighbouring squares)^0.5 (inception5h)."""
    from vision_interp.zoo.inceptionv1 import LocalResponseNorm

    x = torch.randn(1, 12, 3, 3) * 30
    ref = torch.empty_like(x)
    for c in range(12):
        lo, hi = max(0, c - 5), min(12, c + 6)
        ref[:, c] = x[:, c] / (2 + 1e-4 * (x[:, lo:hi] ** 2).sum(1)) ** 0.5
    torch.testing.assert_close(LocalResponseNorm()(x), ref)

    m = inceptionv1()
    seen = {}
    with hooks(m, {"conv2d0_pre_relu_conv": lambda mod, inp, out: seen.setdefault("in", inp[0])}):
        capture(m, torch.full((1, 3, 224, 224), 0.5), ["conv2d0"])
    assert torch.allclose(seen["in"], torch.full_like(seen["in"], 0.5 * 255 - 117))


def test_inception_rejects_wrong_input(inception):
    with pytest.raises(ValueError, match="RGB"):
        inception(torch.rand(1, 1, 224, 224))


def test_inception_class_names_from_data_dir(data_dir):
    names = vi.zoo.load_class_names(data_dir)
    assert len(names) == 1001 and names[0] == "dummy"


# ---------------------------------------------------------------- capture

class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.ReLU()
        self.c = nn.Conv2d(2, 3, 3, padding=1)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_early_exit_skips_later_layers(inception):
    calls = {"mixed4a": 0, "mixed5b": 0, "logits": 0}

    def counter(name):
        def fn(_m, _i, _o):
            calls[name] += 1
        return fn

    x = torch.rand(1, 3, 224, 224)
    with hooks(inception, {n: counter(n) for n in calls}):
        cache = capture(inception, x, ["mixed3a", "mixed3b"])
    assert not cache.completed and cache.output is None
    assert calls == {"mixed4a": 0, "mixed5b": 0, "logits": 0}
    assert _all_hooks(inception) == 0
    # the same call without early exit runs everything
    with hooks(inception, {n: counter(n) for n in calls}):
        capture(inception, x, ["mixed3a"], stop_early=False)
    assert calls == {"mixed4a": 1, "mixed5b": 1, "logits": 1}


def test_capture_keeps_graph_for_gradients():
    m = Chain()
    x = torch.rand(1, 1, 5, 5, requires_grad=True)
    act = capture(m, x, ["a"])["a:1"]
    act.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_hooks_removed_after_exception():
    m = Chain()

    class Boom(RuntimeError):
        pass

    def explode(_m, _i, _o):
        raise Boom

    with pytest.raises(Boom):
        with hooks(m, {"b": explode}):
            m(torch.rand(1, 1, 4, 4))
    assert _all_hooks(m) == 0
    with pytest.raises(ZeroDivisionError):
        with hooks(m, {"a": lambda *a: None, "c": lambda *a: None}):
            assert _all_hooks(m) == 2
            1 / 0
    assert _all_hooks(m) == 0
    # an error inside the model during capture also cleans up
    bad = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Linear(3, 3))
    with pytest.raises(RuntimeError):
        capture(bad, torch.rand(1, 1, 6, 6), ["1"], stop_early=False)
    assert _all_hooks(bad) == 0


def test_unreached_layer_is_reported():
    m = Chain()
    with pytest.raises(LayerNotReachedError, match="unused"):
        capture(m, torch.rand(1, 1, 4, 4), ["a", "unused"])
    assert _all_hooks(m) == 0


def test_hooks_can_replace_outputs():
    m = Chain()
    x = torch.rand(1, 1, 4, 4)
    with hooks(m, {"b": lambda _m, _i, out: torch.zeros_like(out)}):
        y = m(x)
    torch.testing.assert_close(y, m.c.bias.view(1, 3, 1, 1).expand(1, 3, 4, 4))


def test_cache_indexing_by_unit():
    m = MnistCNN()
    x = torch.rand(3, 1, 28, 28)
    cache = capture(m, x, ["conv2", "conv1"])
    assert list(cache) == ["conv2", "conv1"]
    assert cache["conv2:5"].shape == (3, 14, 14)
    assert cache["conv2:5@3,4"].shape == (3,)
    torch.testing.assert_close(cache["conv2:5@3,4"], cache["conv2"][:, 5, 3, 4])
    assert "conv2" in repr(cache)
    out, full = vi.run_with_cache(m, x)
    assert out.shape == (3, 10) and "relu2" in full and "fc" in full


def test_public_api_resolves_and_stays_light():
    """Every advertised name exists; the GPT-2 side (transformers) is only imported on demand."""
    import subprocess
    import sys

    code = (
        "import sys, vision_interp as vi\n"
        "assert 'transformers' not in sys.modules, 'transformers imported eagerly'\n"
        "missing = [n for n in vi.__all__ if getattr(vi, n, None) is None]\n"
        "assert not missing, missing\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
