"""The package as a user installs it: build the sdist and wheel, install the wheel into a fresh virtual
environment outside the repository (offline: no index, no dependencies fetched; the dependencies the
test interpreter already has are made importable by a .pth file), and run the README tour and the
main commands from an empty directory. Nothing may be written into site-packages while they run.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import vision_interp

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VERSION = vision_interp.__version__


def _run(cmd: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _source_copy(dest: Path) -> Path:
    """The files a clone would have (tracked + untracked, not ignored): no build leftovers from this tree."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                 capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs git to list the repository's files")
    for rel in filter(None, listing):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    return dest


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` (bytecode caches aside) with its size and mtime."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory, data_dir):
    """Build (sdist, then the wheel from it), install into a fresh venv, and an environment to run it in."""
    root = tmp_path_factory.mktemp("installed")
    src = _source_copy(root / "src")
    dist = root / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src], dict(os.environ), src)
    wheel = next(dist.glob("vision_interp-*.whl"))
    sdist = next(dist.glob("vision_interp-*.tar.gz"))

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site_packages = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], {}, root).stdout.strip())
    deps = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    (site_packages / "_test_dependencies.pth").write_text("\n".join(deps) + "\n")  # torch & co., no editable finder
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "--disable-pip-version-check",
          "--quiet", wheel], dict(os.environ), root)

    home, work = root / "home", root / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "VISION_INTERP_"))}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), VISION_INTERP_CACHE=str(root / "cache"),
               VISION_INTERP_DATA=str(data_dir), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("XDG_CACHE_HOME", None)
    return {"wheel": wheel, "sdist": sdist, "py": py, "bin": env_dir / "bin", "site": site_packages, "env": env,
            "work": work, "before": _snapshot(site_packages)}


def _untouched(inst) -> None:
    after = _snapshot(inst["site"])
    changed = sorted(k for k in set(after) | set(inst["before"]) if after.get(k) != inst["before"].get(k))
    assert not changed, f"written into site-packages at run time: {changed[:10]}"


def test_the_wheel_carries_models_cards_licence_and_readme(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    committed = subprocess.run(["git", "ls-files", "models"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert committed and all(f"vision_interp/{rel}" in names for rel in committed), "every committed model file ships"
    assert {"vision_interp/models/mnist_cnn.md", "vision_interp/models/induction_2l/README.md"} <= names  # cards
    assert "vision_interp/py.typed" in names
    assert {"vision_interp/assets/d3.min.js", "vision_interp/assets/LICENSE.d3", "vision_interp/assets/graph_page.js",
            "vision_interp/assets/graph_page.css"} <= names  # vendored d3 and the graph page's shared script and style
    dist_info = f"vision_interp-{VERSION}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    meta = zipfile.ZipFile(installed["wheel"]).read(f"{dist_info}/METADATA").decode()
    assert f"\nVersion: {VERSION}\n" in meta and "Description-Content-Type: text/markdown" in meta
    assert (REPO / "README.md").read_text().strip().splitlines()[0] in meta  # README is the long description
    assert installed["sdist"].name == f"vision_interp-{VERSION}.tar.gz"
    print(f"wheel {installed['wheel'].stat().st_size / 1e6:.2f} MB, sdist {installed['sdist'].stat().st_size / 1e6:.2f} MB")


def test_import_help_and_version_from_an_empty_directory(installed):
    probe = ("import json, vision_interp as vi; from vision_interp import resources as r; "
             "print(json.dumps({'file': vi.__file__, 'models': str(r.models_dir()), 'checkout': r.is_source_checkout(), "
             "'user': str(r.user_models_dir()), 'version': vi.__version__, 'sae': str(r.model_path('features/mnist_cnn_conv2_sae.safetensors'))}))")
    got = json.loads(_run([installed["py"], "-c", probe], installed["env"], installed["work"]).stdout)
    site_packages = installed["site"]
    assert Path(got["file"]).parent == site_packages / "vision_interp", got  # the wheel, not the repository
    assert Path(got["models"]) == site_packages / "vision_interp" / "models" and not got["checkout"]
    assert Path(got["sae"]).is_relative_to(site_packages) and got["version"] == VERSION
    assert not Path(got["user"]).is_relative_to(site_packages)  # trainers never write into the package
    cli = installed["bin"] / "vision-interp"
    assert "mnist-exercise" in _run([cli, "--help"], installed["env"], installed["work"]).stdout
    assert _run([cli, "--version"], installed["env"], installed["work"]).stdout.strip() == f"vision-interp {VERSION}"
    _untouched(installed)


def test_readme_tour_runs_from_the_installed_package(installed, tmp_path):
    """The README's Python blocks, minus what needs the network (pretrained InceptionV1) or minutes (512 steps)."""
    setup = ("import vision_interp as vi; from vision_interp.data.mnist import load_mnist; "
             "_x = load_mnist('test', limit=4, download=False).images; inc = vi.inceptionv1()")
    out = tmp_path / "tour.json"
    _run([installed["py"], "-P", REPO / "tests" / "readme_blocks.py", REPO / "README.md", "--setup", setup,
          "--placeholder", "x=_x", "--skip", "pretrained=True", "--skip", "steps=512", "--json", out],
         installed["env"], installed["work"])
    result = json.loads(out.read_text())
    assert result["failure"] is None
    ran = "\n".join(result["ran"])
    for needed in ("vi.mnist_cnn()", "features.load_dictionary(", "vi.capture(", "visualize_layer(", "attribute("):
        assert needed in ran, f"{needed} did not run: {result['skipped']}"
    assert len(result["raised_as_shown"]) >= 2 and len(result["skipped"]) <= 6, result
    _untouched(installed)


def test_commands_find_the_packaged_models(installed):
    env, work, cli = installed["env"], installed["work"], installed["bin"] / "vision-interp"
    _run([cli, "mnist-exercise", "--quick", "--data-dir", env["VISION_INTERP_DATA"], "--out", "ex", "--no-progress"], env, work)
    results = json.loads((work / "ex" / "results.json").read_text())
    checkpoint = Path(results["model"]["checkpoint"])
    assert checkpoint.is_relative_to(installed["site"]) and checkpoint.name == "mnist_cnn.safetensors"
    assert (work / "ex" / "report.html").is_file()

    _run([cli, "induction", "--model", "induction_2l", "--out", "ind", "--batch", "4", "--ablation", "mean",
          "--ig-steps", "2", "--no-progress"], env, work)
    assert (work / "ind" / "index.html").is_file()

    _run([cli, "visualize", "--model", "mnist_cnn", "--unit", "conv2:5", "--steps", "16", "--out", "v.png", "--no-progress"], env, work)
    assert (work / "v.png").stat().st_size > 100
    _untouched(installed)


def test_no_data_anywhere_is_one_line_naming_the_default_location(installed):
    """No --data-dir, no $VISION_INTERP_DATA, no network: where it looked (the user cache) and how to fix it."""
    env = {k: v for k, v in installed["env"].items() if k != "VISION_INTERP_DATA"}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="")  # offline
    r = subprocess.run([installed["bin"] / "vision-interp", "mnist-exercise", "--quick", "--out", "nodata"], cwd=installed["work"],
                       env=env, capture_output=True, text=True, timeout=300)
    where = Path(env["VISION_INTERP_CACHE"]) / "data" / "mnist" / "raw"
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"vision-interp mnist-exercise: error: MNIST not found in {where}"), r.stderr
    assert "--data-dir" in r.stderr and "$VISION_INTERP_DATA" in r.stderr
    _untouched(installed)


def test_editable_install_reads_the_checkout_models(installed, tmp_path):
    """``pip install -e`` (what ``make`` does) keeps finding the checkout's top-level models/."""
    src = _source_copy(tmp_path / "clone")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site_packages = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], {}, tmp_path).stdout.strip())
    (site_packages / "_test_dependencies.pth").write_text((installed["site"] / "_test_dependencies.pth").read_text())
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "--no-build-isolation",
          "--disable-pip-version-check", "--quiet", "-e", src], dict(os.environ), tmp_path)
    probe = ("import vision_interp as vi; from vision_interp import resources as r; vi.mnist_cnn(); "
             "from vision_interp import features; features.load_dictionary('mnist_cnn_conv2_sae'); "
             "print(vi.__file__); print(r.models_dir())")
    out = _run([py, "-c", probe], installed["env"], installed["work"]).stdout.split()
    assert Path(out[0]).parent == src / "vision_interp" and Path(out[1]) == src / "models"
