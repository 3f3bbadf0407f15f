"""The package's shape: folders are layers, imports point down, no cycles, no hidden imports.

An import-graph walk over every module's source (``ast``, nothing imported): imports
under ``if TYPE_CHECKING:`` are annotations only and are not edges. A project import
inside a function body is not allowed (it is how cycles hide); heavy third-party imports
(torch, transformers, llama_cpp) inside functions are the point, and are not checked here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "src" / "pytest_groundtruth"
ROOT = "pytest_groundtruth"

# Lowest first; a module may import its own layer and the layers before it.
LAYERS = ("core", "measures", "oracle", "config", "models", "ggufio", "runtimes", "store",
          "integrity", "context", "framework", "suites", "report", "plugin", "tools")
# Programs of their own, above everything (they run as separate processes).
OUTSIDE = ("standins",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for each runtime import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known = modules()

    def walk(nodes: list[ast.stmt], in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                yield from walk(node.orelse, in_function)
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith(ROOT):
                    for alias in node.names:  # `from pkg import module`: an edge to the module
                        sub = f"{node.module}.{alias.name}"
                        target = sub if sub in known else node.module
                        yield target, node.lineno, in_function
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(ROOT):
                        yield alias.name, node.lineno, in_function
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from walk([child], inner)
                elif isinstance(child, ast.ExceptHandler):
                    yield from walk(child.body, inner)

    yield from walk(tree.body, False)


def edges() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _, _ in imports(path):
            if target in known and target != name:
                graph[name].add(target)
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_is_in_a_layer() -> None:
    strays = [m for m in modules() if m != ROOT and layer(m) not in (*LAYERS, *OUTSIDE)]
    assert not strays, f"modules outside the layer folders: {strays}"


def test_imports_point_down() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, targets in edges().items():
        if layer(module) in OUTSIDE or module == ROOT:
            continue
        for target in targets:
            if target == ROOT:
                continue
            if layer(target) in OUTSIDE or rank[layer(target)] > rank[layer(module)]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    graph = edges()
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", sorted(m for m in modules() if layer(m) not in OUTSIDE))
def test_no_project_import_inside_a_function(name: str) -> None:
    hidden = [f"line {line}: {target}" for target, line, inner in imports(modules()[name])
              if inner]
    assert not hidden, f"{name} imports project modules inside functions: {hidden}"
