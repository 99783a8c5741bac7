"""Packaging glue that pyproject.toml cannot express: the top-level ``models/`` folder ships inside
the package as ``vision_interp.models`` (package data, with its model cards), so an installed
package finds its committed models through ``importlib.resources`` (see ``vision_interp/resources.py``).
Everything else (metadata, version, dependencies, entry point) lives in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
MODEL_FILES = ["*"]  # weights, configs and model cards (hidden partial files never match)


def model_packages() -> list[str]:
    """``vision_interp.models`` and one entry per sub-folder of ``models/`` (each holds data files only)."""
    folders = [HERE / "models"] + sorted(p for p in (HERE / "models").rglob("*") if p.is_dir() and not p.name.startswith((".", "__")))
    return [".".join(("vision_interp", "models", *f.relative_to(HERE / "models").parts)) for f in folders]


packages = find_packages(where=str(HERE), include=["vision_interp", "vision_interp.*"])
models = model_packages()
setup(
    packages=packages + models,
    package_dir={"vision_interp.models": "models"},
    # assets/*: vendored JavaScript (d3, its licence and README) that pages copy next to themselves;
    # gallery/assets/* matches nothing today (the gallery's CSS/JS are inline) and ships any assets added later
    package_data={"vision_interp": ["py.typed", "assets/*", "gallery/assets/*"], **{name: MODEL_FILES for name in models}},
)
