"""Extract the README's fenced code blocks and run its Python tour, statement by statement.

Reusable by any test that executes the tour (in the repository or from an installed wheel). Also a
script, so that a test can run the tour under another interpreter (a fresh virtual environment):

    python readme_blocks.py README.md --setup "inc = vi.inceptionv1()" --placeholder x=_x --skip pretrained=True

The README's Python blocks read as one session (names carry from block to block) and use three
conventions that this runner understands:

* ``x = ...`` is a placeholder: the test supplies the value (``--placeholder x=EXPR``), or the
  statement is skipped;
* a statement whose line ends in a comment naming an exception (``# raises UnitRangeError: ...``, or
  just ``# UnitRangeError: ...``) shows an error: it must raise that exception (checked by class name,
  a subclass counts);
* a statement matching a ``--skip`` pattern (network downloads, minute-long renders) is not run, and
  neither is any later statement that reads a name only a skipped statement would have set.

Every other statement must run without error. The result (JSON) lists what ran, what was skipped
and why, and the first failure.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Block", "code_blocks", "python_blocks", "run_tour", "run_readme", "TourResult"]

FENCE = re.compile(r"^```(\w*)\s*$")
EXPECTED_ERROR = re.compile(r"#\s*(?:raises\s+)?([A-Z]\w*(?:Error|Exception))\b")
README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass
class Block:
    language: str
    code: str
    line: int  # 1-based line of the first code line in the file
    heading: str  # the nearest Markdown heading above the block


def code_blocks(path: str | Path = README, *, text: str | None = None) -> list[Block]:
    """Every fenced code block of a Markdown file (or of ``text``), in order, with its language and heading."""
    blocks, heading, lang, start, buf = [], "", None, 0, []
    source = Path(path).read_text(encoding="utf-8") if text is None else text
    for i, text in enumerate(source.splitlines(), 1):
        m = FENCE.match(text)
        if lang is None:
            if text.startswith("#"):
                heading = text.lstrip("#").strip()
            elif m:
                lang, start, buf = m.group(1), i + 1, []
        elif m and not m.group(1):
            blocks.append(Block(lang, "\n".join(buf) + "\n", start, heading))
            lang = None
        else:
            buf.append(text)
    return blocks


def python_blocks(path: str | Path = README, *, text: str | None = None) -> list[Block]:
    return [b for b in code_blocks(path, text=text) if b.language in ("python", "py")]


@dataclass
class TourResult:
    ran: list[str] = field(default_factory=list)
    raised_as_shown: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (statement, reason)
    failure: str | None = None


def _names_read(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _names_bound(node: ast.AST) -> set[str]:
    bound = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return bound


def _placeholder(node: ast.stmt) -> str | None:
    """The target name of ``NAME = ...``, else None."""
    if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant) and node.value.value is Ellipsis):
        return node.targets[0].id
    return None


def _statements(block: Block) -> list[tuple[ast.stmt, str, str]]:
    """(node, source, its first line's trailing text) for each top-level statement; ``a; b`` on one line are two."""
    lines = block.code.splitlines()
    out = []
    for node in ast.parse(block.code).body:
        src = ast.get_source_segment(block.code, node) or ""
        out.append((node, src, lines[node.end_lineno - 1]))
    return out


def run_tour(blocks: list[Block], *, setup: str = "", placeholders: dict[str, str] | None = None,
             skip: list[str] | None = None, namespace: dict | None = None) -> TourResult:
    """Run the blocks' statements in one namespace (``namespace``, or a fresh one; see the module docstring);
    stops at the first failure."""
    placeholders, skip = placeholders or {}, skip or []
    ns: dict = {"__name__": "__readme__"} if namespace is None else namespace
    exec(compile(setup, "<setup>", "exec"), ns)
    result, unavailable = TourResult(), set()
    for block in blocks:
        for node, src, line in _statements(block):
            where = f"README line {block.line + node.lineno - 1} ({block.heading}): {src.splitlines()[0]}"
            name = _placeholder(node)
            if name is not None:
                if name in placeholders:
                    ns[name] = eval(placeholders[name], ns)
                    result.ran.append(where)
                else:
                    unavailable.add(name)
                    result.skipped.append((where, "placeholder with no value given"))
                continue
            pattern = next((p for p in skip if p in src), None)
            missing = sorted(_names_read(node) & unavailable)
            if pattern or missing:
                unavailable |= _names_bound(node)
                result.skipped.append((where, f"matches {pattern!r}" if pattern else f"needs {', '.join(missing)}"))
                continue
            expected = EXPECTED_ERROR.match(line[line.index("#"):]) if "#" in line else None
            try:
                exec(compile(ast.Module([node], []), "<README>", "exec"), ns)
            except Exception as e:  # noqa: BLE001 - reported with the statement
                if expected and expected.group(1) in {c.__name__ for c in type(e).__mro__}:
                    result.raised_as_shown.append(where)
                    continue
                result.failure = f"{where}\n{''.join(traceback.format_exception_only(type(e), e)).strip()}"
                return result
            if expected:
                result.failure = f"{where}\nexpected {expected.group(1)} (as the README shows), but it ran without error"
                return result
            result.ran.append(where)
    return result


def run_readme(namespace: dict | None = None, text: str | None = None, **options) -> dict:
    """Run the README's (or ``text``'s) Python blocks in one namespace and return it; any failure, a skipped
    statement or an error that did not happen as shown is an AssertionError naming the README line."""
    ns = {"__name__": "__readme__"} if namespace is None else namespace
    result = run_tour(python_blocks(text=text) if text is not None else python_blocks(), namespace=ns, **options)
    if result.failure:
        raise AssertionError(result.failure)
    if result.skipped and not options.get("skip") and not options.get("placeholders"):
        raise AssertionError(f"README statements not run: {result.skipped}")
    return ns


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="run a Markdown file's Python blocks as one session")
    p.add_argument("markdown")
    p.add_argument("--setup", default="", help="Python run first in the tour's namespace")
    p.add_argument("--placeholder", action="append", default=[], metavar="NAME=EXPR", help="value for `NAME = ...`")
    p.add_argument("--skip", action="append", default=[], metavar="TEXT", help="skip statements containing TEXT")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args(argv)
    placeholders = dict(item.split("=", 1) for item in args.placeholder)
    result = run_tour(python_blocks(args.markdown), setup=args.setup, placeholders=placeholders, skip=args.skip)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=1))
    print(f"ran {len(result.ran)}, raised as shown {len(result.raised_as_shown)}, skipped {len(result.skipped)}")
    if result.failure:
        print(f"FAILED: {result.failure}", file=sys.stderr)
    return 1 if result.failure else 0


if __name__ == "__main__":
    sys.exit(main())
