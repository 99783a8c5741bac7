"""Architecture conformance: every capability on every architecture of ``tests/conformance_models.py``
gives either a CORRECT result (a stated property, checked against an independent computation) or a
CLEAR REFUSAL (an argument-kind error whose message names a module or type of the model, or the
model's output, and says what to do). Anything else fails its cell: a silent wrong number, a crash
from deep inside torch, a refusal that names nothing, or a change to the caller's model.

Each cell is one test (``test_cell[capability-architecture]``); ``docs/conformance.md`` is the table
of their outcomes (``VI_WRITE_DOCS=1 pytest tests/test_conformance.py`` rewrites it;
:func:`test_docs_table_is_current` fails when it is out of date). There is no xfail: a failing cell is
a finding (``/tmp/conformance_findings.md`` lists them while fixes are in progress).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as Fn
from torch import nn

import vision_interp as vi
from vision_interp import attribution as A
from vision_interp import circuits as C
from vision_interp import features as Fe
from vision_interp import featvis as V

import conformance_models as cm
import third_party
from hostile_support import assert_same_state, full_state

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "conformance.md"

# ----------------------------------------------------------------------------------- outcomes


class Wrong(AssertionError):
    """A silent wrong result: the call returned, the stated property does not hold."""


HINTS = ("use ", "pass ", "give ", "instead", "try ", "choose", "pick", "set ", "wrap", "select", "call ", "attach",
         "train", "supported", "rules", "only ", "start ", "declare", "expanded_weights", "instead")
ACTIVATIONS = (nn.PReLU, nn.LeakyReLU, nn.ELU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.CELU, nn.SELU,
               nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardtanh)


def _model_words(model: nn.Module) -> set[str]:
    words = {"output", "tuple", "head"}
    for name, mod in model.named_modules():
        if name:
            words.add(name)
            words.add(name.rsplit(".", 1)[-1])
        words.add(type(mod).__name__)
    return {w for w in words if len(w) > 2}


def judge_refusal(exc: BaseException, model: nn.Module) -> str:
    """``exc`` as a clear refusal (returns its excerpt) or raises :class:`Wrong` saying why it is not."""
    msg = str(exc)
    kind = type(exc).__name__
    if not isinstance(exc, (ValueError, TypeError)):
        raise Wrong(f"crash: {kind}: {msg[:300]}")
    names = [w for w in _model_words(model) if w in msg]
    if not names:
        raise Wrong(f"unclear refusal (names no module, type or output of the model): {kind}: {msg[:300]}")
    if not any(h in msg.lower() for h in HINTS):
        raise Wrong(f"unclear refusal (says nothing about what to do): {kind}: {msg[:300]}")
    return f"{kind}: {msg[:160]}"


def close(a: torch.Tensor, b: torch.Tensor, what: str, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape:
        raise Wrong(f"{what}: shape {tuple(a.shape)} vs the reference's {tuple(b.shape)}")
    scale = float(b.abs().max()) if b.numel() else 0.0
    err = float((a - b).abs().max()) if a.numel() else 0.0
    if not err <= atol + rtol * scale:
        raise Wrong(f"{what}: max |difference| {err:.3g} (reference scale {scale:.3g})")


def completeness(total: torch.Tensor, delta: torch.Tensor, what: str, tol: float) -> float:
    """max over inputs of |sum - delta| / max(|delta|, 0.05 * mean |delta|); raises Wrong above ``tol``."""
    total, delta = total.double().reshape(-1), delta.double().reshape(-1)
    floor = max(1e-4, 0.1 * float(delta.abs().max()))
    rel = float(((total - delta).abs() / delta.abs().clamp_min(floor)).max())
    if not rel <= tol:  # (tol = inf: only measure)
        raise Wrong(f"{what}: sums {[round(float(t), 3) for t in total]} vs f(x) - f(b) "
                    f"{[round(float(d), 3) for d in delta]} (relative error {rel:.3g}, allowed {tol})")
    return rel


# ----------------------------------------------------------------------------------- fixtures per architecture


class Ctx:
    """One architecture's model, inputs and shared trained objects (built once, on demand)."""

    def __init__(self, arch: cm.Arch) -> None:
        self.arch = arch
        self.model = arch.build()
        spec_shape = vi.model_spec(self.model).input_shape
        self.shape = tuple(spec_shape)
        if arch.examples is not None:
            ex = arch.examples()
            self.examples = ex
            self.x = ex[:2].clone()
        else:
            self.examples = None
            self.x = cm.inputs_for(self.model, 2, seed=1)
        self.pool = cm.inputs_for(self.model, 32, seed=2) if self.examples is None else self.examples
        with torch.no_grad():
            out = self.model(self.x)
        self.out0 = out[0] if isinstance(out, tuple) else out
        self.target = int(self.out0[0].argmax())
        self._cache: dict[str, Any] = {}

    def f(self, x: torch.Tensor) -> torch.Tensor:
        """The reference output: the logits (the first head of a multi-head model)."""
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out

    def logit(self, x: torch.Tensor, target: int | None = None) -> torch.Tensor:
        return self.f(x)[:, self.target if target is None else target]

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    def once(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            try:
                self._cache[key] = ("ok", fn())
            except Exception as e:  # noqa: BLE001 - replayed to each cell that needs it
                self._cache[key] = ("err", e)
        kind, v = self._cache[key]
        if kind == "err":
            raise v
        return v


@functools.lru_cache(maxsize=None)
def ctx(name: str) -> Ctx:
    return Ctx(cm.BY_NAME[name])


def grab(model: nn.Module, x: torch.Tensor, path: str) -> tuple[torch.Tensor, Any]:
    """The output of module ``path`` on ``x`` by a plain forward hook (independent of ``capture``)."""
    box: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        box["a"] = out

    h = model.get_submodule(path).register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        h.remove()
    return box["a"], out


def input_grad(c: Ctx, x: torch.Tensor, target: int) -> torch.Tensor:
    """d logit / d x by autograd, w.r.t. the input only (the parameters' ``.grad`` stay untouched)."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(c.logit(x, target).sum(), x)
    return g.detach()


def rectifiers(model: nn.Module) -> list[str]:
    """Activation modules that are not ``nn.ReLU`` (where guided backprop's and DeepLift's ReLU rule do not apply)."""
    return sorted({type(m).__name__ for m in model.modules()
                   if isinstance(m, ACTIVATIONS) or type(m).__name__ in ("GELUActivation", "SiLUActivation")})


# ----------------------------------------------------------------------------------- the capabilities
# Each returns the property it checked (a short sentence) or raises Wrong / an error of the toolkit.


def cap_capture(c: Ctx) -> str:
    layer = c.arch.layer
    got = vi.capture(c.model, c.x, [layer])[layer]
    with torch.no_grad():
        ref, _ = grab(c.model, c.x, layer)
    close(got, ref, f"capture {layer}", rtol=0, atol=0)
    return f"capture({layer}) == a manual forward hook, exactly"


def _unit(c: Ctx) -> str:
    return f"{c.arch.layer}:{c.arch.channel}"


def _channel_mean(c: Ctx, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        a, _ = grab(c.model, images, c.arch.layer)
    return a[:, c.arch.channel].flatten(1).mean(1)


def cap_featvis(c: Ctx) -> str:
    unit = _unit(c)
    steps = 64 if c.arch.trained else 16
    res = V.visualize(c.model, unit, steps=steps, progress=False)
    if tuple(res.images.shape[1:]) != c.shape:
        raise Wrong(f"featvis images {tuple(res.images.shape)} for a model declaring {c.shape}")
    mine = _channel_mean(c, res.images)
    close(res.activations, mine, "featvis reported activation vs the model on the returned image", rtol=1e-3, atol=1e-4)
    if c.arch.trained:
        best = float(_channel_mean(c, c.examples).max())
        if not float(mine.max()) > best:
            raise Wrong(f"featvis {unit} reached {float(mine.max()):.3f}; the best real example gives {best:.3f}")
        return f"activation {float(mine.max()):.2f} > best of {len(c.examples)} real examples {best:.2f} ({steps} steps)"
    best = float(_channel_mean(c, c.pool).max())
    if not float(mine.max()) > best:
        raise Wrong(f"featvis {unit} reached {float(mine.max()):.3f}; the best of {len(c.pool)} seeded images gives {best:.3f}")
    return f"reported activation == model on the image; {float(mine.max()):.2f} > best seeded image {best:.2f}"


def cap_saliency(c: Ctx) -> str:
    got = A.attribute(c.model, c.x, target=c.target, method="saliency")
    close(got, input_grad(c, c.x, c.target).abs(), "saliency vs |autograd gradient|")
    return "== |d logit / d x| by autograd"


def cap_input_x_gradient(c: Ctx) -> str:
    got = A.attribute(c.model, c.x, target=c.target, method="input_x_gradient")
    close(got, c.x * input_grad(c, c.x, c.target), "input x gradient vs x * autograd gradient")
    return "== x * d logit / d x by autograd"


def _delta(c: Ctx) -> torch.Tensor:
    with torch.no_grad():
        return c.logit(c.x) - c.logit(torch.zeros_like(c.x))


def _own_ig(c: Ctx, n: int) -> torch.Tensor:
    """Integrated gradients from a zero baseline by Gauss-Legendre quadrature (own autograd, no Captum)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(n)
    total = torch.zeros_like(c.x)
    for t, w in zip((nodes + 1) / 2, weights / 2):
        total += float(w) * input_grad(c, c.x * float(t), c.target)
    return total * c.x


def cap_integrated_gradients(c: Ctx) -> str:
    n = 128 if c.arch.trained else 64  # trained nets: completeness is the checkable property, give it the steps
    got = A.attribute(c.model, c.x, target=c.target, method="integrated_gradients", baselines=0.0, n_steps=n)
    own = _own_ig(c, n)
    close(got, own, f"IG vs own Gauss-Legendre IG ({n} nodes)", rtol=1e-3, atol=1e-6)
    delta = _delta(c)
    rep = A.ig_completeness(c.model, c.x, target=c.target, n_steps=n)
    close(rep.output_difference, delta, "ig_completeness's f(x) - f(baseline) vs the model's", rtol=1e-4, atol=1e-5)
    try:
        rel = completeness(got.flatten(1).sum(1), delta, "IG completeness", 0.02)
    except Wrong:
        own_rel = completeness(own.flatten(1).sum(1), delta, "own IG completeness", float("inf"))
        return (f"== own Gauss-Legendre IG; not complete at {n} steps on this net (own IG is off by "
                f"{own_rel:.2f} too; ig_completeness reports it)")
    return f"== own Gauss-Legendre IG; sum == f(x) - f(0) (relative error {rel:.1e}, {n} steps)"


def _with_warnings(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in rec if issubclass(w.category, UserWarning)
                 and "vision_interp" in (w.filename or "") + str(w.message) or "complete" in str(w.message).lower()]


def _warned(c: Ctx, msgs: list[str], about: list[str]) -> str | None:
    """A warning that names a module type it is about and gives a measured figure."""
    for m in msgs:
        if any(t in m for t in about) and re.search(r"\d", m):
            return m
    return None


def cap_deeplift(c: Ctx) -> str:
    got, msgs = _with_warnings(lambda: A.attribute(c.model, c.x, target=c.target, method="deeplift", baselines=0.0))
    try:
        rel = completeness(got.flatten(1).sum(1), _delta(c), "DeepLift completeness", 1e-3)
    except Wrong:
        w = _warned(c, msgs, rectifiers(c.model) + ["Sigmoid", "product", "LayerNorm"])
        if w:
            return f"warned: {w[:160]}"
        raise
    return f"sum == f(x) - f(0) (relative error {rel:.1e}): DeepLift's rules hold here"


def _guided_reference(c: Ctx, layer: str) -> torch.Tensor:
    """Guided backprop (ReLU backward passes only positive gradients) x Grad-CAM (nearest upsampling)."""
    model = c.model
    hs = [m.register_full_backward_hook(lambda _m, gi, _go: (gi[0].clamp(min=0),)) for m in model.modules()
          if type(m) is nn.ReLU]
    try:
        gb = input_grad(c, c.x, c.target)
    finally:
        for h in hs:
            h.remove()
    cam = _gradcam_reference(c, layer, mode="nearest")
    return gb * cam


def cap_guided_gradcam(c: Ctx) -> str:
    layer = c.arch.layer
    got, msgs = _with_warnings(lambda: A.attribute(c.model, c.x, target=c.target, method="guided_gradcam", layer=layer))
    other = rectifiers(c.model)
    if other or c.arch.functional_relu:
        about = other + (["relu", "ReLU", "function"] if c.arch.functional_relu else [])
        w = _warned(c, msgs, about)
        if w:
            return f"warned: {w[:160]}"
        raise Wrong(f"guided Grad-CAM returned a result on a model whose rectifiers are {other or ['torch.relu (functional)']}"
                    " (guided backprop modifies nn.ReLU only), with no refusal or warning")
    close(got, _guided_reference(c, layer), "guided Grad-CAM vs guided backprop (own hooks) x Grad-CAM", rtol=1e-3, atol=1e-6)
    return "== guided backprop (ReLU backward clamped, own hooks) x Grad-CAM"


def _gradcam_reference(c: Ctx, layer: str, mode: str = "bilinear") -> torch.Tensor:
    a, out = grab(c.model, c.x.clone().requires_grad_(True), layer)
    out = out[0] if isinstance(out, tuple) else out
    (g,) = torch.autograd.grad(out[:, c.target].sum(), a)
    a = a.detach()
    w = g.mean(dim=(2, 3), keepdim=True)
    cam = (w * a).sum(1, keepdim=True).clamp(min=0).detach()
    cam = Fn.interpolate(cam, size=c.x.shape[-2:], mode=mode) if cam.shape[-2:] != c.x.shape[-2:] else cam
    return cam.expand(-1, c.x.shape[1], -1, -1)


def cap_gradcam(c: Ctx) -> str:
    layer = c.arch.layer
    got = A.attribute(c.model, c.x, target=c.target, method="gradcam", layer=layer)
    close(got, _gradcam_reference(c, layer), f"Grad-CAM at {layer} vs own hooks", rtol=1e-4, atol=1e-6)
    return f"== relu(sum_c mean(dy/dA_c) A_c) at {layer}, bilinear to the input (own hooks)"


def _patch(c: Ctx) -> int:
    return c.shape[1] // 4


def _ablation_reference(c: Ctx, k: int) -> torch.Tensor:
    ref = torch.zeros_like(c.x)
    with torch.no_grad():
        base = c.logit(c.x)
        for y in range(0, c.shape[1], k):
            for x in range(0, c.shape[2], k):
                z = c.x.clone()
                z[:, :, y:y + k, x:x + k] = 0
                ref[:, :, y:y + k, x:x + k] = (base - c.logit(z))[:, None, None, None]
    return ref


def cap_occlusion(c: Ctx) -> str:
    k = _patch(c)
    got = A.attribute(c.model, c.x, target=c.target, method="occlusion", sliding_window_shapes=(c.shape[0], k, k),
                      strides=(c.shape[0], k, k), baselines=0.0)
    close(got, _ablation_reference(c, k), "occlusion vs own patch forward passes", rtol=1e-4, atol=1e-5)
    return f"{k}x{k} patches == f(x) - f(x with the patch at 0), own forward passes"


def cap_feature_ablation(c: Ctx) -> str:
    k = _patch(c)
    got = A.attribute(c.model, c.x, target=c.target, method="feature_ablation", patch_size=k, baselines=0.0)
    close(got, _ablation_reference(c, k), "feature ablation vs own patch forward passes", rtol=1e-4, atol=1e-5)
    return f"{k}x{k} patches == f(x) - f(x with the patch at 0), own forward passes"


def _own_layer_ig(c: Ctx, layer: str, a: torch.Tensor, a0: torch.Tensor, n: int,
                  value: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
    """Layer IG by Gauss-Legendre quadrature with own hooks: the layer's output set to a0 + t (a - a0)
    while the rest of the model sees the real input (shortcuts included)."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(n)
    total = torch.zeros_like(a)
    for t, w in zip((nodes + 1) / 2, weights / 2):
        point = (a0 + float(t) * (a - a0)).detach().requires_grad_(True)
        with vi.hooks(c.model, {layer: lambda _m, _i, _o, p=point: p}):
            (g,) = torch.autograd.grad((value() if value else c.logit(c.x)).sum(), point)
        total += float(w) * g
    return total * (a - a0)


def cap_layer_attribution(c: Ctx) -> str:
    layer, n = c.arch.layer, 64
    la = A.layer_attribution(c.model, c.x, layer, target=c.target, method="integrated_gradients", n_steps=n)
    with torch.no_grad():
        a, _ = grab(c.model, c.x, layer)
        a0, _ = grab(c.model, torch.zeros_like(c.x), layer)
        with vi.hooks(c.model, {layer: lambda _m, _i, _o: a0}):
            patched = c.logit(c.x)
        delta = c.logit(c.x) - patched
    if tuple(la.tensor.shape) != tuple(a.shape):
        raise Wrong(f"layer attribution shape {tuple(la.tensor.shape)} vs the layer's {tuple(a.shape)}")
    own = _own_layer_ig(c, layer, a, a0, n)
    close(la.tensor, own, f"layer IG at {layer} vs own Gauss-Legendre layer IG ({n} nodes)", rtol=1e-3, atol=1e-6)
    what = f"== own layer IG at {layer} (baseline: its activation on the zero image, shortcuts see x)"
    try:
        rel = completeness(la.tensor.flatten(1).sum(1), delta, f"layer IG at {layer} completeness", 0.03)
    except Wrong:
        own_rel = completeness(own.flatten(1).sum(1), delta, "own layer IG completeness", float("inf"))
        return f"{what}; not complete at {n} steps on this net (own layer IG off by {own_rel:.2f} too)"
    return f"{what}; sum == f(x) - f(x, layer at baseline) (relative error {rel:.1e})"


def cap_unit_attribution(c: Ctx) -> str:
    src, dst = c.arch.unit or (c.arch.expanded[0], c.arch.layer)
    ch, n = c.arch.channel, 64
    unit = f"{dst}:{ch}"
    la = A.unit_attribution(c.model, c.x, src, unit, n_steps=n)

    def u(x: torch.Tensor) -> torch.Tensor:
        return grab(c.model, x, dst)[0][:, ch].flatten(1).mean(1)

    with torch.no_grad():
        a, _ = grab(c.model, c.x, src)
        a0, _ = grab(c.model, torch.zeros_like(c.x), src)
        delta = u(c.x) - u(torch.zeros_like(c.x))
    own = _own_layer_ig(c, src, a, a0, n, value=lambda: u(c.x))
    close(la.tensor, own, f"unit IG {src} -> {unit} vs own Gauss-Legendre layer IG", rtol=1e-3, atol=1e-7)
    what = f"{src} -> {unit} (channel mean) == own layer IG"
    try:
        rel = completeness(la.tensor.flatten(1).sum(1), delta, f"unit IG {src} -> {unit} completeness", 0.03)
    except Wrong:
        own_rel = completeness(own.flatten(1).sum(1), delta, "own unit IG completeness", float("inf"))
        return f"{what}; not complete at {n} steps on this net (own IG off by {own_rel:.2f} too)"
    return f"{what}; sum == u(x) - u(0) (relative error {rel:.1e})"


def _dense_kernel(conv: nn.Conv2d) -> torch.Tensor:
    """A grouped conv's kernel as (C_out, C_in, kh, kw) with zeros between groups."""
    w = conv.weight.detach()
    o, ig, kh, kw = w.shape
    g = conv.groups
    dense = torch.zeros(o, ig * g, kh, kw, dtype=w.dtype)
    per = o // g
    for j in range(o):
        grp = j // per
        dense[j, grp * ig:(grp + 1) * ig] = w[j]
    return dense


def cap_direct_weights(c: Ctx) -> str:
    src, dst = c.arch.weights
    got = C.direct_weights(c.model, src, dst)
    conv = c.module(dst)
    close(got, _dense_kernel(conv), f"direct_weights({src}, {dst}) vs {dst}.weight", rtol=0, atol=0)
    g = f" (groups={conv.groups}, dense)" if conv.groups > 1 else ""
    return f"== {dst}.weight{g}, exactly"


LINEAR_STANDINS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU)


def _linearized_copy(model: nn.Module) -> nn.Module:
    """ReLU-like activations -> identity, max pooling -> average pooling over the same window (pads
    counted): the documented linearisation, built here independently of the circuits package."""
    lin = copy.deepcopy(model)
    for name, mod in list(lin.named_modules()):
        if not name:
            continue
        parent, _, child = name.rpartition(".")
        holder = lin.get_submodule(parent) if parent else lin
        if isinstance(mod, LINEAR_STANDINS) or type(mod).__name__ in ("GELUActivation", "SiLUActivation"):
            setattr(holder, child, nn.Identity())
        elif isinstance(mod, nn.MaxPool2d):
            setattr(holder, child, nn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding, ceil_mode=mod.ceil_mode,
                                                count_include_pad=True))
    return lin.eval()


def _reference_expanded(c: Ctx, src: str, dst: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """Autograd Jacobian of dst (centre position, every channel) w.r.t. the whole src map in the
    linearized copy: (C_dst, C_src, H_src, W_src) and the centre position."""
    lin = _linearized_copy(c.model)
    leaf: dict[str, torch.Tensor] = {}

    def replace(_m, _i, out):
        leaf["s"] = out.detach().clone().requires_grad_(True)
        return leaf["s"]

    h = lin.get_submodule(src).register_forward_hook(replace)
    try:
        d, _ = grab(lin, c.x[:1], dst)
    finally:
        h.remove()
    py, px = d.shape[2] // 2, d.shape[3] // 2
    rows = []
    for j in range(d.shape[1]):
        (g,) = torch.autograd.grad(d[0, j, py, px], leaf["s"], retain_graph=True)
        rows.append(g[0])
    return torch.stack(rows), (py, px)


def cap_expanded_weights(c: Ctx) -> str:
    src, dst = c.arch.expanded
    got = C.expanded_weights(c.model, src, dst)
    jac, (py, px) = c.once("jacobian", lambda: _reference_expanded(c, src, dst))
    win = C.receptive_geometry(c.model, src, dst)
    (sy, sx), (oy, ox) = win.stride, win.offset
    kh, kw = got.shape[-2:]
    y0, x0 = sy * py + oy, sx * px + ox
    full = torch.zeros(jac.shape[0], jac.shape[1], kh, kw, dtype=jac.dtype)
    H, W = jac.shape[-2:]
    ys, xs = slice(max(0, y0), min(H, y0 + kh)), slice(max(0, x0), min(W, x0 + kw))
    full[:, :, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = jac[:, :, ys, xs]
    outside = jac.clone()
    outside[:, :, ys, xs] = 0
    if float(outside.abs().max()) > 1e-6 * max(1.0, float(jac.abs().max())):
        raise Wrong(f"the Jacobian of {dst} has weight outside the reported receptive window {win}")
    close(got, full, f"expanded_weights({src}, {dst}) vs the autograd Jacobian of the linearized path", rtol=1e-4, atol=1e-6)
    return f"== autograd Jacobian of the linearized {src} -> {dst} (ReLU-like = id, max -> avg), window {kh}x{kw}"


def cap_top_connections(c: Ctx) -> str:
    src, dst = c.arch.expanded
    ch = c.arch.channel
    got = C.top_connections(c.model, f"{dst}:{ch}", k=3, layer=src)
    jac, (py, px) = c.once("jacobian", lambda: _reference_expanded(c, src, dst))
    kern = jac[ch]  # (C_src, H, W): the whole Jacobian row holds the kernel and zeros around it
    pos = kern.clamp(min=0).flatten(1).norm(dim=1)
    order = [int(i) for i in pos.argsort(descending=True)[:3]]
    want = [(f"{src}:{i}", float(pos[i])) for i in order if float(pos[i]) > 0]
    have = [(u, float(v)) for u, v in got["excitatory"]]
    names_ok = [u for u, _ in have] == [u for u, _ in want]
    vals_ok = all(abs(a - b) <= 1e-4 * max(1.0, abs(b)) for (_, a), (_, b) in zip(have, want))
    if not (names_ok and vals_ok):
        raise Wrong(f"top_connections {dst}:{ch} excitatory {have} vs the reference's {want}")
    return f"excitatory top 3 == L2 norms of the positive Jacobian of the linearized {src} -> {dst}"


def cap_gallery(c: Ctx, tmp: Path) -> str:
    layer, units = c.arch.layer, "0-1"
    data = c.pool[:24]
    res = vi.make_gallery(c.model, [f"{layer}:{units}"], tmp / f"g_{c.arch.name}", dataset=data, steps=4, batch=2,
                          diverse=0, negative=False, connections=0, examples=3, progress=False, model_name=c.arch.name)
    out = tmp / f"g_{c.arch.name}"
    m = json.loads((out / "manifest.json").read_text())
    if not (out / "index.html").is_file():
        raise Wrong("gallery: no index.html")
    with torch.no_grad():
        a, _ = grab(c.model, data, layer)
    for ch in (0, 1):
        e = m["units"][f"{layer}:{ch}"]
        if not (out / e["files"]["page"]).is_file() or not (out / e["files"]["main"]).is_file():
            raise Wrong(f"gallery: unit {layer}:{ch} has no page or picture")
        best = a[:, ch].flatten(1).max(1).values
        top = e["examples"]["top"][0]
        if top["index"] != int(best.argmax()) or abs(top["value"] - float(best.max())) > 1e-4 * max(1.0, abs(float(best.max()))):
            raise Wrong(f"gallery {layer}:{ch}: top example {top['index']} ({top['value']:.4g}) vs own "
                        f"{int(best.argmax())} ({float(best.max()):.4g})")
    return f"pages for {layer}:0-1 from a {len(data)}-image tensor; top examples == own max over positions"


def cap_dictionary(c: Ctx) -> str:
    layer = c.arch.layer
    d = Fe.train_dictionary(c.model, layer, c.pool, Fe.SAEConfig(n_features=16, k=2, steps=50, batch_size=256, dead_after=25),
                            progress=False)
    with torch.no_grad():
        a, out_before = grab(c.model, c.x, layer)
    samples = Fe.as_samples(a.detach())
    z = d.encode(samples)
    with Fe.attached(c.model, d) as att:
        name = att.name if hasattr(att, "name") else d.feature_layer
        feats = vi.capture(c.model, c.x, [name])[name]
        with torch.no_grad():
            out_obs = c.f(c.x)
    close(Fe.as_samples(feats), z, "attached features vs dictionary.encode on the captured layer", rtol=1e-4, atol=1e-5)
    close(out_obs, out_before[0] if isinstance(out_before, tuple) else out_before, "observe-mode attachment output", rtol=0, atol=0)
    fvu = float(((d.decode(z) - samples) ** 2).sum() / ((samples - samples.mean(0)) ** 2).sum())
    if not fvu < 1.0:
        raise Wrong(f"dictionary on {layer}: FVU {fvu:.3f} (not better than the mean)")
    return f"attached features == encode(captured {layer}); observe leaves outputs unchanged; FVU {fvu:.2f}"


def _first_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the first module the model calls receives: the 'input' block's input after inline preprocessing."""
    box: list[torch.Tensor] = []
    hs = [m.register_forward_pre_hook(lambda _m, args: box.append(args[0]) if not box else None)
          for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    return box[0]


def _transcoder(c: Ctx) -> Any:
    def build():
        if c.arch.name == "mnist_cnn":
            return Fe.load_transcoder("mnist_cnn_conv1_tc")
        i, o = c.arch.block
        return Fe.train_transcoder(c.model, i, o, c.pool, Fe.TranscoderConfig(n_features=16, k=3, steps=40, batch_size=16,
                                                                                dead_after=20), progress=False)
    return c.once("tc", build)


def cap_transcoder(c: Ctx) -> str:
    t = _transcoder(c)
    tc_before = {k: v.clone() for k, v in t.module.state_dict().items()}
    a_in = _first_input(c.model, c.x) if t.in_layer == "input" else grab(c.model, c.x, t.in_layer)[0]
    with torch.no_grad():
        z = t.module(a_in)
        recon = t.module.decode(z, a_in)
        with vi.hooks(c.model, {t.out_layer: lambda _m, _i, _o: recon}):
            ref = c.f(c.x)
        with Fe.replaced(c.model, [t]):
            got = c.f(c.x)
        true_out, _ = grab(c.model, c.x, t.out_layer)
    close(got, ref, f"replaced() vs own substitution of {t.out_layer} by decode(encode(block input))", rtol=1e-4, atol=1e-5)
    for k, v in t.module.state_dict().items():
        if not torch.equal(v, tc_before[k]):
            raise Wrong(f"the caller's transcoder changed ({k})")
    fvu = float(((recon - true_out) ** 2).sum() / ((true_out - true_out.mean((0, 2, 3), keepdim=True)) ** 2).sum())
    return f"replaced() == own substitution (block input = what the first module receives); FVU on 3 inputs {fvu:.2f}"


def _graph(c: Ctx) -> Any:
    t = _transcoder(c)
    return c.once("graph", lambda: Fe.attribution_graph(c.model, [t], c.x[0], c.target))


def cap_graph(c: Ctx) -> str:
    t = _transcoder(c)
    g = _graph(c)
    scale = max(1.0, abs(g.logit))
    res = g.sum_rule_residual()
    if not res <= 1e-6 * scale:
        raise Wrong(f"graph sum rule residual {res:.3g} (logit {g.logit:.3g})")
    with torch.no_grad():
        true = float(c.logit(c.x[:1])[0])
    if abs(g.logit - true) > 1e-4 * scale:
        raise Wrong(f"graph logit {g.logit:.6g} vs the model's {true:.6g}")
    logit_node = g.nodes[g.logit_index]
    if abs(logit_node["pre"] - true) > 1e-4 * scale:
        raise Wrong(f"graph logit node pre-activation {logit_node['pre']:.6g} vs the model's logit {true:.6g}")
    a_in = _first_input(c.model, c.x[:1])
    with torch.no_grad():
        z = t.module(a_in.to(next(t.module.parameters()).dtype))[0]
    feats = [n for n in g.nodes if n["kind"] == "feature"]
    bad = [(n["feature"], n["y"], n["x"], n["value"], float(z[n["feature"], n["y"], n["x"]])) for n in feats
           if abs(n["value"] - float(z[n["feature"], n["y"], n["x"]])) > 1e-4 * max(1.0, abs(n["value"]))]
    if bad or not feats:
        raise Wrong(f"graph feature values vs the transcoder on the block input: {bad[:3]} ({len(feats)} feature nodes)")
    return f"sum rule residual {res:.0e}; logit node == model logit; {len(feats)} feature values == transcoder(block input)"


def cap_interventions(c: Ctx) -> str:
    t = _transcoder(c)
    r = Fe.intervention_check(c.model, [t], c.x[:1], [c.target], top=3)
    cases = r["all_cases"]
    if not cases:
        raise Wrong("intervention_check: no cases")
    case = cases[0]
    img = c.x[int(case["graph"])][None]
    a_in = _first_input(c.model, img)
    m = t.module
    with torch.no_grad():
        z = m(a_in.to(next(m.parameters()).dtype))
        one = torch.zeros_like(z)
        one[0, case["feature"], case["y"], case["x"]] = z[0, case["feature"], case["y"], case["x"]]
        delta = (m.decode(one, None) - m.decode(torch.zeros_like(z), None)) * (r["scale"] - 1.0)
        base = float(c.logit(img)[0])
        with vi.hooks(c.model, {t.out_layer: lambda _m, _i, o: o + delta.to(o.dtype)}):
            moved = float(c.logit(img)[0])
    mine = moved - base
    if abs(case["measured"] - mine) > 1e-3 * max(1.0, abs(mine)):
        raise Wrong(f"intervention measured {case['measured']:.5g} vs own hook {mine:.5g} (feature {case['feature']})")
    extra = ""
    if c.arch.trained:
        rr = r["pearson_r"]
        if not (rr is not None and rr > 0.5):
            raise Wrong(f"trained model: predicted vs measured Pearson r {rr}")
        extra = f"; predicted vs measured r = {rr:.2f}"
    return f"measured change == own hook removing the feature{extra}"


def cap_display(c: Ctx) -> str:
    attr = A.attribute(c.model, c.x, target=c.target, method="saliency")
    html = vi.show(c.x, attr).html
    n_img = html.count("<img")
    if n_img < 1 or "nan" in html.lower().split("<img")[0][-200:]:
        raise Wrong(f"display: {n_img} images in the attribution view")
    if "<script" in html:
        raise Wrong("display: the view has a script")
    return f"attribution view renders self-contained HTML ({n_img} inline images)"


CAPABILITIES: dict[str, Callable] = {
    "capture": cap_capture, "featvis": cap_featvis, "saliency": cap_saliency, "input_x_gradient": cap_input_x_gradient,
    "integrated_gradients": cap_integrated_gradients, "deeplift": cap_deeplift, "guided_gradcam": cap_guided_gradcam,
    "gradcam": cap_gradcam, "occlusion": cap_occlusion, "feature_ablation": cap_feature_ablation,
    "layer_attribution": cap_layer_attribution, "unit_attribution": cap_unit_attribution,
    "direct_weights": cap_direct_weights, "expanded_weights": cap_expanded_weights, "top_connections": cap_top_connections,
    "gallery": cap_gallery, "dictionary": cap_dictionary, "transcoder": cap_transcoder, "graph": cap_graph,
    "interventions": cap_interventions, "display": cap_display,
}
# where a refusal is an acceptable outcome (the method's rules may not apply); elsewhere it must work
REFUSABLE = {"deeplift", "guided_gradcam", "direct_weights", "expanded_weights", "top_connections", "transcoder", "graph",
             "interventions"}
# a multi-head model: anything that reads the model's output may refuse (naming the tuple / how to pick a head)
OUTPUT_READERS = {"featvis": False, "capture": False, "gallery": False, "dictionary": False}


def refusal_allowed(cap: str, arch: cm.Arch) -> bool:
    if cap in REFUSABLE:
        return True
    return arch.multi_head and OUTPUT_READERS.get(cap, True)


@functools.lru_cache(maxsize=None)
def outcome(cap: str, arch: str, tmp: str) -> tuple[bool, str, float]:
    """(passes, the cell's text, seconds) for one (capability, architecture)."""
    c = ctx(arch)
    before = full_state(c.model)
    t0 = time.perf_counter()
    fn = CAPABILITIES[cap]
    try:
        text = fn(c, Path(tmp)) if cap == "gallery" else fn(c)
        ok, cell = True, ("correct: " + text) if not text.startswith("warned") else text
    except Wrong as e:
        ok, cell = False, f"WRONG: {e}"
    except Exception as e:  # noqa: BLE001
        try:
            cell = "refused: " + judge_refusal(e, c.model)
            ok = refusal_allowed(cap, c.arch)
            if not ok:
                cell = "REFUSED where it should work: " + cell[len("refused: "):]
        except Wrong as w:
            ok, cell = False, f"WRONG: {w}"
    secs = time.perf_counter() - t0
    try:
        assert_same_state(before, full_state(c.model), f"{cap} on {arch}")
    except AssertionError as e:
        ok, cell = False, f"WRONG: changed the caller's model: {e}; " + cell
    return ok, cell.replace("\n", " ").replace("|", "/"), secs


PAIRS = [(cap, a.name) for a in cm.ARCHS for cap in CAPABILITIES]


@pytest.fixture(scope="session")
def conf_tmp(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("conformance"))


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("cap,arch", PAIRS, ids=[f"{c}-{a}" for c, a in PAIRS])
def test_cell(cap: str, arch: str, conf_tmp: str) -> None:
    if arch == "onet" and third_party.facenet_dir() is None:
        pytest.skip("facenet-pytorch is not installed (make installs it: pip install --no-deps facenet-pytorch==2.6.0)")
    ok, cell, _ = outcome(cap, arch, conf_tmp)
    assert ok, f"{cap} on {arch}: {cell}"


def table(tmp: str) -> str:
    lines = ["# Architecture conformance", "",
             "Generated by `tests/test_conformance.py` (`VI_WRITE_DOCS=1 pytest tests/test_conformance.py` rewrites it).",
             "Every capability on every architecture either gives a **correct** result (the stated property, checked",
             "against an independent computation: own hooks, autograd, own forward passes) or a **clear refusal**",
             "(an argument-kind error naming the module, type or output involved and what to do). A cell marked",
             "WRONG is a silent wrong answer, a crash, an unclear refusal or a change to the caller's model: its",
             "test fails. The caller's model is compared before and after every cell (modes, requires_grad,",
             "parameters, buffers, hooks, grad mode).", "", "## Architectures", "", "| name | what |", "| --- | --- |"]
    lines += [f"| {a.name} | {a.what} |" for a in cm.ARCHS]
    lines += ["", "## Outcomes", ""]
    for a in cm.ARCHS:
        lines += [f"### {a.name}", "", "| capability | outcome |", "| --- | --- |"]
        for cap in CAPABILITIES:
            ok, cell, _ = outcome(cap, a.name, tmp)
            cell = re.sub(r"\d+\.\d+e-\d+", "~0", cell)  # run-to-run noise stays out of the committed table
            lines.append(f"| {cap} | {cell} |")
        lines.append("")
    return "\n".join(lines)


def _stable(text: str) -> str:
    """Numbers vary with threads and BLAS; the table is compared without its digits."""
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "#", text)


def test_docs_table_is_current(conf_tmp: str) -> None:
    if third_party.facenet_dir() is None:
        pytest.skip("facenet-pytorch is not installed: the table needs every architecture")
    text = table(conf_tmp)
    if os.environ.get("VI_WRITE_DOCS") == "1":
        DOC.write_text(text.rstrip("\n") + "\n")
    assert DOC.is_file() and _stable(DOC.read_text().rstrip("\n")) == _stable(text.rstrip("\n")), \
        "docs/conformance.md is out of date: run VI_WRITE_DOCS=1 pytest tests/test_conformance.py"
