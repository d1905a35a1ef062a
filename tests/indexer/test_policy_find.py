"""Policy: a provider blocked after it was indexed is dropped from find and routing at query
time, over real HTTP and a really ingested index (``indexer.policy.AllowedReader``); the
``publish_for`` wildcard that expresses storetheindex's default."""

from __future__ import annotations

from pathlib import Path

import base58
import httpx
import trio

from indexer.find import as_reader, find_handler
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.policy import AllowedReader, LivePolicy, Policy
from indexer.routing import routing_handler
from store import KV
from sync import Link
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.model.cid import RAW
from sync.net.httpserver import serve_tcp
from tests.builders import ChainBuilder, key, multihash


async def _serve(nursery: trio.Nursery, handler: object) -> str:
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    return f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_a_blocked_provider_is_dropped_from_find_and_routing(tmp_path: Path) -> None:
    good, bad = key(601), key(602)
    chains = [ChainBuilder(), ChainBuilder()]
    shared = multihash(7)
    for signer, chain in zip((good, bad), chains, strict=True):
        chain.add(signer, [shared, multihash(10 + chains.index(chain))])
    policy = LivePolicy(Policy())
    with KV(tmp_path / "db") as kv:
        ingester = Ingester(kv, fetcher_factory(timeout=5), config=IngestConfig(segment=3))
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            for signer, chain in zip((good, bad), chains, strict=True):
                addr = await _serve(nursery, ipnisync_handler(chain))
                ingester.request_sync(signer.peer_id(), [f"/ip4/{addr.replace(':', '/tcp/')}/http"])
            with trio.fail_after(20):
                await ingester.wait_idle()
            reader = AllowedReader(as_reader(ingester.index), policy.provider_allowed)
            find = await _serve(nursery, find_handler(reader))
            routing = await _serve(nursery, routing_handler(reader))
            mh = base58.b58encode(shared).decode()
            cid = Link(b"\x01" + bytes([RAW]) + shared)
            async with httpx.AsyncClient(timeout=5) as client:

                async def found() -> tuple[list[str], list[str]]:
                    r = await client.get(f"http://{find}/multihash/{mh}")
                    results = r.json()["MultihashResults"][0]["ProviderResults"]
                    routed = await client.get(f"http://{routing}/routing/v1/providers/{cid}")
                    ids = [p["ID"] for p in routed.json()["Providers"]]
                    return sorted(p["Provider"]["ID"] for p in results), sorted(set(ids))

                both = sorted([str(good.peer_id()), str(bad.peer_id())])
                assert await found() == (both, both)
                policy.block(bad.peer_id())
                assert await found() == ([str(good.peer_id())], [str(good.peer_id())])
                only_bad = base58.b58encode(multihash(11)).decode()
                r = await client.get(f"http://{find}/multihash/{only_bad}")
                assert r.status_code == 404  # its only provider is blocked: nothing to find
                listed = await client.get(f"http://{find}/providers/{bad.peer_id()}")
                assert listed.status_code == 200  # the operator still sees it
                policy.allow(bad.peer_id())
                assert await found() == (both, both)
            nursery.cancel_scope.cancel()


def test_a_wildcard_publish_for_is_storetheindex_default() -> None:
    pub, prov, other = key(603).peer_id(), key(604).peer_id(), key(605).peer_id()
    assert not Policy().may_publish(pub, prov)  # ours: a publisher publishes for itself
    assert Policy().may_publish(pub, pub)
    anyone = Policy(publish_for={"*": ("*",)}).normalized()
    assert anyone.may_publish(pub, prov) and anyone.may_publish(other, pub)
    some = Policy(publish_for={"*": (str(prov),)}).normalized()
    assert some.may_publish(other, prov) and not some.may_publish(other, pub)
    denied = Policy(publish_for={"*": ("*",)}, deny_providers=(str(prov),)).normalized()
    assert not denied.may_publish(pub, prov)
