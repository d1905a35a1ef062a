"""Workers fetch the next ads' first entries blocks ahead: faster, never different.

A real publisher over HTTP counts the requests for each block; a real LevelDB and Ingester.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
import trio.testing

from indexer.ingest.engine import IngestConfig, Ingester
from indexer.ingest.prefetch import _first_block
from indexer.publisher.chain import Publisher
from staging import StagedAd, StagingArea
from store import KV
from sync import DAG_CBOR, DAG_JSON, Link, PeerId, PrivateKey, SignedHead, encode_block
from sync.ipnisync.fetch import BlockFetcher, SchemaKind, fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import serve_tcp
from tests.builders import counting, make_ad, multihash

ADS = 12


async def _ingest(tmp_path: Path, prefetch: int, fail_first: int = -1) -> tuple[Counter[str], KV]:
    pub = Publisher.init(tmp_path / "pub")
    for i in range(ADS):
        pub.add(b"c%d" % i, [multihash(100 * i + j) for j in range(3)], bitswap())
    ads = {r.cid for r in pub.chain()}
    seen: Counter[str] = Counter()
    kv = KV(tmp_path / "idx")
    # A failure the worker itself met would wait an hour to be retried: the test would time out.
    config = IngestConfig(prefetch=prefetch, retry_base=3600)
    ingester = Ingester(kv, fetcher_factory(timeout=10), config=config)
    failing: frozenset[str] = frozenset()
    if fail_first >= 0:  # the entries block of the fail_first-th oldest ad fails once
        oldest_first = list(reversed(pub.chain()))
        failing = frozenset({str(_entries_of(pub, oldest_first[fail_first].cid))})
    async with trio.open_nursery() as nursery:
        handler = counting(ipnisync_handler(pub), seen, failing)
        served = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
        await nursery.start(ingester.run)
        ingester.request_sync(
            pub.peer_id, [f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"]
        )
        with trio.fail_after(30):
            await ingester.wait_idle()
        nursery.cancel_scope.cancel()
    entries = {name: n for name, n in seen.items() if name not in ads and name != "head"}
    for i in range(ADS):
        assert [v.context_id for v in ingester.index.lookup(multihash(100 * i + 2))] == [b"c%d" % i]
    pub.close()
    return Counter(entries), kv


def _entries_of(pub: Publisher, cid: str) -> Link:
    from sync import Advertisement, decode_node

    link = Link.parse(cid)
    raw = pub.block(link)
    assert raw is not None
    return Advertisement.from_node(decode_node(raw, link.codec)).entries


async def test_every_entries_block_is_fetched_once_with_prefetch(tmp_path: Path) -> None:
    counts, kv = await _ingest(tmp_path, prefetch=4)
    assert len(counts) == ADS and set(counts.values()) == {1}  # prefetched bytes were used
    kv.close()


async def test_a_failed_prefetch_is_fetched_again_and_leaves_no_error(tmp_path: Path) -> None:
    counts, kv = await _ingest(tmp_path, prefetch=4, fail_first=5)
    assert sorted(counts.values()) == [1] * (ADS - 1) + [2]  # the failed one, fetched again
    area = StagingArea(kv)
    assert area.providers() == []
    kv.close()


async def test_without_prefetch_the_same_index(tmp_path: Path) -> None:
    counts, kv = await _ingest(tmp_path, prefetch=0)
    assert len(counts) == ADS and set(counts.values()) == {1}
    kv.close()


class _CountingFetcher:
    """The seam a prefetcher fetches through: blocks from a dict, each fetch counted."""

    def __init__(self, blocks: dict[Link, bytes]) -> None:
        self.blocks, self.fetched = blocks, Counter[Link]()

    async def head(self) -> SignedHead | None:
        raise AssertionError("a prefetcher fetches blocks only")

    async def block(self, link: Link, kind: SchemaKind | None = None) -> bytes:
        self.fetched[link] += 1
        return self.blocks[link]

    async def aclose(self) -> None:
        pass


async def test_a_block_never_claimed_is_dropped_and_frees_its_place() -> None:
    from indexer.ingest.prefetch import Prefetcher
    from staging import StagedAd
    from sync import EntryChunk, PrivateKey, encode_block
    from tests.builders import make_ad

    key, blocks, staged = PrivateKey.generate(), {}, []
    for i in range(3):
        link, raw = encode_block(EntryChunk((multihash(i),), None).to_node())
        blocks[link] = raw
        ad_link, ad_raw = encode_block(make_ad(key, entries=link, context_id=b"%d" % i).to_node())
        staged.append((link, StagedAd(ad_link.raw, ad_raw)))
    source = _CountingFetcher(blocks)

    async def get_fetcher(publisher: PeerId, addrs: list[str]) -> BlockFetcher:
        return source

    async with trio.open_nursery() as nursery:
        prefetcher = Prefetcher(nursery, get_fetcher, depth=2)
        prefetcher.want([ad for _, ad in staged], key.peer_id(), [])
        await trio.testing.wait_all_tasks_blocked()
        assert set(source.fetched) == {staged[0][0], staged[1][0]}  # depth 2: the third waits
        for _ in range(4):
            prefetcher.want([staged[2][1]], key.peer_id(), [])  # place still taken: not fetched
        assert staged[2][0] not in source.fetched
        prefetcher.want([staged[2][1]], key.peer_id(), [])  # 2 x depth calls later: dropped
        await trio.testing.wait_all_tasks_blocked()
        assert source.fetched[staged[2][0]] == 1
        assert await prefetcher.take(staged[0][0]) is None  # the dropped ones are gone
        taken = await prefetcher.take_parsed(staged[2][0])
        assert taken is not None and taken.data() == blocks[staged[2][0]]
        assert await prefetcher.take_parsed(staged[2][0]) is None  # handed out once


def test_the_block_to_fetch_ahead_is_what_the_decoded_ad_says() -> None:
    key = PrivateKey.generate()
    entries = encode_block({"e": 1})[0]
    for codec in (DAG_JSON, DAG_CBOR):
        for ad, want in [
            (make_ad(key, entries=entries, metadata=bitswap()), entries),
            (make_ad(key, entries=entries, metadata=bitswap(), is_rm=True), None),  # a removal
            (make_ad(key, metadata=bitswap()), None),  # NO_ENTRIES
        ]:
            link, raw = encode_block(ad.to_node(), codec)
            assert _first_block(StagedAd(link.raw, raw, False, None)) == want
            assert _first_block(StagedAd(link.raw, b"junk", False, None)) is None


async def test_a_small_block_fetched_ahead_is_checked_in_want_and_a_wrong_one_dropped() -> None:
    from indexer.ingest.prefetch import INLINE_MAX, Prefetcher
    from sync import EntryChunk
    from sync.walk.lookahead import AheadBlocks

    key, ahead, staged = PrivateKey.generate(), AheadBlocks(), []
    sizes = [1, 1, INLINE_MAX // 34 + 1]  # the last chunk is over INLINE_MAX: a task's
    for i, n in enumerate(sizes):
        link, raw = encode_block(
            EntryChunk(tuple(multihash(i * 1000 + j) for j in range(n)), None).to_node()
        )
        ahead.put(key.peer_id(), link, raw if i != 1 else raw + b" ")  # the second one lies
        ad_link, ad_raw = encode_block(make_ad(key, entries=link, context_id=b"%d" % i).to_node())
        staged.append((link, StagedAd(ad_link.raw, ad_raw)))
    source = _CountingFetcher({})

    async def get_fetcher(publisher: PeerId, addrs: list[str]) -> BlockFetcher:
        return source

    async with trio.open_nursery() as nursery:
        prefetcher = Prefetcher(nursery, get_fetcher, depth=3, ahead=ahead)
        prefetcher.want([ad for _, ad in staged], key.peer_id(), [])
        assert len(nursery.child_tasks) == 1  # the big block's task: the small ones were checked
        taken = await prefetcher.take_parsed(staged[0][0])
        assert taken is not None and isinstance(taken.node, EntryChunk)
        assert await prefetcher.take(staged[1][0]) is None  # not trusted: the worker fetches it
        big = await prefetcher.take_parsed(staged[2][0])  # checked in a task, the same way
        assert big is not None and isinstance(big.node, EntryChunk)
        assert len(big.node.entries) == sizes[2]
        assert not source.fetched  # all three came from the walk's store
