"""The CLI on a model nobody here wrote: ``--model package.module:factory`` and ``--model file.py:factory``.

A tiny user package (a conv net with PReLU activations and ceil-mode max pools, a ``build()`` factory,
3x32x32 inputs declared at module level) goes through visualize, attribute, gallery, transcoder and
graph in-process (``cli.main(argv)``, as the other CLI tests do), and every way of naming a model wrongly
is one line, exit code 2, naming the flag.
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from vision_interp.cli import main

PKG = "vi_userpkg"

PLAIN = '''
from torch import nn


def no_shape():  # neither the model nor this module declares an input shape
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
'''

NETS = '''
import torch
from torch import nn

from vision_interp.zoo.spec import ModelSpec

input_shape = (3, 32, 32)  # declared by the module: the model itself has no spec


class Net(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3)
        self.act1 = nn.PReLU(width)
        self.pool1 = nn.MaxPool2d(2, ceil_mode=True)   # 30 -> 15
        self.conv2 = nn.Conv2d(width, 16, 3)
        self.act2 = nn.PReLU(16)
        self.pool2 = nn.MaxPool2d(2, ceil_mode=True)   # 13 -> 7 (ceil)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.fc(self.flat(self.pool2(self.act2(self.conv2(self.pool1(self.act1(self.conv1(x))))))))


def build(width: int = 8):
    torch.manual_seed(0)
    return Net(width)


def named():
    m = build()
    m.spec = ModelSpec(name="tinynet", input_shape=(3, 32, 32), class_names=tuple("abcdefghij"))
    return m


def not_a_model():
    return {"conv": 1}


def broken():
    raise RuntimeError("factory exploded")
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_model")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text("")
    (root / PKG / "nets.py").write_text(textwrap.dedent(NETS))
    (root / PKG / "plain.py").write_text(textwrap.dedent(PLAIN))
    rng = np.random.default_rng(0)
    for i in range(10):  # a labelled image folder (two sub-folders), 40 px: resized and cropped to 32
        d = root / "images" / ("ab"[i % 2])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    sys.path.insert(0, str(root))
    try:
        yield root
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PKG or n.startswith(PKG + ".")]:
            del sys.modules[name]


def _png(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith(f"vision-interp {command}: error: "), err
    assert len(lines) == 1 or (len(lines) == 2 and "--help" in lines[1]), err  # a parse error adds where to look
    return lines[0]


def test_visualize_attribute_gallery(user, tmp_path, capsys):
    spec = f"{PKG}.nets:build"
    image = str(user / "images" / "a" / "0.png")
    assert main(["visualize", "--model", spec, "--unit", "conv2:3", "--steps", "4", "--out", str(tmp_path / "v.png"),
                 "--no-progress"]) == 0
    assert _png(tmp_path / "v.png")[0] >= 32  # decodes; 32 px enlarged
    assert main(["attribute", "--model", spec, "--image", image, "--target", "3", "--n-steps", "8",
                 "--out", str(tmp_path / "a.png"), "--no-progress"]) == 0
    w, h = _png(tmp_path / "a.png")
    assert w > 3 * 32 and h >= 32  # input | attribution | overlay
    assert "sum of attributions" in capsys.readouterr().out
    out = tmp_path / "g"
    assert main(["gallery", "--model", spec, "--layers", "conv2:0-3", "--steps", "2", "--diverse", "0", "--no-negative",
                 "--connections", "0", "--dataset", str(user / "images"), "--examples", "2", "--out", str(out),
                 "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == spec and manifest["model"]["input_shape"] == [3, 32, 32]
    assert len(manifest["units"]) == 4 and (out / "index.html").is_file()
    assert manifest["dataset"]["size"] == 10


def test_gallery_uses_the_declared_name(user, tmp_path):
    out = tmp_path / "g"
    assert main(["gallery", "--model", f"{PKG}.nets:named", "--layers", "conv2:0-1", "--steps", "1", "--diverse", "0",
                 "--no-negative", "--connections", "0", "--examples", "0", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "manifest.json").read_text())["model"]["name"] == "tinynet"
    assert "<title>tinynet" in (out / "index.html").read_text()


def test_file_form_kwargs_and_weights(user, tmp_path, capsys):
    path_spec = f"{user / PKG / 'nets.py'}:build"
    assert main(["layers", "--model", path_spec, "--model-kwargs", '{"width": 4}']) == 0
    text = capsys.readouterr().out
    assert "4x30x30" in text and "16x7x7" in text  # width 4; the ceil-mode pool rounds 13/2 up
    from vision_interp.zoo import load_model

    trained = load_model(path_spec)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    back = load_model(f"{PKG}.nets:build", weights=tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), back.state_dict().values()))
    assert not back.training
    assert main(["layers", "--model", f"{PKG}.nets:build", "--weights", str(tmp_path / "w.pt")]) == 0


def test_transcoder_and_graph(user, tmp_path, capsys):
    spec = f"{PKG}.nets:build"
    b1, b2 = str(tmp_path / "tc" / "b1"), str(tmp_path / "tc" / "b2")
    assert main(["transcoder", "--model", spec, "--block", "input", "pool1", b1, "--block", "pool1", "pool2", b2,
                 "--features", "8", "--k", "2", "--steps", "3", "--train-images", "6", "--test-images", "2",
                 "--dataset", str(user / "images"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "conv1/tc: input -> pool1" in text and "conv2/tc: pool1 -> pool2" in text
    out = tmp_path / "graph"
    assert main(["graph", "--model", spec, "--image", str(user / "images" / "b" / "1.png"), "--target", "pred",
                 "--transcoders", b1, b2, "--out", str(out)]) == 0
    g = json.loads((out / "graph.json").read_text())
    kinds = {n["kind"] for n in g["nodes"]}
    assert len(g["nodes"]) > 3 and {"feature", "logit"} <= kinds and g["edges"]
    assert abs(g["summary"]["sum_rule_residual"]) < 1e-6  # edges + bias add up to each node's pre-activation


def _bad_files(user, tmp_path) -> dict[str, str]:
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in __import__(f"{PKG}.nets", fromlist=["build"]).build().state_dict().items()}
    bad = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    bad["head.weight"] = torch.zeros(3)
    bad["conv1.weight"] = torch.zeros(4, 3, 3, 3)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp_path / "foreign.safetensors"))
    return {"bad": str(tmp_path / "bad.safetensors"), "foreign": str(tmp_path / "foreign.safetensors")}


ERRORS = [
    (["layers", "--model", "vi_no_such_pkg.nets:build"], "--model", "cannot import module 'vi_no_such_pkg.nets'"),
    (["layers", "--model", f"{PKG}.nets:buld"], "--model", "has no attribute 'buld'; did you mean build"),
    (["layers", "--model", f"{PKG}.nets:input_shape"], "--model", "is a tuple, not callable"),
    (["layers", "--model", f"{PKG}.nets:not_a_model"], "--model", "returned a dict, not a torch.nn.Module"),
    (["layers", "--model", f"{PKG}.nets:broken"], "--model", "raised RuntimeError: factory exploded"),
    (["layers", "--model", "{t}/nope.py:build"], "--model", "no such file"),
    (["layers", "--model", "a/b:build"], "--model", "neither a dotted module name"),
    (["layers", "--model", "{foreign}"], "--model", "fits no zoo architecture (tried mnist_cnn: 6 missing"),
    (["layers", "--model", f"{PKG}.nets:build", "--weights", "{bad}"], "--weights",
     "2 missing (fc.weight, fc.bias); 1 unexpected (head.weight); 1 of another shape (first conv1.weight"),
    (["layers", "--model", f"{PKG}.plain:no_shape"], "--model", "add --input-shape C,H,W"),
    (["layers", "--model", f"{PKG}.plain:no_shape", "--input-shape", "3,8,8"], "--input-shape", "the model fails on an input"),
    (["layers", "--model", f"{PKG}.nets:build", "--input-shape", "3,48,48"], "--input-shape", "declares input shape (3, 32, 32)"),
    (["layers", "--model", f"{PKG}.nets:build", "--input-shape", "3,x"], "--input-shape", "expected C,H,W"),
    (["layers", "--model", f"{PKG}.nets:build", "--model-kwargs", '{"depth": 2}'], "--model-kwargs", "unexpected keyword"),
    (["layers", "--model", f"{PKG}.nets:build", "--model-kwargs", "[1]"], "--model-kwargs", "must be a JSON object"),
    (["layers", "--model", "mnist_cnn", "--model-kwargs", "{}"], "--model-kwargs", "applies to --model package.module:factory"),
    (["layers", "--model", f"{PKG}.nets:build", "--random-weights"], "--random-weights", "applies to zoo models"),
    (["transcoder", "--model", f"{PKG}.nets:build"], "--block", "give its blocks with --block IN OUT NAME"),
    (["transcoder", "--model", f"{PKG}.nets:build", "--block", "input", "pool1", "{t}/x"], "--dataset", "add --dataset DIR"),
    (["graph", "--model", f"{PKG}.nets:build", "--image", "{img}", "--target", "1", "--out", "{t}/g"], "--transcoders",
     "give --transcoders NAME"),
    (["attribute", "--model", f"{PKG}.nets:build", "--out", "{t}/a.png"], "--image", "give --image"),
]


@pytest.mark.parametrize("argv,flag,message", ERRORS, ids=[f"{a[0]}-{m[:30]}" for a, _, m in ERRORS])
def test_errors_are_one_line_naming_the_flag(argv, flag, message, user, tmp_path, capsys):
    files = _bad_files(user, tmp_path) if any("{bad}" in a or "{foreign}" in a for a in argv) else {}
    subs = {"{t}": str(tmp_path), "{img}": str(user / "images" / "a" / "0.png"), **{f"{{{k}}}": v for k, v in files.items()}}
    for key, value in subs.items():
        argv = [a.replace(key, value) for a in argv]
    assert main(argv) == 2
    line = _one_line_error(capsys, argv[0])
    assert message in line, line
    assert flag in line, line
    assert not (tmp_path / "g").exists() and not (tmp_path / "a.png").exists()
