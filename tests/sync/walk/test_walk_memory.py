"""A walk holds a bounded number of ads in memory whatever the chain's length: it spills them a
segment at a time, and a failed walk is deleted a bounded batch at a time."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import trio

import staging.area
from indexer.publisher.chain import Publisher
from staging import StagingArea
from staging import keys as staging_keys
from store import KV, Write
from sync import Link, PeerId
from sync.errors import FetchFailed
from sync.ipnisync.fetch import BlockFetcher, SchemaKind, open_fetcher
from sync.ipnisync.head import SignedHead
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import serve_tcp
from sync.walk.syncer import sync_publisher
from tests.builders import multihash

ADS = 40


class _BatchSizes(KV):
    """A real LevelDB that remembers how many writes each batch had, and whether it synced."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[tuple[int, bool]] = []

    def write_batch(self, writes: Iterable[Write], sync: bool = False) -> None:
        items = list(writes)
        self.batches.append((len(items), sync))
        super().write_batch(items, sync=sync)


class _Anyone:
    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        return True


class _GoneAfter:
    """A fetcher whose publisher vanishes after ``ads`` blocks."""

    def __init__(self, inner: BlockFetcher, ads: int) -> None:
        self.inner, self.left = inner, ads

    async def head(self) -> SignedHead | None:
        return await self.inner.head()

    async def block(self, link: Link, kind: SchemaKind | None = None) -> bytes:
        self.left -= 1
        if self.left < 0:
            raise FetchFailed("the publisher went away")
        return await self.inner.block(link, kind)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def long_chain(tmp_path_factory: pytest.TempPathFactory) -> Publisher:
    pub = Publisher.init(tmp_path_factory.mktemp("pub"))
    for i in range(ADS):
        pub.add(b"c%d" % i, [multihash(i)], bitswap())
    return pub


async def _sync(pub: Publisher, kv: KV, segment: int, fail_after: int | None = None) -> bool:
    """Sync the chain into ``kv``; False if the walk failed (``FetchFailed``)."""
    head = Link.parse(pub.chain(1)[0].cid)
    async with trio.open_nursery() as nursery:
        served = await nursery.start(serve_tcp, ipnisync_handler(pub), "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"
        async with open_fetcher([addr], pub.peer_id, timeout=10) as inner:
            fetcher = inner if fail_after is None else _GoneAfter(inner, fail_after)
            try:
                await sync_publisher(
                    pub.peer_id, [addr], fetcher, StagingArea(kv), policy=_Anyone(),
                    head=head, segment=segment,
                )  # fmt: skip
                synced = True
            except FetchFailed:
                synced = False
        nursery.cancel_scope.cancel()
    return synced


async def test_a_long_walk_spills_every_segment_and_holds_no_more(
    long_chain: Publisher, tmp_path: Path
) -> None:
    kv = _BatchSizes(tmp_path / "idx")
    assert await _sync(long_chain, kv, segment=3)
    spills = [n for n, synced in kv.batches[1:] if not synced]  # after begin_walk
    assert sum(spills) == 2 * ADS  # each ad and its known marker, all spilled
    assert max(spills) <= 2 * 3  # never more than a segment in one batch: held at most 3 ads
    assert len(spills) >= ADS // 3
    assert StagingArea(kv).stacks(long_chain.peer_id.raw)[0][1].count == ADS
    kv.close()


async def test_a_failed_long_walk_is_deleted_in_bounded_batches(
    long_chain: Publisher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(staging.area, "BATCH_ADS", 4)
    kv = _BatchSizes(tmp_path / "idx")
    failed = not await _sync(long_chain, kv, segment=ADS // 2, fail_after=ADS - 5)
    assert failed  # the walk spilled a segment, then its publisher went away
    spilled = kv.batches[1][0] // 2
    assert spilled == ADS // 2  # the one segment spilled before the publisher went away
    deletes = kv.batches[2:]
    assert sum(n for n, _ in deletes) == 2 * spilled + 1  # every ad, its marker, the walk
    assert max(n for n, _ in deletes) <= 2 * 4 + 1  # 4 ads a batch: bounded, not the walk
    assert not list(kv.scan(b"w")) and not list(kv.scan(b"k"))
    assert kv.get(staging_keys.walk(1)) is None
    kv.close()
