"""AttributionGraph save/load (safetensors + JSON, versioned): a loaded graph gives the same numbers bit for
bit, and damaged or foreign files are refused with the file named."""

from __future__ import annotations

import json

import pytest
import torch

from vision_interp import features
from vision_interp.checks import FileContentError
from vision_interp.features.graph_files import GRAPH_FILE_FORMAT, load_graph, save_graph


@pytest.fixture(scope="module")
def graph(mnist_test):
    from vision_interp.zoo import mnist_cnn

    tcs = [features.load_transcoder(n) for n in ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc")]
    return features.attribution_graph(mnist_cnn(), tcs, mnist_test.images[1], int(mnist_test.labels[1]))


def test_round_trip_is_exact(graph, tmp_path):
    path = save_graph(graph, tmp_path / "g")
    assert path.name == "g.json" and (tmp_path / "g.safetensors").is_file()
    back = load_graph(tmp_path / "g.safetensors")  # either file names the pair
    assert torch.equal(back.edges, graph.edges) and back.nodes == graph.nodes and back.meta == graph.meta
    assert (back.target, back.logit) == (graph.target, graph.logit)
    assert torch.equal(back.influence(), graph.influence()) and torch.equal(back.total_effects(), graph.total_effects())
    assert back.prune(0.9) == graph.prune(0.9) and back.sum_rule_residual() == graph.sum_rule_residual()
    doc = json.loads(path.read_text())
    assert doc["format"] == GRAPH_FILE_FORMAT and doc["n_edges"] == int((graph.edges != 0).sum())
    assert (tmp_path / "g.safetensors").stat().st_size < 24 * doc["n_edges"] + 4096  # sparse: two int64 indices and a float64 an edge


def test_damaged_and_foreign_files_are_refused(graph, tmp_path):
    path = save_graph(graph, tmp_path / "g")
    doc = json.loads(path.read_text())
    (tmp_path / "old.json").write_text(json.dumps({**doc, "format": "vision_interp.attribution_graph_file/0"}))
    with pytest.raises(FileContentError, match="format"):
        load_graph(tmp_path / "old.json")
    raw = bytearray((tmp_path / "g.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "g.safetensors").write_bytes(bytes(raw))
    with pytest.raises(FileContentError, match="sha256"):
        load_graph(path)
    with pytest.raises(FileNotFoundError, match="path"):
        load_graph(tmp_path / "missing")
    with pytest.raises(TypeError, match="graph"):
        save_graph({"nodes": []}, tmp_path / "x")
