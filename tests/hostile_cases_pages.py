"""Hostile-input cases for the graph pages' Python API: graph files, labels, the intervention server."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from hostile_support import Case

from vision_interp.checks import FileContentError, InputError, InputTypeError
from vision_interp.features import graph_files as GF
from vision_interp.features import labels as L
from vision_interp.features import graph_page as GP
from vision_interp.features import tc_gallery as TG
from vision_interp.features.graph import AttributionGraph

VE, TE = ValueError, TypeError


def _graph(e: SimpleNamespace):
    if not hasattr(e, "pages_graph"):
        from vision_interp import features as F

        e.pages_builder = F.GraphBuilder(e.m, e.tcs)
        e.pages_graph = e.pages_builder.build(e.x[0], 3)
    return e.pages_graph


def _round_trip(e: SimpleNamespace) -> bool:
    g = _graph(e)
    GF.save_graph(g, e.tmp / "pages_graph")
    back = GF.load_graph(e.tmp / "pages_graph.json")
    return torch.equal(back.edges, g.edges) and back.nodes == g.nodes


def _not_json(e: SimpleNamespace):
    p = e.tmp / "pages_bad.json"
    p.write_text("{ not json")
    return GF.load_graph(p)


CASES: list[Case] = [
    Case(GF.save_graph, "a dict instead of a graph", lambda e: GF.save_graph({"nodes": []}, e.tmp / "g"), TE, "graph"),
    Case(GF.save_graph, "a path of None", lambda e: GF.save_graph(_graph(e), None), VE, "path"),
    Case(GF.save_graph, "the mixed-mode model's graph, loaded back", _round_trip, lambda r: r is True, "bit-identical edges and nodes"),
    Case(GF.load_graph, "a file that is not JSON", _not_json, FileContentError, "path"),
    Case(GF.load_graph, "a missing file", lambda e: GF.load_graph(e.tmp / "pages_nowhere"), FileNotFoundError, "path"),
    Case(L.feature_labels, "labels for 3 images given 2", lambda e: L.feature_labels(e.m, e.tc1, e.x, [1, 2, 3]), VE, "labels"),
    Case(L.feature_labels, "a string instead of a transcoder", lambda e: L.feature_labels(e.m, "conv1/tc", e.x, [1, 2]), TE, "tc"),
    Case(L.feature_labels, "two images (fewer than 4)", lambda e: L.feature_labels(e.m, e.tc1, e.x, [1, 2]), VE, "images"),
    Case(L.feature_labels, "a feature past the end", lambda e: L.feature_labels(e.m, e.tc1, e.x.repeat(2, 1, 1, 1), [1, 2, 3, 4], features=[10 ** 6]), VE, "features"),
    Case(GP.page_extras, "a string instead of a builder", lambda e: GP.page_extras("builder", _graph(e), e.x[0]), TE, "builder"),
    Case(GP.page_extras, "another image than the graph's", lambda e: (_graph(e), GP.page_extras(e.pages_builder, _graph(e), e.x[1]))[1], VE, "image"),
    Case(GP.page_extras, "top_logits 0", lambda e: (_graph(e), GP.page_extras(e.pages_builder, _graph(e), e.x[0], top_logits=0))[1], VE, "top_logits"),
    Case(AttributionGraph.load, "a missing file", lambda e: AttributionGraph.load(e.tmp / "pages_nowhere"), FileNotFoundError, "path"),
    Case(AttributionGraph.save, "a path of 5", lambda e: _graph(e).save(5), VE, "path"),
    Case(L.feature_labels, "a string instead of a model", lambda e: L.feature_labels("mnist_cnn", e.tc1, e.x.repeat(2, 1, 1, 1), [1, 2, 3, 4]),
         TE, "model"),
    Case(L.feature_labels, "top 0", lambda e: L.feature_labels(e.m, e.tc1, e.x.repeat(2, 1, 1, 1), [1, 2, 3, 4], top=0), VE, "top"),
    Case(L.feature_labels, "top 2.5", lambda e: L.feature_labels(e.m, e.tc1, e.x.repeat(2, 1, 1, 1), [1, 2, 3, 4], top=2.5), TE, "top"),
    Case(L.feature_labels, "batch_size 0", lambda e: L.feature_labels(e.m, e.tc1, e.x.repeat(2, 1, 1, 1), [1, 2, 3, 4], batch_size=0),
         VE, "batch_size"),
    Case(L.feature_labels, "two features of the mixed-mode model", lambda e: L.feature_labels(
        e.m, e.tc1, e.x.repeat(2, 1, 1, 1), [1, 2, 3, 4], features=[0, 1]), lambda r: len(r["features"]) == 2
         and all(isinstance(f["label"], str) for f in r["features"]), "a label for each of the two", arg="features"),
    Case(GP.page_extras, "labels as a list", lambda e: (_graph(e), GP.page_extras(e.pages_builder, _graph(e), e.x[0], labels=[1]))[1],
         TE, "labels"),
    Case(GP.page_extras, "max_edges -5", lambda e: (_graph(e), GP.page_extras(e.pages_builder, _graph(e), e.x[0], max_edges=-5))[1],
         VE, "max_edges"),
    Case(GP.page_extras, "precompute 1.5", lambda e: (_graph(e), GP.page_extras(e.pages_builder, _graph(e), e.x[0], precompute=1.5))[1],
         TE, "precompute"),
    Case(TG.enrich_transcoder_gallery, "one gallery for two transcoders",
         lambda e: TG.enrich_transcoder_gallery(e.m, e.tcs, [e.tmp], {}), TE, "galleries"),
    Case(TG.enrich_transcoder_gallery, "labels missing a layer",
         lambda e: TG.enrich_transcoder_gallery(e.m, e.tcs, [e.tmp, e.tmp], {e.tcs[0].feature_layer: {"features": []}}), VE, "labels"),
]
