"""The project's conventions, checked: layout, package exports, error trees, docs and diagrams."""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGES = ["store", "staging", "sync", "indexer"]

sys.path.insert(0, str(ROOT / "assets"))
from render import STAMP, source_digest  # noqa: E402


def test_top_level_is_the_design_cards() -> None:
    for name in ["pyproject.toml", "README.md", "Makefile", ".ci/run", "docs/design.md"]:
        assert (ROOT / name).is_file(), name
    for name in [*PACKAGES, "tests", "assets", "bench"]:
        assert (ROOT / name).is_dir(), name


@pytest.mark.parametrize("name", PACKAGES)
def test_package_exports_and_error_tree(name: str) -> None:
    package = importlib.import_module(name)
    assert isinstance(package.__all__, list) and package.__doc__
    for export in package.__all__:
        assert hasattr(package, export), f"{name}.__all__ names missing {export}"
    errors_path = ROOT / name / "errors.py"
    tree = ast.parse(errors_path.read_text())
    bases = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and any(isinstance(b, ast.Name) and b.id == "Exception" for b in node.bases)
    ]
    assert len(bases) == 1, f"{name}/errors.py must have exactly one base class, has {bases}"
    assert bases[0] in (ast.get_docstring(tree) or ""), "the error tree belongs in the docstring"


@pytest.mark.parametrize("path", sorted(p for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")))
def test_modules_state_their_rules(path: Path) -> None:
    # Size is not capped (a cap splits modules by length, not by job); complexity is, by ruff
    # (C901, PLR0915 in pyproject.toml).
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} needs a module docstring"


def test_design_doc_opens_with_the_dependency_direction() -> None:
    text = (ROOT / "docs" / "design.md").read_text()
    first = next(ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
    assert "store <- staging <- sync <- indexer" in first


@pytest.mark.parametrize("source", sorted((ROOT / "assets").glob("*.dot")))
def test_diagrams_are_generated_from_their_sources(source: Path) -> None:
    svg = source.with_suffix(".svg")
    assert svg.is_file(), f"{svg.name} missing: run make diagrams"
    stamp = STAMP.format(source_digest(source)).strip()
    assert stamp in svg.read_text(), f"{svg.name} is stale: run make diagrams"
    assert f"../assets/{svg.name}" in (ROOT / "docs" / "design.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    head = text[: text.index("## Status")]
    assert re.search(r"^make test\b", head, re.M) and re.search(r"^make run\b", head, re.M)
