"""Silent providers: polled after ``poll_silent_after``, marked inactive after
``deactivate_after``, active again with their next ad (real ingest, LevelDB, HTTP publisher)."""

from __future__ import annotations

from pathlib import Path

import trio

from indexer.ingest.engine import IngestConfig, Ingester
from indexer.ingest.liveness import Liveness, plan
from store import KV, ProviderRecord
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import serve_tcp
from tests.builders import ChainBuilder, key, multihash

DAY = 86400.0


def test_plan_polls_once_per_interval_and_deactivates_once() -> None:
    silent = ProviderRecord(publisher=b"pub", publisher_addrs=["/a"], last_ad_time=0.0)
    fresh = ProviderRecord(publisher=b"pub2", publisher_addrs=["/b"], last_ad_time=9.5 * DAY)
    unheard = ProviderRecord(addresses=["/c"])  # registered only: no age
    gone = ProviderRecord(publisher=b"pub3", last_ad_time=0.0, inactive=True)
    records = [(b"p1", silent), (b"p2", fresh), (b"p3", unheard), (b"p4", gone)]
    polled: dict[bytes, float] = {}
    first = plan(records, 10 * DAY, poll_silent_after=DAY, deactivate_after=7 * DAY, polled=polled)
    assert first.poll == ((b"pub", ("/a",)), (b"pub3", ()))
    assert first.deactivate == (b"p1",)
    again = plan(records, 10 * DAY + 1, poll_silent_after=DAY, deactivate_after=0, polled=polled)
    assert again.poll == () and again.deactivate == ()  # polled a second ago; 0: never
    later = plan(records, 11 * DAY + 1, poll_silent_after=DAY, deactivate_after=0, polled=polled)
    assert [p for p, _ in later.poll] == [b"pub", b"pub2", b"pub3"]  # pub2: 1.5 days silent now


async def test_a_silent_provider_is_polled_marked_inactive_and_revived(tmp_path: Path) -> None:
    publisher = key(5)
    chain = ChainBuilder()
    chain.add(publisher, [multihash(b"live-1")])
    now = [1_000_000.0]
    config = IngestConfig(poll_silent_after=DAY, deactivate_after=7 * DAY)
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, fetcher_factory(timeout=5), config=config, clock=lambda: now[0])
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
            addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
            await nursery.start(ingester.run)
            ingester.request_sync(publisher.peer_id(), [addr])
            await ingester.wait_idle()
            provider = publisher.peer_id().raw
            liveness = Liveness(ingester, ingester.index, clock=lambda: now[0])
            assert (await liveness.check()) == type(await liveness.check())()  # nothing yet
            now[0] += 8 * DAY  # silent for 8 days
            chain.add(publisher, [multihash(b"live-2")])  # ... but it has a new ad to find
            decided = await liveness.check()
            assert decided.deactivate == (provider,)
            assert [p for p, _ in decided.poll] == [provider]
            record = ingester.index.provider(provider)
            assert record is not None and record.inactive
            await ingester.wait_idle()  # the poll's sync found the new ad and applied it
            record = ingester.index.provider(provider)
            assert record is not None and not record.inactive and record.last_ad_time == now[0]
            assert ingester.index.lookup(multihash(b"live-2"))
            nursery.cancel_scope.cancel()
