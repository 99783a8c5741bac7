"""Hostile input for attribution graphs, interventions, completeness, graph files and feature circuits
(area "graphs" of issue 35). Every call runs inside :func:`_same_tcs`, which fails the case when the caller's
transcoders (weights, dtype, device, gradient mode, requires_grad, card, layers) or dictionary come back changed;
the shared runner checks the models (tests/test_api_hostile.py)."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, Callable

import torch

from vision_interp import features as F
from vision_interp.features import tc_gallery, tc_report
from vision_interp.features.completeness import completeness, margins, mean_ablated_except, named_mask
from vision_interp.features.graph import AttributionGraph, GraphBuilder
from vision_interp.features.tc_circuits import sparsity
from vision_interp.features.tc_graph_io import graph_json, write_digit_graphs, write_graph
from vision_interp.units import UnitRangeError, UnknownLayerError

from hostile_support import IE, NF, TE, VE, Case


def _tc_state(tc: Any) -> tuple:
    m = tc.module
    return ({k: v.detach().clone() for k, v in m.state_dict().items()}, [(p.dtype, p.device, p.requires_grad) for p in m.parameters()],
            getattr(m, "gradient", None), m.training, copy.deepcopy(tc.card), (tc.in_layer, tc.out_layer, tc.block))


def _same(a: tuple, b: tuple) -> bool:
    return a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[1:] == b[1:]


def _same_tcs(fn: Callable[[SimpleNamespace], Any]) -> Callable[[SimpleNamespace], Any]:
    """``fn(e)``, then an AssertionError (which no case expects) if a transcoder or the dictionary changed."""
    def call(e: SimpleNamespace) -> Any:
        before = [_tc_state(tc) for tc in (e.tc1, e.tc2)]
        d_before = {k: v.detach().clone() for k, v in e.d.state_dict().items()} if hasattr(e.d, "state_dict") else None
        try:
            return fn(e)
        finally:
            after = [_tc_state(tc) for tc in (e.tc1, e.tc2)]
            assert all(_same(a, b) for a, b in zip(before, after)), "a caller's transcoder changed"
            if d_before is not None:
                assert all(torch.equal(v, e.d.state_dict()[k]) for k, v in d_before.items()), "the caller's dictionary changed"
    return call


def G(fn: Callable, what: str, call: Callable[[SimpleNamespace], Any], expect: Any, names: str = "", arg: str = "") -> Case:
    return Case(fn, what, _same_tcs(call), expect, names, arg)


def _graph(e: SimpleNamespace) -> AttributionGraph:
    """The two-block graph of the first image for logit 3 (built once)."""
    if not hasattr(e, "g_graph"):
        e.g_graph = F.attribution_graph(e.m, e.tcs, e.x[0], 3)
    return e.g_graph


def _hidden(e: SimpleNamespace) -> AttributionGraph:
    """The graph of the conv2 transcoder alone: its leaves are pool1's values."""
    if not hasattr(e, "g_hidden"):
        e.g_hidden = F.attribution_graph(e.m, [e.tc2], e.x[0], 3)
    return e.g_hidden


def _builder(e: SimpleNamespace) -> GraphBuilder:
    if not hasattr(e, "g_builder"):
        e.g_builder = GraphBuilder(e.m, e.tcs)
    return e.g_builder


def _feature(g: AttributionGraph, block: int | None = None) -> int:
    return next(i for i, n in enumerate(g.nodes) if n["kind"] == "feature" and (block is None or n["block"] == block))


def _last_block(g: AttributionGraph, block: int) -> list[int]:
    return [i for i, n in enumerate(g.nodes) if n["kind"] == "feature" and n["block"] == block]


def _removal_is_exact(e: SimpleNamespace) -> bool:
    """Removing last-block features of the hidden-layer graph: the MNIST head is affine, so measured = -total effect."""
    g = _hidden(e)
    ids = _last_block(g, 0)[:4]
    return torch.allclose(F.measure_interventions(e.m, [e.tc2], e.x[0], g, ids, 0.0), -g.total_effects()[ids], atol=1e-4)


def _predicted(e: SimpleNamespace) -> torch.Tensor:
    """The model's own predictions for e.x (computed on a copy: the shared model stays untouched)."""
    if not hasattr(e, "g_pred"):
        m = copy.deepcopy(e.m).eval()
        with torch.no_grad():
            e.g_pred = m(e.x).argmax(1)
    return e.g_pred


CLAUSES = [{"digit": 0, "channel": 4, "positions": [23, 26]}, {"digit": 1, "channel": 6, "positions": [24]}]


def _completeness(e: SimpleNamespace, **kw: Any) -> dict:
    return completeness(e.m, e.tcs, kw.pop("clauses", CLAUSES), kw.pop("images", e.x), kw.pop("labels", _predicted(e)),
                        **{"graph_images": 1, **kw})


def _write_twice(e: SimpleNamespace) -> tuple:
    out = e.tmp / "graph_twice"
    first = write_graph(e.m, e.tcs, e.x[0], 3, out, builder=_builder(e))
    second = write_graph(e.m, e.tcs, e.x[0], 3, out, builder=_builder(e))
    return first[1], second[1], (out / "graph.json").is_file()


def _json_edges(e: SimpleNamespace) -> bool:
    doc = graph_json(_graph(e), 0.8, max_edges=3)
    flows = [ed["flow"] for ed in doc["edges"]]
    return len(doc["edges"]) == 3 and flows == sorted(flows, reverse=True) and doc["edges_total"] > 3


def _te_last_block(e: SimpleNamespace) -> bool:
    """A last-block feature feeds only the logit: its total effect is its edge to the logit."""
    g = _graph(e)
    ids = _last_block(g, 1)
    return torch.allclose(g.total_effects()[ids], g.edges[g.logit_index, ids])


def _influence_ok(e: SimpleNamespace) -> bool:
    infl = _graph(e).influence()
    return infl.shape == (len(_graph(e).nodes),) and bool((infl >= 0).all()) and float(infl[-1]) == 0.0


CASES: list[Case] = [
    # ------------------------------------------------------------------ attribution_graph
    G(F.attribution_graph, "a model name instead of a model", lambda e: F.attribution_graph("mnist_cnn", e.tcs, e.x[0], 3), TE, "model"),
    G(F.attribution_graph, "one transcoder, not a list", lambda e: F.attribution_graph(e.m, e.tc2, e.x[0], 3), TE, "transcoders"),
    G(F.attribution_graph, "uint8 image", lambda e: F.attribution_graph(e.m, e.tcs, (e.x[0] * 255).byte(), 3), VE, "image"),
    G(F.attribution_graph, "a 3-channel image for a 1-channel model", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0].expand(3, -1, -1), 3), VE, "image"),
    G(F.attribution_graph, "target=3.0 (integral float)", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], 3.0), TE, "target"),
    G(F.attribution_graph, "target=3.7 (never truncated)", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], 3.7), TE, "target"),
    G(F.attribution_graph, "target=tensor(3.0)", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], torch.tensor(3.0)), TE, "target"),
    G(F.attribution_graph, "target=True", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], True), TE, "target"),
    G(F.attribution_graph, "target -1", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], -1), IE, "target"),
    G(F.attribution_graph, "target=tensor(3) (an integer tensor)", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], torch.tensor(3)).target,
      lambda r: r == 3, "target 3"),
    G(F.attribution_graph, "pixel_group 0", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], 3, pixel_group=0), VE, "pixel_group"),
    G(F.attribution_graph, "pixel_group 2.0", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], 3, pixel_group=2.0), TE, "pixel_group"),
    G(F.attribution_graph, "pixel_group larger than the image", lambda e: F.attribution_graph(e.m, e.tcs, e.x[0], 3, pixel_group=29), VE, "pixel_group"),
    G(F.attribution_graph, "the conv2 transcoder alone (a chain from pool1)", lambda e: (_hidden(e).sum_rule_residual(), _hidden(e).leaf_layer,
                                                                                     _hidden(e).kinds().count("activation")),
      lambda r: r[0] < 1e-9 and r[1] == "pool1" and r[2] == 196, "sum rule holds; 196 pool1 leaves"),
    # ------------------------------------------------------------------ GraphBuilder methods
    G(GraphBuilder.build, "target 2.5", lambda e: _builder(e).build(e.x[0], 2.5), TE, "target"),
    G(GraphBuilder.build, "an image of the wrong size", lambda e: _builder(e).build(torch.rand(1, 14, 14), 3), VE, "image"),
    G(GraphBuilder.build, "a NaN image", lambda e: _builder(e).build(e.nan[0], 3), NF, "image"),
    G(GraphBuilder.activations, "a uint8 input", lambda e: _builder(e).activations((e.x[:1] * 255).byte()), VE, "x"),
    G(GraphBuilder.activations, "one float32 image", lambda e: [t.shape for t in _builder(e).activations(e.x[:1])[1]],
      lambda r: r == [torch.Size([1, 8, 14, 14]), torch.Size([1, 16, 7, 7])], "block outputs (1, 8, 14, 14), (1, 16, 7, 7)", arg="x"),
    # ------------------------------------------------------------------ AttributionGraph methods
    G(AttributionGraph.prune, "threshold '0.8' (a string)", lambda e: _graph(e).prune("0.8"), TE, "threshold"),
    G(AttributionGraph.prune, "threshold 0", lambda e: _graph(e).prune(0), VE, "threshold"),
    G(AttributionGraph.prune, "threshold 1.5", lambda e: _graph(e).prune(1.5), VE, "threshold"),
    G(AttributionGraph.prune, "threshold NaN", lambda e: _graph(e).prune(float("nan")), NF, "threshold"),
    G(AttributionGraph.prune, "threshold 1: every node with influence", lambda e: _graph(e).prune(1.0)["kept_nodes"],
      lambda r: r >= 1, "at least one node kept", arg="threshold"),
    G(AttributionGraph.summary, "threshold None", lambda e: _graph(e).summary(None), TE, "threshold"),
    G(AttributionGraph.summary, "threshold True", lambda e: _graph(e).summary(True), TE, "threshold"),
    G(AttributionGraph.sum_rule_residual, "the two-block graph", lambda e: _graph(e).sum_rule_residual(), lambda r: r < 1e-9, "below 1e-9"),
    G(AttributionGraph.total_effects, "last-block features", _te_last_block, lambda r: r is True, "equal their edge to the logit"),
    G(AttributionGraph.influence, "the two-block graph", _influence_ok, lambda r: r is True, "non-negative, 0 for the logit"),
    G(AttributionGraph.kinds, "the hidden-layer graph", lambda e: sorted(set(_hidden(e).kinds())), lambda r: r == ["activation", "error", "feature", "logit"],
      "activation, error, feature, logit"),
    # ------------------------------------------------------------------ measure_interventions
    G(F.measure_interventions, "a model name", lambda e: F.measure_interventions("mnist", e.tcs, e.x[0], _graph(e), [_feature(_graph(e))]), TE, "model"),
    G(F.measure_interventions, "a string instead of transcoders", lambda e: F.measure_interventions(e.m, "conv2/tc", e.x[0], _graph(e), [1]), TE, "transcoders"),
    G(F.measure_interventions, "a dict instead of a graph", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], {"nodes": []}, [1]), TE, "graph"),
    G(F.measure_interventions, "node_ids [3.0]", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), [float(_feature(_graph(e)))]), TE, "node_ids"),
    G(F.measure_interventions, "node_ids as a float tensor", lambda e: F.measure_interventions(
        e.m, e.tcs, e.x[0], _graph(e), torch.tensor([float(_feature(_graph(e)))])), TE, "node_ids"),
    G(F.measure_interventions, "node_ids a string", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), "12"), VE, "node_ids"),
    G(F.measure_interventions, "node_ids empty", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), []), VE, "node_ids"),
    G(F.measure_interventions, "node_ids -1", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), [-1]), VE, "node_ids"),
    G(F.measure_interventions, "scale '0'", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), [_feature(_graph(e))], "0"), TE, "scale"),
    G(F.measure_interventions, "scale infinite", lambda e: F.measure_interventions(e.m, e.tcs, e.x[0], _graph(e), [_feature(_graph(e))], float("inf")), NF, "scale"),
    G(F.measure_interventions, "another image than the graph's", lambda e: F.measure_interventions(e.m, e.tcs, e.x[1], _graph(e), [_feature(_graph(e))]), VE, "image"),
    G(F.measure_interventions, "node ids as an integer tensor (hidden-layer graph, removal)", _removal_is_exact, lambda r: r is True,
      "measured = -total effect (affine head)", arg="node_ids, scale, image, graph, transcoders, model"),
    # ------------------------------------------------------------------ intervention_check
    G(F.intervention_check, "a model name", lambda e: F.intervention_check("mnist", e.tcs, e.x, [3, 4]), TE, "model"),
    G(F.intervention_check, "no transcoders", lambda e: F.intervention_check(e.m, [], e.x, [3, 4]), VE, "transcoders"),
    G(F.intervention_check, "one image (C, H, W) where a batch is needed", lambda e: F.intervention_check(e.m, e.tcs, e.x[0], [3]), VE, "images"),
    G(F.intervention_check, "targets [3.0, 4.0]", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3.0, 4.0]), TE, "targets"),
    G(F.intervention_check, "targets as a float tensor", lambda e: F.intervention_check(e.m, e.tcs, e.x, torch.tensor([3.0, 4.0])), TE, "targets"),
    G(F.intervention_check, "targets a string", lambda e: F.intervention_check(e.m, e.tcs, e.x, "34"), TE, "targets"),
    G(F.intervention_check, "target 10 of 10 logits", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 10]), IE, "targets"),
    G(F.intervention_check, "top 2.5", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 4], top=2.5), TE, "top"),
    G(F.intervention_check, "worst -1", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 4], worst=-1), VE, "worst"),
    G(F.intervention_check, "scale NaN", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 4], scale=float("nan")), NF, "scale"),
    G(F.intervention_check, "threshold 0", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 4], threshold=0), VE, "threshold"),
    G(F.intervention_check, "builder a string", lambda e: F.intervention_check(e.m, e.tcs, e.x, [3, 4], builder="b"), TE, "builder"),
    G(F.intervention_check, "a builder for another chain", lambda e: F.intervention_check(e.m, [e.tc2], e.x, [3, 4], builder=_builder(e)), VE, "builder"),
    G(F.intervention_check, "one image, top 2, worst 1, with the builder", lambda e: F.intervention_check(
        e.m, e.tcs, e.x1, torch.tensor([3]), top=2, worst=1, builder=_builder(e), threshold=0.5),
      lambda r: r["cases"] == 2 and len(r["worst"]) == 1 and r["per_graph"][0]["threshold"] == 0.5, "2 cases, pruned at 0.5",
      arg="builder, worst, threshold, targets"),
    # ------------------------------------------------------------------ completeness
    G(completeness, "a model name", lambda e: completeness("mnist", e.tcs, CLAUSES, e.x, _predicted(e)), TE, "model"),
    G(completeness, "tcs in the wrong order", lambda e: completeness(e.m, [e.tc2, e.tc1], CLAUSES, e.x, _predicted(e)), VE, "tcs"),
    G(completeness, "clauses a dict", lambda e: _completeness(e, clauses=CLAUSES[0]), TE, "clauses"),
    G(completeness, "a clause channel 4.0", lambda e: _completeness(e, clauses=[{**CLAUSES[0], "channel": 4.0}]), TE, "channel"),
    G(completeness, "a clause position 23.5", lambda e: _completeness(e, clauses=[{**CLAUSES[0], "positions": [23.5]}]), TE, "positions"),
    G(completeness, "a clause without a digit", lambda e: _completeness(e, clauses=[{"channel": 4, "positions": [1]}]), VE, "digit"),
    G(completeness, "a clause past the layer (position 49 of 49)", lambda e: _completeness(e, clauses=[{**CLAUSES[0], "positions": [49]}]), VE, "clauses"),
    G(completeness, "NaN images", lambda e: _completeness(e, images=e.nan), NF, "images"),
    G(completeness, "float labels", lambda e: _completeness(e, labels=torch.tensor([3.0, 4.0])), VE, "labels"),
    G(completeness, "labels for 3 images given 2", lambda e: _completeness(e, labels=torch.tensor([1, 2, 3])), VE, "labels"),
    G(completeness, "label 10 of 10 classes", lambda e: _completeness(e, labels=torch.tensor([3, 10])), IE, "labels"),
    G(completeness, "layer 'conv9'", lambda e: _completeness(e, layer="conv9"), UnknownLayerError, "conv9"),
    G(completeness, "layer 'pool1' (not where the last transcoder writes)", lambda e: _completeness(e, layer="pool1"), VE, "layer"),
    G(completeness, "layer 5", lambda e: _completeness(e, layer=5), TE, "layer"),
    G(completeness, "graph_images -1", lambda e: _completeness(e, graph_images=-1), VE, "graph_images"),
    G(completeness, "graph_images 1.5", lambda e: _completeness(e, graph_images=1.5), TE, "graph_images"),
    G(completeness, "threshold 2", lambda e: _completeness(e, threshold=2), VE, "threshold"),
    G(completeness, "the mixed-mode model, labels = its predictions", lambda e: _completeness(e),
      lambda r: r["model"]["accuracy"] == 1.0 and r["replacement"]["graphs"] == 1 and 0 <= r["replacement"]["mean_error_share"] <= 1,
      "accuracy 1.0, one graph"),
    G(named_mask, "a clause channel 2.7", lambda e: named_mask([{"digit": 0, "channel": 2.7, "positions": [1]}], (16, 7, 7)), TE, "channel"),
    G(named_mask, "shape (16, 7)", lambda e: named_mask(CLAUSES, (16, 7)), VE, "shape"),
    G(margins, "float labels", lambda e: margins(torch.rand(2, 3), torch.tensor([0.0, 1.0])), VE, "labels"),
    G(mean_ablated_except, "a keep mask of the wrong shape", lambda e: mean_ablated_except(
        e.m, "pool2", torch.ones(16, 7, 6, dtype=torch.bool), torch.zeros(16, 7, 7), e.x), VE, "keep"),
    G(mean_ablated_except, "NaN means", lambda e: mean_ablated_except(
        e.m, "pool2", torch.ones(16, 7, 7, dtype=torch.bool), torch.full((16, 7, 7), float("nan")), e.x), NF, "means"),
    # ------------------------------------------------------------------ graph files
    G(graph_json, "max_edges -5", lambda e: graph_json(_graph(e), 0.8, max_edges=-5), VE, "max_edges"),
    G(graph_json, "max_edges 2.0", lambda e: graph_json(_graph(e), 0.8, max_edges=2.0), TE, "max_edges"),
    G(graph_json, "threshold '0.8'", lambda e: graph_json(_graph(e), "0.8"), TE, "threshold"),
    G(graph_json, "a dict instead of a graph", lambda e: graph_json({"nodes": []}), TE, "g"),
    G(graph_json, "max_edges 3", _json_edges, lambda r: r is True, "3 edges, strongest first", arg="max_edges"),
    G(write_graph, "a model name", lambda e: write_graph("mnist", e.tcs, e.x[0], 3, e.tmp / "wg"), TE, "model"),
    G(write_graph, "tcs in the wrong order", lambda e: write_graph(e.m, [e.tc2, e.tc1], e.x[0], 3, e.tmp / "wg"), VE, "tcs"),
    G(write_graph, "a NaN image", lambda e: write_graph(e.m, e.tcs, e.nan[0], 3, e.tmp / "wg"), NF, "image"),
    G(write_graph, "target 3.0", lambda e: write_graph(e.m, e.tcs, e.x[0], 3.0, e.tmp / "wg"), TE, "target"),
    G(write_graph, "out an int", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, 5), TE, "out"),
    G(write_graph, "source an int", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", source=5), TE, "source"),
    G(write_graph, "label 2.5", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", label=2.5), TE, "label"),
    G(write_graph, "threshold 0", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", threshold=0), VE, "threshold"),
    G(write_graph, "pixel_group 3 with a builder that groups 4", lambda e: write_graph(
        e.m, e.tcs, e.x[0], 3, e.tmp / "wg", pixel_group=3, builder=_builder(e)), VE, "pixel_group"),
    G(write_graph, "transcoder_names a string", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", transcoder_names="conv1_tc"), TE, "transcoder_names"),
    G(write_graph, "builder a string", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", builder="b"), TE, "builder"),
    G(write_graph, "galleries a string", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", galleries="dir"), TE, "galleries"),
    G(write_graph, "title an int", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", title=5), TE, "title"),
    G(write_graph, "static_dir an int", lambda e: write_graph(e.m, e.tcs, e.x[0], 3, e.tmp / "wg", static_dir=5), TE, "static_dir"),
    G(write_graph, "written, then kept", _write_twice, lambda r: r == (False, True, True), "written once, then kept"),
    G(write_digit_graphs, "out_dir an int", lambda e: write_digit_graphs(e.m, e.tcs, 5), TE, "out_dir"),
    G(write_digit_graphs, "data_dir an int", lambda e: write_digit_graphs(e.m, e.tcs, e.tmp / "wdg", data_dir=5), TE, "data_dir"),
    G(write_digit_graphs, "galleries a string", lambda e: write_digit_graphs(e.m, e.tcs, e.tmp / "wdg", galleries="g"), TE, "galleries"),
    G(write_digit_graphs, "transcoder_names an int", lambda e: write_digit_graphs(e.m, e.tcs, e.tmp / "wdg", transcoder_names=3), TE, "transcoder_names"),
    G(write_digit_graphs, "threshold 1.5", lambda e: write_digit_graphs(e.m, e.tcs, e.tmp / "wdg", threshold=1.5), VE, "threshold"),
    G(write_digit_graphs, "report an int", lambda e: write_digit_graphs(e.m, e.tcs, e.tmp / "wdg", report=5), TE, "report"),
    G(write_digit_graphs, "a model name", lambda e: write_digit_graphs("mnist", e.tcs, e.tmp / "wdg"), TE, "model"),
    G(write_digit_graphs, "tcs for another model", lambda e: write_digit_graphs(e.bn, e.tcs, e.tmp / "wdg"), VE, "tcs"),
    # ------------------------------------------------------------------ dictionary feature circuits (features/circuits.py)
    G(F.feature_output_weights, "feature 3.0", lambda e: F.feature_output_weights(e.m, e.d, 3.0), TE, "feature"),
    G(F.feature_output_weights, "feature 2.7 (never truncated)", lambda e: F.feature_output_weights(e.m, e.d, 2.7), TE, "feature"),
    G(F.feature_output_weights, "a string instead of a dictionary", lambda e: F.feature_output_weights(e.m, "conv2/sae", 1), TE, "dictionary"),
    G(F.feature_output_weights, "a model name", lambda e: F.feature_output_weights("mnist", e.d, 1), TE, "model"),
    G(F.feature_output_weights, "layer 5", lambda e: F.feature_output_weights(e.m, e.d, 1, 5), TE, "layer"),
    G(F.feature_output_weights, "input_shape (1, 28)", lambda e: F.feature_output_weights(e.m, e.d, 1, input_shape=(1, 28)), VE, "input_shape"),
    G(F.feature_output_weights, "feature tensor(1) to fc", lambda e: F.feature_output_weights(e.m, e.d, torch.tensor(1), "fc").shape,
      lambda r: r[0] == 10, "10 logits"),
    G(F.feature_input_weights, "feature tensor(2.0)", lambda e: F.feature_input_weights(e.m, e.d, torch.tensor(2.0)), TE, "feature"),
    G(F.feature_input_weights, "a model name", lambda e: F.feature_input_weights("mnist", e.d, 1), TE, "model"),
    G(F.feature_input_weights, "a dictionary that is a string", lambda e: F.feature_input_weights(e.m, "d", 1), TE, "dictionary"),
    G(F.feature_input_weights, "layer 3", lambda e: F.feature_input_weights(e.m, e.d, 1, 3), TE, "layer"),
    G(F.feature_input_weights, "input_shape 'big'", lambda e: F.feature_input_weights(e.m, e.d, 1, input_shape="big"), VE, "input_shape"),
    G(F.feature_logit_weights, "feature 1.0", lambda e: F.feature_logit_weights(e.m, e.d, 1.0), TE, "feature"),
    G(F.feature_logit_weights, "a model name", lambda e: F.feature_logit_weights("mnist", e.d, 1), TE, "model"),
    G(F.feature_logit_weights, "a dictionary that is a list", lambda e: F.feature_logit_weights(e.m, [1], 1), TE, "dictionary"),
    G(F.feature_logit_weights, "input_shape (1, 28, 0)", lambda e: F.feature_logit_weights(e.m, e.d, 1, input_shape=(1, 28, 0)), VE, "input_shape"),
    G(F.feature_top_connections, "feature 0.5", lambda e: F.feature_top_connections(e.m, e.d, 0.5), TE, "feature"),
    G(F.feature_top_connections, "k 2.0", lambda e: F.feature_top_connections(e.m, e.d, 0, k=2.0), TE, "k"),
    G(F.feature_top_connections, "direction 'both'", lambda e: F.feature_top_connections(e.m, e.d, 0, direction="both"), VE, "direction"),
    G(F.feature_top_connections, "layer 7", lambda e: F.feature_top_connections(e.m, e.d, 0, layer=7), TE, "layer"),
    G(F.feature_top_connections, "a model name", lambda e: F.feature_top_connections("mnist", e.d, 0), TE, "model"),
    G(F.feature_top_connections, "a dictionary that is None", lambda e: F.feature_top_connections(e.m, None, 0), TE, "dictionary"),
    # ------------------------------------------------------------------ transcoder feature circuits (features/tc_circuits.py)
    G(F.feature_feature_weights, "a string downstream", lambda e: F.feature_feature_weights(e.tc1, "conv2/tc"), TE, "downstream"),
    G(F.feature_logit_weights_tc, "a model name", lambda e: F.feature_logit_weights_tc("mnist", e.tc2), TE, "model"),
    G(F.top_connections, "n 2.0", lambda e: F.top_connections(torch.rand(3, 4), n=2.0), TE, "n"),
    G(sparsity, "n 0", lambda e: sparsity(torch.rand(3, 4), n=0), VE, "n"),
    G(sparsity, "a 1-D tensor", lambda e: sparsity(torch.rand(4)), VE, "weights"),
    G(F.sparsity_comparison, "a model name", lambda e: F.sparsity_comparison("mnist", e.tcs), TE, "model"),
    # ------------------------------------------------------------------ write-ups and galleries
    G(tc_report.transcoder_analysis, "float labels", lambda e: tc_report.transcoder_analysis(e.m, e.tcs, e.x, torch.tensor([1.0, 2.0])), VE, "labels"),
    G(tc_report.transcoder_analysis, "top 0", lambda e: tc_report.transcoder_analysis(e.m, e.tcs, e.x, torch.tensor([1, 2]), top=0), VE, "top"),
    G(tc_report.transcoder_analysis, "threshold '0.8'", lambda e: tc_report.transcoder_analysis(e.m, e.tcs, e.x, torch.tensor([1, 2]), threshold="0.8"), TE, "threshold"),
    G(tc_report.transcoder_analysis, "tcs in the wrong order", lambda e: tc_report.transcoder_analysis(e.m, [e.tc2, e.tc1], e.x, torch.tensor([1, 2])), VE, "tcs"),
    G(tc_report.transcoder_analysis, "NaN images", lambda e: tc_report.transcoder_analysis(e.m, e.tcs, e.nan, torch.tensor([1, 2])), NF, "images"),
    G(tc_report.transcoder_analysis, "a model name", lambda e: tc_report.transcoder_analysis("mnist", e.tcs, e.x, torch.tensor([1, 2])), TE, "model"),
    G(tc_report.analysis_markdown, "an empty dict", lambda e: tc_report.analysis_markdown({}), VE, "a"),
    G(tc_report.write_analysis, "n_images 0", lambda e: tc_report.write_analysis(e.m, e.tcs, e.tmp / "wa", n_images=0), VE, "n_images"),
    G(tc_report.write_analysis, "top 1.5", lambda e: tc_report.write_analysis(e.m, e.tcs, e.tmp / "wa", top=1.5), TE, "top"),
    G(tc_report.write_analysis, "out_dir None", lambda e: tc_report.write_analysis(e.m, e.tcs, None), TE, "out_dir"),
    G(tc_report.write_analysis, "data_dir a list", lambda e: tc_report.write_analysis(e.m, e.tcs, e.tmp / "wa", data_dir=[1]), TE, "data_dir"),
    G(tc_report.write_analysis, "tcs for another model", lambda e: tc_report.write_analysis(e.bn, e.tcs, e.tmp / "wa"), VE, "tcs"),
    G(tc_report.write_analysis, "a model name", lambda e: tc_report.write_analysis("mnist", e.tcs, e.tmp / "wa"), TE, "model"),
    G(tc_gallery.publish_transcoder_gallery, "steps 0", lambda e: tc_gallery.publish_transcoder_gallery(e.m, e.tc2, e.tmp / "tg", steps=0), VE, "steps"),
    G(tc_gallery.publish_transcoder_gallery, "batch 0", lambda e: tc_gallery.publish_transcoder_gallery(e.m, e.tc2, e.tmp / "tg", batch=0), VE, "batch"),
    G(tc_gallery.publish_transcoder_gallery, "examples -1", lambda e: tc_gallery.publish_transcoder_gallery(e.m, e.tc2, e.tmp / "tg", examples=-1), VE, "examples"),
    G(tc_gallery.publish_transcoder_gallery, "overwrite 'yes'", lambda e: tc_gallery.publish_transcoder_gallery(e.m, e.tc2, e.tmp / "tg", overwrite="yes"), TE, "overwrite"),
    G(tc_gallery.publish_transcoder_gallery, "progress 1", lambda e: tc_gallery.publish_transcoder_gallery(e.m, e.tc2, e.tmp / "tg", progress=1), TE, "progress"),
    G(tc_gallery.publish_transcoder_gallery, "data_dir 5", lambda e: tc_gallery.publish_transcoder_gallery(e.m, e.tc2, e.tmp / "tg", data_dir=5), TE, "data_dir"),
    G(tc_gallery.publish_transcoder_gallery, "out_dir 5", lambda e: tc_gallery.publish_transcoder_gallery(e.m, e.tc2, 5), TE, "out_dir"),
    G(tc_gallery.publish_transcoder_gallery, "tc a string", lambda e: tc_gallery.publish_transcoder_gallery(e.m, "conv2/tc", e.tmp / "tg"), TE, "tc"),
    G(tc_gallery.publish_transcoder_gallery, "a model name", lambda e: tc_gallery.publish_transcoder_gallery("mnist", e.tc2, e.tmp / "tg"), TE, "model"),
    G(tc_gallery.publish_transcoder_site, "one name for two transcoders", lambda e: tc_gallery.publish_transcoder_site(e.m, e.tcs, e.tmp / "ts", names=["a"]), VE, "names"),
    G(tc_gallery.publish_transcoder_site, "analysis 5", lambda e: tc_gallery.publish_transcoder_site(e.m, e.tcs, e.tmp / "ts", names=["a", "b"], analysis=5), TE, "analysis"),
]
