"""Hostile input: every bad argument, path or file gives one clear line, the right exit code, no traceback,
and leaves the file system exactly as it was.

All fixtures are generated under tmp_path. Each case snapshots tmp_path (paths, sizes, mtimes) before
and after and asserts they are equal, asserts the exit code (2 = bad input, 1 = failure while working),
the first line of stderr, and that "Traceback" appears nowhere. Most cases call ``cli.main`` in-process;
a few run ``python -m vision_interp`` to prove no traceback reaches a real stderr.

Unwritable locations: the tests run as root, for whom chmod'ed folders stay writable, so an unwritable
folder is simulated two ways: ``/sys`` (sysfs refuses file creation even for root; the case is skipped
where it does not) and a folder whose writability probe is made to fail by monkeypatching
``tempfile.TemporaryFile`` inside ``cli_common`` (the probe is the only writability check).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
import torch

from vision_interp import cli
from vision_interp.io import save_state_dict

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "models" / "induction_2l"
MNIST_CKPT = REPO / "models" / "mnist_cnn.safetensors"


# ------------------------------------------------------------------ fixtures (generated)


class _Evil:
    """Unpickling this would create the marker file: the loaders must never unpickle it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _png_bytes(w: int, h: int, body: bytes | None = None) -> bytes:
    """A PNG whose IHDR says w x h (the IDAT may lie: ``body`` is whatever compressed data we give)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
    raw = body if body is not None else zlib.compress(b"".join(b"\x00" + b"\x80" * w for _ in range(h)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _idx_bytes(shape: tuple[int, ...], n_data: int) -> bytes:
    return b"\x00\x00\x08" + bytes([len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + b"\x00" * n_data


def _mnist_dir(root: Path, name: str, images: bytes) -> Path:
    d = root / name
    (d / "mnist" / "raw").mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (d / "mnist" / "raw" / f).write_bytes(images)
    for f in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (d / "mnist" / "raw" / f).write_bytes(_idx_bytes((10000,), 10000))
    return d


def _gpt2_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "config.json").write_bytes((TOY / "config.json").read_bytes())
    return d


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    """Every hostile file, built once; cases run in a fresh tmp_path and refer to these read-only."""
    t = tmp_path_factory.mktemp("hostile_fixtures")
    f: dict[str, Path] = {"root": t}

    def put(name: str, data: bytes) -> None:
        f[name] = t / name
        f[name].write_bytes(data)

    good_png = _png_bytes(28, 28)
    put("good.png", good_png)
    put("empty.png", b"")
    put("truncated.png", good_png[: len(good_png) // 2])
    put("text.png", b"this is not a picture\n" * 20)
    put("bomb.png", _png_bytes(20000, 10000, body=zlib.compress(b"\x00" * 64)))  # 200 Mpx header, tiny body
    put("lying.png", _png_bytes(28, 28, body=zlib.compress(b"\x00" * 10)))  # IDAT far shorter than IHDR says
    f["dir"] = t / "a_folder"
    f["dir"].mkdir()
    put("afile", b"x")
    f["marker"] = t / "PWNED"

    ckpt = MNIST_CKPT.read_bytes()
    put("truncated.safetensors", ckpt[: len(ckpt) // 2])
    put("empty.safetensors", b"")
    put("text.safetensors", b"hello, not tensors")
    put("lying_header.safetensors", struct.pack("<Q", 10**12) + b"{}")
    from safetensors.torch import load_file

    sd = load_file(str(MNIST_CKPT))
    save_state_dict(t / "nan.safetensors", {k: torch.full_like(v, math.nan) for k, v in sd.items()})
    f["nan.safetensors"] = t / "nan.safetensors"
    bad = dict(sd)
    bad["conv2.weight"] = bad["conv2.weight"][:, :3]  # conv1 has 8 outputs, conv2 now reads 3
    save_state_dict(t / "mismatch.safetensors", bad)
    f["mismatch.safetensors"] = t / "mismatch.safetensors"
    save_state_dict(t / "missing_key.safetensors", {k: v for k, v in sd.items() if k != "conv2.weight"})
    save_state_dict(t / "wrong_ndim.safetensors", {**sd, "conv1.weight": torch.zeros(8)})
    save_state_dict(t / "inception_partial.safetensors", {"softmax2_pre_activation_matmul.weight": torch.zeros(1008, 1024)})
    for name in ("missing_key", "wrong_ndim", "inception_partial"):
        f[f"{name}.safetensors"] = t / f"{name}.safetensors"
    save_state_dict(t / "foreign.safetensors", {"encoder.weight": torch.zeros(2, 2)})
    f["foreign.safetensors"] = t / "foreign.safetensors"
    put("evil.pt", pickle.dumps({"conv1.weight": _Evil(f["marker"])}))
    with open(t / "evil_torch.pt", "wb") as fh:
        torch.save({"state_dict": _Evil(f["marker"])}, fh)
    f["evil_torch.pt"] = t / "evil_torch.pt"

    f["mnist_lying"] = _mnist_dir(t, "mnist_lying", _idx_bytes((10000, 28, 28), 100))  # header says 7.8 MB
    f["mnist_magic"] = _mnist_dir(t, "mnist_magic", b"\x12\x34\x56\x78" + b"\x00" * 64)
    f["mnist_empty"] = _mnist_dir(t, "mnist_empty", b"")
    f["mnist_gzip"] = _mnist_dir(t, "mnist_gzip", zlib.compress(b"x")[:0] + b"\x1f\x8b\x08\x00trunc")

    toy = (TOY / "model.safetensors").read_bytes()
    g = _gpt2_dir(t, "gpt2_truncated")
    (g / "model.safetensors").write_bytes(toy[: len(toy) // 2])
    f["gpt2_truncated"] = g
    g = _gpt2_dir(t, "gpt2_pickle_shard")
    (g / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"transformer.wte.weight": "pytorch_model-00001.bin"}}))
    (g / "pytorch_model-00001.bin").write_bytes(pickle.dumps(_Evil(f["marker"])))
    f["gpt2_pickle_shard"] = g
    g = _gpt2_dir(t, "gpt2_missing_shard")
    (g / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"transformer.wte.weight": "model-1.safetensors"}}))
    f["gpt2_missing_shard"] = g
    g = _gpt2_dir(t, "gpt2_mismatch")
    cfg = json.loads((TOY / "config.json").read_text())
    cfg["n_layer"] = cfg["n_layer"] + 1  # the weights have one layer fewer than the config says
    (g / "config.json").write_text(json.dumps(cfg))
    (g / "model.safetensors").write_bytes(toy)
    f["gpt2_mismatch"] = g
    g = _gpt2_dir(t, "gpt2_evil_bin")
    (g / "pytorch_model.bin").write_bytes(pickle.dumps({"wte.weight": _Evil(f["marker"])}))
    f["gpt2_evil_bin"] = g
    g = _gpt2_dir(t, "gpt2_not_gpt2")
    (g / "config.json").write_text(json.dumps({"model_type": "bert"}))
    f["gpt2_not_gpt2"] = g
    f["tok_empty"] = t / "tok_empty"
    f["tok_empty"].mkdir()
    return f


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            # folders: existence and mode only (creating and removing a probe file inside bumps their mtime)
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, st.st_mode) if p.is_file() else (-1, 0, st.st_mode)
    return out


def run_main(argv: list[str], capsys, root: Path) -> tuple[int, str]:
    """cli.main in-process; asserts no traceback and an unchanged tree under ``root``; returns (rc, stderr)."""
    capsys.readouterr()
    before = _snapshot(root)
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert _snapshot(root) == before, "the failed command created or changed files"
    return rc, err


def first_line(err: str) -> str:
    return err.strip().splitlines()[0] if err.strip() else ""


@pytest.fixture
def work(tmp_path, monkeypatch, fx):
    """A clean working folder (also the cwd, so default output names land inside the snapshot)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not fx["marker"].exists(), "a malicious pickle was executed"


# ------------------------------------------------------------------ numeric flags: 0, -1, nan, inf, huge, junk

# (argv before the flag, flag, smallest valid value, is it a float flag)
NUMERIC_FLAGS = [
    (["train-mnist", "--out", "{t}/m"], "--epochs", 1, False),
    (["train-mnist", "--out", "{t}/m"], "--batch-size", 1, False),
    (["train-mnist", "--out", "{t}/m"], "--lr", 1e-9, True),
    (["train-mnist", "--out", "{t}/m"], "--c1", 1, False),
    (["train-mnist", "--out", "{t}/m"], "--limit", 1, False),
    (["train-mnist", "--out", "{t}/m"], "--seed", 0, False),
    (["visualize", "--unit", "conv2:1", "--out", "{t}/v.png"], "--steps", 1, False),
    (["visualize", "--unit", "conv2:1", "--out", "{t}/v.png"], "--size", 8, False),
    (["visualize", "--unit", "conv2:1", "--out", "{t}/v.png"], "--lr", 1e-9, True),
    (["visualize", "--unit", "conv2:1", "--out", "{t}/v.png"], "--scale", 1, False),
    (["visualize", "--layer", "conv2", "--out-dir", "{t}/v"], "--diversity", 0, True),
    (["visualize", "--layer", "conv2", "--out-dir", "{t}/v"], "--per-unit", 1, False),
    (["visualize", "--layer", "conv2", "--out-dir", "{t}/v"], "--batch-size", 1, False),
    (["attribute", "--out", "{t}/a.png"], "--n-steps", 1, False),
    (["attribute", "--out", "{t}/a.png"], "--batch-size", 1, False),
    (["attribute", "--out", "{t}/a.png"], "--scale", 1, False),
    (["attribute-layer", "--layer", "pool2"], "--top", 1, False),
    (["attribution-check"], "--n-steps", 1, False),
    (["weights", "--from", "conv1", "--to", "conv2", "--out", "{t}/w"], "--top", 1, False),
    (["weights", "--from", "conv1", "--to", "conv2", "--out", "{t}/w"], "--max-units", 1, False),
    (["weights", "--from", "conv1", "--to", "conv2", "--out", "{t}/w"], "--scale", 1, False),
    (["circuit", "--unit", "conv2:3", "--out", "{t}/c"], "--top", 1, False),
    (["circuit", "--unit", "conv2:3", "--out", "{t}/c"], "--steps", 1, False),
    (["circuit", "--unit", "conv2:3", "--out", "{t}/c"], "--size", 8, False),
    (["groups", "--layer", "relu2", "--out", "{t}/g"], "--groups", 1, False),
    (["groups", "--layer", "relu2", "--out", "{t}/g"], "--index", 0, False),
    (["gallery", "--layers", "conv1", "--out", "{t}/gal"], "--steps", 1, False),
    (["gallery", "--layers", "conv1", "--out", "{t}/gal"], "--batch", 1, False),
    (["gallery", "--layers", "conv1", "--out", "{t}/gal"], "--diverse", 0, False),
    (["gallery", "--layers", "conv1", "--out", "{t}/gal"], "--diversity-weight", 0, True),
    (["gallery", "--layers", "conv1", "--out", "{t}/gal"], "--examples", 0, False),
    (["gallery", "--layers", "conv1", "--out", "{t}/gal"], "--connections", 0, False),
    (["gallery", "--layers", "conv1", "--out", "{t}/gal"], "--examples-limit", 1, False),
    (["mnist-exercise", "--out", "{t}/ex"], "--channels-per-class", 1, False),
    (["mnist-exercise", "--out", "{t}/ex"], "--random-draws", 1, False),
    (["mnist-exercise", "--out", "{t}/ex"], "--threads", 1, False),
    (["induction", "--out", "{t}/ind"], "--seq-len", 1, False),
    (["induction", "--out", "{t}/ind"], "--batch", 1, False),
    (["induction", "--out", "{t}/ind"], "--top", 1, False),
    (["train-induction", "--out", "{t}/ti"], "--steps", 1, False),
    (["train-induction", "--out", "{t}/ti"], "--lr", 1e-9, True),
    (["train-induction", "--out", "{t}/ti"], "--stop-below", 0, True),
]
BAD_VALUES = ["0", "-1", "nan", "inf", "1e999", "99999999999999999999999", "\u0663"]


def _numeric_cases():
    for prefix, flag, lo, is_float in NUMERIC_FLAGS:
        for v in BAD_VALUES:
            if v == "0" and lo <= 0:
                continue
            yield pytest.param(prefix, flag, v, id=f"{prefix[0]}{flag}={v!r}")


@pytest.mark.parametrize("prefix,flag,value", list(_numeric_cases()))
def test_numeric_flag_refused(prefix, flag, value, work, capsys):
    argv = [a.replace("{t}", str(work)) for a in prefix] + [f"{flag}={value}"]
    rc, err = run_main(argv, capsys, work)
    assert rc == 2, err
    line = first_line(err)
    assert line.startswith(f"vision-interp {prefix[0]}: error: argument ") and flag in line.split(":")[2], line
    assert any(w in line for w in ("integer", "number")), line  # it says what is valid


# ------------------------------------------------------------------ text arguments: the unit grammar and friends

UNIT_FUZZ = ["conv2:\u0663", "conv2:\uff13", "conv2:1@\u0661,2", "conv2:", "conv2::1", ":3", "conv2:1@", "conv2:1@2",
             "conv2:1@2,", "conv2 :1 x", "conv2:1\x00", "conv2:1\n", "conv2:1@1,2,3", "a" * 400, "conv2:0x10", "conv2:1.5"]


@pytest.mark.parametrize("unit", UNIT_FUZZ, ids=[repr(u)[:20] for u in UNIT_FUZZ])
def test_unit_grammar_fuzz(unit, work, capsys):
    rc, err = run_main(["visualize", "--unit", unit, "--out", str(work / "u.png"), "--steps", "1"], capsys, work)
    assert rc == 2, err
    assert first_line(err).startswith("vision-interp visualize: error: argument --unit:"), err


@pytest.mark.parametrize("argv,expect", [
    (["visualize", "--layer", "conv2", "--channels", "0-999999999999999", "--out-dir", "{t}/v"], "argument --channels: contains the number"),
    (["visualize", "--layer", "conv2", "--channels", "\u0663", "--out-dir", "{t}/v"], "argument --channels: contains the character"),
    (["visualize", "--layer", "conv2", "--channels", ",", "--out-dir", "{t}/v"], "argument --channels: is empty"),
    (["gallery", "--layers", "conv1:0-999999999999999", "--out", "{t}/g"], "argument --layers: contains the number"),
    (["gallery", "--layers", "conv1", "--shard=4/4", "--out", "{t}/g"], "argument --shard: expected 'i/n'"),
    (["gallery", "--layers", "conv1", "--shard=-1/4", "--out", "{t}/g"], "argument --shard: expected 'i/n'"),
    (["gallery", "--out", "{t}/g"], "--layers is required"),
    (["attribute", "--index", "0..1000000000000000", "--out", "{t}/a.png"], "selects 1000000000000001 images; at most 10000"),
    (["attribute", "--index", "5..2", "--out", "{t}/a.png"], "selects no images"),
    (["attribute", "--index", "\u0663", "--out", "{t}/a.png"], "argument --index: contains the character"),
    (["attribute", "--index", "1;2", "--out", "{t}/a.png"], "expected 'N', 'A..B' or 'A,B,C'"),
    (["attribute", "--index", "20000", "--out", "{t}/a.png", "--data-dir", "{fx}/mnist_lying"], "indices 0..9999"),
    (["attribute", "--option", "n_steps=abc", "--out", "{t}/a.png"], "--option n_steps=abc: n_steps must be a positive integer"),
    (["attribute", "--option", "n_steps=0", "--out", "{t}/a.png"], "n_steps must be a positive integer"),
    (["attribute", "--method", "smoothgrad", "--option", "stdevs=nan", "--out", "{t}/a.png"], "stdevs must be a finite number > 0"),
    (["attribute", "--method", "smoothgrad", "--option", "stdevs=-1", "--out", "{t}/a.png"], "stdevs must be a finite number > 0"),
    (["attribute", "--method", "smoothgrad", "--option", "nt_samples=1e9", "--out", "{t}/a.png"], "nt_samples must be a positive integer"),
    (["attribute", "--option", "baselines=inf", "--out", "{t}/a.png"], "baselines must be a finite number"),
    (["attribute", "--option", "method=simpson", "--out", "{t}/a.png"], "method must be one of gausslegendre"),
    (["attribute", "--option", "noequals", "--out", "{t}/a.png"], "expected KEY=VALUE"),
    (["attribute", "--option", "target=3", "--out", "{t}/a.png"], "not accepted here (use --target)"),
    (["attribute", "--option", "return_convergence_delta=True", "--out", "{t}/a.png"], "not accepted here"),
    (["attribute", "--option", "n_steps=4", "--n-steps", "4", "--out", "{t}/a.png"], "given both as --n-steps"),
    (["attribute", "--option", "n_steps=" + "(" * 150 + ")" * 150, "--out", "{t}/a.png"], "n_steps must be a positive integer"),
    (["attribute", "--layer", "conv2", "--out", "{t}/a.png"], "--layer applies to gradcam"),
    (["attribute", "--target", "3\u0663", "--out", "{t}/a.png"], "argument --target: contains the character"),
    (["attribute", "--class-means", "--image", "{fx}/good.png", "--out", "{t}/a.png"], "--class-means needs dataset images"),
    (["mnist-exercise", "--classes", "0,12", "--out", "{t}/ex"], "--classes: '12' is not a digit"),
    (["mnist-exercise", "--classes", "\u0663", "--out", "{t}/ex"], "argument --classes: contains the character"),
    (["mnist-exercise", "--classes", "1,1", "--out", "{t}/ex"], "repeats a digit"),
    (["mnist-exercise", "--retrain", "--checkpoint", str(MNIST_CKPT), "--out", "{t}/ex"], "exclude each other"),
    (["induction", "--ablation", "resample", "--out", "{t}/ind"], "--ablation: unknown mode"),
    (["groups", "--layer", "relu2", "--image", "{fx}/good.png", "--index", "3", "--out", "{t}/g"], "give --image or --index"),
    (["visualize", "--unit", "conv2:1", "--channels", "0-3"], "go with --layer"),
    (["visualize", "--unit", "conv2:1", "--out-dir", "{t}/x"], "--out-dir goes with --layer"),
])
def test_bad_text_arguments(argv, expect, work, capsys, fx):
    argv = [a.replace("{t}", str(work)).replace("{fx}", str(fx["root"])) for a in argv]
    rc, err = run_main(argv, capsys, work)
    assert rc == 2, err
    line = first_line(err)
    assert line.startswith(f"vision-interp {argv[0]}: error:"), line
    assert expect in err, err


def test_occlusion_window_larger_than_input(work, capsys, fx, tmp_path_factory):
    """A readable (tiny, generated) MNIST test set, so the check after loading the inputs is reached."""
    d = tmp_path_factory.mktemp("mnist_ok")
    (d / "mnist" / "raw").mkdir(parents=True)
    for f, shape in (("train-images-idx3-ubyte", (60000, 28, 28)), ("t10k-images-idx3-ubyte", (10000, 28, 28))):
        (d / "mnist" / "raw" / f).write_bytes(_idx_bytes(shape, math.prod(shape)))
    for f, n in (("train-labels-idx1-ubyte", 60000), ("t10k-labels-idx1-ubyte", 10000)):
        (d / "mnist" / "raw" / f).write_bytes(_idx_bytes((n,), n))
    for opt, expect in (("sliding_window_shapes=(1,60,60)", "larger than the input (1, 28, 28)"),
                        ("sliding_window_shapes=(1,6)", "needs 3 numbers (C, H, W)"),
                        ("strides=(0,1,1)", "strides must be a positive integer")):
        rc, err = run_main(["attribute", "--method", "occlusion", "--option", opt, "--index", "0", "--data-dir", str(d),
                            "--out", str(work / "a.png"), "--no-progress"], capsys, work)
        assert rc == 2 and first_line(err).startswith("vision-interp attribute: error: --option"), err
        assert expect in err
    rc, err = run_main(["attribute", "--method", "feature_ablation", "--option", "patch_size=29", "--index", "0",
                        "--data-dir", str(d), "--out", str(work / "a.png")], capsys, work)
    assert rc == 2 and "patch_size=29: larger than the input" in err


# ------------------------------------------------------------------ output paths

FILE_OUTPUTS = [  # commands whose --out is a file
    ["attribute", "--method", "saliency"],
    ["attribute-layer", "--layer", "pool2"],
    ["visualize", "--unit", "conv2:1", "--steps", "1"],
]
DIR_OUTPUTS = [  # commands whose output is a folder
    (["train-mnist", "--epochs", "1"], "--out"),
    (["visualize", "--layer", "conv1", "--steps", "1"], "--out-dir"),
    (["weights", "--from", "conv1", "--to", "conv2"], "--out"),
    (["circuit", "--unit", "conv2:3", "--thumbnails", "none"], "--out"),
    (["groups", "--layer", "relu2"], "--out"),
    (["gallery", "--layers", "conv1", "--steps", "1"], "--out"),
    (["mnist-exercise", "--quick"], "--out"),
    (["induction", "--seq-len", "5", "--batch", "2"], "--out"),
    (["train-induction", "--steps", "1"], "--out"),
]


@pytest.mark.parametrize("prefix", FILE_OUTPUTS, ids=[p[0] for p in FILE_OUTPUTS])
@pytest.mark.parametrize("kind", ["directory", "under_a_file", "unwritable", "sysfs", "wrong_suffix", "nul", "long_name"])
def test_output_file_paths(prefix, kind, work, capsys, fx, monkeypatch):
    out, expect = _bad_output(kind, work, fx, monkeypatch, file=True)
    rc, err = run_main(prefix + ["--out", out], capsys, work)
    assert rc == 2, err
    assert first_line(err).startswith(f"vision-interp {prefix[0]}: error: --out: "), err
    assert expect in first_line(err)


@pytest.mark.parametrize("prefix,flag", DIR_OUTPUTS, ids=[p[0] for p, _ in DIR_OUTPUTS])
@pytest.mark.parametrize("kind", ["a_file", "under_a_file", "unwritable", "sysfs", "nul", "long_name"])
def test_output_dir_paths(prefix, flag, kind, work, capsys, fx, monkeypatch):
    out, expect = _bad_output(kind, work, fx, monkeypatch, file=False)
    rc, err = run_main(prefix + [flag, out], capsys, work)
    assert rc == 2, err
    assert first_line(err).startswith(f"vision-interp {prefix[0]}: error: {flag}: "), err
    assert expect in first_line(err)


def _bad_output(kind: str, work: Path, fx, monkeypatch, file: bool) -> tuple[str, str]:
    name = "x.png" if file else "outdir"
    if kind in ("directory", "a_file"):
        target = work / "exists"
        (target.mkdir() if file else target.write_bytes(b"keep me"))
        return str(target), ("is a folder" if file else "is a file")
    if kind == "under_a_file":
        (work / "plain").write_bytes(b"keep me")
        return str(work / "plain" / "sub" / name), "is a file, not a folder"
    if kind == "unwritable":
        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # the probe in cli_common
        return str(work / "new" / name), "cannot write in"
    if kind == "sysfs":
        try:
            with tempfile.TemporaryFile(dir="/sys"):
                pytest.skip("/sys is writable here")
        except OSError:
            pass
        return f"/sys/{name}", "cannot write in /sys"
    if kind == "nul":
        return str(work / ("a\x00b" + name)), "contains a NUL character"
    if kind == "long_name":
        return str(work / ("n" * 300) / name), "file and folder names may be at most 255 bytes"
    assert kind == "wrong_suffix"
    return str(work / "picture.txt"), "should end in .png"


# ------------------------------------------------------------------ input files

BAD_IMAGES = [("missing", "no such file"), ("dir", "is a directory"), ("empty.png", "is empty"),
              ("truncated.png", "truncated or corrupt"), ("text.png", "not a picture"),
              ("bomb.png", "20000 x 10000 pixels (200 Mpx) is above the limit of 50 Mpx"),
              ("lying.png", "truncated or corrupt")]
IMAGE_COMMANDS = [["attribute", "--method", "saliency", "--out", "{t}/a.png"], ["attribute-layer", "--layer", "pool2"],
                  ["attribution-check", "--check", "completeness"], ["groups", "--layer", "relu2", "--out", "{t}/g"]]


@pytest.mark.parametrize("prefix", IMAGE_COMMANDS, ids=[p[0] for p in IMAGE_COMMANDS])
@pytest.mark.parametrize("name,expect", BAD_IMAGES, ids=[n for n, _ in BAD_IMAGES])
def test_bad_image_files(prefix, name, expect, work, capsys, fx):
    path = str(fx["root"] / "nope.png") if name == "missing" else str(fx[name])
    argv = [a.replace("{t}", str(work)) for a in prefix] + ["--image", path]
    rc, err = run_main(argv, capsys, work)
    assert rc == 2, err
    assert first_line(err).startswith(f"vision-interp {prefix[0]}: error: "), err
    assert "--image" in first_line(err) and expect in first_line(err), err


BAD_MODELS = [("missing", "unknown model"), ("dir", "is a folder"), ("empty.safetensors", "is empty"),
              ("truncated.safetensors", "not a valid safetensors file"), ("text.safetensors", "not a valid safetensors file"),
              ("lying_header.safetensors", "not a valid safetensors file"),
              ("nan.safetensors", "values that are NaN or infinite"), ("mismatch.safetensors", "do not fit the MNIST CNN"),
              ("foreign.safetensors", "unrecognised state dict"), ("missing_key.safetensors", "do not fit the MNIST CNN"),
              ("wrong_ndim.safetensors", "do not fit the MNIST CNN"),
              ("inception_partial.safetensors", "do not fit the InceptionV1 architecture"), ("evil.pt", "weights_only=True"),
              ("evil_torch.pt", "weights_only=True")]


@pytest.mark.parametrize("name,expect", BAD_MODELS, ids=[n for n, _ in BAD_MODELS])
@pytest.mark.parametrize("command", [["layers"], ["weights", "--from", "conv1", "--to", "conv2", "--out", "{t}/w"],
                                     ["mnist-exercise", "--out", "{t}/ex"]], ids=["layers", "weights", "mnist-exercise"])
def test_bad_model_files(command, name, expect, work, capsys, fx):
    path = str(fx["root"] / "nope.safetensors") if name == "missing" else str(fx[name])
    flag = "--checkpoint" if command[0] == "mnist-exercise" else "--model"
    if flag == "--checkpoint" and name == "missing":
        expect = "no MNIST CNN checkpoint at"
    if flag == "--checkpoint" and name == "dir":
        expect = "is a directory"
    argv = [a.replace("{t}", str(work)) for a in command] + [flag, path]
    rc, err = run_main(argv, capsys, work)
    assert rc == 2, err
    assert first_line(err).startswith(f"vision-interp {command[0]}: error: "), err
    assert expect in first_line(err), err


BAD_DATA = [("mnist_lying", "truncated: header says shape (10000, 28, 28)"), ("mnist_magic", "bad IDX magic number"),
            ("mnist_empty", "too short to be an IDX file"), ("mnist_gzip", "gzip data is corrupt or truncated"),
            ("afile", "is a file, not a directory"), ("missing", "no such directory")]


@pytest.mark.parametrize("name,expect", BAD_DATA, ids=[n for n, _ in BAD_DATA])
def test_bad_data_dirs(name, expect, work, capsys, fx):
    path = str(fx["root"] / "nowhere") if name == "missing" else str(fx[name])
    rc, err = run_main(["attribute", "--index", "0", "--method", "saliency", "--out", str(work / "a.png"),
                        "--data-dir", path], capsys, work)
    assert rc == 2, err
    assert first_line(err).startswith("vision-interp attribute: error: "), err
    assert expect in first_line(err), err


BAD_GPT2 = [("gpt2_truncated", "not a valid safetensors file"), ("gpt2_pickle_shard", "is not a .safetensors file"),
            ("gpt2_missing_shard", "shard model-1.safetensors is missing"), ("gpt2_mismatch", "does not match its config.json"),
            ("gpt2_evil_bin", "weights_only=True"), ("gpt2_not_gpt2", "not 'gpt2'"), ("afile", "is a file")]


@pytest.mark.parametrize("name,expect", BAD_GPT2, ids=[n for n, _ in BAD_GPT2])
def test_bad_gpt2_models(name, expect, work, capsys, fx):
    rc, err = run_main(["induction", "--model", str(fx[name]), "--out", str(work / "ind"), "--no-progress"], capsys, work)
    assert rc == 2, err
    assert first_line(err).startswith("vision-interp induction: error: "), err
    assert expect in first_line(err), err


@pytest.mark.parametrize("which,expect", [("tok_missing", "no such directory"), ("tok_empty", "vocab.json, merges.txt not found"),
                                          ("afile", "is a file, not a directory")])
def test_bad_tokenizer_dir(which, expect, work, capsys, fx):
    path = str(fx["root"] / "no_tokenizer") if which == "tok_missing" else str(fx[which])
    rc, err = run_main(["induction", "--tokenizer-dir", path, "--out", str(work / "ind")], capsys, work)
    assert rc == 2 and first_line(err).startswith("vision-interp induction: error: "), err
    assert expect in first_line(err), err


# ------------------------------------------------------------------ the dispatcher: unexpected errors, --debug, cleanup


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


@pytest.mark.parametrize("exc,rc,expect", [
    (RuntimeError("boom\nsecond line"), 1, "vision-interp models: failed: RuntimeError: boom"),
    (MemoryError(), 1, "vision-interp models: failed: MemoryError: out of memory"),
    (TypeError("bad type"), 1, "vision-interp models: failed: TypeError: bad type"),
    (OSError(28, "No space left on device"), 1, "vision-interp models: failed: OSError: [Errno 28] No space left on device"),
    (KeyError("conv9"), 2, "vision-interp models: error: conv9"),
    (KeyboardInterrupt(), 130, "interrupted; finished files are kept and a rerun resumes where possible"),
])
def test_unexpected_errors_are_one_line(exc, rc, expect, work, capsys, monkeypatch):
    import vision_interp.zoo.registry as registry

    monkeypatch.setattr(registry, "list_models", _raise(exc))
    got, err = run_main(["models"], capsys, work)
    assert got == rc
    assert first_line(err) == expect
    if rc == 1:
        assert "--debug" in err.splitlines()[1] and len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("argv", [["--debug", "models"], ["models", "--debug"]])
def test_debug_shows_the_traceback(argv, capsys, monkeypatch):
    import vision_interp.zoo.registry as registry

    monkeypatch.setattr(registry, "list_models", _raise(RuntimeError("boom")))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: boom" in err


def test_failed_run_leaves_no_new_folders(work, capsys, monkeypatch, tmp_path_factory):
    """train-mnist into a new nested --out with no MNIST: the download fails, and neither the output folders
    nor <data>/mnist/raw are left behind."""
    import vision_interp.io as vio

    empty_data = work / "data"
    empty_data.mkdir()
    monkeypatch.setattr(vio, "download", _raise(ConnectionError("no network in tests")))
    rc, err = run_main(["train-mnist", "--data-dir", str(empty_data), "--out", str(work / "a" / "b" / "c"),
                        "--no-progress"], capsys, work)
    line = first_line(err)  # one line: where it looked, why, and how to point at the files
    assert rc == 2 and line.startswith(f"vision-interp train-mnist: error: MNIST not found in {empty_data / 'mnist' / 'raw'}"), err
    assert "no network in tests" in line and "--data-dir" in line and "$VISION_INTERP_DATA" in line, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (empty_data / "mnist").exists() and not (work / "a").exists()


def test_help_and_no_command(capsys):
    assert cli.main(["--help"]) == 0
    assert cli.main([]) == 2
    assert cli.main(["no-such-command"]) == 2
    assert "invalid choice" in first_line(capsys.readouterr().err)


# ------------------------------------------------------------------ as a real process: nothing but one line on stderr

SUBPROCESS_CASES = [
    (["attribute", "--image", "{fx}/bomb.png", "--out", "{t}/a.png"], 2, "above the limit of 50 Mpx"),
    (["induction", "--model", "{fx}/gpt2_truncated", "--out", "{t}/ind"], 2, "not a valid safetensors file"),
    (["layers", "--model", "{fx}/evil.pt"], 2, "weights_only=True"),
]


@pytest.mark.parametrize("argv,rc,expect", SUBPROCESS_CASES, ids=[c[0][0] + "-" + c[2][:12] for c in SUBPROCESS_CASES])
def test_subprocess_stderr_is_one_clean_message(argv, rc, expect, work, fx):
    argv = [a.replace("{t}", str(work)).replace("{fx}", str(fx["root"])) for a in argv]
    before = _snapshot(work)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "vision_interp", *argv], capture_output=True, text=True, env=env,
                          timeout=120, cwd=work)
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert first_line(proc.stderr).startswith(f"vision-interp {argv[0]}: error: ") and expect in proc.stderr, proc.stderr
    assert _snapshot(work) == before


@pytest.mark.parametrize("argv,expect", [
    (["gallery", "--layers", "conv1", "--size", "2048", "--batch", "64", "--out", "{t}/g"], "pixels per batch; at most 67,108,864"),
    (["visualize", "--layer", "conv2", "--size", "2048", "--batch-size", "1024", "--out-dir", "{t}/v"], "pixels per batch"),
])
def test_batches_that_would_exhaust_memory(argv, expect, work, capsys):
    rc, err = run_main([a.replace("{t}", str(work)) for a in argv], capsys, work)
    assert rc == 2 and first_line(err).startswith(f"vision-interp {argv[0]}: error: ") and expect in err, err
