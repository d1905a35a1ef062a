"""The two ``KVStore`` backends as one parametrized fixture: a test taking ``kv`` runs on both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store import KV, KVStore, MemoryKV

BACKENDS = ["leveldb", "memory"]


def open_backend(name: str, path: Path) -> KVStore:
    return KV(path) if name == "leveldb" else MemoryKV()


@pytest.fixture(params=BACKENDS)
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    store = open_backend(request.param, tmp_path / "db")
    with store:
        yield store


@pytest.fixture
def reopen(tmp_path: Path) -> Callable[[], KV]:
    """Opens (again) the LevelDB in ``tmp_path``: for what only a persistent backend can show."""
    return lambda: KV(tmp_path / "persistent")
