"""The shape of the house, read from the source with `ast` so that it stays true:

- dependencies point down: a module imports only modules of a lower layer or of its own
  package (DESIGN.md: data, models ← config ← eval, posttrain ← train ← stages ← experiments ←
  cli), at module level and inside functions alike; imports under `if TYPE_CHECKING:` are only
  annotations and do not count;
- no import circle among the modules of `src/recalign` (module-level imports);
- no function in `src/` is longer than `MAX_FUNCTION_LINES` lines (from `def` to its last line,
  docstring included).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 80

# the layer of each top-level package or module of recalign (lower = more basic)
LAYERS: dict[str, int] = {
    "recalign": 0, "errors": 0,
    "configlib": 1, "distributed": 1, "theory": 1,
    "data": 2, "models": 2,
    "config": 3,
    "eval": 4, "posttrain": 4,
    "train": 5,
    "stages": 6,
    "experiments": 7,
    "api": 8, "cli": 8,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "recalign").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The recalign modules an import statement loads (`from pkg import submodule` counts as
    the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "recalign"]
    if node.level or not node.module or node.module.split(".")[0] != "recalign":
        return []
    subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
    return subs or [node.module]


def imports(module: str) -> tuple[set[str], set[str]]:
    """`(module-level imports, imports inside functions)` of a module, TYPE_CHECKING excluded."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    top: set[str] = set()
    inner: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and id(child) not in skip:
                (inner if in_function else top).update(t for t in _targets(child) if t != module)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return top, inner


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "recalign"


def test_every_package_has_a_layer():
    assert {package(m) for m in MODULES} <= set(LAYERS), set(map(package, MODULES)) - set(LAYERS)


def test_dependencies_point_down():
    wrong = []
    for module in MODULES:
        top, inner = imports(module)
        for target in top | inner:
            a, b = package(module), package(target)
            if a != b and LAYERS[b] >= LAYERS[a]:
                wrong.append(f"{module} (layer {LAYERS[a]}) imports {target} (layer {LAYERS[b]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    graph = {m: {t for t in imports(m)[0] if t in MODULES} for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles = []

    def dfs(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                dfs(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert not circles, "\n".join(circles)


def test_layout_check_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above would fail on a tree that breaks the rules (they are not vacuous)."""
    pkg = tmp_path / "recalign"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from recalign.data.b import x\nfrom recalign.stages import s\n")
    (pkg / "data" / "b.py").write_text("import recalign.data.a\nx = 1\n")
    (pkg / "stages.py").write_text("s = 1\n")
    mod = sys.modules[__name__]
    monkeypatch.setattr(mod, "SRC", tmp_path)
    monkeypatch.setattr(mod, "MODULES", _modules())
    with pytest.raises(AssertionError, match="recalign.data.a -> recalign.data.b -> recalign.data.a"):
        test_no_import_circle()
    with pytest.raises(AssertionError, match=r"recalign.data.a \(layer 2\) imports recalign.stages \(layer 6\)"):
        test_dependencies_point_down()


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - start + 1
                if n > limit:
                    out.append(f"{module}.{node.name}: {n} lines")
    return out


def test_no_function_longer_than_the_limit():
    assert not long_functions(), "\n".join(long_functions())
