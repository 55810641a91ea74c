"""The layers hold: import-linter's contracts (pyproject.toml) pass on the tree and catch a
core module that imports the service."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_tree_keeps_every_contract() -> None:
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_a_core_module_importing_the_service_breaks_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "function", tmp_path / "function", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    geometry = tmp_path / "function" / "core" / "geometry.py"
    geometry.write_text(geometry.read_text() + "\nfrom function.service.errors import STATUS  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "core knows no protocol, no service, no tools and no settings BROKEN" in run.stdout
    assert "function.core.geometry -> function.service.errors" in run.stdout


def test_nothing_in_the_repository_points_outside_it() -> None:
    """The repository stands alone: no code, test or doc cites the steering repo's shared folder."""
    tracked = subprocess.run(
        ["git", "ls-files", "function", "tests", "bench", "docs", "deploy", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    needle = "../" + "shared"  # split, so this file does not match itself
    offenders = [name for name in tracked if needle in (ROOT / name).read_text(errors="replace")]
    assert offenders == []
