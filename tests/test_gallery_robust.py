"""Gallery builds that never lose or duplicate work: kill -9 at several moments, verification of
every recorded file, orphan temporaries, the build lock, concurrent builds, the settings
fingerprint, and a Ray build (skipped when Ray is not installed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_gallery import LAYERS, REPO, assert_same_gallery, build, snapshot
from vision_interp.gallery import GalleryLockedError, IncompleteGalleryError, SettingsMismatchError, assemble
from vision_interp.gallery.lock import BuildLock, _process_start

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("robust") / "ref"
    res = build(out)
    assert res.complete and res.rendered_units == 8
    return out


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "OMP_NUM_THREADS": "1"}


# Builds that SIGKILL themselves at chosen moments. ``os.replace`` is the commit point of every
# atomic write (vision_interp.io), so killing just before one leaves exactly what a real kill -9
# leaves there: a finished temporary file that was never renamed. One subprocess imports torch
# once and forks a child per moment (OMP_NUM_THREADS=1: no threads to lose in the fork).
MOMENTS = ["png-in-first-job", "png-in-second-job", "before-record", "between-jobs", "site", "manifest"]
KILLER = """
import json, os, signal, sys
from pathlib import Path
from test_gallery import build
real_replace = os.replace
status = {}
for moment in sys.argv[2:]:
    out = Path(sys.argv[1]) / moment
    pid = os.fork()
    if pid == 0:
        calls = {"n": 0, "parts": 0}
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
        def replace(src, dst, *a, **kw):
            calls["n"] += 1
            name, parent = Path(dst).name, Path(dst).parent
            if name.startswith("manifest.shard-"):
                calls["parts"] += 1
            if moment == "png-in-first-job" and calls["n"] == 12:
                die()
            if moment == "png-in-second-job" and name.endswith(".png") and calls["parts"] == 2 and calls["n"] % 5 == 0:
                die()
            if moment == "before-record" and name.startswith("manifest.shard-") and calls["parts"] == 3:
                die()  # the second job's files are all written, its record never lands
            if moment == "site" and parent.name == "conv" and parent.parent.name == "units" and name == "2.html":
                die()
            if moment == "manifest" and name == "manifest.json":
                die()  # site written, manifest.json not yet
            return real_replace(src, dst, *a, **kw)
        os.replace = replace
        def done(job):
            if moment == "between-jobs":
                die()
        build(out, on_job_done=done)
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    status[moment] = os.WTERMSIG(st) if os.WIFSIGNALED(st) else -os.WEXITSTATUS(st)
print(json.dumps(status))
"""


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killed")
    proc = subprocess.run([sys.executable, "-c", KILLER, str(root), *MOMENTS], env=_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == {m: int(signal.SIGKILL) for m in MOMENTS}, status  # every build died by SIGKILL
    return root


@pytest.mark.slow
@pytest.mark.parametrize("moment", MOMENTS)
def test_kill9_at_any_moment_then_rerun_gives_identical_site(reference, killed, moment):
    out = killed / moment
    lock = out / ".lock.shard-0-of-1"
    assert lock.is_file() and json.loads(lock.read_text())["pid"] != os.getpid()  # left behind by the dead build
    if moment.startswith("png"):
        assert list(out.rglob(".*.part")), "the kill should leave an orphan temporary file"
    res = build(out)  # takes over the stale lock, removes temporaries, verifies, finishes
    assert res.complete
    assert_same_gallery(reference, out)  # byte-identical, no temporary or lock files left


def test_deleted_or_corrupted_files_are_restored(reference, tmp_path):
    out = copy_of(reference, tmp_path / "damaged")
    m = json.loads((out / "manifest.json").read_text())
    deleted = m["units"]["conv:4"]["files"]["main"]
    corrupted = m["units"][f"{LAYERS[1]}:1"]["examples"]["top"][0]["patch"]
    (out / deleted).unlink()
    (out / corrupted).write_bytes((out / corrupted).read_bytes()[:20])  # truncated PNG
    with pytest.raises(IncompleteGalleryError, match="missing or changed"):
        assemble(out)  # assembly refuses a damaged gallery and says how to repair it
    res = build(out)
    assert res.complete and res.rendered_units == 2 + 3  # conv#1 (units 3-4) and the second layer's only job
    assert_same_gallery(reference, out)


def test_corrupted_shared_dataset_image_is_restored(reference, tmp_path):
    out = copy_of(reference, tmp_path / "data")
    shared = json.loads((out / "manifest.json").read_text())["units"]["conv:0"]["examples"]["top"][0]["image"]
    (out / shared).write_bytes(b"not a png")
    res = build(out)
    assert res.complete and res.rendered_units >= 3  # every job showing that image is redone
    assert_same_gallery(reference, out)


def test_orphan_temporary_files_are_removed(reference, tmp_path):
    out = copy_of(reference, tmp_path / "orphans")
    old = time.time() - 60
    for p in (out / "img" / "conv" / "0" / ".main.png.k2j3h4.part", out / ".index.html.x8y9.part", out / "data" / ".data-00001.png.aa.part"):
        p.write_bytes(b"half a file")
        os.utime(p, (old, old))
    res = build(out)
    assert res.rendered_units == 0 and res.skipped_units == 8
    assert_same_gallery(reference, out)


def _fake_lock(out: Path, pid: int, shard=(0, 1), host: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lock = out / f".lock.shard-{shard[0]}-of-{shard[1]}"
    lock.write_text(json.dumps({"pid": pid, "hostname": host or socket.gethostname(), "started": _process_start(pid),
                                "created": time.time(), "shard": list(shard)}))
    return lock


def test_live_lock_refuses_second_build_and_stale_lock_is_taken_over(reference, tmp_path):
    out = copy_of(reference, tmp_path / "locked")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        lock = _fake_lock(out, sleeper.pid)
        with pytest.raises(GalleryLockedError, match=rf"pid {sleeper.pid} on {socket.gethostname()}.*--wait-lock"):
            build(out)
        t0 = time.monotonic()
        with pytest.raises(GalleryLockedError, match="Waited 1 s"):
            build(out, wait_lock=1.0)
        assert time.monotonic() - t0 >= 1.0
        lock.unlink()
        _fake_lock(out, sleeper.pid, shard=(1, 2))  # another shard count running: also a conflict
        with pytest.raises(GalleryLockedError, match="shard 1/2"):
            build(out)
        with BuildLock(out, (0, 2)):  # ... but shards of the same count run side by side
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    res = build(out)  # the sleeper is dead: its lock is stale and taken over
    assert res.complete and res.rendered_units == 0
    assert_same_gallery(reference, out)
    _fake_lock(out, 1, host="some-other-host")  # another host's lock can't be judged from here
    with pytest.raises(GalleryLockedError, match="some-other-host.*delete the lock file"):
        build(out)


CONCURRENT = """
import sys
from pathlib import Path
from test_gallery import build
def done(job):
    print("RENDERED", job, flush=True)
res = build(Path(sys.argv[1]), wait_lock=240)
print("RESULT", res.rendered_units, res.skipped_units, res.complete, flush=True)
"""


@pytest.mark.slow
def test_concurrent_builds_never_render_a_unit_twice(reference, tmp_path):
    out = tmp_path / "concurrent"
    code = CONCURRENT.replace("build(Path(sys.argv[1]), wait_lock=240)", "build(Path(sys.argv[1]), wait_lock=240, on_job_done=done)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out)], env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outputs]
    rendered = [line.split()[1] for o, _ in outputs for line in o.splitlines() if line.startswith("RENDERED")]
    assert sorted(rendered) == sorted(["conv#0", "conv#1", f"{LAYERS[1]}#0"])  # each job exactly once, over both
    results = sorted(tuple(line.split()[1:]) for o, _ in outputs for line in o.splitlines() if line.startswith("RESULT"))
    assert results == [("0", "8", "True"), ("8", "0", "True")]  # one built it, the other waited and found it done
    assert_same_gallery(reference, out)


def test_settings_fingerprint_records_precision_and_device(reference, tmp_path):
    m = json.loads((reference / "manifest.json").read_text())
    render = m["settings"]["render"]
    assert render["precision"] == "fp32" and render["device"] == "cpu" and render["steps"] == 3
    # the preset and the whole recipe of the default (issue 18): a change of default is a settings change
    assert render["preset"] == "fast-small" and render["polish_fraction"] == 0.125 and render["betas"] == [0.7, 0.8]
    # the machine that rendered (vision-interp doctor's facts), outside the identity a resume compares (issue 25)
    assert m["environment"]["torch"]["version"] == torch.__version__
    assert "environment" not in m["settings"] and isinstance(m["environment"]["native_bf16"], bool)
    out = copy_of(reference, tmp_path / "device")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["settings"]["render"]["device"] = "cuda"  # as if it had been rendered on a GPU
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(out)
    with pytest.raises(SettingsMismatchError, match=r"render\.device: 'cuda' -> 'cpu'"):
        build(out)
    assert snapshot(out) == before


@pytest.mark.slow
def test_ray_build_equals_single_process_build(reference, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'vision_interp[ray]')")
    # workers are started by this process and import the tiny test model from tests/
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        res = build(out, executor="ray")
    finally:
        ray.shutdown()
    assert res.complete and res.rendered_units == 8
    assert_same_gallery(reference, out)


def test_ray_executor_without_ray_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ValueError, match=r"pip install 'vision_interp\[ray\]'"):
        build(tmp_path / "noray", executor="ray")
    assert not (tmp_path / "noray").exists()
