"""Layering (issues 18, 30): every package and entry script imports only itself and the packages of the layers
below it (LAYERS, deduced from the imports), and no relative import. Every import statement counts, also one
inside a function."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

import pytest

from tests.cli_checks import REPO

# The layering order, lowest first: a package (a folder, or an entry script by its module name) may import its own
# modules and those of lower layers, nothing of its own layer or above. utils is the foundation every layer uses;
# datasets, model and solver are independent of one another.
LAYERS = (
    ("utils",),
    ("datasets", "model", "solver"),
    ("inference", "processor"),
    ("tools", "train", "test"),
    ("demo",),  # the demo entry runs train.py, test.py and the grounding tool
    ("bench",),
    ("tests",),
)
PROJECT = tuple(name for layer in LAYERS for name in layer)


def allowed_imports(package: str) -> tuple[str, ...]:
    """The project packages ``package`` may import: itself and every package of a lower layer."""
    level = next(i for i, layer in enumerate(LAYERS) if package in layer)
    return (package, *(name for layer in LAYERS[:level] for name in layer))


def package_files(root: Path, package: str) -> list[Path]:
    """The Python files of ``package`` under ``root``: a folder's modules, or the entry script ``<package>.py``."""
    script = root / f"{package}.py"
    return [script] if script.is_file() else sorted((root / package).rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in the file at ``path``, in line order."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return sorted(found)


def forbidden_imports(root: Path, package: str, allowed: Sequence[str]) -> list[str]:
    """'<file>:<line> imports <module>' for each relative import and each project package outside ``allowed``."""
    bad = []
    for path in package_files(root, package):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if module.startswith(".") or (top in PROJECT and top not in allowed):
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", PROJECT)
def test_package_imports_only_what_lies_below(package):
    assert package_files(REPO, package), f"{package}: no Python files (a stale row of LAYERS)"
    assert forbidden_imports(REPO, package, allowed_imports(package)) == []


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in REPO.glob("*/*.py")} | {p.stem for p in REPO.glob("*.py")}
    assert packages - set(PROJECT) == set()


def test_the_layers_are_read_as_stated():
    assert allowed_imports("utils") == ("utils",)
    assert set(allowed_imports("datasets")) == {"datasets", "utils"}  # not model, not solver
    assert set(allowed_imports("processor")) == {"processor", "utils", "datasets", "model", "solver"}


def test_a_forbidden_import_is_named_also_inside_a_function(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "head.py").write_text(
        "import torch\nfrom utils.errors import UserError\nfrom model.clip import CLIP\nfrom .clip import CLIP\n\n\n"
        "def questions():\n    from datasets.aqa import find_occurrences\n    import processor.plan\n")
    assert forbidden_imports(tmp_path, "model", allowed_imports("model")) == [
        "model/head.py:4 imports .clip", "model/head.py:8 imports datasets.aqa",
        "model/head.py:9 imports processor.plan"]
