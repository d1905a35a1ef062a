"""Ingest rules end to end over real HTTP: providers, publishers, policy, concurrency, failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from indexer.ingest.engine import IngestConfig, Ingester, OwnProviderPolicy
from staging import Entry, StackRecord, StagedAd, StagingArea
from store import KV
from sync import Link, PeerId, PrivateKey
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from sync.walk.chain import StopReason
from tests.builders import ChainBuilder, key, multihash

http_fetcher = fetcher_factory(timeout=5)


def mhs(start: int, n: int) -> list[bytes]:
    return [multihash(i) for i in range(start, start + n)]


async def serve(nursery: trio.Nursery, handler: Handler, key_: PrivateKey) -> str:
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    return f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"


def allow(*pairs: tuple[PrivateKey, PrivateKey]) -> OwnProviderPolicy:
    return OwnProviderPolicy(frozenset((a.peer_id().raw, b.peer_id().raw) for a, b in pairs))


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[KV]:
    db = KV(tmp_path / "db")
    yield db
    db.close()


async def ingest(
    kv: KV,
    policy: OwnProviderPolicy,
    *targets: tuple[PrivateKey, str],
    retry_base: float = IngestConfig.retry_base,
) -> Ingester:
    config = IngestConfig(segment=2, retry_base=retry_base)
    ingester = Ingester(kv, http_fetcher, policy=policy, config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(ingester.run)
        for publisher, addr in targets:
            ingester.request_sync(publisher.peer_id(), [addr])
        with trio.fail_after(30):
            await ingester.wait_idle()
        nursery.cancel_scope.cancel()
    return ingester


def owner(ingester: Ingester, mh: bytes) -> list[PeerId]:
    return [PeerId(r.provider) for r in ingester.index.lookup(mh)]


async def test_a_chain_that_switches_providers_gets_one_stack_per_provider(kv: KV) -> None:
    x, a, b = key(0), key(1), key(2)
    chain = ChainBuilder()
    chain.add(a, mhs(0, 6))  # signed by provider A itself
    chain.add(x, mhs(10, 3), provider=str(b.peer_id()))  # signed by the publisher for B
    chain.add(x, mhs(20, 3))  # the publisher's own
    chain.add(a, mhs(30, 2))
    source = chain.serving_as(x)
    async with trio.open_nursery() as nursery:
        addr = await serve(nursery, ipnisync_handler(source), x)
        ingester = await ingest(kv, allow((x, a), (x, b)), (x, addr))
        nursery.cancel_scope.cancel()
    [result] = ingester.results
    assert result.staged == {str(a.peer_id()): 2, str(b.peer_id()): 1, str(x.peer_id()): 1}
    assert owner(ingester, multihash(0)) == [a.peer_id()]
    assert owner(ingester, multihash(10)) == [b.peer_id()]
    assert owner(ingester, multihash(20)) == [x.peer_id()]
    assert owner(ingester, multihash(31)) == [a.peer_id()]
    record = ingester.index.provider(a.peer_id().raw)
    assert record is not None and record.publisher == x.peer_id().raw


async def test_two_publishers_announcing_one_chain_at_once_apply_each_ad_once(kv: KV) -> None:
    provider, relay = key(1), key(2)
    chain = ChainBuilder()
    for i in range(6):
        chain.add(provider, mhs(i * 10, 5))
    inner_own, inner_relay = ipnisync_handler(chain), ipnisync_handler(chain.serving_as(relay))

    asked: set[str] = set()
    both_asked = trio.Event()

    def together(inner: Handler, name: str) -> Handler:  # both walks are in flight at once:
        async def handle(request: Request) -> Response:  # neither is answered before both ask
            asked.add(name)
            if len(asked) == 2:
                both_asked.set()
            await both_asked.wait()
            return await inner(request)

        return handle

    async with trio.open_nursery() as nursery:
        own = await serve(nursery, together(inner_own, "own"), provider)
        relayed = await serve(nursery, together(inner_relay, "relay"), relay)
        ingester = await ingest(kv, allow((relay, provider)), (provider, own), (relay, relayed))
        nursery.cancel_scope.cancel()
    assert len(ingester.results) == 2 and all(r.walked == 6 for r in ingester.results)
    staged = sum(n for r in ingester.results for n in r.staged.values())
    assert staged == 6  # the second commit kept nothing: every ad is applied exactly once
    assert all(StagingArea(ingester.kv).done(c.raw) for c, _ in chain.order)
    assert all(owner(ingester, m) == [provider.peer_id()] for _, ms in chain.order for m in ms)


async def test_malicious_chain_into_another_providers_chain(kv: KV) -> None:
    victim, evil = key(1), key(2)
    chain = ChainBuilder()
    chain.add(victim, mhs(0, 3))
    chain.add(victim, mhs(10, 3))
    victim_head = chain.head_link
    chain.add(evil, mhs(20, 3))
    chain.add(evil, mhs(30, 3))
    evil_source = chain.serving_as(evil)
    victim_source = ChainBuilder()
    victim_source.blocks, victim_source.head_link, victim_source.head_key = (
        chain.blocks,
        victim_head,
        victim,
    )
    async with trio.open_nursery() as nursery:
        evil_addr = await serve(nursery, ipnisync_handler(evil_source), evil)
        ingester = await ingest(kv, OwnProviderPolicy(), (evil, evil_addr))
        [result] = ingester.results
        assert result.stop is StopReason.NOT_ALLOWED and result.walked == 2
        assert owner(ingester, multihash(0)) == [] and owner(ingester, multihash(20)) == [
            evil.peer_id()
        ]
        assert "provider" in (
            StagingArea(ingester.kv).publisher(evil.peer_id().raw).last_error or ""
        )
        victim_addr = await serve(nursery, ipnisync_handler(victim_source), victim)
        ingester = await ingest(kv, OwnProviderPolicy(), (victim, victim_addr))
        assert owner(ingester, multihash(0)) == [victim.peer_id()]
        assert owner(ingester, multihash(10)) == [victim.peer_id()]
        nursery.cancel_scope.cancel()


async def test_publisher_not_allowed_for_a_provider(kv: KV) -> None:
    pub, other = key(0), key(3)
    chain = ChainBuilder()
    chain.add(pub, mhs(0, 2), provider=str(other.peer_id()))
    async with trio.open_nursery() as nursery:
        addr = await serve(nursery, ipnisync_handler(chain), pub)
        ingester = await ingest(kv, OwnProviderPolicy(), (pub, addr))
        assert ingester.results[0].stop is StopReason.NOT_ALLOWED
        assert StagingArea(ingester.kv).publisher(pub.peer_id().raw).latest_scanned is not None
        assert owner(ingester, multihash(0)) == []
        nursery.cancel_scope.cancel()


async def test_transient_failures_retry_and_missing_entries_become_permanent(kv: KV) -> None:
    pub = key(0)
    chain = ChainBuilder()
    flaky = chain.add(pub, mhs(0, 3))
    lost = chain.add(pub, mhs(10, 3))
    chain.add(pub, mhs(20, 3))
    flaky_chunk = _entries(chain, flaky)
    lost_chunk = _entries(chain, lost)
    inner = ipnisync_handler(chain)
    failures = {"flaky": 2}

    async def handler(request: Request) -> Response:
        if request.path.endswith(str(flaky_chunk)) and failures["flaky"] > 0:
            failures["flaky"] -= 1
            return Response.text(503, "busy")
        if request.path.endswith(str(lost_chunk)):
            return Response.text(404, "gone")
        return await inner(request)

    async with trio.open_nursery() as nursery:
        addr = await serve(nursery, handler, pub)
        ingester = await ingest(kv, OwnProviderPolicy(), (pub, addr), retry_base=0.01)
        nursery.cancel_scope.cancel()
    assert failures["flaky"] == 0
    done = [StagingArea(ingester.kv).done(c.raw) for c, _ in chain.order]
    assert [d is not None and d.ok for d in done] == [True, False, True]
    assert done[1] is not None and "BlockNotFound" in (done[1].error or "")
    record = ingester.index.provider(pub.peer_id().raw)
    assert record is not None and "BlockNotFound" in (record.last_error or "")
    assert owner(ingester, multihash(0)) == [pub.peer_id()]
    assert owner(ingester, multihash(20)) == [pub.peer_id()]  # the worker went on


def _entries(chain: ChainBuilder, ad: Link) -> Link:
    from sync import load_advertisement

    return load_advertisement(ad, chain.blocks[ad]).entries


async def test_a_provider_whose_entries_are_gone_is_still_registered_from_its_ad(kv: KV) -> None:
    pub, prov = key(0), key(1)
    chain = ChainBuilder()
    lost = chain.add(prov, mhs(40, 3), addresses=("/ip4/1.2.3.4/tcp/4001",))
    lost_chunk = _entries(chain, lost)
    source = chain.serving_as(pub)
    inner = ipnisync_handler(source)

    async def handler(request: Request) -> Response:
        if request.path.endswith(str(lost_chunk)):
            return Response.text(404, "gone")
        return await inner(request)

    async with trio.open_nursery() as nursery:
        addr = await serve(nursery, handler, pub)
        ingester = await ingest(kv, allow((pub, prov)), (pub, addr), retry_base=0.01)
        nursery.cancel_scope.cancel()
    done = StagingArea(ingester.kv).done(lost.raw)
    assert done is not None and not done.ok
    record = ingester.index.provider(prov.peer_id().raw)
    assert record is not None  # registered before (without) its entries, as storetheindex
    assert record.addresses == ["/ip4/1.2.3.4/tcp/4001"]
    assert record.publisher == pub.peer_id().raw and record.publisher_addrs == [addr]
    assert record.last_ad == lost.raw and record.last_ad_time is not None
    assert "BlockNotFound" in (record.last_error or "")
    assert owner(ingester, multihash(40)) == []  # nothing indexed from it


def test_failed_record_registers_only_from_a_valid_ad() -> None:
    from indexer.ingest.apply import failed_record
    from store import ProviderRecord

    pub, prov = key(0), key(1)
    chain = ChainBuilder()
    ad = chain.add(prov, mhs(0, 1), addresses=("/ip4/5.6.7.8/tcp/1",))
    staging_entry = _entry(chain, ad, pub)
    registered = failed_record(None, staging_entry, "BlockNotFound: gone", 7.0)
    assert registered is not None and registered.addresses == ["/ip4/5.6.7.8/tcp/1"]
    assert registered.last_ad == ad.raw and registered.last_error == "BlockNotFound: gone"
    assert registered.last_error_time == 7.0
    invalid = _entry(chain, ad, pub, error="bad signature")
    assert failed_record(None, invalid, "bad", 7.0) is None  # unauthenticated: no record
    prior = ProviderRecord(addresses=["/ip4/9.9.9.9/tcp/1"])
    kept = failed_record(prior, invalid, "bad", 7.0)
    assert kept == ProviderRecord(
        addresses=["/ip4/9.9.9.9/tcp/1"], last_error="bad", last_error_time=7.0
    )


def _entry(chain: ChainBuilder, ad: Link, pub: PrivateKey, error: str | None = None) -> Entry:
    stack = StackRecord(walk_id=1, count=1, publisher=pub.peer_id().raw, addrs=[], created=0.0)
    staged = StagedAd(ad.raw, chain.blocks[ad], error=error)
    return Entry(provider=key(1).peer_id().raw, seq=1, pos=0, stack=stack, ad=staged)


async def test_first_sync_depth_and_a_per_sync_depth_of_minus_one(kv: KV) -> None:
    a, b = key(0), key(1)
    chains = {a: ChainBuilder(), b: ChainBuilder()}
    for signer, chain in chains.items():
        for i in range(5):
            chain.add(signer, mhs(100 * (signer is b) + 10 * i, 2))
    config = IngestConfig(segment=2, first_sync_depth=2, depth_limit=1)
    ingester = Ingester(kv, http_fetcher, policy=allow((a, a), (b, b)), config=config)
    async with trio.open_nursery() as nursery:
        addr_a = await serve(nursery, ipnisync_handler(chains[a]), a)
        addr_b = await serve(nursery, ipnisync_handler(chains[b]), b)
        await nursery.start(ingester.run)
        with trio.fail_after(30):
            ingester.request_sync(a.peer_id(), [addr_a])  # a first sync: first_sync_depth
            ingester.request_sync(b.peer_id(), [addr_b], depth=-1)  # asked for: no limit
            await ingester.wait_idle()
            assert [bool(owner(ingester, multihash(10 * i))) for i in range(5)] == [
                False, False, False, True, True
            ]  # fmt: skip
            assert all(owner(ingester, multihash(100 + 10 * i)) for i in range(5))
            for i in range(5, 8):
                chains[a].add(a, mhs(10 * i, 2))
            ingester.request_sync(a.peer_id(), [addr_a])  # not a first sync: depth_limit 1
            await ingester.wait_idle()
        nursery.cancel_scope.cancel()
    assert [bool(owner(ingester, multihash(10 * i))) for i in range(8)] == [
        False, False, False, True, True, False, False, True
    ]  # fmt: skip


def test_walk_depth_rules() -> None:
    from indexer.ingest.syncs import walk_depth

    plain, first = IngestConfig(), IngestConfig(first_sync_depth=3, depth_limit=7)
    assert [walk_depth(plain, d, first=True) for d in (None, 0, -1, 5)] == [0, 0, 0, 5]
    assert [walk_depth(first, d, first=True) for d in (None, 0, -1, 5)] == [3, 3, 0, 5]
    assert [walk_depth(first, d, first=False) for d in (None, 0, -1, 5)] == [7, 7, 0, 5]
    unlimited_first = IngestConfig(first_sync_depth=-1, depth_limit=7)
    assert walk_depth(unlimited_first, None, first=True) == 0
    assert walk_depth(IngestConfig(depth_limit=-1), None, first=False) == 0
