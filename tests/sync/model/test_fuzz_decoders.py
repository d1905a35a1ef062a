"""Hypothesis fuzzing of every decoder a peer's bytes reach: only typed errors may come out.

Inputs are random bytes, and valid blocks mutated (bytes flipped, set to CBOR/JSON markers,
inserted, deleted, repeated, cut) from the conformance vectors in ``../shared/fixtures`` and from
the builders: DAG-JSON and DAG-CBOR ads, entry chunks, HAMT roots, signed heads, signed envelopes
and announce messages.  Each decoder may raise a ``SyncError`` (a typed decode, schema or
signature error) and nothing else; a mutated block gets a CID of its own bytes so the decoder
behind the hash check is what is fuzzed.  The example counts are the suite's Hypothesis profiles
(``tests/conftest.py``); ``FUZZ_EXAMPLES=N`` raises them for a long local run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from functools import cache
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync import (
    DAG_CBOR,
    DAG_JSON,
    EntryChunk,
    KeyType,
    Link,
    Message,
    SignedHead,
    SyncError,
    decode_metadata,
    encode_block,
    load_advertisement,
    load_entry_chunk,
    verify_advertisement,
)
from sync.crypto.envelope import AD_SIGNATURE_TYPE, EP_SIGNATURE_TYPE, open_envelope
from sync.crypto.protobuf import encode_fields
from sync.model import dagcbor, dagjson
from sync.model.metadata import bitswap, graphsync_filecoinv1, ipfs_gateway_http
from sync.walk.entries import EntriesWalk
from tests.builders import key, make_ad, make_chunk, multihash
from tests.conftest import FIXTURES
from tests.vectors import DOC_AD, DOC_HEAD, NFT_AD, NFT_HEAD

_LONG = int(os.environ.get("FUZZ_EXAMPLES", "0"))
_Test = TypeVar("_Test", bound=Callable[..., None])


def fuzz(test: _Test) -> _Test:
    """``test`` with ``FUZZ_EXAMPLES`` examples when set, else the suite's profile decides."""
    return settings(max_examples=_LONG)(test) if _LONG else test


@cache
def seeds() -> dict[str, list[bytes]]:
    """Valid inputs per kind, to be mutated."""
    assert FIXTURES.is_dir(), f"conformance vectors missing: {FIXTURES}"
    signer, other = key(0), key(1)
    plain = make_ad(signer, entries=Link.make(DAG_JSON, b"chunk"), metadata=ipfs_gateway_http())
    extended = make_ad(
        signer,
        previous=Link.make(DAG_CBOR, b"prev"),
        entries=Link.make(DAG_CBOR, b"chunk"),
        extended=[
            (signer, ("/ip4/1.2.3.4/tcp/1",), b""),
            (other, ("/dns/x.org/tcp/443/https",), b""),
        ],
        metadata=graphsync_filecoinv1(Link.make(0x55, b"piece"), True, False),
    )
    ads = [FIXTURES.joinpath(p).read_bytes() for p in (NFT_AD, DOC_AD)]
    for ad in (plain, extended):
        ads += [encode_block(ad.to_node(), codec)[1] for codec in (DAG_JSON, DAG_CBOR)]
    chunk = make_chunk(40, next_link=Link.make(DAG_CBOR, b"next"))
    chunks = [encode_block(chunk.to_node(), codec)[1] for codec in (DAG_JSON, DAG_CBOR)]
    chunks += [encode_block(EntryChunk((multihash(1), b"\x00\x03abc")).to_node(), DAG_CBOR)[1]]
    hamt = {
        "hashAlg": 0x12,
        "bucketSize": 3,
        "hamt": [
            b"\xe0",
            [Link.make(DAG_CBOR, b"child"), [[multihash(2), True]], [[b"\x00\x00", 1]]],
        ],
    }
    hamts = [encode_block(hamt, codec)[1] for codec in (DAG_JSON, DAG_CBOR)]
    hamts += [encode_block(hamt["hamt"], codec)[1] for codec in (DAG_JSON, DAG_CBOR)]
    heads = [FIXTURES.joinpath(p).read_bytes() for p in (NFT_HEAD, DOC_HEAD)]
    heads.append(
        SignedHead.create(Link.make(DAG_JSON, b"head"), signer, "/indexer/ingest/x").encode()
    )
    message = Message.create(
        Link.make(DAG_JSON, b"ad"), ["/ip4/127.0.0.1/tcp/3104/http"], signer.peer_id()
    )
    messages = [message.to_cbor(), message.to_json()]
    relayed = Message(message.cid, message.addrs, b"extra", str(other.peer_id()))
    messages += [relayed.to_cbor(), relayed.to_json()]
    envelopes = [plain.signature, extended.signature]
    assert extended.extended_provider is not None
    envelopes += [p.signature for p in extended.extended_provider.providers]
    metadata = [bitswap(), ipfs_gateway_http(), extended.metadata, bitswap() + extended.metadata]
    public_keys = [signer.public_key().marshal(), key(2, KeyType.SECP256K1).public_key().marshal()]
    for der_key in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())):
        der = der_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        public_keys.append(
            encode_fields([(1, 0 if isinstance(der_key, rsa.RSAPrivateKey) else 3), (2, der)])
        )
    return {
        "ad": ads,
        "chunk": chunks + hamts,
        "block": ads + chunks + hamts + heads + messages,
        "head": heads,
        "message": messages,
        "envelope": envelopes,
        "metadata": metadata,
        "public_key": public_keys,
    }


_MARKERS = (  # CBOR headers at their length boundaries, simple values, tag 42; JSON's syntax
    b"\x00\x01\x17\x18\x1f\x20\x3f\x40\x5f\x7f\x80\x9f\xa0\xbf\xc0\xd8\x2a\xf4\xf5\xf6\xf7\xfb\xff"
    b'[]{}":,\\/'
)


@st.composite
def inputs(draw: st.DrawFn, kind: str) -> bytes:
    """Random bytes, or a seed of ``kind`` with one to four mutations."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds()[kind])))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "marker", "insert", "delete", "repeat", "cut"]))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "marker":
            data[at] = draw(st.sampled_from(_MARKERS))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 40))
        else:
            del data[at:]
    return bytes(data)


def typed_only(decode: Callable[[bytes], object], raw: bytes) -> None:
    """``decode(raw)`` returns or raises a ``SyncError``; any other exception fails the test."""
    with contextlib.suppress(SyncError):
        decode(raw)


def _codec(raw: bytes) -> int:
    return DAG_JSON if raw.lstrip()[:1] in (b"{", b"[") else DAG_CBOR


# Found by this fuzzer: msgspec raised UnicodeDecodeError for bad UTF-8 inside a JSON string.
BAD_UTF8 = b'{"\x80id":{"/":"baguqeeranpqrweyey2zsab2mmt33ixc3jkg27p5ri3abr5di2pbbsbaig74q"}}'


@fuzz
@given(inputs("block"))
@example(BAD_UTF8)
def test_dagjson_decode(raw: bytes) -> None:
    typed_only(dagjson.decode, raw)


@fuzz
@given(inputs("block"))
def test_dagcbor_decode(raw: bytes) -> None:
    typed_only(dagcbor.decode, raw)


@fuzz
@given(inputs("ad"), st.booleans())
def test_advertisement_load_and_verify(raw: bytes, other_codec: bool) -> None:
    codec = _codec(raw) if not other_codec else DAG_CBOR if _codec(raw) == DAG_JSON else DAG_JSON
    typed_only(lambda r: verify_advertisement(load_advertisement(Link.make(codec, r), r)), raw)


def _entries(raw: bytes) -> None:
    link = Link.make(_codec(raw), raw)
    load_entry_chunk(link, raw)
    walk = EntriesWalk(link)
    walk.feed(link, raw)
    walk.progress.encode()


def _hamt_node(raw: bytes) -> None:
    """``raw`` as an inner HAMT node, reached from a root that links it."""
    link = Link.make(_codec(raw), raw)
    root, root_raw = encode_block({"hashAlg": 0x12, "bucketSize": 3, "hamt": [b"\x80", [link]]})
    walk = EntriesWalk(root)
    walk.feed(root, root_raw)
    walk.feed(link, raw)
    walk.next_block()


@fuzz
@given(inputs("chunk"))
def test_entry_chunk_and_hamt_load(raw: bytes) -> None:
    typed_only(_entries, raw)
    typed_only(_hamt_node, raw)


@fuzz
@given(inputs("envelope"))
def test_signed_envelope(raw: bytes) -> None:
    typed_only(lambda r: open_envelope(r, AD_SIGNATURE_TYPE), raw)
    typed_only(lambda r: open_envelope(r, EP_SIGNATURE_TYPE), raw)


@fuzz
@given(inputs("head"))
@example(BAD_UTF8)
def test_signed_head(raw: bytes) -> None:
    typed_only(lambda r: SignedHead.decode(r).verify(), raw)


@fuzz
@given(inputs("public_key"), st.binary(max_size=80))
def test_public_keys_in_an_envelope_and_a_signed_head(key_bytes: bytes, sig: bytes) -> None:
    """Mutations aimed at the key parsers (RSA/ECDSA DER, secp256k1 points, Ed25519)."""
    envelope = encode_fields([(1, key_bytes), (2, AD_SIGNATURE_TYPE), (3, b"p" * 34), (5, sig)])
    typed_only(lambda r: open_envelope(r, AD_SIGNATURE_TYPE), envelope)
    head = SignedHead(Link.make(DAG_JSON, b"head"), key_bytes, sig or b"s")
    typed_only(lambda r: SignedHead.decode(r).verify(), head.encode())


def _message(decode: Callable[[bytes], Message]) -> Callable[[bytes], None]:
    def run(raw: bytes) -> None:
        message = decode(raw)
        message.addresses()
        message.publisher()

    return run


@fuzz
@given(inputs("message"))
@example(BAD_UTF8)
def test_announce_message(raw: bytes) -> None:
    typed_only(_message(Message.from_cbor), raw)
    typed_only(_message(Message.from_json), raw)


@fuzz
@given(inputs("metadata"))
def test_metadata_never_raises(raw: bytes) -> None:
    """Metadata decoding is for reporting: what it cannot parse is kept as opaque bytes."""
    meta = decode_metadata(raw)
    assert b"".join(t.raw for t in meta.transports) + meta.opaque == raw
