"""The benchmarks' imports from the package still resolve.

No test runs the benches, and most import lazily inside ``main``; after the
restructure one of them imported ``logsafe`` from the package root and failed at
start. This reads every ``bench/*.py`` and resolves each ``receiver`` name it
imports, so a moved module breaks here rather than in the next measurement.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def receiver_imports() -> list[tuple[str, str, str]]:
    """(bench file, module, name) for each name a bench imports from the package."""
    found = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "receiver":
                found += [(path.name, node.module or "", alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [
                    (path.name, alias.name, "")
                    for alias in node.names
                    if alias.name.split(".")[0] == "receiver"
                ]
    return found


def unresolved(module: str, name: str) -> str | None:
    """Why ``from module import name`` fails, or None when it works."""
    try:
        imported = importlib.import_module(module)
        if name and not hasattr(imported, name):
            importlib.import_module(f"{module}.{name}")  # a submodule
    except ImportError as error:
        return str(error)
    return None


def test_every_name_a_bench_imports_from_the_package_resolves() -> None:
    imports = receiver_imports()
    assert len(imports) > 20, "the scan found too few imports: is BENCH right?"
    broken = [
        f"{bench}: from {module} import {name}: {why}"
        for bench, module, name in imports
        if (why := unresolved(module, name))
    ]
    assert broken == []


def test_a_name_on_an_old_path_is_caught() -> None:
    assert unresolved("receiver", "logsafe") is not None
    assert unresolved("receiver.observe", "logsafe") is None
