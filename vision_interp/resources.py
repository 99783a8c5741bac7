"""Where models live: the one place that knows.

The committed models (the MNIST CNN, dictionary features and transcoders under ``features/``, the
toy induction model ``induction_2l/``, the universality seed models ``universality/``) and their
model cards sit in the repository's top-level ``models/`` folder. The wheel maps that folder into
the package as ``vision_interp/models`` (package data, see ``setup.py``), so an installed package
finds them through :mod:`importlib.resources`; a source checkout (editable install, or the repo on
``PYTHONPATH``) reads the checkout's ``models/`` folder directly.

A model file named by a path relative to ``models/`` (``"mnist_cnn.safetensors"``,
``"features/mnist_cnn_conv2_sae.safetensors"``) is looked up in this order, first hit wins:

1. the package data (``vision_interp/models`` when installed, ``<checkout>/models`` in a clone);
2. ``$VISION_INTERP_MODELS``, a user folder with the same layout;
3. the download cache, ``<cache>/models`` (``$VISION_INTERP_CACHE``, else ``~/.cache/vision_interp``).

Trainers that save under a bare name write to :func:`user_models_dir`: the checkout's ``models/``
in a clone (so retraining regenerates the committed files), otherwise ``$VISION_INTERP_MODELS`` or
the cache, never into an installed package.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from .errors import InputError, InputTypeError
from .io import cache_dir

__all__ = ["MODELS_ENV", "models_dir", "models_search_path", "model_path", "find_model", "user_models_dir",
           "is_source_checkout", "list_model_files"]

MODELS_ENV = "VISION_INTERP_MODELS"
PACKAGE = "vision_interp"


def _package_dir() -> Path:
    """The directory the ``vision_interp`` package was imported from."""
    return Path(str(importlib.resources.files(PACKAGE)))


def _checkout_models(package_dir: Path) -> Path | None:
    """``<checkout>/models`` when the package is imported from a source checkout (its pyproject beside it)."""
    root = package_dir.parent
    models = root / "models"
    if models.is_dir() and (root / "pyproject.toml").is_file() and (root / "setup.py").is_file():
        return models
    return None


def models_dir() -> Path:
    """The package's own models folder (installed package data, or the checkout's ``models/``).

    Raises FileNotFoundError when the package was installed without its models.
    """
    package_dir = _package_dir()
    for candidate in (package_dir / "models", _checkout_models(package_dir)):
        if candidate is not None and candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"vision_interp's models folder is missing (looked in {package_dir / 'models'}); reinstall the package, "
        f"or point ${MODELS_ENV} at a folder holding the model files"
    )


def is_source_checkout() -> bool:
    """True when the package runs from a source checkout (its models folder is the repo's ``models/``)."""
    return _checkout_models(_package_dir()) is not None


def checkout_galleries_dir() -> Path | None:
    """``<checkout>/galleries`` (the committed galleries and reports) in a source checkout, else None:
    an installed package ships no galleries."""
    models = _checkout_models(_package_dir())
    galleries = models.parent / "galleries" if models is not None else None
    return galleries if galleries is not None and galleries.is_dir() else None


def models_search_path() -> list[Path]:
    """The folders searched for a model file, in order (see the module docstring)."""
    roots: list[Path] = []
    try:
        roots.append(models_dir())
    except FileNotFoundError:
        pass
    env = os.environ.get(MODELS_ENV)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_dir() / "models")
    return roots


def _check_relative(relative: str | os.PathLike, arg: str = "relative") -> Path:
    """A path inside the models folder: relative, no ``..``, not empty (else an error naming ``arg``)."""
    if isinstance(relative, bytes) or not isinstance(relative, (str, os.PathLike)):
        raise InputTypeError(f"{arg}: expected a path relative to the models folder (str or os.PathLike), got "
                             f"{type(relative).__name__}")
    text = os.fspath(relative)
    rel = Path(text)
    if not text or "\x00" in text or rel.is_absolute() or rel.anchor or ".." in rel.parts or not rel.parts \
            or "\\" in text and ".." in text.split("\\"):
        raise InputError(f"{arg}: {text!r}; model file names are relative to the models folder, without '..' "
                         "(e.g. 'mnist_cnn.safetensors', 'features/mnist_cnn_conv2_sae.safetensors')")
    return rel


def _check_pattern(pattern: str) -> str:
    """A glob pattern that stays inside one folder: no absolute path, no ``..`` component, not empty."""
    if not isinstance(pattern, str):
        raise InputTypeError(f"pattern: expected a glob pattern (str) such as '*.safetensors', got {type(pattern).__name__}")
    parts = pattern.replace("\\", "/").split("/")
    if not pattern or "\x00" in pattern or Path(pattern).is_absolute() or pattern.startswith(("/", "\\")) \
            or any(p == ".." for p in parts) or Path(pattern).drive:
        raise InputError(f"pattern: {pattern!r}; a pattern matches file names inside the models folder ('*', "
                         "'*.safetensors', 'features/*.json'), with no absolute path and no '..'")
    return pattern


def find_model(relative: str | os.PathLike) -> Path | None:
    """The first existing ``<root>/relative`` along :func:`models_search_path` (file or folder), else None."""
    rel = _check_relative(relative)
    for root in models_search_path():
        if (root / rel).exists():
            return root / rel
    return None


def model_path(relative: str | os.PathLike) -> Path:
    """Like :func:`find_model`, but a missing model is a FileNotFoundError that names every folder searched."""
    found = find_model(relative)
    if found is None:
        where = ", ".join(str(r) for r in models_search_path())
        raise FileNotFoundError(f"no model file {Path(relative).as_posix()} in {where} (searched in this order; "
                                f"set ${MODELS_ENV} to a folder holding it)")
    return found


def user_models_dir() -> Path:
    """Where trainers save under a bare name: the checkout's ``models/`` in a clone, else
    ``$VISION_INTERP_MODELS``, else ``<cache>/models`` (never inside an installed package)."""
    checkout = _checkout_models(_package_dir())
    if checkout is not None:
        return checkout
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else cache_dir() / "models"


def list_model_files(subdir: str | os.PathLike = ".", pattern: str = "*") -> list[Path]:
    """Files matching ``pattern`` in ``subdir`` of every searched folder; a name found twice is listed
    once, from the folder that wins the search.

    ``subdir`` and ``pattern`` stay inside the models folders: an absolute path or a ``..`` component in
    either is refused, and a match that still resolves outside its folder (a symbolic link) is left out."""
    if isinstance(subdir, (str, os.PathLike)) and not isinstance(subdir, bytes) and os.fspath(subdir) in (".", "./"):
        rel = Path(".")
    else:
        rel = _check_relative(subdir, "subdir")
    _check_pattern(pattern)
    seen: dict[str, Path] = {}
    for root in models_search_path():
        folder = root / rel
        if folder.is_dir():
            inside = folder.resolve()
            for p in sorted(folder.glob(pattern)):
                try:
                    p.resolve().relative_to(inside)
                except ValueError:
                    continue  # a link out of the folder
                key = p.relative_to(folder).as_posix()
                seen.setdefault(key, p)
    return [seen[k] for k in sorted(seen)]
