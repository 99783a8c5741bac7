"""Hostile input for the feature-visualization functions touched by issue 35: the default rule
(``default_preset``, ``default_settings``, ``model_defaults``, ``resolve_settings``), ``class_logit`` and the
batch index of every objective, and the checked arguments of ``render``, ``visualize`` and ``visualize_layer``.

``e.rgb`` is a small fixed-size RGB model with a Linear head (it takes its declared 20x20 only), the shape of
the trained third-party face model (MTCNN's ONet) without needing its package."""

from __future__ import annotations

import torch
from torch import nn

from vision_interp import featvis as V
from vision_interp.featvis import default_preset
from vision_interp.units import UnitRangeError, UnknownLayerError
from vision_interp.zoo.spec import ModelSpec

from hostile_support import Case, TE, VE


class FixedRGB(nn.Module):
    """20x20 RGB, a Linear head on the flattened map (so it cannot take a padded image), two named classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.spec = ModelSpec(input_shape=(3, 20, 20), class_names=("cat", "dog"))
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.PReLU(4)
        self.head = nn.Linear(4 * 18 * 18, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).flatten(1))


def extend_env(e) -> None:
    e.rgb = FixedRGB().eval()


def _logit_value(e, c) -> torch.Tensor:
    obj = V.class_logit(c)
    obj.check(e.rgb, (3, 20, 20), 2)
    return V.evaluate_objective(e.rgb, obj, torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)))


def _head_dog(e) -> torch.Tensor:
    with torch.no_grad():
        return e.rgb(torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)))[:, 1]


CASES: list[Case] = [
    # ------------------------------------------------------------------ the default rule
    Case(default_preset, "a string instead of a model", lambda e: default_preset("mnist_cnn"), TE, "model"),
    Case(default_preset, "input_shape of two values", lambda e: default_preset(e.m, (28, 28)), VE, "input_shape"),
    Case(default_preset, "input_shape as a string", lambda e: default_preset(e.m, "1,28,28"), TE, "input_shape"),
    Case(default_preset, "a float size in input_shape", lambda e: default_preset(e.m, (1, 28.5, 28)), TE, "input_shape[1]"),
    Case(default_preset, "a zero size in input_shape", lambda e: default_preset(e.m, (1, 0, 28)), VE, "input_shape[1]"),
    Case(default_preset, "the mixed-mode MNIST CNN", lambda e: default_preset(e.m)[0], lambda r: r == "fast-small", "'fast-small'"),
    Case(default_preset, "a fixed-size RGB model", lambda e: default_preset(e.rgb)[0], lambda r: r == "smooth-small", "'smooth-small'"),
    Case(V.default_settings, "input_shape with a bool", lambda e: V.default_settings(e.m, (True, 28, 28)), TE, "input_shape[0]"),
    Case(V.default_settings, "the size given, not declared (same as declared)",
         lambda e: V.default_settings(e.m, (1, 28, 28)) == V.default_settings(e.m), lambda r: r is True, "equal settings"),
    Case(V.model_defaults, "input_shape of four values", lambda e: V.model_defaults(e.m, (1, 1, 28, 28)), VE, "input_shape"),
    Case(V.resolve_settings, "a model that is a string", lambda e: V.resolve_settings("m", None, {}), TE, "model"),
    Case(V.resolve_settings, "settings of the wrong type", lambda e: V.resolve_settings(e.m, 3, {}), TE, "settings"),
    Case(V.resolve_settings, "overrides that are a list", lambda e: V.resolve_settings(e.m, None, [("steps", 3)]), TE, "overrides"),
    Case(V.resolve_settings, "an input_shape override of two values", lambda e: V.resolve_settings(e.m, None, {"input_shape": (28, 28)}),
         VE, "input_shape"),
    Case(V.resolve_settings, "input_shape override for a fixed-size RGB model without a spec",
         lambda e: V.resolve_settings(e.rgb, None, {"input_shape": (3, 20, 20)}).preset, lambda r: r == "smooth-small", "'smooth-small'"),
    Case(V.preset, "a name that is not a string", lambda e: V.preset(3), VE, "preset"),
    Case(V.preset, "an unknown field", lambda e: V.preset("lucid", stepz=3), TE, "stepz"),
    # ------------------------------------------------------------------ class_logit and batch indices
    Case(V.class_logit, "a float class 1.0", lambda e: V.class_logit(1.0), TE, "class"),
    Case(V.class_logit, "a bool class", lambda e: V.class_logit(True), TE, "class"),
    Case(V.class_logit, "a layer that is not a string", lambda e: V.class_logit(1, layer=3), TE, "layer"),
    Case(V.class_logit, "a float batch index", lambda e: V.class_logit(1, batch=1.5), TE, "batch"),
    Case(V.class_logit, "a negative batch index", lambda e: V.class_logit(1, batch=-1), VE, "batch"),
    Case(V.class_logit, "an unknown class name", lambda e: V.class_logit("cow").check(e.rgb, (3, 20, 20), 1), VE, "cow"),
    Case(V.class_logit, "a class past the logits", lambda e: V.class_logit(2).check(e.rgb, (3, 20, 20), 1), UnitRangeError, "0..1"),
    Case(V.class_logit, "an unknown logits layer", lambda e: V.class_logit(1, layer="fc9").check(e.m, (1, 28, 28), 1),
         UnknownLayerError, "fc9"),
    Case(V.class_logit, "a name from the spec, no declared logits layer (the model's output)",
         lambda e: torch.allclose(_logit_value(e, "dog"), _head_dog(e), atol=1e-5), lambda r: r is True, "equals the model's output"),
    Case(V.class_logit, "a class of the mixed-mode MNIST CNN, batch 1 of 2",
         lambda e: V.render(e.m, V.class_logit(3, batch=1), "fast-small", batch=2, steps=2, progress=False).values[0].item(),
         lambda r: r == 0.0, "image 0 not optimised"),
    Case(V.channel, "a float batch index", lambda e: V.channel("conv2:1", batch=0.5), TE, "batch"),
    Case(V.neuron, "a float batch index", lambda e: V.neuron("conv2:1", batch=1.0), TE, "batch"),
    Case(V.layer_l2, "a string batch index", lambda e: V.layer_l2("conv2", batch="0"), TE, "batch"),
    Case(V.direction, "a float batch index", lambda e: V.direction("conv2", [1.0] * 16, batch=0.5), TE, "batch"),
    Case(V.diversity, "a float group size", lambda e: V.diversity("conv2", 1.0, group_size=2.5), TE, "group_size"),
    Case(V.diversity, "a layer that is not a string", lambda e: V.diversity(2, 1.0), TE, "layer"),
    # ------------------------------------------------------------------ render / visualize arguments
    Case(V.render, "standard transforms on a fixed-size RGB model", lambda e: V.render(e.rgb, V.class_logit("dog"), "lucid", steps=2,
         progress=False), VE, "transforms='small'"),
    Case(V.render, "a float seed", lambda e: V.render(e.m, "conv2:1", "fast-small", seed=1.5, steps=2, progress=False), TE, "seed"),
    Case(V.render, "a float batch", lambda e: V.render(e.m, "conv2:1", "fast-small", batch=2.5, steps=2, progress=False), TE, "batch"),
    Case(V.render, "float thresholds", lambda e: V.render(e.m, "conv2:1", "fast-small", thresholds=[1.5], steps=2, progress=False),
         TE, "thresholds"),
    Case(V.render, "thresholds that are a number", lambda e: V.render(e.m, "conv2:1", "fast-small", thresholds=3, steps=2, progress=False),
         TE, "thresholds"),
    Case(V.render, "on_step that is not callable", lambda e: V.render(e.m, "conv2:1", "fast-small", on_step=3, steps=2, progress=False),
         TE, "on_step"),
    Case(V.render, "a string instead of a model", lambda e: V.render("mnist_cnn", "conv2:1", steps=2, progress=False), TE, "model"),
    Case(V.render, "the default on a fixed-size RGB model (2 steps)",
         lambda e: V.render(e.rgb, V.class_logit("dog"), steps=2, progress=False).settings,
         lambda r: r["preset"] == "smooth-small" and r["transforms"] == "small", "'smooth-small', small transforms"),
    Case(V.visualize, "a float size", lambda e: V.visualize(e.m, "conv2:1", size=28.0, steps=2, progress=False), TE, "size"),
    Case(V.visualize, "a size of three values", lambda e: V.visualize(e.m, "conv2:1", size=(28, 28, 1), steps=2, progress=False), VE, "size"),
    Case(V.visualize, "a float steps", lambda e: V.visualize(e.m, "conv2:1", steps=2.5, progress=False), TE, "steps"),
    Case(V.visualize, "a float seed", lambda e: V.visualize(e.m, "conv2:1", steps=2, seed=0.5, progress=False), TE, "seed"),
    Case(V.visualize, "a string instead of a model", lambda e: V.visualize("m", "conv2:1", steps=2, progress=False), TE, "model"),
    Case(V.visualize_layer, "a float images_per_unit",
         lambda e: V.visualize_layer(e.m, "conv2", [1], diversity=1.0, images_per_unit=2.5, steps=2, progress=False), TE, "images_per_unit"),
    Case(V.visualize_layer, "a string diversity", lambda e: V.visualize_layer(e.m, "conv2", [1], diversity="1", steps=2, progress=False),
         TE, "diversity"),
    Case(V.visualize_layer, "a negative diversity", lambda e: V.visualize_layer(e.m, "conv2", [1], diversity=-1.0, steps=2, progress=False),
         VE, "diversity"),
    Case(V.visualize_layer, "negative that is a string", lambda e: V.visualize_layer(e.m, "conv2", [1], negative="yes", steps=2, progress=False),
         TE, "negative"),
    Case(V.visualize_layer, "a layer that is not a string", lambda e: V.visualize_layer(e.m, 2, [1], steps=2, progress=False), TE, "layer"),
    Case(V.visualize_layer, "a diversity_layer that is not a string",
         lambda e: V.visualize_layer(e.m, "conv2", [1], diversity=1.0, diversity_layer=3, steps=2, progress=False), TE, "diversity_layer"),
    Case(V.visualize_layer, "a float batch_size", lambda e: V.visualize_layer(e.m, "conv2", [1], batch_size=1.5, steps=2, progress=False),
         TE, "batch_size"),
    Case(V.visualize_layer, "a float seed", lambda e: V.visualize_layer(e.m, "conv2", [1], seed=2.5, steps=2, progress=False), TE, "seed"),
    Case(V.visualize_layer, "standard transforms on a fixed-size RGB model",
         lambda e: V.visualize_layer(e.rgb, "act", [0], "lucid", steps=2, progress=False), lambda r: r.images.shape == (1, 3, 20, 20),
         "the conv part takes the padded image: rendered"),
]
