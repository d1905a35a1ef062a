"""Find and delegated routing over a cluster: the same answers as over LevelDB, bounded staleness.

The same writes (registry records, allocations, index entries, value records) go to a
``LevelDBBackend`` in ``tmp_path`` and to a ``ClusterBackend`` on the session's real Valkey
cluster; each is served by the find API with routing mounted by prefix (as the daemon mounts
them) on 127.0.0.1, and every route must answer byte for byte the same, except ``/stats``, whose
counts a cluster cannot give (-1).  The cluster is shared by the session, so every peer ID and
multihash here is fresh, and ``/providers`` is compared on this test's providers only.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import base58
import httpx
import pytest
import trio

from indexer.find import BackendReader, IndexReader, StoreReader, find_handler
from indexer.find.model import Stats, decode
from indexer.routing import PREFIX, routing_handler
from store import KV, IndexStore, ProviderRecord
from store.cluster import IndexBackend, LevelDBBackend, open_cluster
from store.index import ExtendedProviderRecord
from sync import Link, PeerId, PrivateKey
from sync.model.cid import RAW, encode_uvarint
from sync.model.metadata import bitswap, graphsync_filecoinv1, ipfs_gateway_http
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import link, multihash
from tests.cluster.valkey import ValkeyCluster

BITSWAP = bitswap()
GRAPHSYNC = graphsync_filecoinv1(link(b"piece"), True, False)
GATEWAY = ipfs_gateway_http()
CTX1, CTX2 = b"ctx-one", b"ctx-two"
NDJSON = {"accept": "application/x-ndjson"}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cid(mh: bytes) -> str:
    return str(Link(b"\x01" + encode_uvarint(RAW) + mh))


def b58(mh: bytes) -> str:
    return base58.b58encode(mh).decode()


@dataclass(frozen=True)
class World:
    """This test's peers and multihashes; ``gone`` has a value whose provider has no record."""

    a: bytes
    b: bytes
    gone: bytes
    extra: str  # an extended provider's base58 peer ID
    shared: bytes  # A under CTX1, B under CTX1
    context2: bytes  # A under CTX2 (context-level extended providers, override)
    orphan: bytes  # only a value of ``gone``: no result
    missing: bytes  # never indexed

    @classmethod
    def fresh(cls) -> World:
        a, b, gone, extra = (PrivateKey.generate().peer_id() for _ in range(4))
        mh = [multihash(os.urandom(16)) for _ in range(4)]
        return cls(a.raw, b.raw, gone.raw, str(extra), *mh)

    def records(self) -> dict[bytes, ProviderRecord]:
        ctx2 = base64.b64encode(CTX2).decode()
        return {
            self.a: ProviderRecord(
                addresses=["/ip4/10.0.0.1/tcp/4001", "/dns4/a.example.com/tcp/443/tls/http"],
                publisher=self.a,
                last_ad=link(b"ad-a").raw,
                last_ad_time=1_687_954_866.0,
                extended=[ExtendedProviderRecord(self.extra, ["/ip4/10.0.0.2/tcp/4002/ws"], b"")],
                context_extended={
                    ctx2: [ExtendedProviderRecord(self.extra, ["/ip4/10.0.0.9/tcp/1"], GATEWAY)]
                },
                context_override={ctx2: True},
            ),
            self.b: ProviderRecord(addresses=["/ip4/10.0.0.3/tcp/4001"], last_error="boom"),
        }

    def values(self) -> list[tuple[bytes, bytes, bytes, list[bytes]]]:
        """(provider, context, metadata, multihashes) of every value."""
        return [
            (self.a, CTX1, BITSWAP, [self.shared]),
            (self.b, CTX1, GRAPHSYNC, [self.shared]),
            (self.a, CTX2, BITSWAP, [self.context2]),
            (self.gone, CTX1, BITSWAP, [self.orphan]),
        ]


def _peer(raw: bytes) -> str:
    return str(PeerId(raw))


async def write(
    world: World, backend: IndexBackend, order: Sequence[tuple[bytes, bytes]] | None = None
) -> dict[tuple[bytes, bytes], bytes]:
    """The world's writes on ``backend``, allocating in ``order``; the value keys."""
    pairs = order or [(p, c) for p, c, _, _ in world.values()]
    vks = {pair: await backend.allocate(*pair) for pair in pairs}
    for provider, record in world.records().items():
        await backend.put_provider(provider, record)
    for provider, context, metadata, mhs in world.values():
        vk = vks[provider, context]
        await backend.add_multihashes(vk, mhs)
        await backend.put_value(vk, provider, context, metadata)
    return vks


def both(index: IndexStore | IndexReader) -> Handler:
    """The find API with delegated routing mounted by prefix, as the daemon serves them."""
    find, routing = find_handler(index, "test"), routing_handler(index)

    async def handle(request: Request) -> Response:
        if request.path.startswith(PREFIX):
            return await routing(request)
        return await find(request)

    return handle


@asynccontextmanager
async def served(handler: Handler) -> AsyncIterator[httpx.AsyncClient]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=base) as client:
            yield client
        nursery.cancel_scope.cancel()


def batch(mhs: Sequence[bytes]) -> bytes:
    return json.dumps({"Multihashes": [base64.b64encode(m).decode() for m in mhs]}).encode()


def requests(world: World) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """(method, path, headers, body) of every route's request, answered alike on both."""
    out: list[tuple[str, str, dict[str, str], bytes | None]] = []
    for mh in (world.shared, world.context2, world.orphan, world.missing):
        out += [
            ("GET", f"/multihash/{b58(mh)}", {}, None),
            ("GET", f"/multihash/{b58(mh)}", NDJSON, None),
            ("GET", f"/cid/{cid(mh)}", {}, None),
            ("GET", f"/cid/{cid(mh)}", NDJSON, None),
            ("GET", f"{PREFIX}providers/{cid(mh)}", {}, None),
            ("GET", f"{PREFIX}providers/{cid(mh)}", NDJSON, None),
            ("GET", f"{PREFIX}providers/{cid(mh)}?filter-protocols=transport-bitswap", {}, None),
        ]
    every = [world.orphan, world.shared, world.missing, world.context2]
    for mhs in (every, [world.missing, world.orphan], [world.context2]):
        out.append(("POST", "/multihash", {}, batch(mhs)))
    for peer in (world.a, world.b, world.gone):
        out.append(("GET", f"/providers/{_peer(peer)}", {}, None))
    out += [("GET", "/health", {}, None), ("GET", "/multihash/zzz", {}, None)]
    return out


async def ask(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> tuple[int, str, bytes]:
    r = await client.request(method, path, headers=headers, content=body)
    return r.status_code, r.headers.get("content-type", ""), r.content


def mine(listing: bytes, world: World) -> list[Any]:
    peers = {_peer(p) for p in (world.a, world.b, world.gone)}
    return [info for info in json.loads(listing) if info["AddrInfo"]["ID"] in peers]


async def test_every_route_answers_as_over_leveldb(
    valkey_cluster: ValkeyCluster, tmp_path: Path
) -> None:
    world = World.fresh()
    async with open_cluster(valkey_cluster.startup, retry_for=10.0) as cluster:
        cvks = await write(world, cluster)
        # Allocate on LevelDB in the cluster's value-key order, so lookups list values alike.
        order = sorted(cvks, key=cvks.__getitem__)
        with KV(tmp_path / "db") as kv:
            index = IndexStore(kv)
            await write(world, LevelDBBackend(index), order)
            async with served(both(index)) as local, served(both(BackendReader(cluster))) as remote:
                statuses = set()
                for method, path, headers, body in requests(world):
                    want = await ask(local, method, path, headers, body)
                    assert await ask(remote, method, path, headers, body) == want, path
                    statuses.add(want[0])
                assert statuses == {200, 400, 404}
                every = [world.orphan, world.shared, world.missing, world.context2]
                found = (await local.post("/multihash", content=batch(every))).json()
                assert len(found["MultihashResults"]) == 2  # the batch found some
                shared = (await local.get(f"/multihash/{b58(world.shared)}")).json()
                ids = [
                    r["Provider"]["ID"] for r in shared["MultihashResults"][0]["ProviderResults"]
                ]
                assert set(ids) == {_peer(world.a), _peer(world.b), world.extra}

                listing_local = (await local.get("/providers")).content
                listing_remote = (await remote.get("/providers")).content
                assert len(mine(listing_local, world)) == 2  # ``gone`` has no record
                assert mine(listing_remote, world) == mine(listing_local, world)

                stats = decode((await local.get("/stats")).content, Stats)
                assert stats.entries_count == 4 and stats.entries_estimate > 0
                r = await remote.get("/stats")
                assert r.status_code == 200
                assert decode(r.content, Stats) == Stats(entries_estimate=-1, entries_count=-1)


async def test_a_removal_by_another_node_is_served_within_the_bound(
    valkey_cluster: ValkeyCluster,
) -> None:
    world = World.fresh()
    clock = FakeClock()
    async with (
        open_cluster(valkey_cluster.startup, retry_for=10.0) as writer,
        open_cluster(valkey_cluster.startup, retry_for=10.0, clock=clock) as server,
    ):
        vks = await write(world, writer)
        reader = BackendReader(server, ttl=1.0, clock=clock)
        path = f"/multihash/{b58(world.context2)}"
        routed = f"{PREFIX}providers/{cid(world.context2)}"
        async with served(both(reader)) as client:
            assert (await client.get(path)).status_code == 200
            assert (await client.get(routed)).status_code == 200
            before = (await client.get(f"/multihash/{b58(world.shared)}")).json()
            await writer.remove_value(vks[world.a, CTX2], world.a, CTX2)
            moved = ProviderRecord(addresses=["/ip4/10.9.9.9/tcp/9"])
            await writer.put_provider(world.b, moved)
            clock.now += 0.5  # within the bound: what was read is still served
            assert (await client.get(path)).status_code == 200
            assert (await client.get(f"/multihash/{b58(world.shared)}")).json() == before
            clock.now += 0.6  # past it: the removal shows, and the new registry record
            assert (await client.get(path)).status_code == 404
            assert (await client.get(routed)).status_code == 404
            r = await client.get(f"/multihash/{b58(world.shared)}")
            addrs = {
                r["Provider"]["ID"]: r["Provider"]["Addrs"]
                for r in r.json()["MultihashResults"][0]["ProviderResults"]
            }
            assert addrs[_peer(world.b)] == ["/ip4/10.9.9.9/tcp/9"]


async def test_registry_reads_are_cached_for_the_bound_only(
    valkey_cluster: ValkeyCluster,
) -> None:
    world = World.fresh()
    clock = FakeClock()
    async with open_cluster(valkey_cluster.startup, retry_for=10.0) as cluster:
        await write(world, cluster)
        reader = BackendReader(cluster, ttl=1.0, clock=clock)
        first = await reader.registry([world.a, world.b, world.gone])
        assert first[world.gone] is None
        assert first[world.a] == (_peer(world.a), world.records()[world.a])
        await cluster.put_provider(world.gone, ProviderRecord(addresses=["/ip4/1.2.3.4/tcp/1"]))
        assert (await reader.registry([world.gone]))[world.gone] is None  # cached, even a miss
        assert await reader.provider(world.gone) is not None  # /providers/{id}: uncached
        clock.now += 1.0
        later = (await reader.registry([world.gone]))[world.gone]
        assert later is not None and later[1].addresses == ["/ip4/1.2.3.4/tcp/1"]


@pytest.mark.parametrize("batch", [3, 2000])
async def test_store_reader_batches_inline_and_in_a_thread(tmp_path: Path, batch: int) -> None:
    world = World.fresh()
    with KV(tmp_path / "db") as kv:
        index = IndexStore(kv)
        await write(world, LevelDBBackend(index))
        reader = StoreReader(index, thread_batch=10)
        mhs = [world.shared, world.missing, world.context2] * (batch // 3)
        found = await reader.lookup_many(mhs)
        assert [len(v) for v in found[:3]] == [2, 0, 1]
        assert len(found) == len(mhs)
