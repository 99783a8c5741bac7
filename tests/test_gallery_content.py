"""What gallery pages show: connections aggregated per connected unit, the unit's weights, dataset
statistics, labels files, and InceptionV1 with dataset examples from a folder of images."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gallery_models import HOSTILE, TinyNet, tiny_dataset
from test_gallery import LAYERS, build, snapshot
from vision_interp.gallery import assemble, make_gallery


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("content") / "g"
    assert build(out).complete
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_connections_show_each_connected_unit_once_with_its_masses(gallery):
    from vision_interp.circuits import expanded_weights

    m = manifest(gallery)
    w = expanded_weights(TinyNet(), "conv", "evil")  # (3, 5, kh, kw): the second layer's kernels from each conv unit
    checked = 0
    for key, e in m["units"].items():
        for direction, d in (e["connections"] or {}).items():
            units = [r["unit"] for r in d["rows"]]
            assert len(units) == len(set(units)), f"{key} {direction}: a unit listed twice: {units}"
            for r in d["rows"]:
                assert r["positive"] >= 0 >= r["negative"] and r["net"] == pytest.approx(r["positive"] + r["negative"])
                assert (gallery / r["picture"]).is_file()
            masses = [r["positive"] - r["negative"] for r in d["rows"]]
            assert masses == sorted(masses, reverse=True)
        if e["layer"] == LAYERS[1]:  # inputs of evil:c from conv: compare with the expanded weights
            for r in e["connections"]["inputs"]["rows"]:
                k = w[e["channel"], int(r["unit"].rpartition(":")[2])].double()
                assert r["positive"] == pytest.approx(float(k.clamp_min(0).sum()), rel=1e-5)
                assert r["negative"] == pytest.approx(float(k.clamp_max(0).sum()), rel=1e-5)
                checked += 1
    assert checked == 3 * 4  # 3 units x 4 connections
    page = (gallery / m["units"][f"{LAYERS[1]}:0"]["files"]["page"]).read_text()
    rows = re.findall(r"<tr><td>.*?</tr>", page)
    linked = [re.search(r'href="[^"]*units/conv/(\d+)\.html"', r) for r in rows]
    linked = [int(x[1]) for x in linked if x]
    assert len(linked) == 4 and len(set(linked)) == 4  # the HTML table: one row per connected unit


def test_unit_weights_by_kind(gallery):
    m = manifest(gallery)
    first, deeper = m["units"]["conv:2"], m["units"][f"{LAYERS[1]}:1"]
    assert "kernel" in first["weights_caption"] and (gallery / first["files"]["weights"]).is_file()
    assert deeper["weights_caption"].startswith("expanded kernel from each of the 5 units of conv")
    with Image.open(gallery / deeper["files"]["weights"]) as im:  # 5 kernel tiles in a 3x2 grid
        assert im.width > im.height > 0


def test_dataset_statistics(gallery):
    m = manifest(gallery)
    images, labels = tiny_dataset()
    acts = TinyNet().blocks["conv"](images)[:, 1]  # conv:1 over the dataset
    e = m["units"]["conv:1"]
    per_image_max = acts.flatten(1).max(1).values
    assert e["range"] == pytest.approx([float(acts.min()), float(acts.max())], rel=1e-5)
    assert sum(e["histogram"]["counts"]) == len(images)
    assert [x["index"] for x in e["examples"]["top"]] == per_image_max.argsort(descending=True, stable=True)[:3].tolist()
    bottom = acts.flatten(1).min(1).values
    assert [x["index"] for x in e["examples"]["bottom"]] == bottom.argsort(stable=True)[:3].tolist()
    ch = e["class_histogram"]
    assert ch["of_top"] == len(images) and dict(ch["counts"]) == {"even": 12, "odd": 12}


def test_labels_file_reaches_pages_without_re_rendering(gallery, tmp_path):
    import shutil

    out = tmp_path / "labelled"
    shutil.copytree(gallery, out)
    pngs = {k: v for k, v in snapshot(out).items() if k.endswith(".png")}
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"conv:1": {"name": "bright blob", "note": "fires on <b>bright</b> centres"},
                                  "evil:2": {"name": "edge & corner"}}))
    res = build(out, labels=labels)
    assert res.rendered_units == 0
    m = manifest(out)
    assert m["labels"] == {"conv:1": {"name": "bright blob", "note": "fires on <b>bright</b> centres"},
                           f"blocks.{HOSTILE}:2": {"name": "edge & corner"}}  # the alias maps to the gallery's layer name
    page = (out / m["units"]["conv:1"]["files"]["page"]).read_text()
    assert "bright blob" in page and "fires on &lt;b&gt;bright&lt;/b&gt; centres" in page
    layer_page = (out / "layers" / "conv.html").read_text()
    assert 'data-label="1 conv:1 bright blob fires on &lt;b&gt;bright&lt;/b&gt; centres"' in layer_page
    assert "labelled units</th><td>2 of 8" in (out / "index.html").read_text()
    assert {k: v for k, v in snapshot(out).items() if k.endswith(".png")} == pngs
    assemble(out, labels={"conv:3": "texture"})  # relabel at assembly time
    assert manifest(out)["labels"] == {"conv:3": {"name": "texture"}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"conv:9": {"name": "no such unit"}}))
    with pytest.raises(ValueError, match=r"unit 'conv:9' is not in this gallery"):
        build(out, labels=bad)
    bad.write_text(json.dumps({"conv:1": {"name": 3}}))
    with pytest.raises(ValueError, match=r"must map to"):
        build(out, labels=bad)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Two classes of random images of assorted sizes and formats (one grayscale)."""
    root = tmp_path_factory.mktemp("folder") / "photos"
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            h, w = int(rng.integers(40, 120)), int(rng.integers(40, 120))
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(root / "dogs" / "gray.png")
    (root / "README.txt").write_text("not an image")
    return root


def test_image_folder_dataset(image_folder, tmp_path):
    from vision_interp.data.folder import ImageFolder

    ds = ImageFolder(image_folder, (3, 32, 32))
    assert len(ds) == 7 and ds.labels == ["cats"] * 3 + ["dogs"] * 4
    batch = next(ds.batches(4))
    assert batch.shape == (4, 3, 32, 32) and 0 <= float(batch.min()) and float(batch.max()) <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        ImageFolder(tmp_path / "empty", (3, 8, 8))
    with pytest.raises(ValueError, match="no such directory"):
        ImageFolder(tmp_path / "missing", (3, 8, 8))


@pytest.mark.slow
def test_inceptionv1_cli_with_weights_file_and_image_folder(image_folder, tmp_path, capsys):
    from vision_interp import io as vio
    from vision_interp.cli import main
    from vision_interp.zoo import load_model

    weights = tmp_path / "random-inception5h.safetensors"
    vio.save_state_dict(weights, load_model("inceptionv1", pretrained=False).state_dict())
    out = tmp_path / "in"
    args = ["gallery", "--model", "inceptionv1", "--weights", str(weights), "--dataset", str(image_folder), "--layers", "conv2d0:0-1",
            "--out", str(out), "--steps", "2", "--size", "48", "--batch", "2", "--diverse", "0", "--no-negative", "--examples", "2",
            "--connections", "2", "--no-progress"]
    assert main(args) == 0
    m = manifest(out)
    assert m["model"]["checkpoint_sha256"] == vio.sha256_file(weights)
    assert m["dataset"] == {"name": "photos", "size": 7, "labelled": True}
    e = m["units"]["conv2d0:1"]
    assert "RGB kernel" in e["weights_caption"]
    assert all(x["label"] in ("cats", "dogs") and (out / x["patch"]).is_file() for x in e["examples"]["top"])
    with Image.open(out / e["files"]["main"]) as im:
        assert im.size == (48, 48)
    capsys.readouterr()
    assert main(args[:-1] + ["--dataset", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(args + ["--labels", str(tmp_path / "missing.json")]) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(args + ["--link", "no equals sign"]) == 2
    assert "TITLE=HREF" in capsys.readouterr().err


def test_mnist_classifier_units_show_their_class_weight_map(tmp_path, data_dir):
    from vision_interp import mnist_cnn

    out = tmp_path / "fc"
    res = make_gallery(mnist_cnn(), ["fc"], out, steps=2, batch=10, diverse=0, negative=False, examples=2, examples_limit=50,
                       connections=2, data_dir=data_dir, progress=False)
    assert res.complete
    e = manifest(out)["units"]["fc:7"]
    assert e["weights_caption"].startswith("class weight map") and "16 channels" in e["weights_caption"]
    with Image.open(out / e["files"]["weights"]) as im:  # 16 maps of 7x7 (pool2), each enlarged 4x, in a 4x4 grid
        assert im.size == (4 * 28 + 5, 4 * 28 + 5)
    assert e["range"][0] < e["range"][1] and e["examples"]["top"][0]["label"] == "7"


def test_committed_mnist_gallery_is_complete_and_verified():
    """galleries/mnist_cnn: every recorded file matches its sha256, and the index shows the model
    card's checkpoint hash and links to the MNIST exercise report."""
    from test_gallery import REPO
    from vision_interp.gallery.build import _Verifier

    root = REPO / "galleries" / "mnist_cnn"
    m = manifest(root)
    assert len(m["units"]) == 34 and [l["name"] for l in m["layers"]] == ["conv1", "conv2", "fc"]
    verifier = _Verifier(root)
    assert verifier.bad_files(m["units"]) == []
    card = json.loads((REPO / "models" / "mnist_cnn.json").read_text())
    assert m["model"]["checkpoint_sha256"] == card["weights_sha256"]
    index = (root / "index.html").read_text()
    assert card["weights_sha256"] in index and 'href="../mnist_exercise/report.html"' in index
    assert not [p for p in root.rglob(".*")], "temporary or lock files committed"
