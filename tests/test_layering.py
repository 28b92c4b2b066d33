"""Layering (issue 18): no module of model/ imports datasets/, processor/ or the packages above them, and utils/
imports nothing of the project but utils. Every import statement counts, also one inside a function."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

import pytest

from tests.cli_checks import REPO

PROJECT = ("bench", "datasets", "inference", "model", "processor", "solver", "test", "tests", "tools", "train")
ALLOWED = {"model": ("model", "utils"), "utils": ("utils",)}  # project packages each package may import


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in the file at ``path``, in line order."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return sorted(found)


def forbidden_imports(folder: Path, allowed: Sequence[str]) -> list[str]:
    """'<file>:<line> imports <module>' for each relative import and each project package outside ``allowed``."""
    bad = []
    for path in sorted(folder.glob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if module.startswith(".") or (top in PROJECT and top not in allowed):
                bad.append(f"{path.relative_to(folder.parent)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_lies_below(package):
    assert forbidden_imports(REPO / package, ALLOWED[package]) == []


def test_a_forbidden_import_is_named_also_inside_a_function(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "head.py").write_text(
        "import torch\nfrom utils.errors import UserError\nfrom model.clip import CLIP\n\n\n"
        "def questions():\n    from datasets.aqa import find_occurrences\n    import processor.plan\n")
    assert forbidden_imports(tmp_path / "model", ALLOWED["model"]) == [
        "model/head.py:7 imports datasets.aqa", "model/head.py:8 imports processor.plan"]
