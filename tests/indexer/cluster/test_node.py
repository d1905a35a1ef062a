"""``ClusterNode`` ticks on the real Valkey cluster and etcd: shares, hand-backs, junk records.

The nodes here have no ingester (a tick's syncs are the e2e test's): what is checked is who
claims which publisher, what the cluster view says, and that hostile records do not end a tick.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from indexer.cluster.etcd import EtcdClient
from indexer.cluster.node import ClusterNode
from indexer.cluster.ownership import Ownership
from staging import StagingArea
from store import KV
from store.cluster import Announce, ClusterBackend, open_cluster
from sync import PrivateKey
from tests.cluster.valkey import ValkeyCluster


@contextlib.asynccontextmanager
async def joined(
    name: str, tmp_path: Path, etcd: EtcdClient, root: str, backend: ClusterBackend
) -> AsyncIterator[tuple[ClusterNode, Ownership]]:
    with KV(tmp_path / name) as kv:
        node = ClusterNode(etcd, backend, StagingArea(kv), name, ttl=30, root=root)
        own = Ownership(etcd, name, ttl=30, root=root)
        await own.join()
        node._ownership = own  # what ``run`` does before its first tick
        yield node, own


async def test_nodes_take_fair_shares_and_a_leaver_hands_its_share_over(
    tmp_path: Path, etcd: EtcdClient, root: str, valkey_cluster: ValkeyCluster
) -> None:
    async with open_cluster(valkey_cluster.startup, retry_for=10.0) as backend:
        before = set(await backend.publishers())  # the session cluster is shared
        mine = [PrivateKey.generate().peer_id().raw for _ in range(5)]
        for publisher in mine:
            await backend.put_announce(publisher, Announce(b"\x01\x71head"))
        await backend.put_announce(b"\x00\x01junk", Announce(b"x"))  # names no peer ID
        async with (
            joined("a", tmp_path, etcd, root, backend) as (a, own_a),
            joined("b", tmp_path, etcd, root, backend) as (b, own_b),
        ):
            total = len([p for p in await backend.publishers() if p not in before]) - 1
            assert total == len(mine)
            for _ in range(2):  # two rounds converge (share.py's rule)
                await a.tick(own_a)
                await b.tick(own_b)
            held_a, held_b = set(a._publishers), set(b._publishers)
            assert not held_a & held_b
            assert b.view is not None and b.view.node == "b"
            share = -(-b.view.publishers // 2)  # the junk record is not counted
            assert b.view.publishers >= len(mine) and b"\x00\x01junk" not in held_a | held_b
            assert len(held_a) <= share and len(held_b) <= share
            assert set(mine) <= held_a | held_b  # every publisher of this test is owned
            assert b.view is not None and [n.node for n in b.view.nodes] == ["a", "b"]
            assert all(b.owns(p) for p in held_b) and not any(b.owns(p) for p in held_a)
            await own_a.leave()  # a drains: its claims go with its lease
            await b.tick(own_b)
            assert set(mine) <= set(b._publishers)
            assert b.view is not None and [n.node for n in b.view.nodes] == ["b"]


async def test_a_node_that_lost_its_lease_owns_nothing(
    tmp_path: Path, etcd: EtcdClient, root: str, valkey_cluster: ValkeyCluster
) -> None:
    async with open_cluster(valkey_cluster.startup, retry_for=10.0) as backend:
        publisher = PrivateKey.generate().peer_id().raw
        await backend.put_announce(publisher, Announce(b"\x01\x71head"))
        async with joined("a", tmp_path, etcd, root, backend) as (a, own):
            await a.tick(own)
            assert a.owns(publisher)
            await own.leave()
            assert not a.owns(publisher)  # void at once, before any tick
