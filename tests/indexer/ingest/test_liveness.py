"""Silent providers: polled after ``poll_silent_after``, marked inactive after
``deactivate_after``, active again with their next ad, removed (record and content) after
``remove_after`` (real ingest, LevelDB, HTTP publisher, find server)."""

from __future__ import annotations

import functools
from pathlib import Path

import base58
import httpx
import trio

from indexer.admin.controls import remove_provider
from indexer.find import find_handler
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.ingest.liveness import Liveness, Plan, plan
from indexer.policy import LivePolicy, Policy
from staging import StagingArea
from store import KV, IndexStore, ProviderRecord
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


def test_plan_removes_past_remove_after_instead_of_polling_or_deactivating() -> None:
    old = ProviderRecord(publisher=b"pub", publisher_addrs=["/a"], last_ad_time=0.0)
    old_gone = ProviderRecord(publisher=b"pub2", last_ad_time=0.0, inactive=True)
    inactive = ProviderRecord(publisher=b"pub3", publisher_addrs=["/c"], last_ad_time=7 * DAY)
    unheard = ProviderRecord(addresses=["/d"])  # registered only: no age, never removed
    records = [(b"p1", old), (b"p2", old_gone), (b"p3", inactive), (b"p4", unheard)]
    polled = {b"p1": 14 * DAY}
    limits = {"poll_silent_after": DAY, "deactivate_after": 7 * DAY}
    decided = plan(records, 15 * DAY, **limits, polled=polled, remove_after=14 * DAY)
    assert decided.remove == (b"p1", b"p2")  # 15 days silent: inactive or not
    assert decided.deactivate == (b"p3",)  # 8 days: inactive, not removed
    assert decided.poll == ((b"pub3", ("/c",)),)
    assert b"p1" not in polled  # forgotten with the provider
    at_bound = plan(records, 14 * DAY, **limits, polled={}, remove_after=14 * DAY)
    assert at_bound.remove == ()  # silent exactly remove_after: not yet (as deactivate_after)
    never = plan(records, 100 * DAY, **limits, polled={}, remove_after=0)
    assert never.remove == () and never.deactivate == (b"p1", b"p3")  # 0: never removed


async def test_a_provider_silent_past_remove_after_disappears_from_find(tmp_path: Path) -> None:
    publisher = key(6)
    chain = ChainBuilder()
    chain.add(publisher, [multihash(b"gone-1")])
    now = [1_000_000.0]
    config = IngestConfig(poll_silent_after=DAY, deactivate_after=7 * DAY, remove_after=14 * DAY)
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, fetcher_factory(timeout=5), config=config, clock=lambda: now[0])
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
            addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
            found = await nursery.start(
                serve_tcp, find_handler(IndexStore(kv), "t"), "127.0.0.1", 0
            )
            client.base_url = httpx.URL(f"http://127.0.0.1:{found[0].socket.getsockname()[1]}")
            await nursery.start(ingester.run)
            ingester.request_sync(publisher.peer_id(), [addr])
            await ingester.wait_idle()
            provider = publisher.peer_id()
            mh = base58.b58encode(multihash(b"gone-1")).decode()
            assert (await client.get(f"/multihash/{mh}")).status_code == 200
            remove = functools.partial(
                remove_provider, ingester, StagingArea(kv), LivePolicy(Policy()), block=False
            )
            liveness = Liveness(ingester, ingester.index, clock=lambda: now[0], remove=remove)
            now[0] += 8 * DAY  # inactive, still registered, its content still there
            assert (await liveness.check()).deactivate == (provider.raw,)
            await ingester.wait_idle()  # the poll found nothing new
            assert (await client.get(f"/providers/{provider}")).json()["Inactive"] is True
            now[0] += 7 * DAY  # 15 days silent: removed, record and content
            ingester.freeze(now[0])  # ... but not while frozen: the silence is ours
            assert await liveness.check() == Plan()
            assert ingester.index.provider(provider.raw) is not None
            ingester.unfreeze()
            assert (await liveness.check()).remove == (provider.raw,)
            assert ingester.index.provider(provider.raw) is None
            assert not ingester.index.has_contexts(provider.raw)
            assert (await client.get(f"/providers/{provider}")).status_code == 404
            assert (await client.get(f"/multihash/{mh}")).status_code == 404
            assert (await liveness.check()) == Plan()  # gone: nothing more to do
            nursery.cancel_scope.cancel()
