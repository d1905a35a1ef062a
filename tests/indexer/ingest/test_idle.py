"""Staged work always has a worker, so ``wait_idle`` waits on events alone.

Two paths once left staged work without a worker (``wait_idle`` then found it by polling, and
a daemon left it until the next sync): a sync that failed after its commit (it timed out while
closing its fetcher), and a commit for a provider whose worker was ending (the sync saw the
worker and started none).  Each is made to happen here, on a real publisher over HTTP and a
real LevelDB: the staged ad must be indexed, and ``wait_idle`` must return (it raises when
staged work has no worker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from indexer.ingest.apply import FetcherFactory
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.ingest.progress import NullObserver, SyncProgress
from indexer.publisher.chain import Publisher
from indexer.publisher.store import PublisherConfig
from store import KV
from sync import PeerId
from sync.ipnisync.fetch import BlockFetcher, fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import serve_tcp
from tests.builders import multihash

http_fetcher = fetcher_factory(timeout=5)


class Gate:
    """A fetcher factory whose ``hold``-th fetcher, once used, does not finish closing until
    ``release`` is set (``closing`` is set when it starts to)."""

    def __init__(self, inner: FetcherFactory, hold: int) -> None:
        self.inner, self.hold, self.opened = inner, hold, 0
        self.closing, self.release = trio.Event(), trio.Event()

    def __call__(
        self, publisher: PeerId, addrs: list[str]
    ) -> AbstractAsyncContextManager[BlockFetcher]:
        return self._open(publisher, addrs)

    @asynccontextmanager
    async def _open(self, publisher: PeerId, addrs: list[str]) -> AsyncIterator[BlockFetcher]:
        self.opened += 1
        held = self.opened == self.hold
        async with self.inner(publisher, addrs) as fetcher:
            yield fetcher
            if held:
                self.closing.set()
                await self.release.wait()


class SyncsFinished(NullObserver):
    def __init__(self) -> None:
        self.finished: list[SyncProgress] = []
        self.changed = trio.Event()

    def sync_finished(self, progress: SyncProgress, ok: bool) -> None:
        self.finished.append(progress)
        self.changed.set()
        self.changed = trio.Event()


@pytest.fixture
def pub(tmp_path: Path) -> Iterator[Publisher]:
    publisher = Publisher.init(tmp_path / "pub", ["/ip4/10.0.0.1/tcp/4001"])
    publisher.store.set_config(PublisherConfig(chunk_size=5))
    yield publisher
    publisher.close()


async def _serve(nursery: trio.Nursery, pub: Publisher) -> str:
    listeners = await nursery.start(serve_tcp, ipnisync_handler(pub), "127.0.0.1", 0)
    return f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"


def _indexed(ingester: Ingester, pub: Publisher, mhs: range) -> bool:
    return all(
        pub.peer_id.raw in {r.provider for r in ingester.index.lookup(multihash(i))} for i in mhs
    )


async def test_a_sync_that_fails_after_its_commit_still_gets_its_ads_indexed(
    tmp_path: Path, pub: Publisher
) -> None:
    pub.add(b"A", [multihash(i) for i in range(8)], bitswap())
    gate = Gate(http_fetcher, hold=1)  # the sync's fetcher: closing outlasts the deadline
    with KV(tmp_path / "indexer") as kv:
        ingester = Ingester(kv, gate, config=IngestConfig(sync_timeout=2.0))
        async with trio.open_nursery() as nursery:
            addr = await _serve(nursery, pub)
            await nursery.start(ingester.run)
            ingester.request_sync(pub.peer_id, [addr], pub.head())
            with trio.fail_after(30):
                await gate.closing.wait()  # committed: the ad is staged
                await ingester.wait_idle()
            progress = ingester.progress[pub.peer_id.raw]
            assert (progress.error or "").startswith("SyncTimedOut"), progress
            assert _indexed(ingester, pub, range(8))
            nursery.cancel_scope.cancel()


async def test_a_commit_while_the_providers_worker_ends_gets_a_worker(
    tmp_path: Path, pub: Publisher
) -> None:
    pub.add(b"A", [multihash(i) for i in range(8)], bitswap())
    gate = Gate(http_fetcher, hold=2)  # the first worker's fetcher: it ends slowly
    syncs = SyncsFinished()
    with KV(tmp_path / "indexer") as kv:
        ingester = Ingester(kv, gate, observer=syncs)
        async with trio.open_nursery() as nursery:
            addr = await _serve(nursery, pub)
            await nursery.start(ingester.run)
            ingester.request_sync(pub.peer_id, [addr], pub.head())
            with trio.fail_after(30):
                await gate.closing.wait()  # the worker applied A, found nothing more, is ending
                assert _indexed(ingester, pub, range(8)) and ingester.working
                pub.add(b"B", [multihash(i) for i in range(10, 18)], bitswap())
                ingester.request_sync(pub.peer_id, [addr], pub.head())
                while len(syncs.finished) < 2:
                    await syncs.changed.wait()
                assert syncs.finished[-1].staged == 1 and syncs.finished[-1].error is None
                gate.release.set()
                await ingester.wait_idle()
            assert _indexed(ingester, pub, range(10, 18))
            nursery.cancel_scope.cancel()
