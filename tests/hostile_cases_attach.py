"""Hostile input for the attachment contract (area "attach"): attach / attached / attach_transcoder /
attached_transcoder / detach / replaced / check_transcoder(s) / train_transcoder / TranscoderConfig /
SAEConfig / measure_transcoders / load/save_transcoder / dictionary functions / feature_gradients /
relu_follows / nmf_baseline. Every call runs through :func:`_keeps`, which fails the case when the
caller's transcoders or dictionary changed (weights, dtype, device, gradient mode, requires_grad,
card); the shared suite checks the models."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from types import SimpleNamespace
from typing import Any, Callable

import torch

import vision_interp as vi
from vision_interp import features as F
from vision_interp.features.transcoder import ConvTranscoder, block_geometry
from vision_interp.features.transcoders import Transcoder, block_window
from vision_interp.units import UnknownLayerError

from hostile_support import NF, TE, VE, Case


def _state(obj: Any) -> tuple:
    m = obj.module
    return (tuple((k, v.dtype, v.device, v.clone()) for k, v in m.state_dict().items()), getattr(m, "gradient", None),
            m.training, tuple(p.requires_grad for p in m.parameters()), json.dumps(obj.card, sort_keys=True, default=str),
            getattr(obj, "in_layer", None), getattr(obj, "out_layer", None), getattr(obj, "block", None), obj.layer if hasattr(obj, "layer") else None)


def _same(a: tuple, b: tuple) -> bool:
    (sa, *ra), (sb, *rb) = a, b
    return len(sa) == len(sb) and all(x[:3] == y[:3] and torch.equal(x[3], y[3]) for x, y in zip(sa, sb)) and ra == rb


def _keeps(call: Callable[[SimpleNamespace], Any]) -> Callable[[SimpleNamespace], Any]:
    """``call``, failing when the caller's transcoders or dictionary are not exactly as before (also after an error)."""
    def run(e: SimpleNamespace) -> Any:
        objs = {"tc1": e.tc1, "tc2": e.tc2, "d": e.d}
        before = {k: _state(o) for k, o in objs.items()}
        try:
            return call(e)
        finally:
            changed = [k for k, o in objs.items() if not _same(before[k], _state(o))]
            assert not changed, f"the caller's {', '.join(changed)} changed"
    return run


def _edited_tc(e: SimpleNamespace, tag: str, **changes: Any) -> Transcoder:
    src = F.FEATURES_DIR / "mnist_cnn_conv2_tc"
    dst = e.tmp / f"attach_{tag}"
    shutil.copy(src.with_suffix(".safetensors"), dst.with_suffix(".safetensors"))
    card = json.loads(src.with_suffix(".json").read_text())
    card.update(changes)
    dst.with_suffix(".json").write_text(json.dumps(card))
    return F.load_transcoder(dst)


def extend_env(e: SimpleNamespace) -> None:
    e.m64 = copy.deepcopy(e.m).double()
    e.shifted = _edited_tc(e, "shifted", pad=[1, 3, 2, 2])  # same sizes, windows one pixel off
    e.relabelled = _edited_tc(e, "relabelled", in_layer="relu1", out_layer="relu2")  # same channels and map sizes
    shape_in, shape_out = vi.layer_shape(e.m, "relu1"), vi.layer_shape(e.m, "pool2")
    geometry = block_geometry(block_window(e.m, "relu1", "pool2"), shape_in[1:], shape_out[1:])
    e.overlap = Transcoder(ConvTranscoder(8, 16, 4, 2, *geometry).eval(), "relu1", "pool2", "conv2", {})  # shares pool1
    e.ytrue = torch.tensor([7, 2])


def _attach_float64(e: SimpleNamespace) -> tuple:
    with F.attached(e.m64, e.d) as a:
        got = (a.module.W_enc.dtype, e.d.module.W_enc.dtype, a.module is e.d.module)
    return got + (F.attached_features(e.m64),)


def _attach_tc_float64_then_measure(e: SimpleNamespace) -> tuple:
    with F.attached_transcoder(e.m64, e.tc2, gradient="linear") as a:
        dtype = vi.capture(e.m64, e.x.double(), [a.name])[a.name].dtype
    measured = F.measure_transcoders(e.m64, [e.tc2], e.x, e.ytrue)
    return dtype, e.tc2.module.W_enc.dtype, e.tc2.module.gradient, measured["conv2/tc"]["fvu"] >= 0


def _twice(e: SimpleNamespace) -> Any:
    a = F.attach_transcoder(e.m, e.tc2)
    try:
        return F.attach_transcoder(e.m, e.tc2)
    finally:
        a.remove()


@torch.no_grad()
def _order(e: SimpleNamespace) -> bool:
    with F.replaced(e.m, [e.tc1, e.tc2]):
        a = e.m(e.x)
    with F.replaced(e.m, [e.tc2, e.tc1]):
        b = e.m(e.x)
    return bool(torch.equal(a, b))


def _gradients(e: SimpleNamespace) -> tuple:
    with F.attached_transcoder(e.m, e.tc2, gradient="linear") as a:
        with F.feature_gradients(e.m, "exact"):
            inside = a.gradient
        return inside, a.gradient


def _with_module(e: SimpleNamespace, module: Any) -> Transcoder:
    return dataclasses.replace(e.tc2, module=module)


CASES: list[Case] = [
    # ------------------------------------------------------------------ attach / attached
    Case(F.attach, "a string for the model", _keeps(lambda e: F.attach("mnist_cnn", e.d)), TE, "model"),
    Case(F.attach, "a string instead of a dictionary", _keeps(lambda e: F.attach(e.m, "dict")), TE, "dictionary"),
    Case(F.attach, "a Transcoder as the dictionary", _keeps(lambda e: F.attach(e.m, e.tc2)), TE, "dictionary"),
    Case(F.attach, "name 5 (an int)", _keeps(lambda e: F.attach(e.m, e.d, 5)), TE, "name"),
    Case(F.attach, "a name under another layer", _keeps(lambda e: F.attach(e.m, e.d, "conv1/sae")), VE, "name"),
    Case(F.attach, "layer 3 (an int)", _keeps(lambda e: F.attach(e.m, e.d, layer=3)), TE, "layer"),
    Case(F.attach, "an unknown layer", _keeps(lambda e: F.attach(e.m, e.d, layer="conv9")), UnknownLayerError, "conv9", arg="layer"),
    Case(F.attach, "mode 1", _keeps(lambda e: F.attach(e.m, e.d, mode=1)), TE, "mode"),
    Case(F.attach, "mode 'rewrite'", _keeps(lambda e: F.attach(e.m, e.d, mode="rewrite")), VE, "mode"),
    Case(F.attach, "gradient 'relu'", _keeps(lambda e: F.attach(e.m, e.d, gradient="relu")), VE, "gradient"),
    Case(F.attach, "gradient None", _keeps(lambda e: F.attach(e.m, e.d, gradient=None)), TE, "gradient"),
    Case(F.attach, "check 'yes'", _keeps(lambda e: F.attach(e.m, e.d, check="yes")), TE, "check"),
    Case(F.attach, "a float64 model (dictionary copied)", _keeps(_attach_float64),
         lambda r: r == (torch.float64, torch.float32, False, {}), "the attached copy is float64, the caller's stays float32",
         arg="model, dictionary"),
    Case(F.attached, "a string for the model", _keeps(lambda e: F.attached("m", e.d).__enter__()), TE, "model"),
    Case(F.attached, "an int instead of a dictionary", _keeps(lambda e: F.attached(e.m, 3).__enter__()), TE, "dictionary"),
    Case(F.attached, "a name suffix with a dot", _keeps(lambda e: F.attached(e.m, e.d, "conv2/a.b").__enter__()), VE, "name"),
    Case(F.attached, "layer 3 (an int)", _keeps(lambda e: F.attached(e.m, e.d, layer=3).__enter__()), TE, "layer"),
    Case(F.attached, "mode 2", _keeps(lambda e: F.attached(e.m, e.d, mode=2).__enter__()), TE, "mode"),
    Case(F.attached, "gradient 'straight'", _keeps(lambda e: F.attached(e.m, e.d, gradient="straight").__enter__()), VE, "gradient"),
    Case(F.attached, "check 0", _keeps(lambda e: F.attached(e.m, e.d, check=0).__enter__()), TE, "check"),
    # ------------------------------------------------------------------ attach_transcoder / attached_transcoder / detach
    Case(F.attach_transcoder, "a string for the model", _keeps(lambda e: F.attach_transcoder("mnist_cnn", e.tc2)), TE, "model"),
    Case(F.attach_transcoder, "a Dictionary instead of a transcoder", _keeps(lambda e: F.attach_transcoder(e.m, e.d)), TE, "tc"),
    Case(F.attach_transcoder, "mode 'splice' (not for transcoders)", _keeps(lambda e: F.attach_transcoder(e.m, e.tc2, mode="splice")), VE, "mode"),
    Case(F.attach_transcoder, "mode 3", _keeps(lambda e: F.attach_transcoder(e.m, e.tc2, mode=3)), TE, "mode"),
    Case(F.attach_transcoder, "gradient 'relu'", _keeps(lambda e: F.attach_transcoder(e.m, e.tc2, gradient="relu")), VE, "gradient"),
    Case(F.attach_transcoder, "gradient 1", _keeps(lambda e: F.attach_transcoder(e.m, e.tc2, gradient=1)), TE, "gradient"),
    Case(F.attach_transcoder, "the same transcoder twice", _keeps(_twice), VE, "already attached", arg="tc"),
    Case(F.attach_transcoder, "a transcoder with a shifted padding", _keeps(lambda e: F.attach_transcoder(e.m, e.shifted)), VE, "padding", arg="tc"),
    Case(F.attach_transcoder, "a float64 model, then measure_transcoders", _keeps(_attach_tc_float64_then_measure),
         lambda r: r == (torch.float64, torch.float32, "exact", True), "float64 features; the caller's transcoder unchanged; measuring works",
         arg="model, tc"),
    Case(F.attached_transcoder, "a string for the model", _keeps(lambda e: F.attached_transcoder("m", e.tc2).__enter__()), TE, "model"),
    Case(F.attached_transcoder, "an int instead of a transcoder", _keeps(lambda e: F.attached_transcoder(e.m, 5).__enter__()), TE, "tc"),
    Case(F.attached_transcoder, "mode None", _keeps(lambda e: F.attached_transcoder(e.m, e.tc2, mode=None).__enter__()), TE, "mode"),
    Case(F.attached_transcoder, "gradient 'straight'", _keeps(lambda e: F.attached_transcoder(e.m, e.tc2, gradient="straight").__enter__()),
         VE, "gradient"),
    Case(F.attached_transcoder, "a relabelled block (relu1 -> relu2)", _keeps(lambda e: F.attached_transcoder(e.m, e.relabelled).__enter__()),
         VE, "kernel", arg="tc"),
    Case(F.detach, "a string for the model", _keeps(lambda e: F.detach("m")), TE, "model"),
    Case(F.detach, "name 5 (an int)", _keeps(lambda e: F.detach(e.m, 5)), TE, "name"),
    Case(F.detach, "a name never attached", _keeps(lambda e: F.detach(e.m, "conv2/tc")), VE, "name"),
    Case(F.detach, "everything, with nothing attached", _keeps(lambda e: F.detach(e.m)), lambda r: r == [], "[]", arg="model"),
    # ------------------------------------------------------------------ feature_gradients
    Case(F.feature_gradients, "a string for the model", _keeps(lambda e: F.feature_gradients("m", "exact").__enter__()), TE, "model"),
    Case(F.feature_gradients, "mode 'relu'", _keeps(lambda e: F.feature_gradients(e.m, "relu").__enter__()), VE, "mode"),
    Case(F.feature_gradients, "mode 1", _keeps(lambda e: F.feature_gradients(e.m, 1).__enter__()), TE, "mode"),
    Case(F.feature_gradients, "exact inside, the attachment's own mode after", _keeps(_gradients),
         lambda r: r == ("exact", "linear"), "('exact', 'linear')", arg="model, mode"),
    # ------------------------------------------------------------------ replaced
    Case(F.replaced, "a string for the model", _keeps(lambda e: F.replaced("m", e.tcs).__enter__()), TE, "model"),
    Case(F.replaced, "a string instead of the list", _keeps(lambda e: F.replaced(e.m, "conv2/tc").__enter__()), TE, "transcoders"),
    Case(F.replaced, "an int in the list", _keeps(lambda e: F.replaced(e.m, [e.tc2, 5]).__enter__()), TE, "transcoders[1]"),
    Case(F.replaced, "the same block twice", _keeps(lambda e: F.replaced(e.m, [e.tc1, e.tc1]).__enter__()), VE, "second transcoder",
         arg="transcoders"),
    Case(F.replaced, "overlapping blocks", _keeps(lambda e: F.replaced(e.m, [e.tc1, e.overlap]).__enter__()), VE, "overlaps",
         arg="transcoders"),
    Case(F.replaced, "a shifted padding", _keeps(lambda e: F.replaced(e.m, [e.shifted]).__enter__()), VE, "padding", arg="transcoders"),
    Case(F.replaced, "[tc2, tc1] vs [tc1, tc2]", _keeps(_order), lambda r: r is True, "identical logits", arg="transcoders"),
    # ------------------------------------------------------------------ check_transcoder(s)
    Case(F.check_transcoder, "a string instead of a transcoder", _keeps(lambda e: F.check_transcoder("conv2/tc")), TE, "tc"),
    Case(F.check_transcoder, "a string for the model", _keeps(lambda e: F.check_transcoder(e.tc2, "mnist_cnn")), TE, "model"),
    Case(F.check_transcoder, "arg 5 (an int)", _keeps(lambda e: F.check_transcoder(e.tc2, e.m, 5)), TE, "arg"),
    Case(F.check_transcoder, "a module that is not a ConvTranscoder", _keeps(lambda e: F.check_transcoder(_with_module(e, torch.nn.Linear(2, 2)))),
         TE, "tc.module"),
    Case(F.check_transcoder, "a card's padding shifted (same map sizes)", _keeps(lambda e: F.check_transcoder(e.shifted, e.m)), VE, "padding",
         arg="tc"),
    Case(F.check_transcoder, "a block relabelled relu1 -> relu2 (same channels and sizes)",
         _keeps(lambda e: F.check_transcoder(e.relabelled, e.m)), VE, "kernel", arg="tc"),
    Case(F.check_transcoder, "layers changed on the object, not on its card",
         _keeps(lambda e: F.check_transcoder(dataclasses.replace(e.tc2, in_layer="relu1", out_layer="relu2"), e.m)), VE, "card", arg="tc"),
    Case(F.check_transcoder, "a card recording other block layers",
         _keeps(lambda e: F.check_transcoder(dataclasses.replace(e.tc2, card={**e.tc2.card, "block_layers": [["conv2", "Conv2d"]]}), e.m)),
         VE, "layers", arg="tc"),
    Case(F.check_transcoder, "the committed conv2 transcoder", _keeps(lambda e: F.check_transcoder(e.tc2, e.m)), lambda r: r is not None,
         "accepted", arg="tc, model"),
    Case(F.check_transcoders, "one transcoder, not a list", _keeps(lambda e: F.check_transcoders(e.tc2)), TE, "transcoders"),
    Case(F.check_transcoders, "an empty list", _keeps(lambda e: F.check_transcoders([])), VE, "transcoders"),
    Case(F.check_transcoders, "a string in the list", _keeps(lambda e: F.check_transcoders([e.tc2, "x"])), TE, "transcoders[1]"),
    Case(F.check_transcoders, "model 5", _keeps(lambda e: F.check_transcoders([e.tc2], 5)), TE, "model"),
    Case(F.check_transcoders, "arg None", _keeps(lambda e: F.check_transcoders([e.tc2], e.m, None)), TE, "arg"),
    Case(F.check_transcoders, "both committed transcoders", _keeps(lambda e: F.check_transcoders(e.tcs, e.m)), lambda r: len(r) == 2,
         "two transcoders", arg="transcoders, model"),
    # ------------------------------------------------------------------ train_transcoder / TranscoderConfig / SAEConfig
    Case(F.train_transcoder, "a string for the model", _keeps(lambda e: F.train_transcoder("m", "pool1", "pool2", e.x)), TE, "model"),
    Case(F.train_transcoder, "in_layer 3 (an int)", _keeps(lambda e: F.train_transcoder(e.m, 3, "pool2", e.x)), TE, "in_layer"),
    Case(F.train_transcoder, "an unknown out_layer", _keeps(lambda e: F.train_transcoder(e.m, "pool1", "conv9", e.x)), UnknownLayerError,
         "conv9", arg="out_layer"),
    Case(F.train_transcoder, "out_layer before in_layer", _keeps(lambda e: F.train_transcoder(e.m, "pool2", "pool1", e.x)), VE, "feed",
         arg="in_layer, out_layer"),
    Case(F.train_transcoder, "block 5 (an int)", _keeps(lambda e: F.train_transcoder(e.m, "pool1", "pool2", e.x, block=5)), TE, "block"),
    Case(F.train_transcoder, "a block outside the block", _keeps(lambda e: F.train_transcoder(e.m, "pool1", "pool2", e.x, block="conv1")),
         VE, "block"),
    Case(F.train_transcoder, "data 5", _keeps(lambda e: F.train_transcoder(e.m, "pool1", "pool2", e.x, data=5)), TE, "data"),
    Case(F.train_transcoder, "progress 'yes'", _keeps(lambda e: F.train_transcoder(e.m, "pool1", "pool2", e.x, progress="yes")), TE, "progress"),
    Case(F.train_transcoder, "a list instead of images", _keeps(lambda e: F.train_transcoder(e.m, "pool1", "pool2", [1, 2])), TE, "images"),
    Case(F.train_transcoder, "two images, two steps", _keeps(lambda e: F.train_transcoder(
        e.m, "pool1", "pool2", e.x, F.TranscoderConfig(n_features=8, k=2, steps=2, batch_size=2), progress=False).card["block_layers"]),
         lambda r: r == [["conv2", "Conv2d"], ["relu2", "ReLU"], ["pool2", "MaxPool2d"]], "the card records conv2, relu2, pool2",
         arg="model, in_layer, out_layer, images, config"),
    Case(F.TranscoderConfig, "steps=2.5", lambda e: F.TranscoderConfig(steps=2.5), TE, "steps"),
    Case(F.TranscoderConfig, "n_features=0", lambda e: F.TranscoderConfig(n_features=0), VE, "n_features"),
    Case(F.TranscoderConfig, "k=True", lambda e: F.TranscoderConfig(k=True), TE, "k"),
    Case(F.TranscoderConfig, "k larger than n_features (validate)", lambda e: F.TranscoderConfig(n_features=4, k=5).validate(), VE, "k"),
    Case(F.TranscoderConfig, "skip=1", lambda e: F.TranscoderConfig(skip=1), TE, "skip"),
    Case(F.TranscoderConfig, "batch_size='32'", lambda e: F.TranscoderConfig(batch_size="32"), TE, "batch_size"),
    Case(F.TranscoderConfig, "lr=nan", lambda e: F.TranscoderConfig(lr=float("nan")), NF, "lr"),
    Case(F.TranscoderConfig, "lr=0", lambda e: F.TranscoderConfig(lr=0), VE, "lr"),
    Case(F.TranscoderConfig, "seed=-1", lambda e: F.TranscoderConfig(seed=-1), VE, "seed"),
    Case(F.TranscoderConfig, "aux_k=0", lambda e: F.TranscoderConfig(aux_k=0), VE, "aux_k"),
    Case(F.TranscoderConfig, "aux_coef=-1", lambda e: F.TranscoderConfig(aux_coef=-1), VE, "aux_coef"),
    Case(F.TranscoderConfig, "dead_after=1.5", lambda e: F.TranscoderConfig(dead_after=1.5), TE, "dead_after"),
    Case(F.SAEConfig, "steps=2.5", lambda e: F.SAEConfig(steps=2.5), TE, "steps"),
    Case(F.SAEConfig, "k=True", lambda e: F.SAEConfig(k=True), TE, "k"),
    Case(F.SAEConfig, "lr=-1", lambda e: F.SAEConfig(lr=-1.0), VE, "lr"),
    Case(F.SAEConfig, "batch_size=0", lambda e: F.SAEConfig(batch_size=0), VE, "batch_size"),
    # ------------------------------------------------------------------ measure_transcoders
    Case(F.measure_transcoders, "a string for the model", _keeps(lambda e: F.measure_transcoders("m", e.tcs, e.x, e.ytrue)), TE, "model"),
    Case(F.measure_transcoders, "one transcoder, not a list", _keeps(lambda e: F.measure_transcoders(e.m, e.tc2, e.x, e.ytrue)), TE,
         "transcoders"),
    Case(F.measure_transcoders, "overlapping blocks", _keeps(lambda e: F.measure_transcoders(e.m, [e.tc1, e.overlap], e.x, e.ytrue)), VE,
         "overlaps", arg="transcoders"),
    Case(F.measure_transcoders, "uint8 images", _keeps(lambda e: F.measure_transcoders(e.m, e.tcs, (e.x * 255).byte(), e.ytrue)), VE, "images"),
    Case(F.measure_transcoders, "float labels", _keeps(lambda e: F.measure_transcoders(e.m, e.tcs, e.x, torch.tensor([7.0, 2.0]))), VE, "labels"),
    Case(F.measure_transcoders, "bool labels", _keeps(lambda e: F.measure_transcoders(e.m, e.tcs, e.x, torch.tensor([True, False]))), VE,
         "labels"),
    Case(F.measure_transcoders, "batch_size 2.0", _keeps(lambda e: F.measure_transcoders(e.m, e.tcs, e.x, e.ytrue, batch_size=2.0)), TE,
         "batch_size"),
    # ------------------------------------------------------------------ load / save
    Case(F.load_transcoder, "an int instead of a name", _keeps(lambda e: F.load_transcoder(5)), TE, "name_or_path"),
    Case(F.load_transcoder, "an empty name", _keeps(lambda e: F.load_transcoder("")), VE, "name_or_path"),
    Case(F.save_transcoder, "out 5 (an int)", _keeps(lambda e: F.save_transcoder(e.tc2, 5)), TE, "out"),
    Case(F.save_transcoder, "a module that is not a ConvTranscoder", _keeps(lambda e: F.save_transcoder(_with_module(e, torch.nn.Linear(2, 2)),
                                                                                                     e.tmp / "tc_lin")), TE, "tc.module"),
    Case(F.load_dictionary, "an int instead of a name", _keeps(lambda e: F.load_dictionary(5)), TE, "name_or_path"),
    Case(F.save_dictionary, "out None", _keeps(lambda e: F.save_dictionary(e.d, None)), TE, "out"),
    Case(F.save_dictionary, "save, then load back", _keeps(lambda e: torch.equal(F.load_dictionary(F.save_dictionary(e.d, e.tmp / "d_rt")).module.W_dec,
                                                                                  e.d.module.W_dec)),
         lambda r: r is True, "identical decoder", arg="dictionary, out"),
    # ------------------------------------------------------------------ dictionaries
    Case(F.build_dictionary, "a string for the model", _keeps(lambda e: F.build_dictionary("m", "conv2", e.tmp / "bd")), TE, "model"),
    Case(F.build_dictionary, "layer 3 (an int)", _keeps(lambda e: F.build_dictionary(e.m, 3, e.tmp / "bd")), TE, "layer"),
    Case(F.build_dictionary, "out 5 (an int)", _keeps(lambda e: F.build_dictionary(e.m, "conv2", 5)), TE, "out"),
    Case(F.build_dictionary, "a dict instead of an SAEConfig", _keeps(lambda e: F.build_dictionary(e.m, "conv2", e.tmp / "bd", {"k": 2})), TE,
         "config"),
    Case(F.build_dictionary, "data_dir 5", _keeps(lambda e: F.build_dictionary(e.m, "conv2", e.tmp / "bd", data_dir=5)), TE, "data_dir"),
    Case(F.build_dictionary, "train_images 0", _keeps(lambda e: F.build_dictionary(e.m, "conv2", e.tmp / "bd", train_images=0)), VE,
         "train_images"),
    Case(F.build_dictionary, "test_images 2.5", _keeps(lambda e: F.build_dictionary(e.m, "conv2", e.tmp / "bd", test_images=2.5)), TE,
         "test_images"),
    Case(F.build_dictionary, "model_name 5", _keeps(lambda e: F.build_dictionary(e.m, "conv2", e.tmp / "bd", model_name=5)), TE, "model_name"),
    Case(F.build_dictionary, "progress 'no'", _keeps(lambda e: F.build_dictionary(e.m, "conv2", e.tmp / "bd", progress="no")), TE, "progress"),
    Case(F.publish_dictionary, "a string for the model", _keeps(lambda e: F.publish_dictionary("m", e.d, e.tmp / "pub")), TE, "model"),
    Case(F.publish_dictionary, "a string instead of a dictionary", _keeps(lambda e: F.publish_dictionary(e.m, "d", e.tmp / "pub")), TE,
         "dictionary"),
    Case(F.publish_dictionary, "out_dir 5", _keeps(lambda e: F.publish_dictionary(e.m, e.d, 5)), TE, "out_dir"),
    Case(F.publish_dictionary, "batch 0", _keeps(lambda e: F.publish_dictionary(e.m, e.d, e.tmp / "pub", batch=0)), VE, "batch"),
    Case(F.publish_dictionary, "data_dir 3", _keeps(lambda e: F.publish_dictionary(e.m, e.d, e.tmp / "pub", data_dir=3)), TE, "data_dir"),
    Case(F.publish_dictionary, "neuron_gallery 5", _keeps(lambda e: F.publish_dictionary(e.m, e.d, e.tmp / "pub", neuron_gallery=5)), TE,
         "neuron_gallery"),
    Case(F.publish_dictionary, "overwrite 'yes'", _keeps(lambda e: F.publish_dictionary(e.m, e.d, e.tmp / "pub", overwrite="yes")), TE,
         "overwrite"),
    Case(F.publish_dictionary, "progress 1", _keeps(lambda e: F.publish_dictionary(e.m, e.d, e.tmp / "pub", progress=1)), TE, "progress"),
    Case(F.publish_dictionary, "a dictionary with no measured card", _keeps(lambda e: F.publish_dictionary(e.m, e.d, e.tmp / "pub")), VE,
         "metrics", arg="dictionary"),
    Case(F.train_dictionary, "a string for the model", _keeps(lambda e: F.train_dictionary("m", "conv2", e.x)), TE, "model"),
    Case(F.train_dictionary, "layer 3 (an int)", _keeps(lambda e: F.train_dictionary(e.m, 3, e.x)), TE, "layer"),
    Case(F.train_dictionary, "a dict instead of an SAEConfig", _keeps(lambda e: F.train_dictionary(e.m, "conv2", e.x, {"k": 1})), TE, "config"),
    Case(F.train_dictionary, "data 5", _keeps(lambda e: F.train_dictionary(e.m, "conv2", e.x, data=5)), TE, "data"),
    Case(F.train_dictionary, "progress 'no'", _keeps(lambda e: F.train_dictionary(e.m, "conv2", e.x, progress="no")), TE, "progress"),
    Case(F.dictionary_from_directions, "a list instead of a tensor", lambda e: F.dictionary_from_directions([[1.0, 0.0]], "conv2", 1), TE,
         "directions"),
    Case(F.dictionary_from_directions, "a zero direction", lambda e: F.dictionary_from_directions(torch.zeros(3, 16), "conv2", 1), VE,
         "directions"),
    Case(F.dictionary_from_directions, "layer 5", lambda e: F.dictionary_from_directions(torch.rand(3, 16), 5, 1), TE, "layer"),
    Case(F.dictionary_from_directions, "k 2.0", lambda e: F.dictionary_from_directions(torch.rand(3, 16), "conv2", 2.0), TE, "k"),
    Case(F.dictionary_from_directions, "an encoder of the wrong shape", lambda e: F.dictionary_from_directions(
        torch.rand(3, 16), "conv2", 1, encoder=torch.rand(3, 15)), VE, "encoder"),
    Case(F.dictionary_from_directions, "a bias of the wrong shape", lambda e: F.dictionary_from_directions(
        torch.rand(3, 16), "conv2", 1, bias=torch.rand(4)), VE, "bias"),
    Case(F.layer_activations, "a string for the model", _keeps(lambda e: F.layer_activations("m", "conv2", e.x)), TE, "model"),
    Case(F.layer_activations, "layer 3 (an int)", _keeps(lambda e: F.layer_activations(e.m, 3, e.x)), TE, "layer"),
    Case(F.layer_activations, "batch_size 0", _keeps(lambda e: F.layer_activations(e.m, "conv2", e.x, batch_size=0)), VE, "batch_size"),
    Case(F.layer_samples, "a string for the model", _keeps(lambda e: F.layer_samples("m", "conv2", e.x)), TE, "model"),
    Case(F.layer_samples, "layer None", _keeps(lambda e: F.layer_samples(e.m, None, e.x)), TE, "layer"),
    Case(F.layer_samples, "a list instead of images", _keeps(lambda e: F.layer_samples(e.m, "conv2", [0.5])), TE, "images"),
    Case(F.as_samples, "a list instead of a tensor", lambda e: F.as_samples([[1.0]]), TE, "acts"),
    # ------------------------------------------------------------------ after-ReLU figures
    Case(F.relu_follows, "a string for the model", lambda e: F.relu_follows("m", "conv2"), TE, "model"),
    Case(F.relu_follows, "layer 3 (an int)", lambda e: F.relu_follows(e.m, 3), TE, "layer"),
    Case(F.relu_follows, "an unknown layer", lambda e: F.relu_follows(e.m, "conv9"), UnknownLayerError, "conv9", arg="layer"),
    Case(F.relu_follows, "conv2 (read only by relu2)", lambda e: F.relu_follows(e.m, "conv2")[0], lambda r: r is True, "True",
         arg="model, layer"),
    Case(F.relu_follows, "pool1 (read by conv2)", lambda e: F.relu_follows(e.m, "pool1")[0], lambda r: r is False, "False",
         arg="model, layer"),
    Case(F.nmf_baseline, "negative samples without after_relu", lambda e: F.nmf_baseline(torch.randn(20, 4), torch.rand(5, 4), 2), VE,
         "negative", arg="train, after_relu"),
    Case(F.nmf_baseline, "after_relu 'yes'", lambda e: F.nmf_baseline(torch.rand(20, 4), torch.rand(5, 4), 2, after_relu="yes"), TE,
         "after_relu"),
    Case(F.nmf_baseline, "max_train 0", lambda e: F.nmf_baseline(torch.rand(20, 4), torch.rand(5, 4), 2, max_train=0), VE, "max_train"),
    Case(F.nmf_baseline, "seed 1.5", lambda e: F.nmf_baseline(torch.rand(20, 4), torch.rand(5, 4), 2, seed=1.5), TE, "seed"),
    Case(F.nmf_baseline, "test of another width", lambda e: F.nmf_baseline(torch.rand(20, 4), torch.rand(5, 3), 2), VE, "test"),
]
