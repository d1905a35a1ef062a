"""The walk fetches each next ad while it checks the current one: faster, never different."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio

from indexer.publisher.chain import Publisher
from staging import StagingArea
from store import KV
from sync import DAG_CBOR, DAG_JSON, PeerId, PrivateKey, encode_block
from sync.ipnisync.fetch import open_fetcher
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import serve_tcp
from sync.walk.lookahead import peek_previous
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
