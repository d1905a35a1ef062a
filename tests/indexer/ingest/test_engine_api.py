"""The ingester is not a service locator: no code outside ``indexer/ingest/`` reaches into it.

Outside ``indexer/ingest/``, code talks to an ``Ingester`` through its public methods and
properties only: it never reads its staging area (``.staging``) nor a ``_private`` attribute.
What needs the durable staging state (the admin views, the metrics, ``/sync/status``) is given
a ``StagingArea`` of its own.  Checked on the syntax tree: an attribute read on a name or
attribute called ``ingester`` (``ingester``, ``self.ingester``, ``rig.ingester``) or on a name
bound to ``Ingester(...)`` in that module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from indexer.ingest.engine import Ingester
from store import MemoryKV
from sync.ipnisync.fetch import fetcher_factory
from tests.conftest import ROOT

SCANNED = ["indexer", "bench", "scripts", "tests"]
INSIDE = ROOT / "indexer" / "ingest"


def _sources() -> list[Path]:
    return sorted(
        path
        for top in SCANNED
        for path in (ROOT / top).rglob("*.py")
        if INSIDE not in path.parents and ".venv" not in path.parts
    )


def _ingester_names(tree: ast.AST) -> set[str]:
    """Names the module binds to ``Ingester(...)`` (``restarted = Ingester(kv, ...)``)."""
    names = {"ingester"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name) and func.id == "Ingester":
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _is_ingester(expr: ast.expr, names: set[str]) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id in names
    return isinstance(expr, ast.Attribute) and expr.attr == "ingester"


def reach_ins(source: str) -> list[str]:
    """``<ingester>.staging`` and ``<ingester>._private`` reads in ``source``, as line: text."""
    tree = ast.parse(source)
    names = _ingester_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _is_ingester(node.value, names):
            continue
        private = node.attr.startswith("_") and not node.attr.startswith("__")
        if node.attr == "staging" or private:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_outside_ingest_reaches_into_an_ingester() -> None:
    sources = _sources()
    assert any(p.name == "daemon.py" for p in sources) and any(
        p.parts[-2] == "admin" for p in sources
    )
    found = {
        str(path.relative_to(ROOT)): hits
        for path in sources
        if (hits := reach_ins(path.read_text()))
    }
    assert found == {}


@pytest.mark.parametrize(
    "source",
    [
        "ingester.staging.done(b'')",
        "self.ingester.staging.known_publishers()",
        "rig.ingester._workers",
        "restarted = Ingester(kv, f)\nrestarted.staging.providers()",
        "x: Ingester = Ingester(kv, f)\nx._handlers",
    ],
)
def test_the_scan_finds_every_kind_of_reach_in(source: str) -> None:
    assert reach_ins(source), source


def test_the_scan_lets_the_public_api_and_other_staging_through() -> None:
    source = (
        "ingester.request_sync(p, a)\ningester.index\nrig.staging.done(b'')\ningester.__class__"
    )
    assert reach_ins(source) == []


def test_an_ingester_has_no_public_staging() -> None:
    ingester = Ingester(MemoryKV(), fetcher_factory(timeout=1))  # type: ignore[arg-type]
    assert not hasattr(ingester, "staging")
