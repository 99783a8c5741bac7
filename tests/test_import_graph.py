"""Import hygiene, read from the source with ast: no import cycles inside vision_interp, and no
consumer package imports a zoo model module.

Every import counts, wherever it stands: at module level, inside a function (a "lazy" import only
hides a cycle from Python's import order) or under ``if TYPE_CHECKING:`` (a type a module needs is
a dependency too). Two modules that import each other, however late, are one job split in the
wrong place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vision_interp"
ZOO_MODEL_MODULES = {"vision_interp.zoo.inceptionv1", "vision_interp.zoo.mnist_cnn"}
# names the zoo package re-exports from its model modules ("from ..zoo import InceptionV1" is a model import;
# "from ..zoo.spec import model_spec", the model protocol, is not)
ZOO_MODEL_NAMES = {"InceptionV1", "inceptionv1", "MnistCNN", "mnist_cnn", "load_class_names"}
# The notebook display protocol: a result class's ``__repr__`` / ``_repr_html_`` / ``_repr_png_`` hands itself
# to ``vision_interp.display``, the presentation layer above every subpackage. That import, inside one of these
# methods and nowhere else, is the one sanctioned way back up; any other import of display is an edge like all.
DISPLAY = "vision_interp.display"
DISPLAY_METHODS = {"__repr__", "_repr_html_", "_repr_png_"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``path`` imports anywhere (module level, functions, TYPE_CHECKING blocks);
    ``from . import x`` included."""
    return _imports_in(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", known)


def _display_protocol_nodes(tree: ast.AST) -> set[int]:
    """ids of the import statements that sit in a display-protocol method (see DISPLAY_METHODS)."""
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.name in DISPLAY_METHODS:
            inside |= {id(st) for st in ast.walk(fn) if isinstance(st, (ast.Import, ast.ImportFrom))}
    return inside


def _resolve_from(st: ast.ImportFrom, package: str) -> str:
    if st.level:
        base = package.split(".")[: len(package.split(".")) - (st.level - 1)]
        return ".".join(base + ([st.module] if st.module else []))
    return st.module or ""


def _imports_in(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    package = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    protocol = _display_protocol_nodes(tree)
    for st in ast.walk(tree):
        if id(st) in protocol and isinstance(st, ast.ImportFrom) and _resolve_from(st, package) == DISPLAY:
            continue
        if isinstance(st, ast.Import):
            out |= {a.name for a in st.names if a.name.startswith("vision_interp")}
        elif isinstance(st, ast.ImportFrom):
            mod = _resolve_from(st, package)
            if not mod.startswith("vision_interp"):
                continue
            out.add(mod)
            for a in st.names:  # "from . import trace" imports a submodule
                if f"{mod}.{a.name}" in known:
                    out.add(f"{mod}.{a.name}")
                elif mod == "vision_interp.zoo" and a.name in ZOO_MODEL_NAMES:
                    out.add(f"vision_interp.zoo.{a.name}")
    return {m for m in out if m in known}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        deps = _imports(name, path, known)
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        for d in list(deps):
            parts = d.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_init_edge(a: str, b: str) -> bool:
    """A package's __init__ importing its own submodules (and they importing siblings) is how
    packages re-export; the cycle that matters is between modules that are not parent/child."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_parser_sees_the_known_edges():
    """The checks below can fail: the parser finds real edges, cycles and zoo imports."""
    g = _graph()
    assert "vision_interp.trace" in g["vision_interp.units"]
    assert "vision_interp.units" in g["vision_interp.capture"]
    assert "vision_interp.zoo.spec" in g["vision_interp.units"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    # imports inside functions count: the registry builds models lazily, and that is an edge
    assert _zoo_importers("vision_interp.zoo.registry") == {"vision_interp.zoo.registry": {"vision_interp.zoo.mnist_cnn",
                                                                                            "vision_interp.zoo.inceptionv1"}}
    assert "vision_interp.zoo.inceptionv1" in _imports("vision_interp.zoo", PKG / "zoo" / "__init__.py", set(_modules()))


def test_lazy_and_type_checking_imports_are_edges():
    """An import hidden in a function body or a TYPE_CHECKING block is found (how the two cycles that were
    in the house, gallery.build <-> gallery.executors and transformer.report <-> transformer.html, were hidden)."""
    known = {"vision_interp.a", "vision_interp.b", "vision_interp.c", "vision_interp.zoo.mnist_cnn"}
    src = ("from typing import TYPE_CHECKING\n"
           "if TYPE_CHECKING:\n    from .b import B\n"
           "def f():\n    from .c import g\n    from .zoo.mnist_cnn import DEFAULT_CHECKPOINT\n    return g\n")
    found = _imports_in(ast.parse(src), "vision_interp.a", False, known)
    assert found == {"vision_interp.b", "vision_interp.c", "vision_interp.zoo.mnist_cnn"}


def test_display_is_imported_only_by_the_display_protocol():
    """Result classes reach vision_interp.display only from __repr__/_repr_html_/_repr_png_; the exemption
    above is that narrow (and it is real: a display import anywhere else is an ordinary edge)."""
    src = ("class R:\n    def _repr_html_(self):\n        from ..display import html\n        return html(self)\n"
           "def f():\n    from ..display import html\n")
    known = {DISPLAY, "vision_interp.pkg.mod"}
    assert _imports_in(ast.parse(src), "vision_interp.pkg.mod", False, known) == {DISPLAY}
    src_ok = "class R:\n    def __repr__(self):\n        from ..display import text\n        return text(self)\n"
    assert _imports_in(ast.parse(src_ok), "vision_interp.pkg.mod", False, known) == set()
    importers = {m for m, deps in _graph().items() if DISPLAY in deps and not m.startswith(DISPLAY)}
    assert importers <= {"vision_interp"}, f"modules importing display outside the display protocol: {sorted(importers)}"


def _core_cycles(owner_prefixes: tuple[str, ...]) -> list[list[str]]:
    g = _graph()
    # drop parent-package edges: "vision_interp.circuits" re-exporting "vision_interp.circuits.weights"
    pruned = {a: {b for b in deps if not _is_package_init_edge(a, b) and b != "vision_interp"} for a, deps in g.items()}
    cycles = _cycles(pruned)
    return [c for c in cycles if any(m.startswith(owner_prefixes) for m in c)]


def test_no_import_cycles_in_the_core():
    core = ("vision_interp.units", "vision_interp.trace", "vision_interp.capture", "vision_interp.attribution",
            "vision_interp.circuits", "vision_interp.zoo", "vision_interp.data", "vision_interp.io",
            "vision_interp.images")
    assert _core_cycles(core) == []


def test_no_import_cycles_anywhere():
    assert _core_cycles(("vision_interp",)) == []


def _zoo_importers(prefix: str) -> dict[str, set[str]]:
    """Modules under ``prefix`` whose own module-level imports name a zoo model module or class."""
    mods = _modules()
    known = set(mods) | {f"vision_interp.zoo.{n}" for n in ZOO_MODEL_NAMES}
    found = {}
    for name, path in mods.items():
        if name.startswith(prefix):
            hits = {d for d in _imports(name, path, known)
                    if d in ZOO_MODEL_MODULES or d.removeprefix("vision_interp.zoo.") in ZOO_MODEL_NAMES}
            if hits:
                found[name] = hits
    return found


@pytest.mark.parametrize("package", ["vision_interp.circuits", "vision_interp.attribution", "vision_interp.gallery",
                                     "vision_interp.featvis"])
def test_consumers_never_import_zoo_models(package):
    assert _zoo_importers(package) == {}
