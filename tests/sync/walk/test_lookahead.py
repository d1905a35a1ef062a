"""The walk fetches each next ad while it checks the current one, and the ads' entries blocks
for the worker: faster, never different."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
import trio.testing

from indexer.publisher.chain import Publisher
from staging import StagingArea
from store import KV
from sync import DAG_CBOR, DAG_JSON, Link, PeerId, PrivateKey, encode_block, load_advertisement
from sync.ipnisync.fetch import open_fetcher
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import serve_tcp
from sync.walk.lookahead import ENTRY_COST, AheadBlocks, Lookahead, peek_entries, peek_previous
from sync.walk.syncer import sync_publisher
from tests.builders import counting, make_ad, multihash


def test_peek_previous_in_both_codecs() -> None:
    key = PrivateKey.generate()
    first = make_ad(key)
    for codec in (DAG_JSON, DAG_CBOR):
        genesis, raw = encode_block(first.to_node(), codec)
        assert peek_previous(genesis, raw) is None  # no PreviousID
        second, raw2 = encode_block(make_ad(key, previous=genesis).to_node(), codec)
        assert peek_previous(second, raw2) == genesis
        assert peek_previous(second, b"not an ad") is None  # never raises


class _Anyone:
    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        return True


async def test_each_ad_is_fetched_once_and_a_wrong_guess_at_most_once(tmp_path: Path) -> None:
    pub = Publisher.init(tmp_path / "pub")
    for i in range(10):
        pub.add(b"c%d" % i, [multihash(i)], bitswap())
    seen: Counter[str] = Counter()
    kv = KV(tmp_path / "idx")
    staging = StagingArea(kv)
    async with trio.open_nursery() as nursery:
        handler = counting(ipnisync_handler(pub), seen)
        served = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"

        async def sync() -> int:
            async with open_fetcher([addr], pub.peer_id, timeout=10) as fetcher:
                result = await sync_publisher(
                    pub.peer_id, [addr], fetcher, staging, policy=_Anyone()
                )
            return sum(result.staged.values())

        assert await sync() == 10
        ads = [r.cid for r in pub.chain()]
        assert all(seen[cid] == 1 for cid in ads)  # every guess was the ad the walk needed next
        before = Counter(seen)
        for i in range(10, 12):
            pub.add(b"c%d" % i, [multihash(i)], bitswap())
        assert await sync() == 2
        assert all(seen[cid] == 1 for cid in [r.cid for r in pub.chain()[:2]])
        # The walk stopped at the newest known ad: it may have been fetched once, as a guess.
        assert seen[ads[0]] - before[ads[0]] <= 1
        assert all(seen[cid] == before[cid] for cid in ads[1:])
        nursery.cancel_scope.cancel()
    pub.close()
    kv.close()


def test_peek_entries_and_the_store_bounds() -> None:
    key = PrivateKey.generate()
    entries, _ = encode_block({"entries": 1})
    for codec in (DAG_JSON, DAG_CBOR):
        link, raw = encode_block(make_ad(key, entries=entries).to_node(), codec)
        assert peek_entries(link, raw) == entries
        assert peek_entries(link, b"junk") is None
    store = AheadBlocks(max_bytes=ENTRY_COST + 10)  # a block's bytes count with its entry's
    peer, other = key.peer_id(), PrivateKey.generate().peer_id()
    store.put(peer, entries, b"12345678")
    store.put(peer, LINK_B, b"123")  # does not fit: dropped
    assert not store.has_room() or store.take(peer, LINK_B) is None
    assert store.take(other, entries) is None  # by publisher and link
    assert store.take(peer, entries) == b"12345678"
    assert store.take(peer, entries) is None  # handed out once
    assert store.has_room()
    stale = AheadBlocks(max_age=0.0)
    stale.put(peer, entries, b"x")
    assert stale.has_room() and stale.take(peer, entries) is None  # too old: dropped


LINK_B = encode_block({"b": 1})[0]


def test_an_empty_store_takes_one_block_up_to_the_fetchers_cap() -> None:
    peer = PrivateKey.generate().peer_id()
    links = [encode_block({"n": i})[0] for i in range(3)]
    store = AheadBlocks(max_bytes=100, max_block=1000)
    store.put(peer, links[0], b"x" * 1001)  # over the cap: dropped, even alone
    assert store.take(peer, links[0]) is None
    store.put(peer, links[1], b"x" * 1000)  # over the bound, but alone: kept
    store.put(peer, links[2], b"x")  # the store is full: dropped
    assert store.take(peer, links[2]) is None
    assert store.take(peer, links[1]) == b"x" * 1000
    assert store.has_room()


def test_a_store_of_tiny_blocks_is_bounded_by_their_bookkeeping_too() -> None:
    store, peer = AheadBlocks(max_bytes=64 * ENTRY_COST), PrivateKey.generate().peer_id()
    links = [encode_block({"n": i})[0] for i in range(1000)]
    for link in links:
        store.put(peer, link, b"x")
    held = [link for link in links if store.take(peer, link) is not None]
    assert 0 < len(held) <= 64  # not the 1,000 one-byte blocks their bytes alone would allow
    assert store.has_room()  # everything taken: the count came back down


async def _walk_once(pub: Publisher, kv: KV, ahead: AheadBlocks) -> Counter[str]:
    """Serve ``pub`` on 127.0.0.1, walk its chain once into staging with ``ahead`` as the store of
    blocks fetched ahead; the blocks the server was asked for, by name, with their counts."""
    seen: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        handler = counting(ipnisync_handler(pub), seen)
        served = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"
        async with open_fetcher([addr], pub.peer_id, timeout=10) as fetcher:
            await sync_publisher(
                pub.peer_id, [addr], fetcher, StagingArea(kv), policy=_Anyone(), ahead=ahead
            )
        nursery.cancel_scope.cancel()
    return seen


async def test_the_walk_fetches_each_entries_block_ahead_once(tmp_path: Path) -> None:
    store = AheadBlocks()
    pub = Publisher.init(tmp_path / "pub")
    for i in range(10):
        pub.add(b"c%d" % i, [multihash(i)], bitswap())
    kv = KV(tmp_path / "idx")
    seen = await _walk_once(pub, kv, store)
    got = 0
    for record in pub.chain():
        raw = pub.block(Link.parse(record.cid))
        assert raw is not None
        entries = load_advertisement(Link.parse(record.cid), raw).entries
        assert seen[str(entries)] <= 1  # never fetched twice
        kept = store.take(pub.peer_id, entries)
        if kept is not None:
            got += 1
            assert kept == pub.block(entries) and seen[str(entries)] == 1
    assert got >= 5  # at most 4 at a time, and the walk cancels the last ones when it ends
    pub.close()
    kv.close()


async def test_no_entries_are_fetched_ahead_after_a_big_block(tmp_path: Path) -> None:
    pub = Publisher.init(tmp_path / "pub")
    for i in range(5):  # a first entries block of 3,000 multihashes is over 64 KiB
        pub.add(b"c%d" % i, [multihash(10_000 * i + j) for j in range(3000)], bitswap())
    kv = KV(tmp_path / "idx")
    seen = await _walk_once(pub, kv, AheadBlocks())
    ads = {r.cid for r in pub.chain()}
    entries = [name for name in seen if name not in ads and name != "head"]
    assert len(entries) <= 1  # the first, alone: then none
    pub.close()
    kv.close()


async def test_a_full_size_entries_block_is_kept_for_the_worker(tmp_path: Path) -> None:
    # One ad of 16,384 multihashes (a publisher's default chunk): its one DAG-JSON chunk is over
    # 1 MiB.  The walk fetches it ahead, and the store keeps it, so the worker fetches it from
    # there instead of the publisher a second time.
    pub = Publisher.init(tmp_path / "pub")
    ad_link = Link.parse(pub.add(b"c", [multihash(j) for j in range(16_384)], bitswap()).cid)
    ad = pub.block(ad_link)
    assert ad is not None
    chunk = load_advertisement(ad_link, ad).entries
    raw = pub.block(chunk)
    assert raw is not None and len(raw) > 1 << 20
    kv = KV(tmp_path / "idx")
    store = AheadBlocks()
    seen = await _walk_once(pub, kv, store)
    assert seen[str(chunk)] == 1
    assert store.take(pub.peer_id, chunk) == raw
    pub.close()
    kv.close()


class _Stalling:
    """A hostile publisher: every block but the first ever asked for never arrives."""

    def __init__(self) -> None:
        self.asked: list[Link] = []
        self.answered = trio.Event()

    async def head(self) -> None:
        return None

    async def block(self, link: Link, kind: str | None = None) -> bytes:
        self.asked.append(link)
        if len(self.asked) == 1:
            self.answered.set()
            return b"small"
        await trio.sleep_forever()
        raise AssertionError


async def test_entries_ahead_stay_bounded_against_a_publisher_that_never_answers() -> None:
    fetcher = _Stalling()
    store = AheadBlocks()
    peer = PrivateKey.generate().peer_id()
    async with trio.open_nursery() as nursery:
        lookahead = Lookahead(nursery, fetcher, peer, store)  # type: ignore[arg-type]
        for i in range(1000):  # an endless chain of ads, each naming its own entries
            entries = encode_block({"e": i})[0]
            ad, raw = encode_block({"Entries": entries, "n": i}, DAG_JSON)
            lookahead.entries_after(ad, raw)
            if i == 0:
                await fetcher.answered.wait()  # the first alone; small: then 8 at a time
            await trio.testing.wait_all_tasks_blocked()
        assert len(fetcher.asked) == 1 + 8  # in flight: the slots, never more
        assert len(lookahead._entries_waiting) == 64  # waiting: bounded, the rest dropped
        nursery.cancel_scope.cancel()
    assert store.take(peer, fetcher.asked[0]) == b"small"


class _Endless:
    """A hostile publisher: an endless chain, ad ``i`` naming ad ``i + 1`` as its previous."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    @staticmethod
    def ad(i: int) -> tuple[Link, bytes]:
        previous = encode_block({"n": i + 1}, DAG_JSON)[0]
        return encode_block({"n": i}, DAG_JSON)[0], b'{"PreviousID":{"/":"%s"}}' % str(
            previous
        ).encode()

    def index(self, link: Link) -> int:
        return next(i for i in range(64) if encode_block({"n": i}, DAG_JSON)[0] == link)

    async def block(self, link: Link, kind: str | None = None) -> bytes:
        i = self.index(link)
        self.asked.append(i)
        return self.ad(i)[1]


async def test_the_chain_of_guesses_stays_bounded_and_stops_where_the_walk_does() -> None:
    fetcher = _Endless()
    stop_at = _Endless.ad(5)[0]
    async with trio.open_nursery() as nursery:
        lookahead = Lookahead(nursery, fetcher, stop=lambda link: link == stop_at)  # type: ignore[arg-type]
        lookahead.guess_after(*_Endless.ad(0))
        await trio.testing.wait_all_tasks_blocked()
        assert fetcher.asked == [1, 2]  # the walker asks for nothing: two wait, no more
        assert await lookahead.block(_Endless.ad(1)[0]) == _Endless.ad(1)[1]
        await trio.testing.wait_all_tasks_blocked()
        assert fetcher.asked == [1, 2, 3]  # one taken: one more fetched
        for i in (2, 3, 4):
            assert await lookahead.block(_Endless.ad(i)[0]) == _Endless.ad(i)[1]
        await trio.testing.wait_all_tasks_blocked()
        assert fetcher.asked == [1, 2, 3, 4]  # never ad 5: the walk stops there
        # A link the chain does not hold drops it, and is fetched by the walker itself.
        lookahead.guess_after(*_Endless.ad(10))
        await trio.testing.wait_all_tasks_blocked()
        assert await lookahead.block(_Endless.ad(20)[0]) == _Endless.ad(20)[1]
        await trio.testing.wait_all_tasks_blocked()
        assert fetcher.asked[4:] == [11, 12, 20]
        # Asked for the chain's next link while both guesses it holds are others: no waiting
        # for a chain that cannot go on, the walker fetches it.
        lookahead.guess_after(*_Endless.ad(30))
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            assert await lookahead.block(_Endless.ad(33)[0]) == _Endless.ad(33)[1]
        assert fetcher.asked[7:] == [31, 32, 33]
        nursery.cancel_scope.cancel()


async def test_the_walk_asks_staging_about_each_ad_once(tmp_path: Path) -> None:
    """Each asking is a ``k<cid>`` scan: the walker and the chain of guesses share one answer
    per link while no walk commits."""
    pub = Publisher.init(tmp_path / "pub")
    for i in range(10):
        pub.add(b"c%d" % i, [multihash(i)], bitswap())
    asked: Counter[bytes] = Counter()

    class Counting(StagingArea):
        def is_known(self, cid: bytes) -> bool:
            asked[cid] += 1
            return super().is_known(cid)

    kv = KV(tmp_path / "idx")
    async with trio.open_nursery() as nursery:
        served = await nursery.start(serve_tcp, ipnisync_handler(pub), "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"
        async with open_fetcher([addr], pub.peer_id, timeout=10) as fetcher:
            result = await sync_publisher(
                pub.peer_id, [addr], fetcher, Counting(kv), policy=_Anyone()
            )
        nursery.cancel_scope.cancel()
    assert sum(result.staged.values()) == 10
    assert set(asked) == {Link.parse(r.cid).raw for r in pub.chain()}
    assert set(asked.values()) == {1}
    pub.close()
    kv.close()
