"""The package's import graph has no cycle, between modules of one layer included.

Which layer may import which is import-linter's job (``.importlinter``, run by
``lint-imports`` in ``.ci/run``); it does not look inside a layer, which is
what this test adds.

Every import counts, at module level, inside functions and under
``TYPE_CHECKING`` alike: a lazy import is still a dependency. The graph is
read from the source with ``ast``, so a cycle fails here before it can fail
at import time in some order nobody tried.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import receiver

PACKAGE = Path(receiver.__file__).parent


def modules(root: Path, name: str) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import of the package's own modules."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                sub = f"{prefix}.{alias.name}"
                yield (sub if sub in known else prefix), node.lineno


def graph(root: Path, name: str) -> dict[str, dict[str, int]]:
    """Module → {module it imports: first line}, the package's own modules only."""
    known = modules(root, name)
    edges: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        out: dict[str, int] = {}
        for target, line in imports(module, path, known):
            if target in known and target != module:
                out.setdefault(target, line)
        edges[module] = out
    return edges


def cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle, as a path that ends where it starts; ``None`` when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, {})):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def closure(edges: dict[str, dict[str, int]], start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for target in edges[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def third_party(path: Path) -> set[str]:
    """Top-level names of what a module imports from outside the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_package_has_no_import_cycle() -> None:
    edges = graph(PACKAGE, "receiver")
    found = cycle(edges)
    if found is not None:
        steps = [f"{a} imports {b} (line {edges[a][b]})" for a, b in pairwise(found)]
        raise AssertionError("import cycle: " + "; ".join(steps))


def test_a_cycle_is_caught_with_its_path(tmp_path: Path) -> None:
    """The check above is not vacuous: a lazy import that closes a loop is found."""
    package = tmp_path / "demo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def f():\n    from .high import g\n    return g\n")
    (package / "high.py").write_text("from . import mid\n")
    (package / "mid.py").write_text("from demo.low import f\n")
    found = cycle(graph(package, "demo"))
    assert found is not None
    assert found[0] == found[-1]
    assert set(found) == {"demo.low", "demo.high", "demo.mid"}
