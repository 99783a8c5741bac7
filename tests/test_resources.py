"""Where models live (vision_interp.resources): the search order, the one place that knows the repo
layout, the version, and MNIST's one-line error when the data is nowhere."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import vision_interp
from vision_interp import cli, resources

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vision_interp"
# a path computed from a module's own location: only resources.py may look outside the package this way
REPO_LOOKUP = re.compile(r"__file__|\.parents\s*\[|\.parent\s*\.\s*parent")


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """A user models folder and a cache, both empty, in the search path after the package's models."""
    user, cache = tmp_path / "user_models", tmp_path / "cache"
    monkeypatch.setenv(resources.MODELS_ENV, str(user))
    monkeypatch.setenv("VISION_INTERP_CACHE", str(cache))
    return user, cache / "models"


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_module_finds_files_relative_to_its_own_location():
    offenders = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
                 for p in sorted(PACKAGE.rglob("*.py")) if p.name != "resources.py" or p.parent != PACKAGE
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if REPO_LOOKUP.search(line)]
    assert not offenders, "find files through vision_interp.resources, not __file__/parents[...]:\n" + "\n".join(offenders)


def test_the_lookup_guard_catches_the_old_pattern():
    assert REPO_LOOKUP.search('MODELS_DIR = Path(__file__).resolve().parents[2] / "models"')
    assert REPO_LOOKUP.search("root = here.parent.parent")
    assert not REPO_LOOKUP.search("out.parent.mkdir(parents=True)")


def test_package_models_come_first_and_hold_every_committed_model(roots):
    user, cache = roots
    assert resources.models_search_path() == [REPO / "models", user, cache]
    assert resources.models_dir() == REPO / "models" and resources.is_source_checkout()
    for rel in ("mnist_cnn.safetensors", "mnist_cnn.md", "features/mnist_cnn_conv2_sae.safetensors",
                "induction_2l/model.safetensors", "universality/mnist_cnn_seed0.safetensors"):
        assert resources.model_path(rel) == REPO / "models" / rel
    _write(user / "mnist_cnn.safetensors")  # a user copy never shadows the package's own model
    assert resources.model_path("mnist_cnn.safetensors") == REPO / "models" / "mnist_cnn.safetensors"


def test_user_folder_then_cache(roots):
    user, cache = roots
    only_cache = _write(cache / "features" / "c.safetensors")
    assert resources.model_path("features/c.safetensors") == only_cache
    in_both = _write(user / "features" / "c.safetensors")
    assert resources.model_path("features/c.safetensors") == in_both
    names = [p.name for p in resources.list_model_files("features", "*.safetensors")]
    assert names.count("c.safetensors") == 1 and "mnist_cnn_conv2_sae.safetensors" in names
    assert [p for p in resources.list_model_files("features", "c.*")] == [in_both]


def test_missing_model_names_every_folder_searched(roots):
    user, cache = roots
    assert resources.find_model("nope.safetensors") is None
    with pytest.raises(FileNotFoundError) as e:
        resources.model_path("features/nope.safetensors")
    msg = str(e.value)
    assert "features/nope.safetensors" in msg and all(str(r) in msg for r in (REPO / "models", user, cache))
    assert resources.MODELS_ENV in msg


@pytest.mark.parametrize("bad", ["/etc/passwd", "../pyproject.toml", "features/../../setup.py", ""])
def test_model_names_stay_inside_the_models_folders(bad):
    with pytest.raises(ValueError, match="relative to the models folder"):
        resources.find_model(bad)


def test_trainers_write_to_the_checkout_in_a_clone(roots):
    assert resources.user_models_dir() == REPO / "models"


def test_named_dictionary_saved_outside_the_package_is_found_by_name(roots, monkeypatch):
    """An installed package saves a bare-named dictionary in the user's folder, and loads it back by name."""
    import torch

    from vision_interp import features

    user, _ = roots
    monkeypatch.setattr(resources, "user_models_dir", lambda: user)  # as for an installed package
    d = features.dictionary_from_directions(torch.eye(4)[:3], "conv1", k=1)
    weights = features.save_dictionary(d, "my_dict")
    assert weights == user / "features" / "my_dict.safetensors"
    back = features.load_dictionary("my_dict")
    assert torch.equal(back.module.W_dec, d.module.W_dec) and back.layer == "conv1"
    with pytest.raises(FileNotFoundError, match="known names: .*mnist_cnn_conv2_sae.*my_dict"):
        features.load_dictionary("not_there")


def test_seed_models_default_to_the_package_and_train_into_the_user_folder(roots):
    from vision_interp.universality import seeds

    assert seeds.seed_models_dir([0, 1, 2, 3]) == REPO / "models" / "universality"
    assert seeds.seed_models_dir([0, 1], train=True) == resources.user_models_dir() / "universality"


def test_version_is_single_sourced(capsys):
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vision_interp.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", vision_interp.__version__)
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vision-interp {vision_interp.__version__}"


def test_mnist_nowhere_is_one_line_naming_the_folder_and_the_fix(tmp_path, monkeypatch):
    """No data directory, no network: the CLI says where it looked and how to point at the files."""
    monkeypatch.delenv("VISION_INTERP_DATA", raising=False)
    env = {k: v for k, v in __import__("os").environ.items() if k != "VISION_INTERP_DATA"}
    env.update(VISION_INTERP_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO),
               # no network: every download fails at once, as offline
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="")
    r = subprocess.run([sys.executable, "-m", "vision_interp", "mnist-exercise", "--quick", "--out", str(tmp_path / "ex")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    where = tmp_path / "cache" / "data" / "mnist" / "raw"
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr  # one line
    line = r.stderr.strip()
    assert line.startswith(f"vision-interp mnist-exercise: error: MNIST not found in {where}"), line
    assert "--data-dir" in line and "$VISION_INTERP_DATA" in line and "could not be downloaded" in line, line
    assert not (tmp_path / "cache").exists() and not (tmp_path / "ex").exists()  # nothing left behind
