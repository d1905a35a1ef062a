"""Announce intake over real HTTP: both forms, policy, rate limits, durability across restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from indexer.ingest.engine import Ingester
from indexer.ingest.intake import AnnounceIntake, IntakeResult
from staging import StagingArea
from store import KV
from sync import Link, Message, PeerId, encode_block
from sync.errors import FetchFailed
from sync.ipnisync.fetch import BlockFetcher, fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import serve_tcp
from tests.builders import ChainBuilder, key, multihash

http_fetcher = fetcher_factory(timeout=5)


async def start(nursery: trio.Nursery, handler: object) -> tuple[str, int]:
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    port = listeners[0].socket.getsockname()[1]
    return f"/ip4/127.0.0.1/tcp/{port}/http", port


@pytest.fixture
def chain() -> ChainBuilder:
    c = ChainBuilder()
    c.add(key(0), [multihash(i) for i in range(5)])
    c.add(key(0), [multihash(i) for i in range(5, 9)])
    return c


async def test_both_forms_are_accepted_and_synced(tmp_path: Path, chain: ChainBuilder) -> None:
    pub = key(0).peer_id()
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, http_fetcher)
        intake = AnnounceIntake(ingester)
        async with trio.open_nursery() as nursery:
            addr, _ = await start(nursery, ipnisync_handler(chain))
            await nursery.start(ingester.run)
            _, port = await start(nursery, intake.handle)
            assert chain.head_link is not None
            msg = Message.create(chain.head_link, [addr], pub)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                r = await client.put("/announce", content=msg.to_cbor())
                assert r.status_code == 204
                with trio.fail_after(20):
                    await ingester.wait_idle()
                assert ingester.index.lookup(multihash(0))
                json_put = await client.put(
                    "/ingest/announce",
                    content=msg.to_json(),
                    headers={"content-type": "application/json"},
                )
                assert json_put.status_code == 204  # the same head again: acknowledged, dropped
                assert len(ingester.results) == 1
                bad = await client.put("/announce", content=b"\x00garbage")
                assert bad.status_code == 400 and "bad announce" in bad.text
                no_peer = Message.create(chain.head_link, [addr])
                r = await client.put("/announce", content=no_peer.to_cbor())
                assert r.status_code == 400 and "/p2p/" in r.text
                assert (await client.get("/announce")).status_code == 405
            nursery.cancel_scope.cancel()


async def test_policy_rate_limit_and_capacity(tmp_path: Path, chain: ChainBuilder) -> None:
    pub, denied = key(0).peer_id(), key(1).peer_id()
    now = [0.0]
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, http_fetcher)
        intake = AnnounceIntake(
            ingester, allow=lambda p: p != denied, rate=1, burst=2, clock=lambda: now[0]
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            head = chain.head_link
            assert head is not None
            addr = "/ip4/127.0.0.1/tcp/1/http"  # nothing listens: syncs fail, that is fine here
            assert intake.accept(Message.create(head, [addr], denied)).status == 403
            heads = [link for link, _ in chain.order]
            assert intake.accept(Message.create(heads[0], [addr], pub)).status == 204
            assert intake.accept(Message.create(heads[1], [addr], pub)).status == 204
            assert intake.accept(Message.create(head, [addr], key(2).peer_id())).status == 204
            third = Message.create(multihash_link(), [addr], pub)
            assert intake.accept(third).status == 429
            now[0] += 1.0  # one token back
            assert intake.accept(third).status == 204
            full = AnnounceIntake(ingester, max_publishers=0)
            assert full.accept(Message.create(head, [addr], key(3).peer_id())).status == 503
            nursery.cancel_scope.cancel()


def multihash_link() -> Link:
    return Link.make(0x0129, b"another head")


@asynccontextmanager
async def never_runs(publisher: PeerId, addrs: Sequence[str]) -> AsyncIterator[BlockFetcher]:
    await trio.sleep_forever()  # the daemon dies before this sync gets anywhere
    raise FetchFailed("not reached")
    yield  # pragma: no cover


async def test_an_accepted_announce_survives_a_restart(tmp_path: Path, chain: ChainBuilder) -> None:
    pub = key(0).peer_id()
    async with trio.open_nursery() as nursery:
        addr, _ = await start(nursery, ipnisync_handler(chain))
        assert chain.head_link is not None
        with KV(tmp_path / "db") as kv:  # accepted (204), but its sync never happens
            async with trio.open_nursery() as first:
                ingester = Ingester(kv, never_runs)
                await first.start(ingester.run)
                intake = AnnounceIntake(ingester)
                assert intake.accept(Message.create(chain.head_link, [addr], pub)).status == 204
                await trio.testing.wait_all_tasks_blocked()
                assert not ingester.results and ingester.index.lookup(multihash(7)) == []
                first.cancel_scope.cancel()
        with KV(tmp_path / "db") as kv:  # restarted: no new announce arrives
            ingester = Ingester(kv, http_fetcher)
            await nursery.start(ingester.run)
            with trio.fail_after(20):
                await ingester.wait_idle()
            assert [str(r.head) for r in ingester.results] == [str(chain.head_link)]
            assert ingester.index.lookup(multihash(7))
            assert StagingArea(ingester.kv).unsynced_announces() == []
        nursery.cancel_scope.cancel()


async def test_refuse_private_answers_403_when_no_address_is_public(tmp_path: Path) -> None:
    pub = key(0).peer_id()
    head = Link.make(0x0129, b"a head")
    with KV(tmp_path / "db") as kv:
        async with trio.open_nursery() as nursery:
            ingester = Ingester(kv, never_runs)
            await nursery.start(ingester.run)
            intake = AnnounceIntake(ingester, refuse_private=True)
            private = ["/ip4/127.0.0.1/tcp/3104/http", "/ip4/10.1.2.3/tcp/80/http"]
            result = intake.accept(Message.create(head, private, pub), source="198.51.100.7")
            assert result.status == 403 and "127.0.0.1" in result.message
            assert StagingArea(ingester.kv).unsynced_announces() == []  # nothing recorded
            mixed = [*private, "/dns4/ipni.example.net/tcp/443/https"]
            assert intake.accept(Message.create(head, mixed, pub)).status == 204
            [(_, record)] = StagingArea(ingester.kv).unsynced_announces()
            assert record.addrs == ["/dns4/ipni.example.net/tcp/443/https"]  # private dropped
            nursery.cancel_scope.cancel()


def test_ipv6_sources_share_a_bucket_per_64() -> None:
    from indexer.ingest.intake import source_key

    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("198.51.100.7") != source_key("198.51.100.8")
    assert source_key("::ffff:198.51.100.7") != source_key("::ffff:198.51.100.8")
    assert source_key("12D3KooWpeer") == b"12D3KooWpeer"


async def test_orig_peer_names_the_publisher_of_a_relayed_gossip_announce(tmp_path: Path) -> None:
    pub, relay, me = key(0).peer_id(), key(1).peer_id(), key(2).peer_id()
    link, _ = encode_block({"announced": 1})
    bare = Message.create(link, ["/ip4/127.0.0.1/tcp/1/http"])
    relayed = Message(link, bare.addrs, orig_peer=str(pub))
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, http_fetcher)
        intake = AnnounceIntake(ingester, allow=lambda p: p != relay, self_id=me)
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            _relayed(intake, ingester, relayed, bare, (pub, relay, me))
            nursery.cancel_scope.cancel()


def _relayed(
    intake: AnnounceIntake,
    ingester: Ingester,
    relayed: Message,
    bare: Message,
    peers: tuple[PeerId, PeerId, PeerId],
) -> None:
    pub, relay, me = peers
    link = relayed.cid
    assert intake.accept(relayed, relay, source=str(relay)).status == 204
    assert ingester.is_syncing(pub.raw) and not ingester.is_syncing(relay.raw)
    # over HTTP, OrigPeer is ignored: the addresses must name the publisher
    assert intake.accept(Message(link, bare.addrs, orig_peer=str(pub))).status == 400
    named = Message.create(link, ["/ip4/127.0.0.1/tcp/2/http"], relay)
    clash = intake.accept(Message(link, named.addrs, orig_peer=str(pub)), relay)
    assert clash.status == 400 and "OrigPeer" in clash.message
    bad = intake.accept(Message(link, bare.addrs, orig_peer="nonsense"), relay)
    assert bad.status == 400
    own = intake.accept(Message(link, bare.addrs, orig_peer=str(key(3).peer_id())), me)
    assert own == IntakeResult(204, "our own re-published announce")
    assert not ingester.is_syncing(key(3).peer_id().raw)


async def test_an_address_with_an_unknown_code_is_skipped_not_the_announce(
    tmp_path: Path,
) -> None:
    pub = key(0).peer_id()
    link, _ = encode_block({"announced": 1})
    good = Message.create(link, ["/ip4/127.0.0.1/tcp/1/http"], pub)
    strange = good.addrs[0][:8] + b"\xf7\xee\x01\x02zz"  # /ip4/../tcp/1 + code 0x7777 + value
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, http_fetcher)
        intake = AnnounceIntake(ingester)
        message = Message.from_cbor(Message(link, (strange, *good.addrs)).to_cbor())
        assert message.unknown() == 1
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            assert intake.accept(message).status == 204
            assert ingester.is_syncing(pub.raw)
            nursery.cancel_scope.cancel()
