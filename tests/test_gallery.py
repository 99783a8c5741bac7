"""Galleries: manifest, resume after interruption (exception and SIGKILL), shards, settings checks, escaping.

Robustness (verification, locks, kill -9 at several moments, Ray) is in test_gallery_robust.py;
page content (connections, weights, labels, folder datasets) in test_gallery_content.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gallery_models import HOSTILE, TinyNet, tiny_dataset
from vision_interp.gallery import (
    GallerySettings,
    IncompleteGalleryError,
    SettingsMismatchError,
    assemble,
    make_gallery,
    parse_shard,
)
from vision_interp.units import UnitRangeError, UnknownLayerError

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["conv", f"blocks.{HOSTILE}"]
# 5 + 3 units in chunks of 3 -> jobs conv#0 (0-2), conv#1 (3-4), evil#0 (0-2)
SETTINGS = GallerySettings(steps=3, batch=3, diverse=2, examples=3, connections=4, seed=7, objective="channel")


def build(out: Path, **kw):
    kw.setdefault("settings", SETTINGS)
    images, labels = tiny_dataset()
    return make_gallery(TinyNet(), LAYERS, out, dataset=images, dataset_labels=labels, progress=False, model_name="tiny", **kw)


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (no temporary leftovers allowed) by relative path."""
    files = {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    leftovers = [f for f in files if Path(f).name.startswith(".") or f.endswith(".part")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    return files


def assert_same_gallery(a: Path, b: Path) -> None:
    """Same files, same bytes; the manifests equal except ``environment`` (which process rendered: its threads
    and environment variables may differ, e.g. a subprocess started with OMP_NUM_THREADS=1)."""
    sa, sb = snapshot(a), snapshot(b)
    assert sorted(sa) == sorted(sb)
    ma, mb = json.loads(sa.pop("manifest.json")), json.loads(sb.pop("manifest.json"))
    assert ma.pop("environment")["vision_interp"] == mb.pop("environment")["vision_interp"]
    assert ma == mb
    different = [f for f in sa if sa[f] != sb[f]]
    assert not different, f"files differ: {different[:10]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "ref"
    res = build(out)
    assert res.complete and res.rendered_units == 8 and res.skipped_units == 0
    return out


def test_manifest_lists_every_unit_with_existing_files(reference):
    m = json.loads((reference / "manifest.json").read_text())
    assert m["settings"]["steps"] == 3 and m["settings"]["batch"] == 3 and m["settings"]["size"] == 12
    assert [l["name"] for l in m["layers"]] == LAYERS and [l["units"] for l in m["layers"]] == [5, 3]
    assert list(m["units"]) == [f"conv:{c}" for c in range(5)] + [f"blocks.{HOSTILE}:{c}" for c in range(3)]
    assert m["jobs_done"] == ["conv#0", "conv#1", f"blocks.{HOSTILE}#0"]
    for key, e in m["units"].items():
        files = [e["files"]["main"], e["files"]["negative"], *e["files"]["diverse"], e["files"]["page"]]
        assert len(e["files"]["diverse"]) == 2 and len(e["values"]["diverse"]) == 2
        for f in files:
            assert (reference / f).is_file(), f
        with Image.open(reference / e["files"]["main"]) as im:
            assert im.size == (12, 12)
        assert e["activations"]["main"] > e["activations"]["negative"], key  # max beats min
        # every file the unit shows is recorded with its sha256
        assert set(e["sha256"]) >= set(files[:-1]) | {x["image"] for x in e["examples"]["top"] + e["examples"]["bottom"]}
        assert len(e["examples"]["top"]) == 3 and len(e["examples"]["bottom"]) == 3
    # connections between the two tiny convs, mapped to this gallery's layer names
    c0 = m["units"]["conv:0"]["connections"]["outputs"]
    assert c0["layer"] == f"blocks.{HOSTILE}" and all(r["unit"].startswith(f"blocks.{HOSTILE}:") for r in c0["rows"])
    assert m["units"]["conv:0"]["connections_note"].startswith("no inputs")
    assert not list(reference.glob("manifest.shard-*.json"))  # merged into manifest.json
    assert (reference / "index.html").is_file() and len(list((reference / "units").rglob("*.html"))) == 8


def test_resume_after_exception_equals_uninterrupted(reference, tmp_path):
    out = tmp_path / "resumed"
    seen = []

    def stop_after_first(job: str) -> None:
        seen.append(job)
        raise KeyboardInterrupt  # what Ctrl-C after the first batch looks like

    with pytest.raises(KeyboardInterrupt):
        build(out, on_job_done=stop_after_first)
    assert seen == ["conv#0"]
    part = json.loads((out / "manifest.shard-0-of-1.json").read_text())
    assert part["jobs_done"] == ["conv#0"] and not (out / "manifest.json").exists()
    res = build(out)
    assert res.complete and res.rendered_units == 5 and res.skipped_units == 3
    assert_same_gallery(reference, out)
    again = build(out)  # a rerun of a finished gallery renders nothing and changes nothing
    assert again.rendered_units == 0 and again.skipped_units == 8
    assert_same_gallery(reference, out)


def test_resume_after_sigkill_equals_uninterrupted(reference, tmp_path):
    out = tmp_path / "killed"
    code = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_gallery import build
from pathlib import Path
def done(job):
    print("DONE", job, flush=True)
build(Path({str(out)!r}), on_job_done=done)
print("FINISHED", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("DONE conv#0"), line
        os.kill(proc.pid, signal.SIGKILL)  # during the second batch
    finally:
        proc.kill()
        proc.wait(timeout=30)
    part = json.loads((out / "manifest.shard-0-of-1.json").read_text())
    assert "conv#0" in part["jobs_done"] and len(part["jobs_done"]) < 3
    res = build(out)
    assert res.complete and res.skipped_units >= 3
    assert_same_gallery(reference, out)


def test_two_shards_then_assemble_equal_unsharded(reference, tmp_path):
    out = tmp_path / "sharded"
    r0 = build(out, shard="0/2")  # jobs 0 and 2
    assert not r0.complete and r0.rendered_units == 6
    assert (out / "manifest.shard-0-of-2.json").is_file() and not (out / "index.html").exists()
    with pytest.raises(IncompleteGalleryError, match="conv#1"):
        assemble(out)
    r1 = build(out, shard="1/2", assemble_site=False)  # job 1
    assert r1.rendered_units == 2 and not r1.complete
    assemble(out)
    assert_same_gallery(reference, out)
    assemble(out)  # idempotent
    assert_same_gallery(reference, out)


def test_shard_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard(None) == (2, 3)
    assert parse_shard("1/4") == (1, 4)
    monkeypatch.delenv("RANK")
    assert parse_shard(None) == (0, 1)
    for bad in ("4/4", "1-4", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_changed_settings_are_refused_unless_overwrite(reference, tmp_path):
    out = tmp_path / "mismatch"
    for p in reference.rglob("*"):  # a finished gallery to start from
        if p.is_file():
            (out / p.relative_to(reference)).parent.mkdir(parents=True, exist_ok=True)
            (out / p.relative_to(reference)).write_bytes(p.read_bytes())
    before = snapshot(out)
    with pytest.raises(SettingsMismatchError, match=r"steps: 3 -> 2.*--overwrite"):
        build(out, settings=GallerySettings(steps=2, batch=3, diverse=2, examples=3, connections=4, seed=7, objective="channel"))
    with pytest.raises(SettingsMismatchError, match="seed"):
        build(out, settings=GallerySettings(steps=3, batch=3, diverse=2, examples=3, connections=4, seed=8, objective="channel"))
    assert snapshot(out) == before  # refused before touching anything
    res = make_gallery(TinyNet(), ["conv:1-3"], out, steps=2, batch=5, diverse=0, negative=False, connections=0,
                       dataset=None, progress=False, overwrite=True)  # a channel slice of one layer
    assert res.complete and res.rendered_units == 3
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["units"]) == [f"conv:{c}" for c in (1, 2, 3)] and m["settings"]["steps"] == 2
    assert m["layer_names"] == ["conv:1-3"] and m["layers"][0]["units"] == 3
    assert not any(HOSTILE in p.name for p in out.rglob("*"))  # the old layer's files were removed
    assert len(list((out / "units").rglob("*.html"))) == 3


def test_bad_input_fails_before_any_work(tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(UnknownLayerError, match="conv"):
        make_gallery(TinyNet(), ["cnov"], out, dataset=None, progress=False)
    with pytest.raises(ValueError, match="diverse"):
        make_gallery(TinyNet(), ["conv"], out, diverse=1, dataset=None, progress=False)
    with pytest.raises(UnitRangeError, match="0..4"):
        make_gallery(TinyNet(), ["conv:3-9"], out, dataset=None, progress=False)
    with pytest.raises(ValueError, match="empty"):
        make_gallery(TinyNet(), ["conv:3-1"], out, dataset=None, progress=False)
    with pytest.raises(TypeError, match="stepz"):
        make_gallery(TinyNet(), ["conv"], out, stepz=3, dataset=None, progress=False)
    assert not out.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not empty"):
        make_gallery(TinyNet(), ["conv"], foreign, dataset=None, progress=False)


def test_hostile_layer_name_is_escaped_everywhere(reference):
    pages = list(reference.rglob("*.html"))
    assert len(pages) == 1 + 2 + 8
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text, page
        assert 'alert("x")' not in text, page
    layer_page = next(p for p in (reference / "layers").glob("*.html") if p.name != "conv.html")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in layer_page.read_text()
    assert all(c not in layer_page.name for c in '<>"/')  # a file-system-safe slug


def test_cli_gallery_and_assemble(tmp_path, data_dir, capsys):
    from vision_interp.cli import main

    out = tmp_path / "cli"
    args = ["gallery", "--model", "mnist_cnn", "--layers", "logits", "--out", str(out), "--steps", "2", "--batch", "5",
            "--diverse", "0", "--no-negative", "--examples", "3", "--examples-limit", "200", "--data-dir", str(data_dir),
            "--no-progress", "--connections", "2"]
    assert main(args + ["--shard", "1/2"]) == 0
    assert "still missing" in capsys.readouterr().out
    assert main(["gallery", "--assemble", "--out", str(out)]) == 2
    assert "1 of 2 jobs are not done" in capsys.readouterr().err
    assert main(args + ["--shard", "0/2"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    e = m["units"]["logits:3"]
    assert e["label"] == "3" and len(e["examples"]["top"]) == 3 and "patch" not in e["examples"]["top"][0]
    assert all(ex["label"] == "3" for ex in e["examples"]["top"])  # a trained logit's top images are its digit
    hist = dict(e["class_histogram"]["counts"])
    assert e["class_histogram"]["of_top"] == 100 and sum(hist.values()) == 100
    from vision_interp.data.mnist import load_mnist

    n3 = int((load_mnist("test", data_dir, limit=200).labels == 3).sum())
    assert hist["3"] == n3  # every 3 of the 200 images is in logit 3's top half
    assert all(r["unit"].startswith("conv2:") for r in e["connections"]["inputs"]["rows"])
    assert m["model"]["checkpoint_sha256"] == json.loads((REPO / "models" / "mnist_cnn.json").read_text())["weights_sha256"]
    assert main(args + ["--steps", "3"]) == 2
    assert "different settings" in capsys.readouterr().err
    assert main(["gallery", "--out", str(out)]) == 2
    assert "--layers is required" in capsys.readouterr().err


def test_batchnorm_model_and_non_square_input(tmp_path):
    """A 0-dim buffer (BatchNorm's num_batches_tracked) must not break the weights fingerprint, and
    a non-square model input is rendered at its own H x W (not squared to its width)."""
    import torch
    from torch import nn

    class Wide(nn.Module):
        input_shape = (1, 10, 14)

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.bn = nn.BatchNorm2d(2)
            self.eval()

        def forward(self, x):
            if x.shape[-2:] != (10, 14):
                raise ValueError(f"Wide takes 10x14 images, got {tuple(x.shape[-2:])}")
            return self.bn(self.conv(x))

    out = tmp_path / "wide"
    res = make_gallery(Wide(), ["conv"], out, settings=GallerySettings(steps=2, batch=2, diverse=0, negative=False, examples=0, connections=0),
                       dataset=None, progress=False)
    assert res.complete
    img = Image.open(out / json.loads((out / "manifest.json").read_text())["units"]["conv:0"]["files"]["main"])
    assert img.size == (14, 10)


def test_dataset_of_wrong_rank_is_refused_before_work(tmp_path):
    import torch

    out = tmp_path / "ds"
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make_gallery(TinyNet(), ["conv"], out, settings=SETTINGS, examples=2, dataset=torch.rand(5, 12, 12), progress=False)
    assert not out.exists()
