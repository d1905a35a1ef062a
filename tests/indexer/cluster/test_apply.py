"""``ClusterApplier`` on the real Valkey cluster and etcd: claims, done-checks and the fence.

The zombie: node A holds a provider, then loses its lease (revoked at etcd here, as a frozen or
partitioned node's lease expires) without noticing; node B claims the provider and goes on.  A's
next final write must be refused (``StoreFenced``), so an ad A (cut off from the publisher)
would mark failed is applied by B.  The same scenario run through a mutant backend whose
``commit_ad`` carries no fence loses that ad's multihashes: the fence is what saves them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from indexer.cluster.apply import ClusterApplier
from indexer.cluster.etcd import EtcdClient
from indexer.cluster.ownership import Ownership
from indexer.errors import LeaseLost, NotOwner
from indexer.ingest.apply import no_parsed
from indexer.ingest.settings import IngestConfig
from staging import Entry, StagingArea
from store import KV, StoreFenced
from store.cluster import AdCommit, ClusterBackend, CommitOutcome, open_cluster
from sync import PeerId, PrivateKey
from sync.ipnisync.fetch import BlockFetcher, fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import serve_tcp
from sync.walk.syncer import sync_publisher
from tests.builders import ChainBuilder, multihash
from tests.cluster.valkey import ValkeyCluster
from tests.indexer.ingest.test_ingest_policy import allow

ADS, PER_AD = 3, 5
http_fetcher = fetcher_factory(timeout=5)


class Unfenced:
    """A mutant backend: ``commit_ad`` carries whatever token the provider has now (no fence)."""

    def __init__(self, inner: ClusterBackend) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def commit_ad(self, commit: AdCommit, token: int) -> CommitOutcome:
        return await self.inner.commit_ad(commit, await self.inner.epoch(commit.provider))


@dataclass
class Node:
    ownership: Ownership
    staging: StagingArea
    applier: ClusterApplier


@contextlib.asynccontextmanager
async def node(
    name: str, tmp_path: Path, etcd: EtcdClient, root: str, backend: object
) -> AsyncIterator[Node]:
    with KV(tmp_path / name) as kv:
        ownership = Ownership(etcd, name, ttl=30, root=root)  # its TTL does not run out here
        await ownership.join()
        staging = StagingArea(kv)
        applier = ClusterApplier(staging, backend, lambda: ownership, IngestConfig())  # type: ignore[arg-type]
        yield Node(ownership, staging, applier)


async def _stage(staging: StagingArea, fetcher: BlockFetcher, publisher: PeerId) -> None:
    await sync_publisher(publisher, [], fetcher, staging, policy=allow())


async def zombie_scenario(
    tmp_path: Path, etcd: EtcdClient, root: str, backend: object, real: ClusterBackend
) -> tuple[bool, list[bytes]]:
    """Run the zombie scenario: was the zombie's write fenced, and which of the chain's
    multihashes are NOT found afterwards."""
    fenced = False
    publisher = PrivateKey.generate()  # a provider no other test of the shared cluster has
    chain = ChainBuilder(chunk_size=2)
    wanted = []
    for i in range(ADS):
        mhs = [multihash(f"{tmp_path}-{i}-{j}".encode()) for j in range(PER_AD)]
        chain.add(publisher, mhs, context_id=b"c%d" % i)
        wanted += mhs
    provider = publisher.peer_id().raw
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
        async with (
            http_fetcher(publisher.peer_id(), [addr]) as fetcher,
            node("a", tmp_path, etcd, root, backend) as a,
            node("b", tmp_path, etcd, root, backend) as b,
        ):

            async def get_fetcher(_p: PeerId, _a: list[str]) -> BlockFetcher:
                return fetcher

            def entry(n: Node) -> Entry:
                found = n.staging.next_entry(provider)
                assert found is not None
                return found

            for n in (a, b):
                await _stage(n.staging, fetcher, publisher.peer_id())
            async with a.applier.hold(provider):
                assert await a.applier.apply(
                    entry(a), get_fetcher, on_block=None, parsed=no_parsed
                ) == "indexed"  # fmt: skip
                # B cannot have it while A holds it.
                try:
                    async with b.applier.hold(provider):
                        raise AssertionError("two nodes held one provider")
                except NotOwner:
                    pass
                await etcd.lease_revoke(a.ownership.lease)  # A's lease is gone; A has not noticed
                assert a.ownership.valid()
                async with b.applier.hold(provider):
                    # A, cut off from the publisher, would mark its next ad failed for good.
                    try:
                        await a.applier.fail(
                            entry(a), "BlockNotFound: the publisher is unreachable"
                        )
                    except StoreFenced:
                        fenced = True
                    while (e := b.staging.next_entry(provider)) is not None:
                        await b.applier.apply(e, get_fetcher, on_block=None, parsed=no_parsed)
        nursery.cancel_scope.cancel()
    found = await real.lookup_many(wanted)
    return fenced, [mh for mh, records in zip(wanted, found, strict=True) if not records]


async def test_a_zombie_owner_is_fenced(
    tmp_path: Path, etcd: EtcdClient, root: str, valkey_cluster: ValkeyCluster
) -> None:
    async with open_cluster(valkey_cluster.startup, retry_for=10.0) as backend:
        fenced, missing = await zombie_scenario(tmp_path, etcd, root, backend, backend)
    assert fenced and missing == []


async def test_a_mutant_without_the_fence_loses_the_zombies_ad(
    tmp_path: Path, etcd: EtcdClient, root: str, valkey_cluster: ValkeyCluster
) -> None:
    async with open_cluster(valkey_cluster.startup, retry_for=10.0) as backend:
        fenced, missing = await zombie_scenario(tmp_path, etcd, root, Unfenced(backend), backend)
    assert (
        not fenced and len(missing) == PER_AD
    )  # the second ad's: marked failed by the zombie, never applied


async def test_a_claim_dies_with_its_lease_even_after_the_node_joined_again(
    tmp_path: Path, etcd: EtcdClient, root: str, valkey_cluster: ValkeyCluster
) -> None:
    """The lease a claim was made on is the one checked: a node that lost its lease and joined
    again (a new, valid lease) must not go on writing under the old claim's token."""
    publisher = PrivateKey.generate()
    provider = publisher.peer_id().raw
    chain = ChainBuilder(chunk_size=2)
    chain.add(publisher, [multihash(f"{tmp_path}-a-{j}".encode()) for j in range(4)])
    chain.add(publisher, [multihash(f"{tmp_path}-b-{j}".encode()) for j in range(4)])
    async with (
        open_cluster(valkey_cluster.startup, retry_for=10.0) as backend,
        trio.open_nursery() as nursery,
    ):
        listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
        async with (
            http_fetcher(publisher.peer_id(), [addr]) as fetcher,
            node("a", tmp_path, etcd, root, backend) as a,
        ):

            async def get_fetcher(_p: PeerId, _a: list[str]) -> BlockFetcher:
                return fetcher

            await _stage(a.staging, fetcher, publisher.peer_id())
            current = a.ownership
            a.applier.ownership = lambda: current
            async with a.applier.hold(provider):
                first = a.staging.next_entry(provider)
                assert first is not None
                await a.applier.apply(first, get_fetcher, on_block=None, parsed=no_parsed)
                await a.ownership.leave()  # the old lease is gone ...
                current = Ownership(etcd, "a", ttl=30, root=root)
                await current.join()  # ... and the node joined again with a new one
                second = a.staging.next_entry(provider)
                assert second is not None
                with pytest.raises(LeaseLost):
                    await a.applier.apply(second, get_fetcher, on_block=None, parsed=no_parsed)
            assert await backend.done(provider, second.ad.cid) is None
        nursery.cancel_scope.cancel()
