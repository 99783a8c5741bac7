"""Input attribution: one entry point over Captum's methods, for classes and hidden units.

``attribute(model, x, target, method)`` validates everything first (inputs, target, layer,
options), then hands the work to Captum. Its result always has the shape of ``x``: methods that
produce a coarser map (Grad-CAM) are upsampled to the input size and repeated over channels.

Targets: a class index, a class label (``model.class_names``), one class per example, ``None``
(each example's predicted class), or a hidden unit ``"layer:channel"`` / ``"layer:channel@y,x"``.
A unit without a position is the *spatial mean* of its channel; with ``@y,x`` it is that one
neuron. Unit targets run the model only up to the unit's layer.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
import warnings
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..capture import dataset_batches
from ..units import close_names
from ..checks import InputError, InputTypeError, check_class_target, check_finite_result, check_int, check_number
from . import guards
from ._model import Prepared, ResolvedTarget, TargetSpec, check_inputs, check_options, prepare, resolve_target, running

__all__ = [
    "METHODS",
    "attribute",
    "attribute_batches",
    "attribute_dataset",
    "class_mean_attributions",
    "canonical_method",
    "quiet_captum",
]

METHODS: dict[str, str] = {
    "saliency": "|gradient| of the target w.r.t. each pixel (Simonyan et al. 2013)",
    "input_x_gradient": "input * gradient",
    "integrated_gradients": "path integral of gradients from a baseline (Sundararajan et al. 2017); options: baselines, n_steps, method, internal_batch_size",
    "smoothgrad": "noise tunnel over any method (base=..., default saliency); options: nt_samples, stdevs (default 0.15), nt_type, nt_samples_batch_size",
    "deeplift": "DeepLift rescale rule (Shrikumar et al. 2017) on elementwise activation and max-pool modules; refused where it does not add up to f(x) - f(baseline) on the inputs (see attribution.guards); options: baselines, unsupported ('raise' or 'warn')",
    "occlusion": "output change when a sliding patch is replaced by a baseline; options: sliding_window_shapes, strides, baselines, perturbations_per_eval",
    "gradcam": "Grad-CAM on a conv layer (layer=..., default the last spatial one), upsampled to the input; options: relu_attributions (default True), interpolate_mode",
    "guided_gradcam": "guided backprop x Grad-CAM; guides nn.ReLU modules only, so models with other activations are refused (see attribution.guards); options: layer, unsupported ('raise' or 'warn')",
    "feature_ablation": "output change when each patch is set to a baseline; options: patch_size or feature_mask, baselines, perturbations_per_eval",
}

_ALIASES = {
    "ig": "integrated_gradients",
    "integrated_gradient": "integrated_gradients",
    "gradient": "saliency",
    "vanilla_gradient": "saliency",
    "input_x_grad": "input_x_gradient",
    "inputxgradient": "input_x_gradient",
    "gradient_x_input": "input_x_gradient",
    "smooth_grad": "smoothgrad",
    "noise_tunnel": "smoothgrad",
    "deep_lift": "deeplift",
    "grad_cam": "gradcam",
    "guided_grad_cam": "guided_gradcam",
    "ablation": "feature_ablation",
}


def canonical_method(name: str, table: dict[str, str] = METHODS, aliases: dict[str, str] = _ALIASES) -> str:
    """Normalise a method name ('Integrated-Gradients', 'ig', 'grad_cam') or list the valid ones."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = aliases.get(key, key)
    if key in table:
        return key
    near = close_names(key, list(table) + list(aliases), n=3)
    raise ValueError(
        f"unknown attribution method {name!r}."
        + (f" Did you mean {', '.join(near)}?" if near else "")
        + f" Methods: {', '.join(table)}."
    )


def _check_options(method: str, captum_fn: Callable, options: dict[str, Any], extra: set[str] = frozenset()) -> None:
    """Reject unknown options before any work, listing the ones that apply."""
    params = set(inspect.signature(captum_fn).parameters) - {"self", "inputs", "target", "kwargs"}
    if "return_convergence_delta" in options:
        raise ValueError(
            "return_convergence_delta is not supported here (attribute() returns one tensor); "
            "use vision_interp.attribution.ig_completeness() for the completeness check"
        )
    params.discard("return_convergence_delta")
    unknown = sorted(set(options) - params - set(extra))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for method {method!r}; valid: {', '.join(sorted(params | set(extra)))}"
        )


def _gradcam_layer(prep: Prepared, resolved: ResolvedTarget, layer: str | None, what: str) -> nn.Module:
    """The layer Grad-CAM reads: the given one (checked to feed the target) or the last spatial layer
    *upstream of the target* in the data flow (a sibling branch that finishes later never qualifies)."""
    if layer is None:
        path = prep.last_spatial_layer(before=resolved.unit, what=what)
    else:
        path = prep.layer(layer, spatial=True, what=what)
        prep.check_feeds(layer, path, resolved.unit)
    return prep.module(path)


def _default_occlusion(x: torch.Tensor) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    c, h, w = x.shape[1:]
    s = max(2, min(h, w) // 7)
    step = max(1, s // 2)
    return (c, s, s), (c, step, step)


def _patch_mask(x: torch.Tensor, patch: int) -> torch.Tensor:
    """One feature per ``patch`` x ``patch`` square, shared across channels: (1, 1, H, W) int64."""
    h, w = x.shape[-2:]
    if patch < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch}")
    rows = torch.arange(h, device=x.device) // patch
    cols = torch.arange(w, device=x.device) // patch
    n_cols = (w + patch - 1) // patch
    return (rows[:, None] * n_cols + cols[None, :])[None, None]


def _to_input_shape(attr: torch.Tensor, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Upsample a (N, 1, h, w) layer map to (N, C, H, W): the same map for every input channel."""
    from captum.attr import LayerAttribution

    if attr.shape[-2:] != x.shape[-2:]:
        attr = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode=mode)
    return attr.expand(-1, x.shape[1], -1, -1).contiguous()


def _build(method: str, fwd: nn.Module, prep: Prepared, x: torch.Tensor, resolved: ResolvedTarget, options: dict[str, Any]):
    """Captum object, its attribute() keyword arguments and a post-processing step for ``method``."""
    import captum.attr as ca

    opts = dict(options)
    post: Callable[[torch.Tensor], torch.Tensor] = lambda a: a
    if method == "saliency":
        obj = ca.Saliency(fwd)
    elif method == "input_x_gradient":
        obj = ca.InputXGradient(fwd)
    elif method == "integrated_gradients":
        obj = ca.IntegratedGradients(fwd, multiply_by_inputs=opts.pop("multiply_by_inputs", True))
    elif method == "deeplift":
        multiply = _check_flag(opts.pop("multiply_by_inputs", True), "multiply_by_inputs")
        eps = check_number(opts.pop("eps", 1e-10), "eps", minimum=0.0, strict_min=True)
        obj = guards.GuardedDeepLift(fwd, multiply_by_inputs=multiply, eps=eps)
    elif method == "occlusion":
        obj = ca.Occlusion(fwd)
        window, stride = _default_occlusion(x)
        opts.setdefault("sliding_window_shapes", window)
        opts.setdefault("strides", stride)
    elif method == "feature_ablation":
        obj = ca.FeatureAblation(fwd)
        patch = opts.pop("patch_size", None)
        if "feature_mask" not in opts:
            opts["feature_mask"] = _patch_mask(x, patch if patch is not None else max(1, min(x.shape[-2:]) // 14))
        elif patch is not None:
            raise ValueError("give either patch_size or feature_mask for feature_ablation, not both")
    elif method == "gradcam":
        obj = ca.LayerGradCam(fwd, _gradcam_layer(prep, resolved, opts.pop("layer", None), "Grad-CAM"))
        mode = opts.pop("interpolate_mode", "bilinear")
        opts.setdefault("relu_attributions", True)
        post = lambda a: _to_input_shape(a, x, mode)  # noqa: E731
    elif method == "guided_gradcam":
        obj = ca.GuidedGradCam(fwd, _gradcam_layer(prep, resolved, opts.pop("layer", None), "guided Grad-CAM"))
    else:  # pragma: no cover - canonical_method guards this
        raise ValueError(method)
    return obj, opts, post


_OWN_OPTIONS = {
    "integrated_gradients": {"multiply_by_inputs"},
    "deeplift": {"multiply_by_inputs", "eps", "unsupported"},
    "feature_ablation": {"patch_size"},
    "gradcam": {"layer", "interpolate_mode"},
    "guided_gradcam": {"layer", "unsupported"},
}
_GUARDED = ("deeplift", "guided_gradcam")  # methods whose rules cover only some modules (see .guards)
_NT_OPTIONS = {"nt_type", "nt_samples", "nt_samples_batch_size", "stdevs", "draw_baseline_from_distrib"}


_CAPTUM_CHATTER = (
    r".*did not already require gradients.*",
    r".*Setting forward, backward hooks and attributes on non-linear.*",
    r".*Setting backward hooks on ReLU activations.*",
)


@contextmanager
def quiet_captum() -> Iterator[None]:
    """Silence Captum's per-call informational warnings (they say nothing about the user's inputs)."""
    with warnings.catch_warnings():
        for pattern in _CAPTUM_CHATTER:
            warnings.filterwarnings("ignore", message=pattern, category=UserWarning)
        yield


def _run(method: str, prep: Prepared, x: torch.Tensor, resolved: ResolvedTarget, options: dict[str, Any]) -> torch.Tensor:
    """Validate options, run Captum, and return attributions shaped like ``x`` (detached)."""
    with quiet_captum():
        return _run_captum(method, prep, x, resolved, options)


def _prepare_call(method: str, prep: Prepared, x: torch.Tensor, resolved: ResolvedTarget, options: dict[str, Any]) -> Callable[[], torch.Tensor]:
    """Build the Captum call for ``method`` and check its options and the method's guard (what its rules
    cover, :mod:`.guards`); nothing is attributed until it is called."""
    import captum.attr as ca

    fwd = resolved.forward_model(prep.model)
    opts = dict(options)
    base = None
    if method == "smoothgrad":
        base = canonical_method(opts.pop("base", "saliency"))
        if base == "smoothgrad":
            raise ValueError("smoothgrad's base method cannot be smoothgrad itself")
    ruled = base or method
    unsupported = opts.pop("unsupported", None)
    if unsupported is not None and ruled not in _GUARDED:
        raise InputError(f"unsupported: applies to {' and '.join(_GUARDED)} only (their rules cover some modules); "
                         f"method {ruled!r} has no such rules")
    unsupported = guards.check_unsupported_option("raise" if unsupported is None else unsupported)
    if ruled == "guided_gradcam":  # refused before any work: the probe alone decides
        unguided, n_guided = guards.guided_findings(fwd, x)
        guards.check_guided(unguided, n_guided, f"method {ruled!r} on {type(prep.original).__name__}", unsupported, 6)
    findings = guards.deeplift_findings(fwd, x) if ruled == "deeplift" else []
    if base is not None:
        nt_opts = {k: opts.pop(k) for k in list(opts) if k in _NT_OPTIONS}
        nt_opts.setdefault("stdevs", 0.15)
        nt_opts.setdefault("nt_type", "smoothgrad")
        obj, base_opts, post = _build(base, fwd, prep, x, resolved, opts)
        _check_options(base, obj.attribute, base_opts, _OWN_OPTIONS.get(base, set()))
        tunnel = ca.NoiseTunnel(obj)

        def noisy() -> torch.Tensor:
            if ruled == "deeplift":  # the noisy samples have no f(x) to compare with: measure DeepLift on x itself
                _deeplift_guard(prep, resolved, x, obj.attribute(x, target=resolved.captum, **base_opts).detach(),
                                base_opts, options, findings, unsupported)
            return post(tunnel.attribute(x, target=resolved.captum, **nt_opts, **base_opts)).detach()

        return noisy
    obj, opts, post = _build(method, fwd, prep, x, resolved, opts)
    _check_options(method, obj.attribute, opts, _OWN_OPTIONS.get(method, set()))
    if method != "deeplift":
        return lambda: post(obj.attribute(x, target=resolved.captum, **opts)).detach()

    def checked() -> torch.Tensor:
        attr = post(obj.attribute(x, target=resolved.captum, **opts)).detach()
        _deeplift_guard(prep, resolved, x, attr, opts, options, findings, unsupported)
        return attr

    return checked


def _deeplift_guard(prep: Prepared, resolved: ResolvedTarget, x: torch.Tensor, attr: torch.Tensor, opts: dict[str, Any],
                    options: dict[str, Any], findings: list, unsupported: str) -> None:
    """DeepLift's summation-to-delta on the call's own inputs; refuse or warn as :mod:`.guards` says."""
    b = guards.baseline_tensor(x, opts.get("baselines"))
    with torch.no_grad():
        extra = opts.get("additional_forward_args")
        fx = guards.explained_values(resolved, prep.model, x, extra)
        fb = guards.explained_values(resolved, prep.model, b, extra)
    gap = guards.measure_gap(attr, x, b, fx, fb, bool(options.get("multiply_by_inputs", True)))
    guards.check_deeplift_completeness(findings, gap, f"method 'deeplift' on {type(prep.original).__name__} "
                                       f"({resolved.description})", unsupported, stacklevel=7)


def _run_captum(method: str, prep: Prepared, x: torch.Tensor, resolved: ResolvedTarget, options: dict[str, Any]) -> torch.Tensor:
    return _prepare_call(method, prep, x, resolved, options)()


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: TargetSpec = None,
    method: str = "integrated_gradients",
    **options: Any,
) -> torch.Tensor:
    """Attribution of ``target`` to every input pixel; the result has the shape of ``inputs``.

    ``target``: class index, class label, one class per example, ``None`` (predicted class) or a
    hidden unit ``"layer:channel[@y,x]"`` (a channel without position is its spatial mean).
    ``method``: one of :data:`METHODS`. ``options`` go to Captum (``baselines``, ``n_steps``,
    ``internal_batch_size``, ``sliding_window_shapes`` ...); ``smoothgrad`` takes ``base=`` and
    the noise tunnel's options; Grad-CAM takes ``layer=``. Everything is validated before work.
    The model runs in eval mode on your behalf (BatchNorm statistics are read, never updated; Dropout
    is off), one call at a time per model, and comes back exactly as it was (:mod:`..model_state`).
    Attributions that are not finite raise :class:`..checks.NonFiniteError`.
    """
    method = canonical_method(method)
    x, single = check_inputs(model, inputs)
    options = check_options(options, x)
    with running(model, "attribute()"):
        prep = prepare(model, x)
        resolved = resolve_target(prep, x, target)
        attr = _run(method, prep, x, resolved, options).to(inputs.device)
    check_finite_result(attr, "attributions", f"{resolved.description}, method {method}")
    return attr[0] if single else attr


def _check_flag(value: Any, arg: str) -> bool:
    if not isinstance(value, bool):
        raise InputTypeError(f"{arg}: expected True or False, got {type(value).__name__} {value!r}")
    return value


def _slice_target(target: TargetSpec, start: int, stop: int) -> TargetSpec:
    if isinstance(target, torch.Tensor) and target.numel() > 1:
        return target[start:stop]
    if isinstance(target, list) and target and not isinstance(target[0], str):
        return target[start:stop]
    return target


def attribute_batches(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetSpec = None,
    method: str = "integrated_gradients",
    *,
    batch_size: int = 64,
    progress: bool = True,
    **options: Any,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, attributions)`` for consecutive batches; memory stays bounded by ``batch_size``.

    Per-example targets (a tensor or list of N class indices) are sliced along with the images.
    The model is checked and (if needed) repaired once, not per batch.
    """
    method = canonical_method(method)
    check_int(batch_size, "batch_size", minimum=1)
    _check_flag(progress, "progress")
    x_all, _ = check_inputs(model, images)
    n = x_all.shape[0]
    check_class_target(target)
    if isinstance(target, (torch.Tensor, list)) and not (isinstance(target, list) and target and isinstance(target[0], str)):
        if len(target) != n and not (isinstance(target, torch.Tensor) and target.numel() == 1):
            raise InputError(f"target: {len(target)} per-example class indices for {n} image(s); give one per image")
    first_opts = check_options(options, x_all)  # baselines are checked against every image once
    with running(model, "attribute_batches()"):
        prep = prepare(model, x_all)
        # a bad target, layer or option fails here, before the long loop
        _prepare_call(method, prep, x_all[:1], resolve_target(prep, x_all[:1], _slice_target(target, 0, 1)), first_opts)
    return _attribute_loop(model, prep, method, x_all, target, batch_size, progress, options)


def _slice_baselines(options: dict[str, Any], n: int, start: int, stop: int) -> dict[str, Any]:
    """Per-image baselines (N, C, H, W) follow their images into each batch."""
    b = options.get("baselines")
    if isinstance(b, torch.Tensor) and b.ndim == 4 and len(b) == n and n > 1:
        return {**options, "baselines": b[start:stop]}
    return options


def _attribute_loop(model: nn.Module, prep: Prepared, method: str, x_all: torch.Tensor, target: TargetSpec,
                    batch_size: int, progress: bool, options: dict[str, Any]) -> Iterator[tuple[int, torch.Tensor]]:
    """The batches of :func:`attribute_batches`; the model is held per batch, never across a ``yield``."""
    n = len(x_all)
    for start, xb in dataset_batches(x_all, batch_size, progress=progress, desc=f"attribute ({method})"):
        opts = check_options(_slice_baselines(options, n, start, start + len(xb)), xb)
        with running(model, "attribute_batches()"):
            resolved = resolve_target(prep, xb, _slice_target(target, start, start + len(xb)))
            attr = _run(method, prep, xb, resolved, opts).cpu()
        yield start, check_finite_result(attr, f"attributions (batch at {start})", method)


def attribute_dataset(
    model: nn.Module,
    images: torch.Tensor,
    target: TargetSpec = None,
    method: str = "integrated_gradients",
    *,
    batch_size: int = 64,
    progress: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Attributions for a whole dataset slice (N, C, H, W) on the CPU, computed ``batch_size`` at a time."""
    out: torch.Tensor | None = None
    for start, attr in attribute_batches(model, images, target, method, batch_size=batch_size, progress=progress, **options):
        if out is None:
            n = images.shape[0] if images.ndim == 4 else 1  # one (C, H, W) image is a batch of 1
            out = torch.empty((n, *attr.shape[1:]), dtype=attr.dtype)
        out[start : start + len(attr)] = attr
    assert out is not None
    return out


def class_mean_attributions(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    method: str = "integrated_gradients",
    *,
    n_classes: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean attribution per class (towards each image's own label): ``(means (K, C, H, W), counts (K,))``.

    Only running sums are kept, so memory does not grow with the number of images.
    """
    check_class_target(labels, "labels")  # float labels are refused, never truncated
    if n_classes is not None:
        n_classes = check_int(n_classes, "n_classes", minimum=1)
    if not isinstance(images, torch.Tensor):
        raise InputTypeError(f"images: expected a torch.Tensor of images (N, C, H, W) in [0, 1], got {type(images).__name__}")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputTypeError(f"labels: cannot read as class indices ({e}); give a tensor or list of integers") from e
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputTypeError(f"labels: dtype {labels.dtype}; class indices must be integers (e.g. labels.long())")
    labels = labels.long().reshape(-1)
    if labels.numel() != images.shape[0]:
        raise ValueError(f"labels must have one entry per image: {labels.numel()} labels for {images.shape[0]} images")
    labels = labels.cpu()  # attributions come back on the CPU; the running sums live there too
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be class indices >= 0, found {int(labels.min())}")
    k = int(n_classes or (labels.max().item() + 1))
    if labels.numel() and int(labels.max()) >= k:
        raise ValueError(f"label {int(labels.max())} is out of range for n_classes={k} (valid 0..{k - 1})")
    sums: torch.Tensor | None = None
    counts = torch.bincount(labels, minlength=k)[:k]
    for start, attr in attribute_batches(model, images, labels, method, batch_size=batch_size, progress=progress, **options):
        if sums is None:
            sums = torch.zeros((k, *attr.shape[1:]), dtype=torch.float64)
        sums.index_add_(0, labels[start : start + len(attr)], attr.double())
    assert sums is not None
    means = (sums / counts.clamp_min(1).double().view(-1, *([1] * (sums.ndim - 1)))).float()
    return means, counts
