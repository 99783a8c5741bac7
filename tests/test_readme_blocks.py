"""The README tour runner (tests/readme_blocks.py) on small planted Markdown files: it must fail when a
statement fails, when a shown error does not happen, and skip only what it is told to."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_blocks import code_blocks, python_blocks, run_tour  # noqa: E402

DOC = '''# Title

```bash
echo not python
```

## Section one

```python
import math
x = ...                      # (N,) input
y = math.sqrt(x); z = y + 1
math.sqrt(-1)                # ValueError: math domain error
```

## Section two

```python
w = fetch("http://example.com")   # needs the network
w.size
q = z * 2
```
'''


def _doc(tmp_path: Path, text: str = DOC) -> Path:
    p = tmp_path / "README.md"
    p.write_text(text)
    return p


def test_blocks_are_found_with_language_heading_and_line(tmp_path):
    blocks = code_blocks(_doc(tmp_path))
    assert [b.language for b in blocks] == ["bash", "python", "python"]
    py = python_blocks(_doc(tmp_path))
    assert [b.heading for b in py] == ["Section one", "Section two"] and py[0].line == 10
    assert py[0].code.startswith("import math\n")


def test_tour_runs_placeholders_shown_errors_and_skips(tmp_path):
    r = run_tour(python_blocks(_doc(tmp_path)), setup="value = 16.0", placeholders={"x": "value"}, skip=["fetch("])
    assert r.failure is None
    assert len(r.ran) == 5  # import, x, y, z, q (two statements on one line count as two)
    assert len(r.raised_as_shown) == 1 and "math.sqrt(-1)" in r.raised_as_shown[0]
    assert [reason for _, reason in r.skipped] == ["matches 'fetch('", "needs w"]


def test_tour_fails_on_an_error_and_on_a_missing_shown_error(tmp_path):
    r = run_tour(python_blocks(_doc(tmp_path)), skip=["fetch("])  # no value for x: y needs it and is skipped
    assert r.failure is None and ("README line 11 (Section one): x = ...", "placeholder with no value given") in r.skipped
    broken = DOC.replace("q = z * 2", "q = z * undefined_name")
    r = run_tour(python_blocks(_doc(tmp_path, broken)), placeholders={"x": "4.0"}, skip=["fetch("])
    assert r.failure and "NameError" in r.failure and "q = z * undefined_name" in r.failure
    quiet = DOC.replace("math.sqrt(-1)", "math.sqrt(1)")
    r = run_tour(python_blocks(_doc(tmp_path, quiet)), placeholders={"x": "4.0"}, skip=["fetch("])
    assert r.failure and "expected ValueError" in r.failure
