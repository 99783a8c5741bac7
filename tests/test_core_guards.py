"""Guards of the core area (issue 35): circuits on nets with PReLU, LeakyReLU, ELU, GELU, SiLU, ReLU6, BatchNorm,
ceil-mode pools, residual adds, depthwise convolutions, LayerNorm and squeeze-excite gates either give the correct
result -- expanded weights equal the Jacobian of an independently written linear copy of the path, computed by
autograd -- or refuse naming the module, its type and the nearest layers that work (and those layers do work);
class-contrastive attribution and closed-form ablation never return NaN and agree with a real forward pass; NMF
refuses negative data; integer ids are never read from floats; pictures are never drawn saturated by accident;
model-file listings stay inside their folder; device names are checked."""

from __future__ import annotations

import os
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vision_interp as vi
from vision_interp import checks, display, environment, resources
from vision_interp import circuits as C

from hostile_cases_core import GateNet, LayerNormNet, LeakyBNNet, PReLUNet, ResidualNet, build


def interior_kernel(f, c_in: int, hw: tuple[int, int]) -> torch.Tensor:
    """The Jacobian of the centre output position of the linear map ``f`` w.r.t. its input, cropped to
    the box where it is non-zero: ``(C_out, C_in, kh, kw)``, independent of the package's window logic."""
    x = torch.zeros(1, c_in, *hw, dtype=torch.float64, requires_grad=True)
    y = f(x)
    cy, cx = y.shape[2] // 2, y.shape[3] // 2
    rows = [torch.autograd.grad(y[0, j, cy, cx], x, retain_graph=True)[0][0] for j in range(y.shape[1])]
    jac = torch.stack(rows)
    ys, xs = (jac.abs().sum((0, 1)) > 0).nonzero(as_tuple=True)
    return jac[:, :, int(ys.min()) : int(ys.max()) + 1, int(xs.min()) : int(xs.max()) + 1]


def _w(m: torch.nn.Module) -> torch.Tensor:
    return m.weight.detach().double()


def _bn_scale(bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).double().view(1, -1, 1, 1)


# ------------------------------------------------------------------ correct results, against an independent copy


def test_expanded_weights_through_batchnorm_leakyrelu_ceil_pool_elu_equal_the_linear_copy():
    m = build(LeakyBNNet)
    # linearisation rules: BN -> its scale, LeakyReLU / ELU -> identity, max pool -> average pool, biases dropped
    copy = lambda a: F.conv2d(F.conv2d(F.avg_pool2d(a * _bn_scale(m.bn), 2, ceil_mode=True), _w(m.conv2), padding=1),
                              _w(m.conv3))
    want = interior_kernel(copy, 4, (40, 40))
    got = C.expanded_weights(m, "conv1", "conv3")
    assert got.shape == want.shape == (2, 4, 10, 10)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)
    assert not m.training  # build() left it in eval mode and circuits restored it


def test_expanded_weights_through_a_residual_depthwise_block_equal_the_linear_copy():
    m = build(ResidualNet)
    b = m.block

    def copy(a: torch.Tensor) -> torch.Tensor:  # ReLU6, ELU, GELU -> identity; the skip connection adds
        inner = F.conv2d(F.conv2d(a, _w(b.dw), padding=1, groups=4) * _bn_scale(b.bn), _w(b.pw))
        return F.conv2d(a + inner, _w(m.conv3), padding=1)

    want = interior_kernel(copy, 4, (24, 24))
    got = C.expanded_weights(m, "conv1", "conv3")
    assert got.shape == want.shape == (3, 4, 5, 5)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)
    # the block is one node: the previous layer of conv3 is the block, and top connections rank its kernel
    top = C.top_connections(m, "conv3:1", k=2)
    assert top["layer"] == "block"
    kern = C.expanded_weights(m, "block", "conv3", dst_channels=[1])[0]
    assert top == C.rank_connections(kern, "block", 2) | {k: top[k] for k in ("unit", "layer", "direction")}
    torch.testing.assert_close(kern.double(), _w(m.conv3)[1], atol=1e-6, rtol=1e-5)  # GELU is read as the identity


def test_prelu_is_refused_naming_the_module_and_the_layers_after_it_which_work():
    m = build(PReLUNet)
    with pytest.raises(C.LinearizationError) as info:
        C.expanded_weights(m, "conv1", "conv2")
    msg = str(info.value)
    assert "'act1' (PReLU)" in msg and "expanded_weights(model, 'act1', 'conv2')" in msg and "linearized(x)" in msg
    assert info.value.module == "act1" and info.value.module_type == "PReLU"
    assert info.value.alternatives == [("act1", "conv2")]
    # the suggestion works and is right: from the PReLU's output one convolution separates them
    assert torch.equal(C.expanded_weights(m, "act1", "conv2"), _w(m.conv2).float())
    assert torch.equal(C.direct_weights(m, "act1", "conv2"), _w(m.conv2).float())
    # a second PReLU further on moves the suggested source on to it
    with pytest.raises(C.LinearizationError, match=r"expanded_weights\(model, 'act2', 'conv3'\)"):
        C.expanded_weights(m, "conv1", "conv3")
    copy = lambda a: F.conv2d(F.avg_pool2d(a, 3, 2, ceil_mode=True), _w(m.conv3))
    torch.testing.assert_close(C.expanded_weights(m, "act2", "conv3").double(), interior_kernel(copy, 5, (31, 31)),
                               atol=1e-6, rtol=1e-5)
    # each caller words the alternative as its own call, and that call works
    with pytest.raises(C.LinearizationError, match=r"top_connections\(model, 'conv2:1', layer='act1'\)"):
        C.top_connections(m, "conv2:1")
    assert C.top_connections(m, "conv2:1", layer="act1")["excitatory"] == \
        C.rank_connections(_w(m.conv2)[1], "act1", 8)["excitatory"]
    with pytest.raises(C.LinearizationError, match=r"direct_weights\(model, 'act1', 'conv2'\)"):
        C.direct_weights(m, "conv1", "conv2")
    with pytest.raises(C.LinearizationError, match=r"classifier_view\(model, 'act2'\)"):
        C.classifier_view(m, "conv2")
    assert torch.equal(C.classifier_view(m), m.fc.weight.detach().view(3, 6, 6, 6))


@pytest.mark.parametrize("cls, module, kind, reason", [
    (LayerNormNet, "norm", "LayerNorm2d", "layer_norm()"),
    (GateNet, "se", "SqueezeExcite", "sigmoid()"),
])
def test_modules_without_a_linear_stand_in_are_refused_by_name(cls, module, kind, reason):
    m = build(cls)
    for call in (lambda: C.expanded_weights(m, "conv1", "conv2"), lambda: C.direct_weights(m, "conv1", "conv2"),
                 lambda: C.top_connections(m, "conv2:0", layer="conv1")):
        with pytest.raises(C.LinearizationError) as info:
            call()
        assert f"'{module}' ({kind})" in str(info.value) and reason in str(info.value)
        for a, b in info.value.alternatives:  # every suggestion is checked to work
            C.expanded_weights(m, a, b)
    # past the blocker the path is linear: the next conv's own kernel
    assert torch.equal(C.expanded_weights(m, module, "conv2"), m.conv2.weight.detach())


def test_direct_weights_refuse_a_depthwise_block_but_read_grouped_and_plain_convs():
    m = build(ResidualNet)
    with pytest.raises(C.CircuitError, match="'block' \\(Residual\\); use expanded_weights"):
        C.direct_weights(m, "conv1", "conv3")
    assert torch.equal(C.direct_weights(m, "block", "conv3"), m.conv3.weight.detach())
    # a depthwise conv (groups = channels): the dense (C_out, C_in, kh, kw) kernel, zeros off the diagonal
    dw = m.block.dw.weight.detach()
    got = C.direct_weights(m, "relu6", "block.dw")
    assert got.shape == (4, 4, 3, 3)
    for j in range(4):
        for i in range(4):
            assert torch.equal(got[j, i], dw[j, 0] if i == j else torch.zeros(3, 3)), (j, i)


class _Grouped(torch.nn.Module):
    """conv1 -> ReLU -> conv(6 -> 4, groups=2): each output channel reads 3 of the 6 channels."""

    input_shape = (2, 10, 10)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.act = torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(6, 4, 3, padding=1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


def test_direct_weights_of_a_grouped_conv_are_its_dense_block_diagonal_kernel():
    m = _Grouped().eval()
    got = C.direct_weights(m, "act", "conv2")
    w = m.conv2.weight.detach()  # (4, 3, 3, 3)
    assert got.shape == (4, 6, 3, 3)
    assert torch.equal(got[:2, :3], w[:2]) and torch.equal(got[2:, 3:], w[2:])
    assert not got[:2, 3:].any() and not got[2:, :3].any()  # exact zeros between the groups
    # the dense kernel is the same map: an ordinary convolution with it equals the grouped one
    a = torch.rand(2, 6, 10, 10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(F.conv2d(a, got, padding=1), F.conv2d(a, w, padding=1, groups=2), atol=1e-6, rtol=1e-6)
    # and the connection ranking reads it: channel 0 only ever names channels 0-2 of act
    top = C.top_connections(m, "conv2:0", k=6, layer="act")
    assert {u for u, _ in top["excitatory"] + top["inhibitory"]} <= {"act:0", "act:1", "act:2"}


# ------------------------------------------------------------------ contrastive attribution and closed-form ablation


@pytest.fixture(scope="module")
def mnist():
    return vi.mnist_cnn(pretrained=True)


def test_absent_classes_are_refused_and_ablation_agrees_with_a_real_forward_pass(mnist):
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([3, 4, 3, 4, 1, 1])
    with pytest.raises(ValueError, match=r"target: class 7 has no image .*classes present: 1, 3, 4"):
        C.contrastive_logit_attribution(mnist, "pool2", x, y, 7)
    with pytest.raises(ValueError, match=r"target: class 7 has no image"):
        C.closed_form_ablation(mnist, "pool2:5", x, y, 7)
    with pytest.raises(ValueError, match="labels: every image is of class 3"):
        C.closed_form_ablation(mnist, "pool2:5", x, torch.full((6,), 3), 3)
    res = C.closed_form_ablation(mnist, "pool2:5", x, y, 3)

    def margins(logits: torch.Tensor) -> torch.Tensor:
        own = logits.gather(1, y[:, None])[:, 0]
        return own - logits.scatter(1, y[:, None], float("-inf")).max(1).values

    def ablate(mod, inp, out):
        out = out.clone()
        out[:, 5] = out[:, 5].mean(0)  # mode "mean": each cell to its mean over the images
        return out

    with torch.no_grad():
        clean = margins(mnist(x))
        with vi.hooks(mnist, {"pool2": ablate}):
            ablated = margins(mnist(x))
    drop = clean - ablated
    assert res.margin_drop == pytest.approx(float(drop[y == 3].mean()), abs=1e-4)
    # the other classes present (4 and 1) each count once; the 7 absent classes are left out, not NaN
    assert res.others_margin_drop == pytest.approx(float((drop[y == 4].mean() + drop[y == 1].mean()) / 2), abs=1e-4)
    assert all(np.isfinite(v) for v in (res.margin_drop, res.others_margin_drop, res.specificity, res.accuracy_drop))
    ca = C.contrastive_logit_attribution(mnist, "pool2", x, y, 3)
    with torch.no_grad():
        logit3 = mnist(x)[:, 3]
    assert ca.total == pytest.approx(float(logit3[y == 3].mean() - logit3[y != 3].mean()), abs=1e-4)


# ------------------------------------------------------------------ NMF, integer ids


def test_nmf_refuses_negative_activations_with_their_share_and_the_next_relu(mnist):
    a = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"activations: min -\d.*% of the values negative.*never|clamping at 0"):
        C.neuron_groups(a, 2)
    with pytest.raises(ValueError, match="'relu2'"):
        C.layer_neuron_groups(mnist, torch.rand(2, 1, 28, 28), "conv2", 2)
    ok = C.neuron_groups(a - a.min(), 2)  # an explicit shift by the caller is factorized
    assert ok.loadings.shape == (2, 8) and np.isfinite(ok.error)


@pytest.mark.parametrize("value, ok", [(3, True), (np.int64(3), True), (torch.tensor(3), True), (3.0, False),
                                       (np.float32(3), False), (True, False), (torch.tensor(3.0), False), ("3", False)])
def test_integer_ids_are_never_read_from_floats(value, ok):
    if ok:
        assert checks.check_index(value, "channel") == 3
        assert vi.parse_unit(("conv2", value)).channel == 3
        assert vi.parse_channel_list([value], 8) == [3]
    else:
        for call in (lambda: checks.check_index(value, "channel"), lambda: vi.parse_unit(("conv2", value)),
                     lambda: vi.parse_channel_list([value], 8)):
            with pytest.raises(checks.IdTypeError) as info:
                call()
            assert "channel" in str(info.value)
            assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    with pytest.raises(checks.IdTypeError, match="target"):
        checks.check_class_target((1, 2.0))


def test_float_input_shapes_are_refused_not_truncated(mnist):
    for shape in ((1, 28.0, 28), (1, 28.5, 28), (True, 28, 28)):
        with pytest.raises(TypeError, match="input_shape"):
            vi.layer_shape(mnist, "conv2", shape)
    assert vi.layer_shape(mnist, "conv2", (1, np.int64(28), 28)) == (16, 14, 14)


# ------------------------------------------------------------------ display, resources, environment


def test_pictures_are_read_by_one_rule_and_never_drawn_saturated():
    from display_checks import decode_png

    u8 = (torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    img = decode_png(display.images(u8)._repr_png_()).convert("RGB")
    ref = decode_png(display.images(u8.float() / 255)._repr_png_()).convert("RGB")
    assert np.array_equal(np.asarray(img), np.asarray(ref))
    saturated = float(np.isin(np.asarray(img), (0, 255)).mean())
    assert saturated < 0.2  # a uint8 picture read as [0, 1] floats would be ~100% saturated
    assert torch.equal(display.as_pictures(u8[0].permute(1, 2, 0).numpy()), u8[:1].float() / 255)  # PIL's layout
    assert torch.equal(display.as_pictures(torch.tensor([[True, False]])), torch.tensor([[[[1.0, 0.0]]]]))
    for bad, err, word in ((u8.float(), ValueError, "divide by 255"), (u8.long(), ValueError, "int64"),
                           (u8.float() / 255 - 0.5, ValueError, "signed"),
                           (torch.full((1, 3, 2, 2), float("nan")), ValueError, "NaN"), ("img", TypeError, "images")):
        with pytest.raises(err, match=word):
            display.images(bad)


def test_model_file_listings_stay_inside_their_folder(tmp_path, monkeypatch):
    root, outside = tmp_path / "models", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "a.bin").write_bytes(b"a")
    (outside / "secret.bin").write_bytes(b"s")
    os.symlink(outside / "secret.bin", root / "link.bin")
    monkeypatch.setenv(resources.MODELS_ENV, str(root))
    names = [p.name for p in resources.list_model_files(".", "*.bin")]
    assert "a.bin" in names and "link.bin" not in names and "secret.bin" not in names
    for subdir, pattern in ((".", "../*"), (".", "../outside/*"), (".", str(outside / "*")), ("..", "*"),
                            (str(outside), "*"), (".", "")):
        with pytest.raises(ValueError, match="pattern" if subdir == "." else "subdir"):
            resources.list_model_files(subdir, pattern)


def test_device_names_are_checked_before_torch_sees_them():
    with pytest.raises(ValueError, match=r"device: 'tpu' is not a torch device; valid values are 'cpu'"):
        environment.native_bf16("tpu")
    with pytest.raises(TypeError, match="device"):
        environment.native_bf16(None)
    assert environment.native_bf16(torch.device("cpu")) == environment.native_bf16("cpu")
    assert environment.native_bf16("meta") is False or os.environ.get(environment.ASSUME_BF16_ENV)
    assert "native bf16" in environment.format_report(environment.environment_report(browser=False))


# ------------------------------------------------------------------ receptive fields through axis reorders


class _ChannelsLast(torch.nn.Module):
    """conv 3x3 -> a ConvNeXt-style block: permute to NHWC, LayerNorm and Linear over channels, permute back,
    then a 5x5 depthwise conv; ``mode`` swaps in a map that mixes positions instead."""

    input_shape = (2, 20, 20)

    def __init__(self, mode: str = "channels_last") -> None:
        super().__init__()
        torch.manual_seed(5)
        self.mode = mode
        self.conv1 = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.norm = torch.nn.LayerNorm(4) if mode == "channels_last" else torch.nn.GroupNorm(2, 4)
        self.fc = torch.nn.Linear(4, 4) if mode != "width_linear" else torch.nn.Linear(20, 20)
        self.dw = torch.nn.Conv2d(4, 4, 5, padding=2, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        if self.mode == "channels_last":
            h = self.fc(self.norm(h.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        elif self.mode == "groupnorm":
            h = self.norm(h)
        else:  # a Linear along the width axis: positions of one row mix
            h = self.fc(h)
        return self.dw(h)


def _grad_box(m: torch.nn.Module, layer: str, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The box of input pixels the centre position of ``layer`` depends on, by autograd."""
    box: dict[str, torch.Tensor] = {}
    h = m.get_submodule(layer).register_forward_hook(lambda _m, _i, o: box.__setitem__("a", o))
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    try:
        m(x)
    finally:
        h.remove()
    a = box["a"]
    (g,) = torch.autograd.grad(a[0, :, a.shape[2] // 2, a.shape[3] // 2].sum(), x)
    nz = (g[0].abs().sum(0) > 0).nonzero()
    return int(nz[:, 0].min()), int(nz[:, 1].min()), int(nz[:, 0].max()) + 1, int(nz[:, 1].max()) + 1


def test_the_trace_follows_a_channels_last_block_and_knows_what_mixes_positions():
    from vision_interp.data.examples import example_field, receptive_field
    from vision_interp.trace import trace

    m = _ChannelsLast().eval()
    t = trace(m, (2, 20, 20))
    win = t.receptive_field("dw")  # 3x3 then 5x5: 7x7, and the NHWC detour keeps the geometry
    assert (win.size, win.stride, win.offset) == ((7, 7), (1, 1), (-3, -3))
    assert t.receptive_field("fc").size == (3, 3)  # the Linear over channels (NHWC) is pointwise in space
    assert win.box(10, 10) == _grad_box(m, "dw", (2, 20, 20))  # what autograd says the position reads
    rf = receptive_field(m, "dw")
    assert (rf.height, rf.width, rf.whole_image) == (7, 7, False)
    assert example_field(m, "dw") == rf
    # a GroupNorm normalises over the whole map: every position sees the whole input (it did not say so before)
    g = _ChannelsLast("groupnorm").eval()
    assert trace(g, (2, 20, 20)).receptive_field("dw").is_global
    assert _grad_box(g, "dw", (2, 20, 20)) == (0, 0, 20, 20)
    with pytest.raises(ValueError, match="whole input"):
        receptive_field(g, "dw")
    whole = example_field(g, "dw")  # dataset examples fall back to the whole image, and say why
    assert whole.whole_image and "whole input" in whole.reason and "whole images" in whole.reason
    assert (whole.height, whole.width) == (20, 20)
    imgs = torch.rand(3, 2, 20, 20, generator=torch.Generator().manual_seed(1))
    from vision_interp.data.examples import crop_patches

    assert torch.equal(crop_patches(imgs, torch.tensor([[0, 0], [9, 3], [19, 19]]), whole), imgs)
    # a Linear along the width mixes positions of a row: unknown, named, and whole images for examples
    w = _ChannelsLast("width_linear").eval()
    with pytest.raises(ValueError, match=r"linear\(\) combines positions along the width axis"):
        receptive_field(w, "dw")
    assert example_field(w, "dw").whole_image and "linear()" in example_field(w, "dw").reason
    with pytest.raises(ValueError, match="no spatial dimensions"):
        example_field(vi.mnist_cnn(pretrained=False), "fc")


class _NormNet(torch.nn.Module):
    """conv -> F.normalize(p=2, dim=...) -> conv: a norm over channels keeps the window, one over width mixes it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.c1, self.c2 = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 3)
        self.out = torch.nn.Identity()

    def forward(self, x):
        return self.out(self.c2(torch.nn.functional.normalize(self.c1(x), 2, self.dim)))


def test_normalize_reads_its_dim_argument_not_p():
    from vision_interp.data.examples import example_field

    local = example_field(_with_shape(_NormNet(1)), "c2")  # read as dim=p=2 before: a mix along the height
    assert not local.whole_image and (local.height, local.width) == (5, 5)
    mixed = example_field(_with_shape(_NormNet(3)), "c2")
    assert mixed.whole_image and "normalize" in mixed.reason


def _with_shape(m: torch.nn.Module) -> torch.nn.Module:
    m.input_shape = (1, 12, 12)
    return m
