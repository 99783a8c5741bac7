"""Hostile input on the Python API: every public function gets unusual arguments and must either refuse
them with the right error (type, and a message naming the argument) or return the right result, and
leave the user's model exactly as it was: every module's mode, every parameter's ``requires_grad`` and
value, every buffer, every hook, and torch's grad mode.

The models are deliberately left in a *mixed* state before the cases run (root in train mode, one
submodule in eval mode, one parameter frozen), so a method that restores only the root's mode, or sets
every parameter's ``requires_grad`` to one value, fails here.

``CASES`` is also the table in ``docs/api_errors.md`` (:func:`test_docs_table_is_current` regenerates it
with ``VI_WRITE_DOCS=1``), and :func:`test_every_public_function_has_a_case` fails when a public function
(in ``vision_interp.__all__`` or a subpackage's ``__all__``) has no case here.
"""

from __future__ import annotations

import importlib
import inspect
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

import vision_interp as vi
from vision_interp import checks, model_state
from vision_interp import attribution as A
from vision_interp import circuits as C
from vision_interp import data as D
from vision_interp import exercises as X
from vision_interp import features as F
from vision_interp import featvis as V
from vision_interp import gallery as G
from vision_interp import transformer as T
from vision_interp import universality as U
from vision_interp import zoo as Z
from vision_interp.units import UnitRangeError, UnknownLayerError

from hostile_support import (BNNet, Case, E, IE, NF, TE, VE, _mixed, assert_same_state, full_state,  # noqa: F401
                             is_tensor_shape)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "api_errors.md"
PACKAGES = ["vision_interp"] + [f"vision_interp.{p}" for p in
                                ("attribution", "circuits", "data", "exercises", "features", "featvis", "gallery",
                                 "transformer", "universality", "zoo")]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("api_hostile")
    m = _mixed(Z.mnist_cnn(pretrained=True), "conv2")
    bn = _mixed(BNNet(), "relu")
    gpt = _mixed(T.load_gpt2("induction_2l"), "transformer.h.0")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    tokens = T.repeated_tokens(gpt, 4, 2)
    dictionary = F.dictionary_from_directions(torch.randn(8, 16, generator=torch.Generator().manual_seed(2)), "conv2", k=2)
    bad_dict = tmp / "bad_dict"
    from safetensors.torch import save_file

    save_file({"W_enc": torch.zeros(8, 16), "b_enc": torch.zeros(8), "W_dec": torch.zeros(8, 15), "b_dec": torch.zeros(16),
               "scale": torch.tensor(1.0)}, str(bad_dict.with_suffix(".safetensors")))
    bad_dict.with_suffix(".json").write_text('{"format": "vision_interp.features/1", "k": 2, "layer": "conv2"}')
    wrong_keys = tmp / "wrong_keys"
    save_file({"encoder": torch.zeros(8, 16)}, str(wrong_keys.with_suffix(".safetensors")))
    wrong_keys.with_suffix(".json").write_text('{"format": "vision_interp.features/1", "k": 2, "layer": "conv2"}')
    nan = x.clone()
    nan[0, 0, 3, 3] = float("nan")
    inf = x.clone()
    inf[1, 0, 5, 5] = float("inf")
    tc1, tc2 = F.load_transcoder("mnist_cnn_conv1_tc"), F.load_transcoder("mnist_cnn_conv2_tc")
    e = SimpleNamespace(m=m, bn=bn, gpt=gpt, x=x, x1=x[:1], nan=nan, inf=inf, tokens=tokens, d=dictionary, tmp=tmp,
                        bad_dict=bad_dict, wrong_keys=wrong_keys, w=torch.rand(4, 3, 5, 5) - 0.5, tc1=tc1, tc2=tc2,
                        tcs=[tc1, tc2])
    for area in _area_modules():
        if hasattr(area, "extend_env"):
            area.extend_env(e)
    return e


CASES: list[Case] = [
    # ------------------------------------------------------------------ units and activations
    Case(vi.parse_unit, "an int instead of a unit", lambda e: vi.parse_unit(5), VE, "unit"),
    Case(vi.parse_unit, "non-ASCII digits", lambda e: vi.parse_unit("conv2:３"), VE, "unit"),
    Case(vi.parse_unit, "an empty channel range", lambda e: vi.parse_unit("conv2:5-3"), VE, "LOW <= HIGH"),
    Case(vi.parse_unit, "a float channel in a tuple", lambda e: vi.parse_unit(("conv2", 1.5)), VE, "channel"),
    Case(vi.parse_channel_list, "channel past the end", lambda e: vi.parse_channel_list("0-16", 16), UnitRangeError, "channels"),
    Case(vi.parse_channel_list, "garbage text", lambda e: vi.parse_channel_list("a,b", 16), VE, "channels"),
    Case(vi.resolve_layer, "unknown layer", lambda e: vi.resolve_layer(e.m, "conv9"), UnknownLayerError, "conv2"),
    Case(vi.resolve_unit, "negative channel", lambda e: vi.resolve_unit(e.m, "conv2:-1"), UnitRangeError, "0..15"),
    Case(vi.resolve_unit, "position off the map", lambda e: vi.resolve_unit(e.m, "conv2:1@14,0"), UnitRangeError, "0..13"),
    Case(vi.resolve_unit, "a layer where a unit is needed", lambda e: vi.resolve_unit(e.m, "conv2", require_channel=True), VE, "unit"),
    Case(vi.layer_names, "a string instead of a model", lambda e: vi.layer_names("mnist"), TE, "model"),
    Case(vi.layer_names, "the mixed-mode model", lambda e: vi.layer_names(e.m), lambda r: "conv2" in r, "lists conv2"),
    Case(vi.layer_shape, "unknown layer", lambda e: vi.layer_shape(e.m, "conv7"), UnknownLayerError, "conv7"),
    Case(vi.layer_shape, "conv2 of the mixed-mode model", lambda e: vi.layer_shape(e.m, "conv2"), lambda r: r == (16, 14, 14), "(16, 14, 14)"),
    Case(vi.model_device_dtype, "a string instead of a model", lambda e: vi.model_device_dtype("m"), TE, "model"),
    Case(vi.trace, "an input shape the model cannot take", lambda e: vi.trace(e.m, (1, 5, 5)), vi.TraceError, "shape"),
    Case(vi.capture, "uint8 images 0..255", lambda e: vi.capture(e.m, (e.x * 255).to(torch.uint8), "conv2"), VE, "inputs"),
    Case(vi.capture, "float images in 0..255", lambda e: vi.capture(e.m, e.x * 255, "conv2"), VE, "inputs"),
    Case(vi.capture, "a NaN pixel", lambda e: vi.capture(e.m, e.nan, "conv2"), NF, "inputs"),
    Case(vi.capture, "an infinite pixel", lambda e: vi.capture(e.m, e.inf, "conv2"), NF, "inputs"),
    Case(vi.capture, "3 channels for a 1-channel model", lambda e: vi.capture(e.m, e.x.expand(-1, 3, -1, -1), "conv2"), VE, "inputs"),
    Case(vi.capture, "an empty batch", lambda e: vi.capture(e.m, e.x[:0], "conv2"), VE, "inputs"),
    Case(vi.capture, "an empty layer list", lambda e: vi.capture(e.m, e.x, []), VE, "layers"),
    Case(vi.capture, "a layer list of ints", lambda e: vi.capture(e.m, e.x, [3]), TE, "layers"),
    Case(vi.capture, "a list instead of a tensor", lambda e: vi.capture(e.m, "img", "conv2"), TE, "inputs"),
    Case(vi.capture, "float64 images (converted)", lambda e: vi.capture(e.m, e.x.double(), "conv2")["conv2"],
         lambda r: r.dtype == torch.float32 and r.shape == (2, 16, 14, 14), "float32 activations"),
    Case(vi.capture, "float16 images (converted)", lambda e: vi.capture(e.m, e.x.half(), "conv2")["conv2"],
         lambda r: r.dtype == torch.float32 and r.shape == (2, 16, 14, 14), "float32 activations"),
    Case(vi.capture, "cache['conv2:-1']", lambda e: vi.capture(e.m, e.x, "conv2")["conv2:-1"], UnitRangeError, "channel -1"),
    Case(vi.capture, "cache['conv2:3@-1,-1']", lambda e: vi.capture(e.m, e.x, "conv2")["conv2:3@-1,-1"], UnitRangeError, "position"),
    Case(vi.capture, "cache['conv2:99']", lambda e: vi.capture(e.m, e.x, "conv2")["conv2:99"], UnitRangeError, "0..15"),
    Case(vi.capture, "cache['conv2:0-16']", lambda e: vi.capture(e.m, e.x, "conv2")["conv2:0-16"], UnitRangeError, "0..15"),
    Case(vi.capture, "train-mode BatchNorm/Dropout model, twice", lambda e: torch.equal(
        vi.capture(e.bn, torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)), "fc")["fc"],
        vi.capture(e.bn, torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)), "fc")["fc"]),
         lambda r: r is True, "identical (eval mode on the caller's behalf)"),
    Case(vi.run_with_cache, "uint8 images", lambda e: vi.run_with_cache(e.m, (e.x * 255).byte(), ["conv2"]), VE, "inputs"),
    Case(vi.run_with_cache, "unknown layer", lambda e: vi.run_with_cache(e.m, e.x, ["conv9"]), UnknownLayerError, "conv9"),
    Case(vi.capture_dataset, "batch_size 0 (refused before the first batch)", lambda e: vi.capture_dataset(e.m, e.x, "conv2", batch_size=0), VE, "batch_size"),
    Case(vi.capture_dataset, "a float batch_size", lambda e: vi.capture_dataset(e.m, e.x, "conv2", batch_size=2.0), TE, "batch_size"),
    Case(vi.capture_dataset, "NaN in the images", lambda e: vi.capture_dataset(e.m, e.nan, "conv2"), NF, "images"),
    Case(vi.capture_dataset, "an int instead of images", lambda e: vi.capture_dataset(e.m, 5, "conv2"), TE, "images"),
    Case(vi.capture_dataset, "grad mode inside the caller's loop", lambda e: [torch.is_grad_enabled() for _ in vi.capture_dataset(e.m, e.x, "conv2", batch_size=1)],
         lambda r: r == [True, True], "the caller's grad mode in the loop body"),
    Case(vi.hooks, "a hook that is not callable", lambda e: vi.hooks(e.m, {"conv2": 3}).__enter__(), TE, "fns"),
    Case(vi.hooks, "unknown layer", lambda e: vi.hooks(e.m, {"conv9": print}).__enter__(), UnknownLayerError, "conv9"),
    # ------------------------------------------------------------------ models
    Case(vi.mnist_cnn, "a missing weights file", lambda e: vi.mnist_cnn(path=e.tmp / "none.safetensors"), FileNotFoundError, "none.safetensors"),
    Case(vi.inceptionv1, "a weights file that is not safetensors", lambda e: vi.inceptionv1(weights=_junk(e, "w.pth")), VE, "w.pth"),
    Case(vi.load_model, "an unknown model name", lambda e: vi.load_model("resnet9000"), VE, "resnet9000"),
    Case(vi.list_models, "no arguments", lambda e: vi.list_models(), lambda r: "mnist_cnn" in r, "lists mnist_cnn"),
    Case(vi.model_spec, "a string instead of a model", lambda e: vi.model_spec("m"), TE, "model"),
    Case(Z.load_class_names, "an empty data folder", lambda e: Z.load_class_names(e.tmp), lambda r: r is None, "None (no labels file)"),
    # ------------------------------------------------------------------ attribution
    Case(vi.attribute, "uint8 images", lambda e: vi.attribute(e.m, (e.x * 255).byte(), 3, "saliency"), VE, "inputs"),
    Case(vi.attribute, "a NaN pixel", lambda e: vi.attribute(e.m, e.nan, 3, "saliency"), NF, "inputs"),
    Case(vi.attribute, "an infinite pixel", lambda e: vi.attribute(e.m, e.inf, 3, "saliency"), NF, "inputs"),
    Case(vi.attribute, "float16 images", lambda e: vi.attribute(e.m, e.x.half(), 3, "saliency"), is_tensor_shape(2, 1, 28, 28), "finite (2, 1, 28, 28)"),
    Case(vi.attribute, "bfloat16 images", lambda e: vi.attribute(e.m, e.x.bfloat16(), 3, "saliency"), is_tensor_shape(2, 1, 28, 28), "finite (2, 1, 28, 28)"),
    Case(vi.attribute, "float64 images", lambda e: vi.attribute(e.m, e.x.double(), 3, "saliency"), is_tensor_shape(2, 1, 28, 28), "finite (2, 1, 28, 28)"),
    Case(vi.attribute, "target=tensor(3.0)", lambda e: vi.attribute(e.m, e.x, torch.tensor(3.0), "saliency"), TE, "target"),
    Case(vi.attribute, "target=3.0", lambda e: vi.attribute(e.m, e.x, 3.0, "saliency"), TE, "target"),
    Case(vi.attribute, "target=True", lambda e: vi.attribute(e.m, e.x, True, "saliency"), TE, "target"),
    Case(vi.attribute, "target class 10 of 10", lambda e: vi.attribute(e.m, e.x, 10, "saliency"), IE, "target"),
    Case(vi.attribute, "3 targets for 2 images", lambda e: vi.attribute(e.m, e.x, [1, 2, 3], "saliency"), VE, "target"),
    Case(vi.attribute, "per-example floats", lambda e: vi.attribute(e.m, e.x, [1.0, 2.0], "saliency"), TE, "target"),
    Case(vi.attribute, "unit target channel -1", lambda e: vi.attribute(e.m, e.x, "conv2:-1", "saliency"), UnitRangeError, "channel -1"),
    Case(vi.attribute, "baseline for 3 images given 2", lambda e: vi.attribute(e.m, e.x, 3, "integrated_gradients", baselines=torch.zeros(3, 1, 28, 28)), VE, "baselines"),
    Case(vi.attribute, "a NaN baseline", lambda e: vi.attribute(e.m, e.x, 3, "integrated_gradients", baselines=float("nan")), NF, "baselines"),
    Case(vi.attribute, "an integer baseline tensor", lambda e: vi.attribute(e.m, e.x, 3, "deeplift", baselines=torch.zeros(1, 28, 28, dtype=torch.long)), VE, "baselines"),
    Case(vi.attribute, "occlusion window larger than the image", lambda e: vi.attribute(e.m, e.x, 3, "occlusion", sliding_window_shapes=(1, 40, 40)), VE, "sliding_window_shapes"),
    Case(vi.attribute, "occlusion stride 0", lambda e: vi.attribute(e.m, e.x, 3, "occlusion", strides=(1, 0, 2)), VE, "strides"),
    Case(vi.attribute, "n_steps 0", lambda e: vi.attribute(e.m, e.x, 3, "integrated_gradients", n_steps=0), VE, "n_steps"),
    Case(vi.attribute, "negative smoothgrad noise", lambda e: vi.attribute(e.m, e.x, 3, "smoothgrad", stdevs=-1.0), VE, "stdevs"),
    Case(vi.attribute, "unknown method", lambda e: vi.attribute(e.m, e.x, 3, "gradcm"), VE, "gradcam"),
    Case(vi.attribute, "BatchNorm/Dropout model in train mode, twice", lambda e: torch.equal(
        vi.attribute(e.bn, torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)), 1, "saliency"),
        vi.attribute(e.bn, torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0)), 1, "saliency")),
         lambda r: r is True, "identical, statistics not updated"),
    Case(vi.attribute_dataset, "batch_size 0", lambda e: vi.attribute_dataset(e.m, e.x, 3, "saliency", batch_size=0, progress=False), VE, "batch_size"),
    Case(vi.attribute_dataset, "a NaN pixel", lambda e: vi.attribute_dataset(e.m, e.nan, 3, "saliency", progress=False), NF, "inputs"),
    Case(vi.attribute_dataset, "one baseline per image (N, C, H, W)", lambda e: vi.attribute_dataset(
        e.m, e.x, 3, "integrated_gradients", baselines=torch.zeros(2, 1, 28, 28), n_steps=4, progress=False),
         is_tensor_shape(2, 1, 28, 28), "finite (2, 1, 28, 28)"),
    Case(vi.attribute_dataset, "per-image baselines over batches of 1", lambda e: torch.allclose(
        vi.attribute_dataset(e.m, e.x, 3, "integrated_gradients", baselines=torch.stack([e.x[1], e.x[0]]) * 0.5, n_steps=4,
                             batch_size=1, progress=False),
        vi.attribute(e.m, e.x, 3, "integrated_gradients", baselines=torch.stack([e.x[1], e.x[0]]) * 0.5, n_steps=4), atol=1e-6),
         lambda r: r is True, "each image with its own baseline (equals one batch)"),
    Case(A.attribute_batches, "5 targets for 2 images (refused before the loop)", lambda e: A.attribute_batches(e.m, e.x, [1, 2, 3, 4, 5], "saliency"), VE, "target"),
    Case(A.class_mean_attributions, "negative labels", lambda e: A.class_mean_attributions(e.m, e.x, torch.tensor([-1, 2]), "saliency", progress=False), VE, "labels"),
    Case(vi.layer_attribution, "a NaN pixel", lambda e: vi.layer_attribution(e.m, e.nan, "conv2", 3), NF, "inputs"),
    Case(vi.layer_attribution, "a layer after the target unit", lambda e: vi.layer_attribution(e.m, e.x, "fc", "conv2:1"), VE, "fc"),
    Case(vi.unit_attribution, "a class index as target_unit", lambda e: vi.unit_attribution(e.m, e.x, "conv1", 3), VE, "target_unit"),
    Case(vi.ig_completeness, "a NaN baseline", lambda e: vi.ig_completeness(e.m, e.x, 3, baselines=torch.full((1, 28, 28), float("nan"))), NF, "baselines"),
    Case(vi.ig_completeness, "n_steps -3", lambda e: vi.ig_completeness(e.m, e.x, 3, n_steps=-3), VE, "n_steps"),
    Case(vi.ig_completeness, "a baseline of the wrong size", lambda e: vi.ig_completeness(e.m, e.x, 3, baselines=torch.zeros(1, 14, 14)), VE, "baselines"),
    Case(vi.randomization_test, "a layer without parameters", lambda e: vi.randomization_test(e.m, e.x1, 3, layers=["relu1"]), VE, "relu1"),
    Case(vi.randomization_test, "uint8 images", lambda e: vi.randomization_test(e.m, (e.x1 * 255).byte(), 3), VE, "inputs"),
    Case(A.spearman, "identical maps", lambda e: A.spearman(e.x, e.x), lambda r: torch.allclose(r, torch.ones(2, dtype=torch.float64)), "1.0 per input"),
    Case(A.heatmaps, "a 2-D tensor", lambda e: A.heatmaps(torch.rand(3, 3)), VE, "attributions"),
    Case(A.overlays, "3 maps for 2 images", lambda e: A.overlays(e.x, torch.rand(3, 1, 28, 28)), VE, "attributions"),
    Case(A.attribution_grid, "different batch sizes", lambda e: A.attribution_grid(e.x, torch.rand(3, 1, 28, 28)), VE, "attributions"),
    Case(A.class_mean_grid, "a 2-D tensor", lambda e: A.class_mean_grid(torch.rand(3, 3)), VE, "means"),
    Case(A.layer_map_overlay, "a map with a batch of 3 for 2 images", lambda e: A.layer_map_overlay(e.x, torch.rand(3, 7, 7)), VE, "spatial"),
    Case(A.save_attribution_png, "different batch sizes", lambda e: A.save_attribution_png(e.tmp / "a.png", e.x, torch.rand(3, 1, 28, 28)), VE, "attributions"),
    # ------------------------------------------------------------------ circuits
    Case(vi.direct_weights, "layers in the wrong order", lambda e: vi.direct_weights(e.m, "conv2", "conv1"), VE, "conv1"),
    Case(vi.direct_weights, "unknown layer", lambda e: vi.direct_weights(e.m, "conv1", "conv9"), UnknownLayerError, "conv9"),
    Case(vi.expanded_weights, "dst channel past the end", lambda e: vi.expanded_weights(e.m, "conv1", "conv2", dst_channels=[16]), UnitRangeError, "16"),
    Case(vi.connection_weights, "src channel -1", lambda e: vi.connection_weights(e.m, "conv1:-1", "conv2:0"), UnitRangeError, "channel -1"),
    Case(vi.top_connections, "k = 0", lambda e: vi.top_connections(e.m, "conv2:0", k=0), VE, "k"),
    Case(vi.top_connections, "an unknown direction", lambda e: vi.top_connections(e.m, "conv2:0", direction="sideways"), VE, "direction"),
    Case(C.layer_top_connections, "an unknown direction", lambda e: C.layer_top_connections(e.m, "conv2", direction="up"), VE, "direction"),
    Case(vi.classifier_view, "a layer after the logits", lambda e: vi.classifier_view(e.m, "conv9"), UnknownLayerError, "conv9"),
    Case(vi.neuron_groups, "n_groups 0", lambda e: vi.neuron_groups(torch.rand(4, 8, 5, 5), 0), VE, "n_groups"),
    Case(vi.neuron_groups, "NaN activations", lambda e: vi.neuron_groups(torch.full((4, 8, 5, 5), float("nan")), 2), NF, "activations"),
    Case(vi.layer_neuron_groups, "uint8 images", lambda e: vi.layer_neuron_groups(e.m, (e.x * 255).byte(), "conv2", 2), VE, "images"),
    Case(vi.circuit_diagram, "unknown unit layer", lambda e: vi.circuit_diagram(e.m, "conv9:0", e.tmp / "cd"), UnknownLayerError, "conv9"),
    Case(C.kernel_grid, "a 1-D tensor", lambda e: C.kernel_grid(torch.rand(3)), VE, "weights"),
    Case(C.save_kernel_grid, "scale 0", lambda e: C.save_kernel_grid(e.w, e.tmp / "k.png", scale=0), VE, "scale"),
    Case(C.linear_path, "a path backwards", lambda e: C.linear_path(e.m, "conv2", "conv1"), VE, "conv1"),
    Case(C.trace_graph, "an input size the model cannot take", lambda e: C.trace_graph(e.m, (1, 5, 5)), VE, "shape"),
    Case(C.nmf, "negative values", lambda e: C.nmf(torch.randn(5, 4), 2), VE, "non-negative"),
    Case(C.neuron_groups_picture, "a string instead of a result", lambda e: C.neuron_groups_picture("groups"), TE, "result"),
    Case(C.save_neuron_groups, "a string instead of a result", lambda e: C.save_neuron_groups("groups", e.tmp / "g.png"), TE, "result"),
    Case(C.next_layer, "the last layer", lambda e: C.next_layer(e.m, "logits"), VE, "logits"),
    Case(C.previous_layer, "the first layer", lambda e: C.previous_layer(e.m, "conv1"), VE, "conv1"),
    Case(C.rank_connections, "k 0", lambda e: C.rank_connections(e.w, "conv2", k=0), VE, "k"),
    Case(C.receptive_geometry, "unknown layer", lambda e: C.receptive_geometry(e.m, "conv1", "conv8"), UnknownLayerError, "conv8"),
    # ------------------------------------------------------------------ feature visualization
    Case(vi.render, "unit channel 99", lambda e: vi.render(e.m, "conv2:99", "fast-small", steps=2, progress=False), UnitRangeError, "0..15"),
    Case(vi.render, "batch 0", lambda e: vi.render(e.m, "conv2:1", "fast-small", batch=0, progress=False), VE, "batch"),
    Case(vi.render, "unknown preset", lambda e: vi.render(e.m, "conv2:1", "fastest", progress=False), VE, "fastest"),
    Case(vi.render, "a 2-step render of the mixed-mode model", lambda e: vi.render(e.m, "conv2:1", "fast-small", steps=2, progress=False).images,
         lambda r: r.shape[0] == 1 and bool(torch.isfinite(r).all()), "one finite image"),
    Case(vi.visualize, "unknown layer", lambda e: vi.visualize(e.m, "conv9:1", steps=2, progress=False), UnknownLayerError, "conv9"),
    Case(vi.visualize_layer, "channels past the end", lambda e: vi.visualize_layer(e.m, "conv2", "15-16", steps=2, progress=False), UnitRangeError, "channels"),
    Case(V.evaluate_objective, "uint8 images", lambda e: V.evaluate_objective(e.m, V.channel("conv2", 1), (e.x * 255).byte()), VE, "images"),
    Case(V.evaluate_objective, "NaN images", lambda e: V.evaluate_objective(e.m, V.channel("conv2", 1), e.nan), NF, "images"),
    Case(V.channel, "a float channel", lambda e: V.channel("conv2", 1.5), TE, "channel"),
    Case(V.neuron, "a position without x", lambda e: V.neuron("conv2", 1, y=3), VE, "x"),
    Case(V.class_logit, "a float class", lambda e: V.class_logit(2.5), TE, "class"),
    Case(V.direction, "an empty direction", lambda e: V.direction("conv2", []), VE, "vec"),
    Case(V.diversity, "a negative weight", lambda e: V.diversity("conv2", weight=float("nan")), VE, "weight"),
    Case(V.layer_l2, "a layer that is not a string", lambda e: V.layer_l2(3), TE, "layer"),
    Case(V.image_param, "an unknown kind", lambda e: V.image_param("wavelet", (1, 1, 28, 28)), VE, "kind"),
    Case(V.model_defaults, "a string instead of a model", lambda e: V.model_defaults("m"), TE, "model"),
    Case(V.parse_channels, "channels past the end", lambda e: V.parse_channels("0-20", 16), UnitRangeError, "channels"),
    Case(V.resolve_settings, "an unknown override", lambda e: V.resolve_settings(e.m, "fast-small", {"stepz": 3}), TE, "stepz"),
    Case(V.default_settings, "a string instead of a model", lambda e: V.default_settings("m"), TE, "model"),
    Case(V.preset, "an unknown preset", lambda e: V.preset("quick"), VE, "quick"),
    Case(V.make_transforms, "an unknown transform name", lambda e: V.make_transforms("wobble"), VE, "wobble"),
    Case(V.small_transforms, "a negative shift", lambda e: V.small_transforms(shift=-1), VE, "shift"),
    Case(V.standard_transforms, "no arguments", lambda e: V.standard_transforms(), lambda r: len(r.transforms) > 0, "a non-empty Compose"),
    # ------------------------------------------------------------------ data
    Case(D.read_idx, "a missing file", lambda e: D.read_idx(e.tmp / "none-idx3-ubyte"), FileNotFoundError, "none-idx3-ubyte"),
    Case(D.read_idx, "a file that is not IDX", lambda e: D.read_idx(_junk(e, "junk-idx")), VE, "junk-idx"),
    Case(D.load_mnist, "an unknown split", lambda e: D.load_mnist("validation", e.tmp, download=False), VE, "split"),
    Case(D.load_mnist, "limit 0", lambda e: D.load_mnist("test", e.tmp, download=False, limit=0), VE, "limit"),
    Case(D.ensure_mnist, "an empty folder, no download", lambda e: D.ensure_mnist(e.tmp / "empty", download=False), FileNotFoundError, "empty"),
    Case(D.data_dir, "a file as the data folder", lambda e: D.data_dir(_junk(e, "notadir")), NotADirectoryError, "notadir"),
    Case(D.find_data_file, "a name that does not exist", lambda e: D.find_data_file("no/such/file", e.tmp), lambda r: r is None, "None"),
    Case(vi.top_activating, "k 0", lambda e: vi.top_activating(e.m, "conv2", e.x, k=0), VE, "k"),
    Case(vi.top_activating, "uint8 images", lambda e: vi.top_activating(e.m, "conv2", (e.x * 255).byte()), VE, "images"),
    # ------------------------------------------------------------------ exercises
    Case(X.describe_filters, "a layer that is not a convolution", lambda e: X.describe_filters(e.m, "fc"), VE, "fc"),
    Case(X.filter_orientation, "a 1-D tensor", lambda e: X.filter_orientation(torch.rand(5)), VE, "weights"),
    Case(X.filter_orientation, "a NaN weight", lambda e: X.filter_orientation(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])), NF, "weights"),
    Case(X.oriented_bar, "size 0", lambda e: X.oriented_bar(0, 45.0), VE, "size"),
    Case(X.stimulus_tuning, "an unknown layer", lambda e: X.stimulus_tuning(e.m, "conv9"), UnknownLayerError, "conv9"),
    Case(vi.run_mnist_exercise, "an unknown option", lambda e: vi.run_mnist_exercise(epochz=3), TE, "epochz"),
    # ------------------------------------------------------------------ features
    Case(vi.load_dictionary, "a decoder of the wrong shape", lambda e: vi.load_dictionary(e.bad_dict), checks.FileContentError, "W_dec"),
    Case(vi.load_dictionary, "the wrong tensor names", lambda e: vi.load_dictionary(e.wrong_keys), checks.FileContentError, "W_enc"),
    Case(vi.load_dictionary, "a name that does not exist", lambda e: vi.load_dictionary(e.tmp / "nothing"), FileNotFoundError, "nothing"),
    Case(vi.train_dictionary, "NaN images", lambda e: vi.train_dictionary(e.m, "conv2", e.nan), NF, "images"),
    Case(vi.attach_features, "a string instead of a dictionary", lambda e: vi.attach_features(e.m, "dict"), TE, "dictionary"),
    Case(vi.detach_features, "a name that is not attached", lambda e: vi.detach_features(e.m, "nothing"), VE, "nothing"),
    Case(F.attached, "an unknown mode", lambda e: F.attached(e.m, e.d, mode="rewrite").__enter__(), VE, "mode"),
    Case(F.attached_features, "a model with none attached", lambda e: F.attached_features(e.m), lambda r: r == {}, "{}"),
    Case(F.build_dictionary, "an unknown layer", lambda e: F.build_dictionary(e.m, "conv9", e.tmp / "bd"), UnknownLayerError, "conv9"),
    Case(F.publish_dictionary, "steps 0", lambda e: F.publish_dictionary(e.m, e.d, e.tmp / "pub", steps=0), VE, "steps"),
    Case(F.feature_input_weights, "feature -1", lambda e: F.feature_input_weights(e.m, e.d, -1), IE, "feature"),
    Case(F.feature_output_weights, "feature 8 of 8", lambda e: F.feature_output_weights(e.m, e.d, 8), IE, "feature"),
    Case(F.feature_logit_weights, "feature 99", lambda e: F.feature_logit_weights(e.m, e.d, 99), IE, "feature"),
    Case(F.feature_top_connections, "k 0", lambda e: F.feature_top_connections(e.m, e.d, 0, k=0), VE, "k"),
    Case(F.as_samples, "a 1-D tensor", lambda e: F.as_samples(torch.rand(5)), VE, "acts"),
    Case(F.dictionary_from_directions, "k larger than the features", lambda e: F.dictionary_from_directions(torch.rand(4, 6), "conv2", k=5), VE, "k"),
    Case(F.layer_activations, "uint8 images", lambda e: F.layer_activations(e.m, "conv2", (e.x * 255).byte()), VE, "images"),
    Case(F.layer_samples, "batch_size 0", lambda e: F.layer_samples(e.m, "conv2", e.x, batch_size=0), VE, "batch_size"),
    Case(F.save_dictionary, "a string instead of a dictionary", lambda e: F.save_dictionary("d", e.tmp / "d"), TE, "dictionary"),
    Case(F.evaluate_dictionary, "labels for 3 images given 2", lambda e: F.evaluate_dictionary(e.m, e.d, torch.rand(50, 16), e.x, torch.tensor([1, 2, 3])), VE, "labels"),
    Case(F.label_purity, "labels of another length", lambda e: F.label_purity(torch.rand(10, 4), torch.zeros(9, dtype=torch.long)), VE, "labels"),
    Case(F.more_monosemantic_verdict, "a dict without the metrics", lambda e: F.more_monosemantic_verdict({}), VE, "metrics"),
    Case(F.nmf_baseline, "rank 0", lambda e: F.nmf_baseline(torch.rand(20, 4), torch.rand(5, 4), 0), VE, "rank"),
    Case(F.pca_baseline, "rank larger than the dimension", lambda e: F.pca_baseline(torch.rand(20, 4), torch.rand(5, 4), 9), VE, "rank"),
    Case(F.reconstruction_metrics, "samples of the wrong width", lambda e: F.reconstruction_metrics(e.d, torch.rand(5, 15)), VE, "samples"),
    Case(F.fvu, "tensors of different shapes", lambda e: F.fvu(torch.rand(5, 4), torch.rand(5, 3)), VE, "x_hat"),
    Case(F.train_topk_sae, "NaN samples", lambda e: F.train_topk_sae(torch.full((10, 4), float("nan"))), NF, "x"),
    # ------------------------------------------------------------------ gallery
    Case(vi.make_gallery, "no layers", lambda e: vi.make_gallery(e.m, [], e.tmp / "gal"), VE, "layers"),
    Case(G.assemble, "a folder with no gallery", lambda e: G.assemble(e.tmp / "nogallery"), FileNotFoundError, "nogallery"),
    Case(G.gallery_layers, "a string instead of a model", lambda e: G.gallery_layers("m"), TE, "model"),
    Case(vi.load_labels, "a labels file that does not exist", lambda e: vi.load_labels(e.tmp / "labels.json", e.m, []), VE, "labels.json"),
    Case(G.parse_shard, "shard 3/2", lambda e: G.parse_shard("3/2"), VE, "shard"),
    Case(G.render_fingerprint, "a string instead of settings", lambda e: G.render_fingerprint(e.m, "fast"), TE, "settings"),
    Case(G.write_site, "a manifest that is not a dict", lambda e: G.write_site(e.tmp / "site", []), TE, "manifest"),
    # ------------------------------------------------------------------ transformer
    Case(vi.analyze_induction, "seq_len 1", lambda e: vi.analyze_induction(e.gpt, seq_len=1, progress=False), VE, "seq_len"),
    Case(vi.analyze_induction, "seq_len past the context", lambda e: vi.analyze_induction(e.gpt, seq_len=64, progress=False), VE, "seq_len"),
    Case(vi.analyze_induction, "a vision model", lambda e: vi.analyze_induction(e.m, progress=False), TE, "GPT2"),
    Case(T.attention_patterns, "token id past the vocabulary", lambda e: T.attention_patterns(e.gpt, torch.full((1, 5), 128)), VE, "tokens"),
    Case(T.attention_patterns, "a negative token id", lambda e: T.attention_patterns(e.gpt, torch.tensor([[0, -1, 3]])), VE, "tokens"),
    Case(T.attention_patterns, "float token ids", lambda e: T.attention_patterns(e.gpt, torch.rand(1, 5)), VE, "tokens"),
    Case(T.attention_patterns, "longer than the context", lambda e: T.attention_patterns(e.gpt, torch.zeros(1, 129, dtype=torch.long)), VE, "tokens"),
    Case(T.fast_pattern_scores, "an even sequence length", lambda e: T.fast_pattern_scores(e.gpt, e.tokens[:, :-1]), VE, "tokens"),
    Case(T.copy_losses, "token id past the vocabulary", lambda e: T.copy_losses(e.gpt, e.tokens + 200), VE, "tokens"),
    Case(T.head_means, "token id past the vocabulary", lambda e: T.head_means(e.gpt, e.tokens + 200), VE, "tokens"),
    Case(T.ablated_loss, "a head that does not exist", lambda e: T.ablated_loss(e.gpt, e.tokens, [(0, 99)]), IE, "head"),
    Case(vi.ablation_scan, "an unknown mode", lambda e: vi.ablation_scan(e.gpt, e.tokens, ["resample"], progress=False), VE, "resample"),
    Case(vi.attribution_patching, "an unknown mode", lambda e: vi.attribution_patching(e.gpt, e.tokens, ["resample"]), VE, "resample"),
    Case(vi.integrated_attribution_patching, "steps 0", lambda e: vi.integrated_attribution_patching(e.gpt, e.tokens, steps=0), VE, "steps"),
    Case(vi.ablation_line, "a head that does not exist", lambda e: vi.ablation_line(e.gpt, e.tokens, (5, 0)), IE, "head"),
    Case(vi.joint_ablations, "a head that does not exist", lambda e: vi.joint_ablations(e.gpt, e.tokens, [(0, 99)], []), IE, "head"),
    Case(T.path_ablated_loss, "a head that does not exist", lambda e: T.path_ablated_loss(e.gpt, e.tokens, [(9, 0)], [(1, 0)]), IE, "head"),
    Case(T.check_gpt2_config, "an object without a config", lambda e: T.check_gpt2_config(object()), T.NotGPT2Error, "model_type"),
    Case(vi.load_gpt2, "a folder without a model", lambda e: vi.load_gpt2(e.tmp), FileNotFoundError, "config.json"),
    Case(vi.load_gpt2_tokenizer, "a folder without a tokenizer", lambda e: vi.load_gpt2_tokenizer(e.tmp), FileNotFoundError, "tokenizer"),
    Case(T.save_gpt2, "a vision model", lambda e: T.save_gpt2(e.m, e.tmp / "g"), TE, "GPT2"),
    Case(T.detected_heads, "a NaN threshold", lambda e: T.detected_heads(np.zeros((2, 2)), float("nan")), VE, "threshold"),
    Case(T.format_head, "a negative layer", lambda e: T.format_head(-1, 0), VE, "layer"),
    Case(T.top_heads, "k 0", lambda e: T.top_heads(np.zeros((2, 2)), 0), VE, "k"),
    Case(T.composition_baseline, "d_head larger than d_model", lambda e: T.composition_baseline(8, 16), VE, "d_head"),
    Case(T.composition_scores, "a vision model", lambda e: T.composition_scores(e.m), TE, "GPT2"),
    Case(T.copying_scores, "max_tokens 0", lambda e: T.copying_scores(e.gpt, max_tokens=0), VE, "max_tokens"),
    Case(T.copy_slices, "seq_len 0", lambda e: T.copy_slices(0), VE, "seq_len"),
    Case(T.duplicate_token_scores, "seq_len that does not match", lambda e: T.duplicate_token_scores(torch.rand(1, 1, 2, 9, 9), 7), VE, "seq_len"),
    Case(T.induction_scores, "seq_len that does not match", lambda e: T.induction_scores(torch.rand(1, 1, 2, 9, 9), 7), VE, "seq_len"),
    Case(T.pattern_scores, "seq_len that does not match", lambda e: T.pattern_scores(torch.rand(1, 1, 2, 9, 9), 7), VE, "seq_len"),
    Case(T.previous_token_scores, "a 2-D tensor", lambda e: T.previous_token_scores(torch.rand(4, 4)), VE, "patterns"),
    Case(T.head_weights, "a vision model", lambda e: T.head_weights(e.m), TE, "GPT2"),
    Case(T.repeated_tokens, "batch 0", lambda e: T.repeated_tokens(e.gpt, 4, 0), VE, "batch"),
    Case(T.token_losses, "logits for another length", lambda e: T.token_losses(torch.rand(1, 5, 128), torch.zeros(1, 6, dtype=torch.long)), VE, "tokens"),
    Case(T.build_toy_model, "a dict instead of a ToyConfig", lambda e: T.build_toy_model({"n_layer": 2}), TE, "cfg"),
    Case(T.copy_task_batch, "length 1", lambda e: T.copy_task_batch(T.ToyConfig(), torch.Generator(), length=1), VE, "length"),
    Case(T.train_and_save, "a dict instead of a ToyConfig", lambda e: T.train_and_save(e.tmp / "toy", {"steps": 1}), TE, "cfg"),
    Case(vi.train_induction_model, "a dict instead of a ToyConfig", lambda e: vi.train_induction_model({"steps": 1}), TE, "cfg"),
    Case(vi.fast_pattern_scores, "token id past the vocabulary", lambda e: vi.fast_pattern_scores(e.gpt, e.tokens + 200), VE, "tokens"),
    # ------------------------------------------------------------------ universality
    Case(U.correlation_matrix, "different sample counts", lambda e: U.correlation_matrix(torch.rand(5, 3), torch.rand(6, 3)), VE, "b"),
    Case(U.linear_assignment, "a NaN cost", lambda e: U.linear_assignment(torch.full((2, 2), float("nan"))), NF, "cost"),
    Case(U.match_layer, "one model only", lambda e: U.match_layer({"a": torch.rand(5, 3)}), VE, "samples"),
    Case(U.match_pair, "different sample counts", lambda e: U.match_pair(torch.rand(5, 3), torch.rand(6, 3)), VE, "b"),
    Case(U.shared_samples, "n_images 0", lambda e: U.shared_samples(0, 4, None), VE, "n_images"),
    Case(U.layer_summary, "a string instead of a result", lambda e: U.layer_summary("result", "conv1"), TE, "result"),
    Case(U.write_report, "a string instead of a result", lambda e: U.write_report("result", e.tmp / "u", e.x), TE, "result"),
    Case(U.run_universality, "one seed", lambda e: U.run_universality([0], e.tmp / "models", e.tmp / "out"), VE, "seeds"),
    Case(U.load_control, "a folder without a control", lambda e: U.load_control(e.tmp), FileNotFoundError, "control"),
    Case(U.load_seed_models, "a folder without models", lambda e: U.load_seed_models(e.tmp, [0]), FileNotFoundError, "mnist_cnn_seed0"),
    Case(U.random_model, "a float seed", lambda e: U.random_model(1.5), TE, "seed"),
    Case(U.train_seed_models, "no seeds", lambda e: U.train_seed_models([], e.tmp / "seeds"), VE, "seeds"),
    Case(U.collect_samples, "uint8 images", lambda e: U.collect_samples(e.m, "conv2", (e.x * 255).byte(), None), VE, "images"),
    Case(U.run_study, "no models", lambda e: U.run_study({}, {}, e.x), VE, "models"),
    Case(U.seed_dictionaries, "no models", lambda e: U.seed_dictionaries({}, "conv2", e.tmp / "sd", U.UniversalityConfig(), e.x), VE, "models"),
    # ------------------------------------------------------------------ library methods moved out of the exercise
    Case(C.contrastive_logit_attribution, "a NaN pixel", lambda e: C.contrastive_logit_attribution(e.m, "pool2", e.nan, torch.tensor([3, 4]), 3), NF, "images"),
    Case(C.contrastive_logit_attribution, "target class 10 of 10", lambda e: C.contrastive_logit_attribution(e.m, "pool2", e.x, torch.tensor([3, 4]), 10), IE, "target"),
    Case(C.contrastive_logit_attribution, "a layer the logits are not linear in", lambda e: C.contrastive_logit_attribution(e.m, "conv1", e.x, torch.tensor([3, 4]), 3), VE, "conv1"),
    Case(C.contrastive_logit_attribution, "one label for two images", lambda e: C.contrastive_logit_attribution(e.m, "pool2", e.x, torch.tensor([3]), 3), VE, "labels"),
    Case(C.contrastive_logit_attribution, "the right call", lambda e: C.contrastive_logit_attribution(e.m, "pool2", e.x, torch.tensor([3, 4]), 3),
         lambda r: tuple(r.contributions.shape) == (16, 7, 7) and bool(torch.isfinite(r.contributions).all()), "a (16, 7, 7) map"),
    Case(C.closed_form_ablation, "mode 'median'", lambda e: C.closed_form_ablation(e.m, "pool2:5", e.x, torch.tensor([3, 4]), 3, mode="median"), VE, "mode"),
    Case(C.closed_form_ablation, "channel 16 of 16", lambda e: C.closed_form_ablation(e.m, "pool2:16", e.x, torch.tensor([3, 4]), 3), UnitRangeError, "0..15"),
    Case(C.closed_form_ablation, "an inf pixel", lambda e: C.closed_form_ablation(e.m, "pool2:5", e.inf, torch.tensor([3, 4]), 3), NF, "images"),
    Case(C.closed_form_ablation, "controls -1", lambda e: C.closed_form_ablation(e.m, "pool2:5", e.x, torch.tensor([3, 4]), 3, controls=-1), VE, "controls"),
    Case(A.deletion_insertion, "attributions of another shape", lambda e: A.deletion_insertion(e.m, e.x, 3, torch.rand(2, 1, 14, 14)), VE, "attributions"),
    Case(A.deletion_insertion, "both attributions and order", lambda e: A.deletion_insertion(e.m, e.x, 3, torch.rand(2, 1, 28, 28), order=torch.zeros(2, 784, dtype=torch.long)), VE, "order"),
    Case(A.deletion_insertion, "a NaN pixel", lambda e: A.deletion_insertion(e.m, e.nan, 3, torch.rand(2, 1, 28, 28)), NF, "images"),
    Case(A.deletion_insertion, "a fraction of 1.5", lambda e: A.deletion_insertion(e.m, e.x, 3, torch.rand(2, 1, 28, 28), fractions=(0.0, 1.5)), VE, "fractions"),
    # ------------------------------------------------------------------ transcoders, replacement model, attribution graphs
    Case(F.load_transcoder, "a name that does not exist", lambda e: F.load_transcoder(e.tmp / "nothing_tc"), FileNotFoundError, "nothing_tc"),
    Case(F.load_transcoder, "the wrong tensor names", lambda e: F.load_transcoder(_tc_file(e, "wrong_keys")), checks.FileContentError, "W_enc"),
    Case(F.load_transcoder, "a decoder of the wrong shape", lambda e: F.load_transcoder(_tc_file(e, "bad_decoder")), checks.FileContentError, "W_dec"),
    Case(F.load_transcoder, "a card with k larger than the features", lambda e: F.load_transcoder(_tc_file(e, "bad_k")), checks.FileContentError, "'k'"),
    Case(F.save_transcoder, "a string instead of a transcoder", lambda e: F.save_transcoder("tc", e.tmp / "tc_str"), TE, "tc"),
    Case(F.save_transcoder, "save, then load back", lambda e: _round_trip(e),
         lambda r: r is True, "identical weights and layers"),
    Case(F.train_transcoder, "NaN images", lambda e: F.train_transcoder(e.m, "pool1", "pool2", e.nan, F.TranscoderConfig(steps=1)), NF, "images"),
    Case(F.train_transcoder, "uint8 images", lambda e: F.train_transcoder(e.m, "pool1", "pool2", (e.x * 255).byte()), VE, "images"),
    Case(F.train_transcoder, "the same layer as input and output", lambda e: F.train_transcoder(e.m, "pool1", "pool1", e.x), VE, "out_layer"),
    Case(F.train_transcoder, "a dict instead of a TranscoderConfig", lambda e: F.train_transcoder(e.m, "pool1", "pool2", e.x, {"steps": 1}), TE, "config"),
    Case(F.train_conv_transcoder, "NaN block inputs", lambda e: F.train_conv_transcoder(
        torch.full((2, 4, 6, 6), float("nan")), torch.rand(2, 3, 3, 3), ((2, 2), (2, 2), (0, 0, 0, 0))), NF, "a_in"),
    Case(F.train_conv_transcoder, "3 outputs for 2 inputs", lambda e: F.train_conv_transcoder(
        torch.rand(2, 4, 6, 6), torch.rand(3, 3, 3, 3), ((2, 2), (2, 2), (0, 0, 0, 0))), VE, "a_out"),
    Case(F.train_conv_transcoder, "a geometry that gives another output size", lambda e: F.train_conv_transcoder(
        torch.rand(2, 4, 6, 6), torch.rand(2, 3, 3, 3), ((3, 3), (1, 1), (0, 0, 0, 0))), VE, "geometry"),
    Case(F.train_conv_transcoder, "steps 0", lambda e: F.train_conv_transcoder(
        torch.rand(2, 4, 6, 6), torch.rand(2, 3, 3, 3), ((2, 2), (2, 2), (0, 0, 0, 0)), F.TranscoderConfig(steps=0)), VE, "steps"),
    Case(F.replaced, "one transcoder, not a list", lambda e: F.replaced(e.m, e.tc2).__enter__(), TE, "transcoders"),
    Case(F.replaced, "transcoders for another model", lambda e: F.replaced(e.bn, e.tcs).__enter__(), VE, "transcoders"),
    Case(F.replaced, "conv2's transcoder moved to the model input", lambda e: F.replaced(e.m, [_moved(e.tc2, "input")]).__enter__(), VE, "transcoders"),
    Case(F.replaced, "both blocks replaced, then restored", lambda e: _replaced_logits(e),
         lambda r: r[0].shape == (2, 10) and bool(torch.isfinite(r[0]).all()) and not torch.equal(r[0], r[1]) and torch.equal(r[1], r[2]),
         "finite (2, 10) logits that differ; the model's own logits after"),
    Case(F.attach_transcoder, "a string instead of a transcoder", lambda e: F.attach_transcoder(e.m, "conv2/tc"), TE, "tc"),
    Case(F.attach_transcoder, "a transcoder for another model", lambda e: F.attach_transcoder(e.bn, e.tc2), VE, "tc"),
    Case(F.attach_transcoder, "mode 'rewrite'", lambda e: F.attach_transcoder(e.m, e.tc2, mode="rewrite"), VE, "mode"),
    Case(F.attached_transcoder, "a dictionary instead of a transcoder", lambda e: F.attached_transcoder(e.m, e.d).__enter__(), TE, "tc"),
    Case(F.attached_transcoder, "conv2's transcoder for another block", lambda e: F.attached_transcoder(e.m, _moved(e.tc2, "conv1")).__enter__(), VE, "tc"),
    Case(F.attached_transcoder, "features as a layer, removed after", lambda e: _attached_shape(e),
         lambda r: r == (2, 128, 7, 7), "conv2/tc activations (2, 128, 7, 7)"),
    Case(F.measure_transcoders, "labels for 3 images given 2", lambda e: F.measure_transcoders(e.m, e.tcs, e.x, torch.tensor([1, 2, 3])), VE, "labels"),
    Case(F.measure_transcoders, "NaN images", lambda e: F.measure_transcoders(e.m, e.tcs, e.nan, torch.tensor([1, 2])), NF, "images"),
    Case(F.measure_transcoders, "batch_size 0", lambda e: F.measure_transcoders(e.m, e.tcs, e.x, torch.tensor([1, 2]), batch_size=0), VE, "batch_size"),
    Case(F.measure_transcoders, "two images", lambda e: F.measure_transcoders(e.m, e.tcs, e.x, torch.tensor([1, 2])),
         lambda r: r["images"] == 2 and all(0 <= r[k] <= 1 for k in ("accuracy", "accuracy_all_replaced")) and r["conv2/tc"]["fvu"] >= 0,
         "accuracies in [0, 1], FVU >= 0"),
    Case(F.build_transcoders, "no blocks", lambda e: F.build_transcoders(e.m, []), VE, "blocks"),
    Case(F.build_transcoders, "an unknown layer", lambda e: F.build_transcoders(e.m, [("pool1", "conv9", "x_tc", F.TranscoderConfig())]), UnknownLayerError, "conv9"),
    Case(F.build_transcoders, "a dict instead of a TranscoderConfig", lambda e: F.build_transcoders(e.m, [("pool1", "pool2", "x_tc", {})]), TE, "config"),
    Case(F.feature_feature_weights, "blocks in the wrong order", lambda e: F.feature_feature_weights(e.tc2, e.tc1), VE, "downstream"),
    Case(F.feature_feature_weights, "a string upstream", lambda e: F.feature_feature_weights("conv1/tc", e.tc2), TE, "upstream"),
    Case(F.feature_feature_weights, "conv1 -> conv2", lambda e: F.feature_feature_weights(e.tc1, e.tc2), is_tensor_shape(128, 64, 6, 6), "finite (128, 64, 6, 6)"),
    Case(F.feature_logit_weights_tc, "a string instead of a transcoder", lambda e: F.feature_logit_weights_tc(e.m, "conv2/tc"), TE, "last"),
    Case(F.feature_logit_weights_tc, "a transcoder for another model", lambda e: F.feature_logit_weights_tc(e.bn, e.tc2), VE, "last"),
    Case(F.sparsity_comparison, "no transcoders", lambda e: F.sparsity_comparison(e.m, []), VE, "transcoders"),
    Case(F.sparsity_comparison, "blocks in the wrong order", lambda e: F.sparsity_comparison(e.m, [e.tc2, e.tc1]), VE, "transcoders"),
    Case(F.sparsity_comparison, "transcoders for another model", lambda e: F.sparsity_comparison(e.bn, e.tcs), VE, "transcoders"),
    Case(F.top_connections, "n 0", lambda e: F.top_connections(torch.rand(3, 4), n=0), VE, "n"),
    Case(F.top_connections, "a 1-D tensor", lambda e: F.top_connections(torch.rand(4)), VE, "weights"),
    Case(F.top_connections, "a NaN weight", lambda e: F.top_connections(torch.tensor([[1.0, float("nan")]])), NF, "weights"),
    Case(F.top_connections, "a known matrix", lambda e: F.top_connections(torch.tensor([[0.1, -3.0, 2.0]]), n=2),
         lambda r: r == [[{"index": [1], "weight": -3.0}, {"index": [2], "weight": 2.0}]], "the two largest |weights|"),
    Case(F.attribution_graph, "a NaN pixel", lambda e: F.attribution_graph(e.m, e.tcs, e.nan[0], 3), NF, "image"),
    Case(F.attribution_graph, "target 10 of 10 logits", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], 10), IE, "target"),
    Case(F.attribution_graph, "blocks in the wrong order", lambda e: F.attribution_graph(e.m, [e.tc2, e.tc1], e.x[0], 3), VE, "transcoders"),
    Case(F.attribution_graph, "transcoders for another model", lambda e: F.attribution_graph(e.bn, e.tcs, e.x[0], 3), VE, "transcoders"),
    Case(F.attribution_graph, "two images", lambda e: F.attribution_graph(e.m, e.tcs, e.x, 3), VE, "image"),
    Case(F.attribution_graph, "the mixed-mode model", lambda e: _graph(e).sum_rule_residual(), lambda r: r < 1e-6, "sum rule holds (< 1e-6)"),
    Case(F.measure_interventions, "a pixel node", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), [0]), VE, "node_ids"),
    Case(F.measure_interventions, "a node id past the end", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), [10 ** 6]), VE, "node_ids"),
    Case(F.measure_interventions, "a NaN image", lambda e: F.measure_interventions(e.m, e.tcs, e.nan[0], _graph(e), [_feature_node(e)]), NF, "image"),
    Case(F.measure_interventions, "the conv2 transcoder alone (the graph's chain is two)", lambda e: F.measure_interventions(
        e.m, [e.tc2], e.x[0], _graph(e), [_feature_node(e)]), VE, "graph"),
    Case(F.intervention_check, "top 0", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 4], top=0), VE, "top"),
    Case(F.intervention_check, "3 targets for 2 images", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 4, 5]), VE, "targets"),
    Case(F.intervention_check, "uint8 images", lambda e: F.intervention_check(e.m, e.tcs, (e.x * 255).byte(), [3, 4]), VE, "images"),
    Case(F.intervention_check, "one image, top 3 (mixed-mode model)", lambda e: F.intervention_check(e.m, e.tcs, e.x1, [3], top=3),
         lambda r: r["cases"] == 3 and r["graphs"] == 1 and r["sign_agreement"] >= 0, "3 measured cases"),
    # ------------------------------------------------------------------ display and model folders
    Case(vi.display.show, "a string", lambda e: vi.display.show("conv2"), TE, "display"),
    Case(vi.display.show, "a batch of images", lambda e: vi.display.show(e.x), lambda r: "<img" in r._repr_html_(), "HTML with pictures"),
    Case(U.seed_models_dir, "a seed that is not an integer", lambda e: U.seed_models_dir(["a"]), TE, "seed"),
]


def _area_modules() -> list[Any]:
    """The area files ``tests/hostile_cases_*.py``, sorted by name: each adds its ``CASES`` here."""
    return [importlib.import_module(p.stem) for p in sorted(Path(__file__).parent.glob("hostile_cases_*.py"))]


for _area in _area_modules():
    CASES += _area.CASES


def _junk(e: SimpleNamespace, name: str) -> Path:
    p = e.tmp / name
    p.write_bytes(b"this is not a valid file of any kind\n")
    return p


def _moved(tc: Any, in_layer: str) -> Any:
    """The same transcoder claiming another block input (a transcoder for another block)."""
    import dataclasses

    return dataclasses.replace(tc, in_layer=in_layer)


def _tc_file(e: SimpleNamespace, kind: str) -> Path:
    """A transcoder file pair with one fault: the wrong tensor names, a decoder of the wrong shape, or k > n_features."""
    import json

    from safetensors.torch import save_file

    base = e.tmp / f"tc_{kind}"
    sd = {k: v.clone().contiguous() for k, v in e.tc2.module.state_dict().items()}
    card = {k: v for k, v in e.tc2.card.items() if isinstance(v, (int, float, str, list, dict))}
    if kind == "wrong_keys":
        sd["encoder"] = sd.pop("W_enc")
    elif kind == "bad_decoder":
        sd["W_dec"] = sd["W_dec"][:, :-1].contiguous()
    elif kind == "bad_k":
        card["k"] = card["n_features"] + 1
    save_file(sd, str(base.with_suffix(".safetensors")))
    base.with_suffix(".json").write_text(json.dumps(card))
    return base


def _round_trip(e: SimpleNamespace) -> bool:
    F.save_transcoder(e.tc2, e.tmp / "tc_round_trip")
    back = F.load_transcoder(e.tmp / "tc_round_trip")
    same = all(torch.equal(v, back.module.state_dict()[k]) for k, v in e.tc2.module.state_dict().items())
    return same and (back.in_layer, back.out_layer, back.block) == (e.tc2.in_layer, e.tc2.out_layer, e.tc2.block)


@torch.no_grad()
def _replaced_logits(e: SimpleNamespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits with both blocks replaced, the model's own, and the model's own after leaving the block."""
    own = e.m(e.x)
    with F.replaced(e.m, e.tcs):
        rep = e.m(e.x)
    return rep, own, e.m(e.x)


def _attached_shape(e: SimpleNamespace) -> tuple[int, ...]:
    with F.attached_transcoder(e.m, e.tc2):
        return tuple(vi.capture(e.m, e.x, "conv2/tc")["conv2/tc"].shape)


def _graph(e: SimpleNamespace) -> Any:
    """One graph of the first image for logit 3, built once per module."""
    if not hasattr(e, "graph"):
        e.graph = F.attribution_graph(e.m, e.tcs, e.x[0], 3)
    return e.graph


def _feature_node(e: SimpleNamespace) -> int:
    return next(i for i, n in enumerate(_graph(e).nodes) if n["kind"] == "feature")


def _models(e: SimpleNamespace) -> dict[str, nn.Module]:
    return {"mnist": e.m, "bn": e.bn, "gpt2": e.gpt}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case, env: SimpleNamespace) -> None:
    before = {k: full_state(m) for k, m in _models(env).items()}
    grad_before = torch.is_grad_enabled()
    if isinstance(case.expect, type):
        with pytest.raises(case.expect) as info:
            case.call(env)
        assert case.names.lower() in str(info.value).lower(), f"{case.id}: message does not name {case.names!r}: {info.value}"
    else:
        result = case.call(env)
        assert case.expect(result), f"{case.id}: wrong result {result!r}"
    assert torch.is_grad_enabled() == grad_before
    for k, m in _models(env).items():
        assert_same_state(before[k], full_state(m), f"{case.id} ({k})")


def _public_functions() -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    for name in PACKAGES:
        mod = importlib.import_module(name)
        for attr in mod.__all__:
            obj = getattr(mod, attr)
            if inspect.isfunction(obj):
                obj = inspect.unwrap(obj)
                out.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return out


def test_every_public_function_has_a_case() -> None:
    covered = {f"{inspect.unwrap(c.fn).__module__}.{inspect.unwrap(c.fn).__qualname__}" for c in CASES}
    missing = sorted(set(_public_functions()) - covered)
    assert not missing, f"public functions without a hostile case in tests/test_api_hostile.py: {', '.join(missing)}"
    assert len(CASES) >= 100


def docs_table() -> str:
    rows = ["# Python API: hostile input and what happens",
            "",
            "Generated from `tests/test_api_hostile.py` (`VI_WRITE_DOCS=1 pytest tests/test_api_hostile.py -k docs` rewrites it;",
            "the test fails when this file and the cases differ). Every case also checks that the models it may touch",
            "(a mixed train/eval MNIST CNN, a BatchNorm/Dropout net, the toy GPT-2) come back exactly as they were:",
            "each module's mode, each parameter's `requires_grad` and value, every buffer, every hook, and the grad mode.",
            "",
            "Rules behind these outcomes (see `vision_interp/checks.py` and `vision_interp/model_state.py`):",
            "",
            "- Arguments are checked before any work; errors start with the argument's name and subclass `ValueError`",
            "  or `TypeError` (`checks.InputError`, `checks.InputTypeError`, `checks.NonFiniteError`, `checks.FileContentError`).",
            "- Images are floating point, finite, in [0, 1]; other float precisions are converted to the model's dtype.",
            "- Methods that run a model run it in eval mode on the caller's behalf and restore every module's own mode,",
            "  every parameter's `requires_grad` and the grad mode afterwards, also after an exception or KeyboardInterrupt.",
            "- One toolkit call uses a model at a time: a second thread waits for the first (both results correct) and",
            "  raises `model_state.ModelBusyError` after `model_state.WAIT_SECONDS`.",
            "",
            f"{len(CASES)} cases over {len(_public_functions())} public functions.",
            "",
            "| function | hostile input | outcome |",
            "|---|---|---|"]
    for c in CASES:
        fn = inspect.unwrap(c.fn)
        mod = fn.__module__.replace("vision_interp.", "")
        rows.append(f"| `{mod}.{fn.__name__}` | {c.what.replace('|', '/')} | {c.outcome.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def test_docs_table_is_current() -> None:
    text = docs_table()
    if os.environ.get("VI_WRITE_DOCS"):
        DOC.write_text(text, encoding="utf-8")
    assert DOC.is_file() and DOC.read_text(encoding="utf-8") == text, \
        "docs/api_errors.md is out of date: run VI_WRITE_DOCS=1 pytest tests/test_api_hostile.py -k docs"


# ------------------------------------------------------------------------ shared use (real threads)


def _net() -> nn.Module:
    torch.manual_seed(3)
    return _mixed(Z.mnist_cnn(pretrained=True), "conv2")


def test_two_threads_capture_get_their_own_activations() -> None:
    m = _net()
    gen = torch.Generator().manual_seed(5)
    inputs = [torch.rand(4, 1, 28, 28, generator=gen) for _ in range(2)]
    expected = [vi.capture(m, x, "conv2", detach=True)["conv2"] for x in inputs]
    before = full_state(m)
    errors: list[BaseException] = []
    wrong = []

    def worker(i: int) -> None:
        try:
            for _ in range(15):
                got = vi.capture(m, inputs[i], "conv2", detach=True)["conv2"]
                if not torch.equal(got, expected[i]):
                    wrong.append(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong
    assert_same_state(before, full_state(m), "two capture threads")


def test_render_and_capture_in_two_threads_leave_the_model_as_it_was() -> None:
    m = _net()
    before = full_state(m)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    expected = vi.capture(m, x, "conv2", detach=True)["conv2"]
    out: dict[str, Any] = {}

    def render() -> None:
        out["render"] = vi.render(m, "conv2:1", "fast-small", steps=8, progress=False)

    def cap() -> None:
        out["capture"] = [torch.equal(vi.capture(m, x, "conv2", detach=True)["conv2"], expected) for _ in range(10)]

    threads = [threading.Thread(target=render), threading.Thread(target=cap)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out["capture"]) and out["render"].images.shape[0] == 1
    assert_same_state(before, full_state(m), "render + capture threads")  # no parameter left frozen


def test_busy_model_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    m = _net()
    monkeypatch.setattr(model_state, "WAIT_SECONDS", 0.2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with model_state.using(m, what="a long job"):
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10)
        start = time.perf_counter()
        with pytest.raises(model_state.ModelBusyError, match="a long job"):
            vi.capture(m, torch.rand(1, 1, 28, 28), "conv2")
        assert time.perf_counter() - start < 5
    finally:
        release.set()
        t.join()
    vi.capture(m, torch.rand(1, 1, 28, 28), "conv2")  # free again afterwards


def test_state_restored_after_keyboard_interrupt() -> None:
    m = _net()
    before = full_state(m)

    def interrupt(_m, _i, _o):
        raise KeyboardInterrupt

    handle = m.conv2.register_forward_hook(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            vi.render(m, "conv2:1", "fast-small", steps=2, progress=False)
        with pytest.raises(KeyboardInterrupt):
            vi.attribute(m, torch.rand(1, 1, 28, 28), 3, "saliency")
    finally:
        handle.remove()
    assert_same_state(before, full_state(m), "after KeyboardInterrupt")


def test_abandoned_generator_does_not_hold_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """capture_dataset holds the model per batch only: breaking out of the loop leaves it free for other threads."""
    m = _net()
    monkeypatch.setattr(model_state, "WAIT_SECONDS", 0.5)
    loop = vi.capture_dataset(m, torch.rand(4, 1, 28, 28), "conv2", batch_size=1)
    next(loop)  # the caller stops after one batch and keeps the generator alive
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(vi.capture(m, torch.rand(1, 1, 28, 28), "conv2")["conv2"].shape))
    t.start()
    t.join()
    assert result == [torch.Size([1, 16, 14, 14])]


def test_nested_calls_in_one_thread_do_not_wait() -> None:
    """The model's lock is re-entrant: a toolkit call inside the caller's own hooks block runs at once."""
    m = _net()
    before = full_state(m)
    seen: list[int] = []
    with vi.hooks(m, {"conv1": lambda _m, _i, out: seen.append(out.shape[0])}):
        attr = vi.attribute(m, torch.rand(2, 1, 28, 28), 3, "saliency")
    assert attr.shape == (2, 1, 28, 28) and seen  # the caller's hook ran during the attribution
    assert_same_state(before, full_state(m), "nested calls")
