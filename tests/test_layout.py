"""The package's layout keeps the rules its design rests on (docs/architecture.md).

Import direction is checked by import-linter (`lint-imports`, in .ci/run); these tests
check what its contracts cannot say.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stabilizer"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported from, names imported) for every import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
    return out


def _subpackage(module: str) -> str:
    """The first level below `stabilizer` (`stabilizer.search` for stabilizer.search._base)."""
    return ".".join(module.split(".")[:2])


SUBPACKAGES = sorted({_name(p) for p in MODULES if p.name == "__init__.py"} - {"stabilizer"})


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_subpackage_exports_its_public_names(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if name.endswith(".bundled") or name.endswith("__main__"):
        return
    assert exported, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    assert not [n for n in exported if n.startswith("_")], name


def test_keras_internals_are_reached_from_one_module_only():
    reaching = []
    for path in MODULES:
        text = path.read_text()
        if "keras.src" in text or "._flatten_layers(" in text:
            reaching.append(_name(path))
    assert reaching == ["stabilizer.keras_internals"]


def test_no_private_module_or_name_is_imported_across_subpackages():
    crossings = []
    for path in MODULES:
        here = _subpackage(_name(path))
        for source, names in _imports(path):
            if not source.startswith("stabilizer.") or _subpackage(source) == here:
                continue
            private_module = any(part.startswith("_") for part in source.split(".")[1:])
            private_names = [n for n in names if n.startswith("_")]
            if private_module or private_names:
                crossings.append(f"{_name(path)}: from {source} import {', '.join(names)}")
    assert not crossings, "\n".join(crossings)


def test_the_tests_mirror_the_package():
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    packages = {name.split(".")[1] for name in SUBPACKAGES}
    assert folders - {"e2e"} <= packages, folders - packages - {"e2e"}
