"""Hypothesis strategies for the IPNI data model."""

from __future__ import annotations

from hypothesis import strategies as st

from sync import NO_ENTRIES, Advertisement, EntryChunk, KeyType, Link, PrivateKey
from sync.model.cid import BLAKE2B_256, DAG_CBOR, DAG_JSON, SHA2_256, encode_uvarint
from tests.builders import key, make_ad

KEY_TYPES = [KeyType.ED25519, KeyType.SECP256K1]


def keys() -> st.SearchStrategy[PrivateKey]:
    return st.builds(key, st.integers(0, 3), st.sampled_from(KEY_TYPES))


def multihashes() -> st.SearchStrategy[bytes]:
    def build(code: int, digest: bytes) -> bytes:
        return encode_uvarint(code) + encode_uvarint(len(digest)) + digest

    return st.builds(
        build,
        st.sampled_from([SHA2_256, BLAKE2B_256, 0x13, 0x00]),
        st.binary(min_size=1, max_size=64),
    )


def links() -> st.SearchStrategy[Link]:
    return st.builds(
        Link.make,
        st.sampled_from([DAG_JSON, DAG_CBOR, 0x55]),
        st.binary(max_size=32),
        st.sampled_from([SHA2_256, BLAKE2B_256]),
    )


def multiaddrs() -> st.SearchStrategy[str]:
    ip4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
    port = st.integers(1, 65535)
    return st.one_of(
        st.builds(lambda ip, p: f"/ip4/{ip}/tcp/{p}", ip4, port),
        st.builds(lambda ip, p: f"/ip4/{ip}/tcp/{p}/http", ip4, port),
        st.builds(lambda p: f"/dns4/example.org/tcp/{p}/https", port),
    )


# Printable text keeps the addresses readable; arbitrary unicode is covered by the codec tests.
texts = st.text(max_size=20)


@st.composite
def advertisements(draw: st.DrawFn) -> Advertisement:
    signer = draw(keys())
    is_rm = draw(st.booleans())
    extended = None
    if not is_rm and draw(st.booleans()):
        others = draw(st.lists(keys(), max_size=2))
        extended = [
            (k, tuple(draw(st.lists(multiaddrs(), max_size=2))), draw(st.binary(max_size=16)))
            for k in [signer, *others]
        ]
    return make_ad(
        signer,
        previous=draw(st.none() | links()),
        entries=draw(st.just(NO_ENTRIES) | links()),
        context_id=draw(st.binary(max_size=64)),
        metadata=draw(st.binary(min_size=1, max_size=1024)),
        addresses=tuple(draw(st.lists(multiaddrs(), max_size=3))),
        is_rm=is_rm,
        extended=extended,
        override=draw(st.booleans()),
    )


def entry_chunks() -> st.SearchStrategy[EntryChunk]:
    return st.builds(
        lambda entries, nxt: EntryChunk(entries=tuple(entries), next=nxt),
        st.lists(multihashes(), max_size=50),
        st.none() | links(),
    )


__all__ = ["advertisements", "entry_chunks", "keys", "links", "multiaddrs", "multihashes", "texts"]
