"""Fixtures: ``backend``, parametrized over both backends, on the session's real Valkey cluster.

``valkey_cluster`` (one 3+3 cluster per session) is in ``tests/conftest.py``, shared with the find
tests.

A test taking ``backend`` runs on LevelDB (in ``tmp_path``) and on the cluster; ``names`` gives
it provider IDs, contexts and multihashes no other test uses, since the cluster is shared by the
session.  The cluster is never skipped: a missing server binary fails with how to install one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import KV, IndexStore
from store.cluster import IndexBackend, LevelDBBackend, open_cluster
from tests.cluster.valkey import ValkeyCluster

BACKENDS = ["leveldb", "cluster"]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IndexBackend]:
    if request.param == "leveldb":
        with KV(tmp_path / "db") as kv:
            yield LevelDBBackend(IndexStore(kv))
        return
    cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
    async with open_cluster(cluster.startup, retry_for=10.0) as b:
        yield b


@dataclass(frozen=True)
class Names:
    """Byte strings unique to one test: providers, contexts, multihashes, ad CIDs."""

    salt: bytes

    def provider(self, n: int = 0) -> bytes:
        return b"\x00\x24" + self.salt + b"-p%d" % n

    def mh(self, n: int) -> bytes:
        return b"\x12\x20" + self.salt + b"-mh%06d" % n

    def ad(self, n: int) -> bytes:
        return b"\x01\x71" + self.salt + b"-ad%d" % n


@pytest.fixture
def names() -> Names:
    return Names(os.urandom(6).hex().encode())
