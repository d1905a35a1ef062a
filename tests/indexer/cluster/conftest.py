"""Fixtures of the cluster tests: a key root per test, a client of the session's real 3-member
etcd (``etcd_cluster``, in ``tests/conftest.py``).

The cluster starts once per session (about a second) in pytest's temporary directory and is
stopped at the end (SIGTERM, then SIGKILL).  A test that freezes or kills a member restores it
(``EtcdCluster.paused`` / ``killed``) before the next test.  Each test works under its own key
root, so no test sees another's claims.  No etcd binary: the tests fail, with how to install it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from indexer.cluster.etcd import EtcdClient
from tests.cluster.etcd import EtcdCluster


@pytest.fixture
def root() -> str:
    """A key root of this test's own (``/t<hex>/ipni``)."""
    return f"/t{uuid.uuid4().hex[:12]}/ipni"


@pytest.fixture
async def etcd(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdClient]:
    """A client over the three members, with a short per-request timeout."""
    async with EtcdClient(etcd_cluster.endpoints, request_timeout=0.5, deadline=8.0) as client:
        yield client
