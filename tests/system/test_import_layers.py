"""The layers in ``.importlinter`` hold, and ``lint-imports`` would say so if one broke.

Each case copies the package, adds one import, and runs ``lint-imports`` on the
copy: a contract that cannot fail would pass all of these.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import receiver

PACKAGE = Path(receiver.__file__).parent
CONFIG = PACKAGE.parent / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    not (CONFIG.exists() and LINT_IMPORTS.exists()),
    reason="needs a checkout (.importlinter) and import-linter (pip install -e '.[dev]')",
)


def lint(
    tmp_path: Path, module: str | None = None, line: str = ""
) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on a copy of the package, with ``line`` appended to ``module``."""
    shutil.copytree(PACKAGE, tmp_path / "receiver", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    if module is not None:
        path = tmp_path / (module.replace(".", "/") + ".py")
        path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_package_keeps_its_layers(tmp_path: Path) -> None:
    result = lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_lower_layer_importing_a_higher_one_fails(tmp_path: Path) -> None:
    result = lint(tmp_path, "receiver.model.shapes", "from receiver.app import create_app")
    assert result.returncode != 0
    assert "receiver.model is not allowed to import receiver.app" in result.stdout


def test_the_web_side_importing_the_worker_side_fails(tmp_path: Path) -> None:
    result = lint(tmp_path, "receiver.web.health", "from receiver.worker import drain")
    assert result.returncode != 0
    assert "receiver.web is not allowed to import receiver.worker" in result.stdout


def test_the_core_importing_flask_fails(tmp_path: Path) -> None:
    result = lint(tmp_path, "receiver.core.runner", "import flask")
    assert result.returncode != 0
    assert "receiver.core is not allowed to import flask" in result.stdout
