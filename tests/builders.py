"""Builders shared by the tests: keys, multihashes, signed advertisements and entry chunks."""

from __future__ import annotations

import hashlib
from functools import cache

from sync import (
    NO_ENTRIES,
    Advertisement,
    EntryChunk,
    ExtendedProvider,
    KeyType,
    Link,
    PrivateKey,
    Provider,
    sign_advertisement,
)
from sync.cid import DAG_JSON, SHA2_256, encode_uvarint
from sync.metadata import bitswap


@cache
def key(n: int = 0, key_type: KeyType = KeyType.ED25519) -> PrivateKey:
    """A deterministic-per-run pool of keys, so strategies don't pay for key generation."""
    del n
    return PrivateKey.generate(key_type)


def multihash(seed: int | bytes) -> bytes:
    """The sha2-256 multihash of ``seed``."""
    data = seed if isinstance(seed, bytes) else seed.to_bytes(8, "big")
    return bytes([SHA2_256, 32]) + hashlib.sha256(data).digest()


def link(seed: int | bytes, codec: int = DAG_JSON) -> Link:
    data = seed if isinstance(seed, bytes) else seed.to_bytes(8, "big")
    return Link.make(codec, data)


def make_ad(
    signer: PrivateKey,
    *,
    previous: Link | None = None,
    entries: Link = NO_ENTRIES,
    context_id: bytes = b"ctx",
    metadata: bytes | None = None,
    addresses: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/9999",),
    is_rm: bool = False,
    extended: list[tuple[PrivateKey, tuple[str, ...], bytes]] | None = None,
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


__all__ = ["KeyType", "key", "link", "make_ad", "make_chunk", "multihash", "varint"]
