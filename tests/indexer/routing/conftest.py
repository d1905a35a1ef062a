"""A real index for the routing tests: four publishers' chains served over HTTP and ingested.

Built once for the package (about a second): the chains are served by ``ipnisync_handler`` on
127.0.0.1, synced and applied by the real ``Ingester`` into a LevelDB, which the tests then serve
with ``routing_handler``.  What is indexed:

- ``SHARED`` (multihash 1): provider A under two contexts (bitswap; graphsync), plus A's
  chain-level extended provider E2 (no metadata: it inherits each value's), B (bitswap), C (no
  addresses) and D (metadata that does not decode).
- ``GATEWAY`` (multihash 10): A under a context with gateway metadata whose context-level extended
  providers are E1 (bitswap) and A itself with bitswap (a new protocol for A); E2 again.
- ``ODD`` (multihash 20): A with metadata of a code outside the multicodec table.
- ``REMOVED`` (multihash 30): published by A, then its context removed.
- ``OVERRIDDEN`` / ``NOT_OVERRIDDEN`` (multihashes 40, 41): provider F (its own chain, chain-level
  extended provider E2) under two contexts whose context-level extended provider is E1, with
  ``Override`` true and false.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from indexer.ingest.engine import IngestConfig, Ingester
from indexer.routing import routing_handler
from staging import StagingArea
from store import KV, IndexStore
from sync import Link, PrivateKey
from sync.ipnisync.fetch import fetcher_factory
from sync.model.cid import RAW, encode_uvarint
from sync.model.metadata import bitswap, graphsync_filecoinv1, ipfs_gateway_http
from sync.net.httpserver import Handler, serve_tcp
from tests.builders import ChainBuilder, key, link, multihash, serve_and_ingest

A_ADDRS = (
    "/ip4/10.0.0.1/tcp/4001",
    "/ip6/2001:db8::1/tcp/4001",
    "/dns4/a.example.com/tcp/443/tls/http",
    "/ip4/10.0.0.1/udp/4001/quic-v1/webtransport",
)
A_BAD_ADDR = "/ip4/999.0.0.1/tcp/1"  # in A's ads, never served
B_ADDRS = ("/ip4/10.0.0.3/tcp/4001",)
D_ADDRS = ("/ip4/10.0.0.4/tcp/4001",)
E1_ADDRS = ("/dns4/e1.example.com/tcp/443/https",)
E2_ADDRS = ("/ip4/10.0.0.2/tcp/4002/ws",)

BITSWAP = bitswap()
GRAPHSYNC = graphsync_filecoinv1(link(b"piece"), True, False)
GATEWAY = ipfs_gateway_http()
ODD_CODE = 0x3E0000
ODD = encode_uvarint(ODD_CODE) + encode_uvarint(2) + b"hi"
MALFORMED = BITSWAP + b"\xff\xff"  # a truncated varint after bitswap

SHARED, GATEWAY_MH, ODD_MH, REMOVED, MISSING = (multihash(n) for n in (1, 10, 20, 30, 99))
OVERRIDDEN, NOT_OVERRIDDEN = multihash(40), multihash(41)
F_ADDRS = ("/ip4/10.0.0.6/tcp/4001",)


def cid(mh: bytes) -> str:
    """The CIDv1 (raw codec, base32) of a multihash."""
    return str(Link(b"\x01" + encode_uvarint(RAW) + mh))


@dataclass(frozen=True)
class World:
    index: IndexStore
    keys: dict[str, PrivateKey]

    def peer(self, name: str) -> str:
        return str(self.keys[name].peer_id())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def record(peer: str, addrs: tuple[str, ...], **fields: str) -> dict[str, Any]:
    """A ``peer`` record as the server writes it; ``fields`` are its protocols, in order."""
    out: dict[str, Any] = {"Schema": "peer", "ID": peer, "Addrs": list(addrs)}
    if fields:
        out["Protocols"] = list(fields)
    return out | fields


def shared_records(w: World) -> dict[str, dict[str, Any]]:
    """Every record of SHARED, by peer ID (protocol order follows the index's value order)."""
    both = {"transport-bitswap": "gBI=", "transport-graphsync-filecoinv1": b64(GRAPHSYNC)}
    return {
        w.peer("a"): record(w.peer("a"), A_ADDRS, **both),
        w.peer("e2"): record(w.peer("e2"), E2_ADDRS, **both),
        w.peer("b"): record(w.peer("b"), B_ADDRS, **{"transport-bitswap": "gBI="}),
        w.peer("c"): record(w.peer("c"), (), **{"transport-bitswap": "gBI="}),
        w.peer("d"): record(w.peer("d"), D_ADDRS),  # metadata that does not decode: no protocols
    }


def _chains(k: dict[str, PrivateKey]) -> list[ChainBuilder]:
    a_addrs = (*A_ADDRS, A_BAD_ADDR)
    chain_a = ChainBuilder()
    chain_a.add(
        k["a"],
        context_id=b"",
        metadata=b"",
        addresses=a_addrs,
        extended=[(k["a"], (), b""), (k["e2"], E2_ADDRS, b"")],
    )
    chain_a.add(
        k["a"], [SHARED, multihash(2)], context_id=b"c1", metadata=BITSWAP, addresses=a_addrs
    )
    chain_a.add(
        k["a"], [SHARED, multihash(3)], context_id=b"c2", metadata=GRAPHSYNC, addresses=a_addrs
    )
    chain_a.add(
        k["a"],
        [GATEWAY_MH],
        context_id=b"c3",
        metadata=GATEWAY,
        addresses=a_addrs,
        extended=[(k["a"], (), BITSWAP), (k["e1"], E1_ADDRS, BITSWAP)],
    )
    chain_a.add(k["a"], [ODD_MH], context_id=b"c4", metadata=ODD, addresses=a_addrs)
    chain_a.add(k["a"], [REMOVED], context_id=b"c5", metadata=BITSWAP, addresses=a_addrs)
    chain_a.add(k["a"], None, context_id=b"c5", metadata=b"", addresses=(), is_rm=True)
    chain_b, chain_c, chain_d = ChainBuilder(), ChainBuilder(), ChainBuilder()
    chain_b.add(k["b"], [SHARED], context_id=b"b1", metadata=BITSWAP, addresses=B_ADDRS)
    chain_c.add(k["c"], [SHARED], context_id=b"c", metadata=BITSWAP, addresses=())
    chain_d.add(k["d"], [SHARED], context_id=b"d", metadata=MALFORMED, addresses=D_ADDRS)
    chain_f = ChainBuilder()
    chain_f.add(
        k["f"],
        context_id=b"",
        metadata=b"",
        addresses=F_ADDRS,
        extended=[(k["f"], (), b""), (k["e2"], E2_ADDRS, b"")],
    )
    context_eps = [(k["f"], (), b""), (k["e1"], E1_ADDRS, b"")]
    for mh, ctx, override in [(OVERRIDDEN, b"f1", True), (NOT_OVERRIDDEN, b"f2", False)]:
        chain_f.add(
            k["f"],
            [mh],
            context_id=ctx,
            metadata=BITSWAP,
            addresses=F_ADDRS,
            extended=context_eps,
            override=override,
        )
    return [chain_a, chain_b, chain_c, chain_d, chain_f]


_fetcher = fetcher_factory(timeout=5)


async def _ingest(kv: KV, chains: list[ChainBuilder]) -> None:
    ingester = Ingester(kv, _fetcher, config=IngestConfig(segment=3))
    await serve_and_ingest(ingester, chains)
    for chain in chains:
        for ad, _ in chain.order:
            done = StagingArea(ingester.kv).done(ad.raw)
            assert done is not None and done.ok, f"ad {ad} was not indexed: {done}"


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    keys = {name: key(100 + n) for n, name in enumerate(["a", "b", "c", "d", "e1", "e2", "f"])}
    kv = KV(Path(tmp_path_factory.mktemp("routing")) / "index")
    try:
        trio.run(_ingest, kv, _chains(keys))
        yield World(IndexStore(kv), keys)
    finally:
        kv.close()


async def serve(nursery: trio.Nursery, handler: Handler) -> str:
    """Serve ``handler`` on a free 127.0.0.1 port for the rest of the test; its base URL."""
    listeners = await nursery.start(serve_tcp, handler, "127.0.0.1", 0)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


@pytest.fixture
async def base_url(nursery: trio.Nursery, world: World) -> str:
    """The default routing handler over the world's index, served over real TCP."""
    return await serve(nursery, routing_handler(world.index))
