"""The README's Python code blocks as one runnable script, so a test can keep the README honest.

Shared by the source-tree test (``tests/test_readme_and_examples.py``) and the installed-wheel check:
:func:`readme_script` needs nothing but the README's text.

Conventions the README follows so every block runs offline:
* blocks run in order in one namespace, like the cells of a notebook (a later block may use ``m``, ``x``, ...);
* a one-line statement ending in ``# raises SomeError: ...`` must raise an exception of that class
  (or a subclass); the script checks it and goes on;
* ``pretrained=True`` lines appear only in comments (the tests have no network).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_RAISES = re.compile(r"^(?P<stmt>\S.*?)\s*#\s*raises\s+(?P<exc>[A-Za-z_]\w*)\b.*$")

_PRELUDE = '''
class _ReadmeDidNotRaise(AssertionError):
    pass


def _readme_expect(exc_name, line, thunk):
    try:
        thunk()
    except Exception as e:
        if exc_name not in [c.__name__ for c in type(e).__mro__]:
            raise AssertionError(f"README line {line}: expected {exc_name}, got {type(e).__name__}: {e}") from e
        return
    raise _ReadmeDidNotRaise(f"README line {line}: expected {exc_name}, nothing was raised")
'''


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the block's first code line in the README
    source: str


def python_blocks(text: str | None = None) -> list[Block]:
    """Every fenced ```python block of the README, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    return [Block(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def runnable(block: Block) -> str:
    """A block's code with each ``# raises X`` line turned into a checked expectation."""
    out = []
    for i, line in enumerate(block.source.splitlines()):
        m = _RAISES.match(line)
        out.append(f"_readme_expect({m['exc']!r}, {block.line + i}, lambda: {m['stmt'].rstrip()})" if m else line)
    return "\n".join(out) + "\n"


def readme_script(text: str | None = None) -> str:
    """All blocks as one script; line numbers in tracebacks are named by ``# README line N`` markers."""
    parts = [_PRELUDE]
    for b in python_blocks(text):
        parts.append(f"# README line {b.line}\n{runnable(b)}")
    return "\n".join(parts)


def run_readme(namespace: dict | None = None, text: str | None = None) -> dict:
    """Execute the README's blocks one by one in one namespace; an error names the block's README line."""
    ns = {"__name__": "__readme__"} if namespace is None else namespace
    exec(compile(_PRELUDE, "<readme prelude>", "exec"), ns)
    for b in python_blocks(text):
        code = compile(runnable(b), f"README.md:block@{b.line}", "exec")
        try:
            exec(code, ns)
        except Exception as e:
            raise AssertionError(f"README block at line {b.line} failed: {type(e).__name__}: {e}") from e
    return ns
