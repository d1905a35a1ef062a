"""Ingest end to end, in process: a real publisher over HTTP, a real LevelDB, the Ingester."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from indexer.ingest.engine import IngestConfig, Ingester
from indexer.publisher.chain import Publisher
from indexer.publisher.store import PublisherConfig
from staging import Entry, StagingArea
from store import KV, value_key
from sync import Link
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap, ipfs_gateway_http
from sync.net.httpserver import serve_tcp
from tests.builders import multihash

http_fetcher = fetcher_factory(timeout=5)


class Rig:
    """A publisher served over HTTP and an ingester, in one nursery."""

    def __init__(self, tmp_path: Path) -> None:
        self.pub = Publisher.init(tmp_path / "pub", ["/ip4/10.0.0.1/tcp/4001"])
        self.pub.store.set_config(
            PublisherConfig(chunk_size=7, addresses=["/ip4/10.0.0.1/tcp/4001"])
        )
        self.kv = KV(tmp_path / "indexer")
        self.ingester = Ingester(self.kv, http_fetcher, config=IngestConfig(segment=3))
        self.addr = ""

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(serve_tcp, ipnisync_handler(self.pub), "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        self.addr = f"/ip4/127.0.0.1/tcp/{port}/http"
        await nursery.start(self.ingester.run)

    async def sync(self, head: Link | None = None) -> None:
        self.ingester.request_sync(self.pub.peer_id, [self.addr], head)
        with trio.fail_after(30):
            await self.ingester.wait_idle()

    def providers_of(self, mh: bytes) -> list[tuple[bytes, bytes]]:
        return [(r.context_id, r.metadata) for r in self.ingester.index.lookup(mh)]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.pub.close()
    r.kv.close()


async def test_chain_is_indexed_and_resyncs_walk_only_new_ads(rig: Rig) -> None:
    pub = rig.pub
    pub.add(b"A", [multihash(i) for i in range(20)], bitswap())  # 3 chunks
    pub.add(b"B", [multihash(i) for i in range(20, 25)], bitswap())
    pub.remove(b"A")
    pub.add(b"C", [multihash(i) for i in range(30, 40)], bitswap())
    pub.update_metadata(b"C", ipfs_gateway_http())
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.sync()
        [result] = rig.ingester.results
        assert result.walked == 5 and result.staged == {str(pub.peer_id): 5}
        assert all(rig.providers_of(multihash(i)) == [] for i in range(20))  # removed
        assert rig.providers_of(multihash(22)) == [(b"B", bitswap())]
        assert rig.providers_of(multihash(35)) == [(b"C", ipfs_gateway_http())]
        for record in pub.chain():
            done = StagingArea(rig.ingester.kv).done(Link.parse(record.cid).raw)
            assert done is not None and done.ok
        provider = rig.ingester.index.provider(pub.peer_id.raw)
        assert provider is not None and provider.addresses == ["/ip4/10.0.0.1/tcp/4001"]
        assert provider.last_ad == Link.parse(pub.chain()[0].cid).raw

        pub.add(b"D", [multihash(50)], bitswap())
        await rig.sync()
        assert rig.ingester.results[-1].walked == 1
        assert rig.providers_of(multihash(50)) == [(b"D", bitswap())]
        old = Link.parse(pub.chain()[3].cid)
        await rig.sync(old)  # re-announcing an old ad never rescans
        assert rig.ingester.results[-1].walked == 0
        head = pub.head()
        assert head is not None
        assert StagingArea(rig.ingester.kv).latest_processed(pub.peer_id.raw) == head.raw
        nursery.cancel_scope.cancel()


async def test_entries_of_an_ad_removed_later_are_never_fetched(rig: Rig) -> None:
    rig.pub.add(b"X", [multihash(i) for i in range(10)], bitswap())
    rig.pub.remove(b"X")
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.sync()
        assert rig.ingester.index.count_keys() == 0  # nothing was fetched or written
        index, provider = rig.ingester.index, rig.pub.peer_id.raw
        assert index.allocated(provider, b"X") is None  # the removal dropped its value key
        assert index.value(value_key(provider, b"X")) is None
        nursery.cancel_scope.cancel()


async def test_polling_finds_new_ads_without_an_announce(rig: Rig) -> None:
    rig.pub.add(b"P", [multihash(1)], bitswap())
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.sync()
        rig.pub.add(b"Q", [multihash(2)], bitswap())
        assert rig.ingester.poll_known_publishers() == 1  # what the poll loop does each interval
        with trio.fail_after(30):
            await rig.ingester.wait_idle()
        assert rig.providers_of(multihash(2)) == [(b"Q", bitswap())]
        nursery.cancel_scope.cancel()


async def test_a_worker_that_dies_on_a_bug_is_restarted_and_the_error_recorded(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug outside applying an ad (here: reading the staging area) ends the worker's run; the
    supervisor logs it, records it on the stack and starts the worker again with backoff."""
    rig.pub.add(b"W", [multihash(i) for i in range(3)], bitswap())
    rig.ingester.config = IngestConfig(segment=3, retry_base=0.01)
    staging = StagingArea(rig.kv)
    real, failures = StagingArea.next_entry, [1]

    def flaky(self: StagingArea, provider: bytes) -> Entry | None:
        entry = real(self, provider)
        if entry is not None and failures[0] > 0:
            failures[0] -= 1
            raise KeyError("a bug reading the next entry")
        return entry

    monkeypatch.setattr(StagingArea, "next_entry", flaky)  # the ingester's too
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        with capture_logs() as logs:
            await rig.sync()
        assert failures == [0] and rig.providers_of(multihash(1)) == [(b"W", bitswap())]
        restarts = [e for e in logs if e["event"] == "worker failed; restarting"]
        assert len(restarts) == 1 and isinstance(restarts[0]["exc_info"], KeyError)
        assert not [e for e in logs if e["event"] == "cannot record a worker failure"]
        head = rig.pub.head()
        assert head is not None
        done = staging.done(head.raw)
        assert done is not None and done.ok
        nursery.cancel_scope.cancel()
