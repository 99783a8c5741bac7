"""The README's tour and the tutorial notebooks run, so neither can drift from the API; every rich display
they produce renders (HTML well formed and self-contained, pictures decode)."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from display_checks import check_html, decode_png
from readme_blocks import python_blocks, run_readme

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
BUDGET_S = 240  # per notebook on a loaded 2-core machine; about 15-25 s each when it is quiet
RICH = {"01": 3, "02": 7, "03": 4, "04": 1, "05": 1}  # rich displays each tutorial makes (every cell ending in a result)


def test_readme_blocks_are_found_and_raises_lines_are_checked():
    blocks = python_blocks()
    assert len(blocks) >= 5 and all(b.code.strip() for b in blocks)
    text = "x\n```python\nf(1)   # raises ValueError: no\ny = 2\n```\n"
    (b,) = python_blocks(text=text)
    assert b.line == 3
    ns: dict = {"f": lambda v: v}
    with pytest.raises(AssertionError, match="expected ValueError"):
        run_readme(ns, text)
    ns = {"f": lambda v: int("x")}
    assert run_readme(ns, text)["y"] == 2


@pytest.mark.slow
def test_readme_tour_runs(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tour writes 476.png and out/
    monkeypatch.setenv("VISION_INTERP_DATA", str(data_dir))
    ns = run_readme()
    assert (tmp_path / "476.png").is_file() and any((tmp_path / "out").iterdir())
    for name in ("la", "d", "model"):
        assert name in ns
    check_html(ns["la"]._repr_html_())


def test_notebooks_are_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert len(NOTEBOOKS) == 5
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), p.name
        assert f"examples/{p.name}" in (REPO / "README.md").read_text(), f"README does not link {p.name}"


def _rich_outputs(nb) -> list[dict]:
    return [o["data"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("execute_result", "display_data") and "text/html" in o["data"]]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_displays_render(path, data_dir, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    env_keys = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                "VISION_INTERP_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)  # the kernel inherits them
    t0 = time.perf_counter()
    try:
        nbclient.NotebookClient(nb, timeout=BUDGET_S, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    seconds = time.perf_counter() - t0
    assert seconds < BUDGET_S, f"{path.name} took {seconds:.0f} s (budget {BUDGET_S} s)"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    rich = _rich_outputs(nb)
    assert len(rich) == RICH[path.name[:2]], f"{path.name}: {len(rich)} rich displays"
    for data in rich:
        check_html(data["text/html"])
        assert len(data["text/plain"]) < 240 and "\n" not in data["text/plain"].strip()
        if "image/png" in data:
            decode_png(base64.b64decode(data["image/png"]))
