"""Builders shared by the tests: keys, multihashes, signed advertisements and entry chunks."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from sync import (
    NO_ENTRIES,
    Advertisement,
    EntryChunk,
    ExtendedProvider,
    KeyType,
    Link,
    PrivateKey,
    Provider,
    SignedHead,
    encode_block,
    sign_advertisement,
)
from sync.model.cid import DAG_CBOR, DAG_JSON, SHA2_256, encode_uvarint
from sync.model.metadata import bitswap
from sync.net.httpserver import Handler, Request, Response

if TYPE_CHECKING:
    from indexer.ingest.engine import Ingester


@cache
def key(n: int = 0, key_type: KeyType = KeyType.ED25519) -> PrivateKey:
    """Key ``n``: the same in every run and every process (a test ID that names its peer ID is
    the same in each pytest-xdist worker), cached so strategies don't pay for key derivation."""
    seed = hashlib.sha256(b"tests.builders.key/%d" % n).digest()
    if key_type is KeyType.ED25519:
        return PrivateKey(key_type, ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    if key_type is KeyType.SECP256K1:
        return PrivateKey(key_type, ec.derive_private_key(int.from_bytes(seed), ec.SECP256K1()))
    raise ValueError(f"no test keys of type {key_type.name}")


def multihash(seed: int | bytes) -> bytes:
    """The sha2-256 multihash of ``seed``."""
    data = seed if isinstance(seed, bytes) else seed.to_bytes(8, "big")
    return bytes([SHA2_256, 32]) + hashlib.sha256(data).digest()


def link(seed: int | bytes, codec: int = DAG_JSON) -> Link:
    data = seed if isinstance(seed, bytes) else seed.to_bytes(8, "big")
    return Link.make(codec, data)


class AdFields(TypedDict, total=False):
    """``make_ad``'s fields other than the chain's links, for builders that pass them on."""

    context_id: bytes
    metadata: bytes | None
    addresses: tuple[str, ...]
    is_rm: bool
    extended: Sequence[tuple[PrivateKey, tuple[str, ...], bytes]] | None
    override: bool
    provider: str | None


class AdOptions(AdFields, total=False):
    """``make_ad``'s fields other than ``previous``."""

    entries: Link


def make_ad(
    signer: PrivateKey,
    *,
    previous: Link | None = None,
    entries: Link = NO_ENTRIES,
    context_id: bytes = b"ctx",
    metadata: bytes | None = None,
    addresses: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/9999",),
    is_rm: bool = False,
    extended: Sequence[tuple[PrivateKey, tuple[str, ...], bytes]] | None = None,
    override: bool = False,
    provider: str | None = None,
) -> Advertisement:
    """A signed advertisement; ``extended`` lists (key, addresses, metadata) of extra providers."""
    ep = None
    ep_keys: dict[str, PrivateKey] = {}
    if extended is not None:
        providers = []
        for k, addrs, meta in extended:
            ep_keys[str(k.peer_id())] = k
            providers.append(Provider(id=str(k.peer_id()), addresses=addrs, metadata=meta))
        ep = ExtendedProvider(providers=tuple(providers), override=override)
    ad = Advertisement(
        provider=provider or str(signer.peer_id()),
        addresses=addresses,
        entries=entries,
        context_id=context_id,
        metadata=bitswap() if metadata is None else metadata,
        is_rm=is_rm,
        previous_id=previous,
        extended_provider=ep,
    )
    return sign_advertisement(ad, signer, ep_keys)


def make_chunk(count: int, start: int = 0, next_link: Link | None = None) -> EntryChunk:
    return EntryChunk(entries=tuple(multihash(start + i) for i in range(count)), next=next_link)


def varint(n: int) -> bytes:
    return encode_uvarint(n)


__all__ = [
    "HamtNode",
    "KeyType",
    "build_hamt",
    "key",
    "link",
    "make_ad",
    "make_chunk",
    "multihash",
    "serve_and_ingest",
    "varint",
]


class ChainBuilder:
    """An ad chain built oldest first, with its blocks, as a publisher would serve it.

    It is a ``sync.ipnisync.routes.BlockSource``: ``serving_as(key)`` gives a source whose head is
    signed by another publisher key (a relay serving the same chain).
    """

    def __init__(self, chunk_size: int = 4) -> None:
        self.blocks: dict[Link, bytes] = {}
        self.head_link: Link | None = None
        self.order: list[tuple[Link, frozenset[bytes]]] = []
        self.chunk_size = chunk_size
        self.head_key: PrivateKey | None = None

    def add(
        self, signer: PrivateKey, mhs: list[bytes] | None = None, **kw: Unpack[AdFields]
    ) -> Link:
        entries = NO_ENTRIES
        if mhs:
            nxt: Link | None = None
            for start in reversed(range(0, len(mhs), self.chunk_size)):
                chunk = EntryChunk(tuple(mhs[start : start + self.chunk_size]), nxt)
                nxt, raw = encode_block(chunk.to_node())
                self.blocks[nxt] = raw
            assert nxt is not None
            entries = nxt
        ad = make_ad(signer, previous=self.head_link, entries=entries, **kw)
        cid, raw = encode_block(ad.to_node())
        self.blocks[cid], self.head_link = raw, cid
        self.order.append((cid, frozenset(mhs or ())))
        self.head_key = self.head_key or signer
        return cid

    def head(self) -> Link | None:
        return self.head_link

    def signed_head(self) -> bytes | None:
        if self.head_link is None or self.head_key is None:
            return None
        return SignedHead.create(self.head_link, self.head_key).encode()

    def block(self, link: Link) -> bytes | None:
        return self.blocks.get(link)

    def serving_as(self, key: PrivateKey) -> ChainBuilder:
        relay = ChainBuilder(self.chunk_size)
        relay.blocks, relay.head_link, relay.order, relay.head_key = (
            self.blocks,
            self.head_link,
            self.order,
            key,
        )
        return relay


class MemorySource:
    """A tiny in-memory ipnisync BlockSource."""

    def __init__(self, *blocks: tuple[Link, bytes]) -> None:
        self.blocks = dict(blocks)
        self.head_link: Link | None = None
        self.signed: bytes | None = None

    def set_head(self, link: Link, key: PrivateKey | None = None) -> None:
        key = key or PrivateKey.generate()
        self.head_link, self.signed = link, SignedHead.create(link, key, "/topic").encode()

    def head(self) -> Link | None:
        return self.head_link

    def signed_head(self) -> bytes | None:
        return self.signed

    def block(self, link: Link) -> bytes | None:
        return self.blocks.get(link)


def counting(
    inner: Handler, seen: Counter[str], fail_first: frozenset[str] = frozenset()
) -> Handler:
    """``inner``, counting requests by their last path segment (a CID, or "head") in ``seen``;
    the first request for a name in ``fail_first`` gets a 500 instead."""

    async def handle(request: Request) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        seen[name] += 1
        if name in fail_first and seen[name] == 1:
            return Response.text(500, "try again")
        return await inner(request)

    return handle


# -- go-ipld-adl-hamt sets, built as its insertEntry builds them -------------------------------
# The bucket index is ``bitWidth`` bits of the key's hash, most-significant bit first; the
# bitfield is MSB-first within each byte; a full bucket splits into a child one level down.


@dataclass
class HamtNode:
    bitmap: bytearray
    data: list[list[bytes] | HamtNode] = field(default_factory=list)


def _index(digest: bytes, depth: int, bit_width: int) -> int:
    shift = len(digest) * 8 - (depth + 1) * bit_width
    return (int.from_bytes(digest, "big") >> shift) & ((1 << bit_width) - 1)


def _bit(bitmap: bytearray, i: int) -> bool:
    return bool(bitmap[i // 8] & (1 << (7 - i % 8)))


def _insert(node: HamtNode, key: bytes, depth: int, bit_width: int, bucket_size: int) -> None:
    i = _index(hashlib.sha256(key).digest(), depth, bit_width)
    pos = sum(_bit(node.bitmap, j) for j in range(i))
    if not _bit(node.bitmap, i):
        node.bitmap[i // 8] |= 1 << (7 - i % 8)
        node.data.insert(pos, [key])
        return
    element = node.data[pos]
    if isinstance(element, HamtNode):
        _insert(element, key, depth + 1, bit_width, bucket_size)
    elif key not in element and len(element) < bucket_size:
        element.append(key)
    elif key not in element:
        child = HamtNode(bytearray(1 << (bit_width - 3)))
        for k in [*element, key]:
            _insert(child, k, depth + 1, bit_width, bucket_size)
        node.data[pos] = child


def _store(node: HamtNode, codec: int, blocks: dict[Link, bytes]) -> list[Any]:
    data: list[Any] = []
    for element in node.data:
        if isinstance(element, HamtNode):
            cid, raw = encode_block(_store(element, codec, blocks), codec)
            blocks[cid] = raw
            data.append(cid)
        else:
            data.append([[k, True] for k in element])
    return [bytes(node.bitmap), data]


def build_hamt(
    keys: Iterable[bytes], *, bit_width: int = 3, bucket_size: int = 1, codec: int = DAG_CBOR
) -> tuple[Link, dict[Link, bytes], HamtNode]:
    """A go-ipld-adl-hamt set (hashAlg sha2-256, values ``true``); its root, blocks and tree."""
    tree = HamtNode(bytearray(1 << (bit_width - 3)))
    for k in keys:
        _insert(tree, k, 0, bit_width, bucket_size)
    blocks: dict[Link, bytes] = {}
    hamt = _store(tree, codec, blocks)
    root, raw = encode_block({"hashAlg": SHA2_256, "bucketSize": bucket_size, "hamt": hamt}, codec)
    blocks[root] = raw
    return root, blocks, tree


async def serve_and_ingest(
    ingester: Ingester, chains: Sequence[ChainBuilder], *, within: float = 30
) -> None:
    """Run ``ingester``, serve each chain over HTTP on 127.0.0.1, announce it, and return once
    everything is synced and indexed (or failed for good), in ``within`` seconds."""
    import trio

    from sync.ipnisync.routes import ipnisync_handler
    from sync.net.httpserver import serve_tcp

    async with trio.open_nursery() as nursery:
        await nursery.start(ingester.run)
        for chain in chains:
            listeners = await nursery.start(serve_tcp, ipnisync_handler(chain), "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            assert chain.head_key is not None
            ingester.request_sync(chain.head_key.peer_id(), [f"/ip4/127.0.0.1/tcp/{port}/http"])
        with trio.fail_after(within):
            await ingester.wait_idle()
        nursery.cancel_scope.cancel()
