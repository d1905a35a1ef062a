"""Signed heads, announce messages in both wire forms, and metadata decoding."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync import (
    BadMultiaddr,
    DecodeError,
    KeyType,
    Link,
    Message,
    SignatureError,
    SignedHead,
    decode_metadata,
)
from sync.announce.message import multiaddr_bytes
from sync.model.metadata import (
    BITSWAP,
    FILECOIN_PIECE_HTTP,
    GRAPHSYNC_FILECOINV1,
    bitswap,
    graphsync_filecoinv1,
    ipfs_gateway_http,
)
from tests.builders import key, link, varint
from tests.strategies import links, multiaddrs


@pytest.mark.parametrize("topic", [None, "/indexer/ingest/mainnet"])
@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.SECP256K1])
def test_signed_head_round_trip(topic: str | None, key_type: KeyType) -> None:
    signer = key(0, key_type)
    head = SignedHead.create(link(1), signer, topic)
    raw = head.encode()
    assert (b'"topic"' in raw) == (topic is not None)
    again = SignedHead.decode(raw)
    assert again == head and again.verify() == signer.peer_id()
    with pytest.raises(SignatureError):
        SignedHead(link(2), head.pubkey, head.sig, topic).verify()


def test_announce_cbor_layout_is_cbor_gens() -> None:
    cid = link(1)
    addr = multiaddr_bytes("/ip4/127.0.0.1/tcp/3000/http")
    msg = Message(cid=cid, addrs=(addr,))
    expected = (
        b"\x83"  # array(3): OrigPeer omitted when empty
        + b"\xd8\x2a"
        + b"\x58"
        + bytes([len(cid.raw) + 1])
        + b"\x00"
        + cid.raw
        + b"\x81"
        + bytes([0x40 + len(addr)])
        + addr
        + b"\x40"
    )
    assert msg.to_cbor() == expected
    assert Message.from_cbor(expected) == msg
    with_orig = Message(cid=cid, addrs=(addr,), orig_peer=str(key(0).peer_id()))
    assert with_orig.to_cbor()[0] == 0x84
    assert Message.from_cbor(with_orig.to_cbor()) == with_orig


def test_announce_json_is_go_encoding_json() -> None:
    cid = link(1)
    addr = multiaddr_bytes("/ip4/127.0.0.1/tcp/3000")
    doc = json.loads(Message(cid=cid, addrs=(addr,)).to_json())
    assert doc == {
        "Cid": {"/": str(cid)},
        "Addrs": [base64.b64encode(addr).decode()],  # padded, as Go's []byte
        "ExtraData": None,
        "OrigPeer": "",
    }
    go_form = json.dumps(doc).encode()
    assert Message.from_json(go_form).addrs == (addr,)


@given(links(), st.lists(multiaddrs(), max_size=3), st.binary(max_size=8))
def test_announce_round_trips_both_forms(cid: Link, addrs: list[str], extra: bytes) -> None:
    publisher = key(0).peer_id()
    msg = Message.create(cid, addrs, publisher)
    msg = Message(msg.cid, msg.addrs, extra_data=extra)
    assert Message.from_cbor(msg.to_cbor()) == msg
    assert Message.from_json(msg.to_json()) == msg
    if addrs:
        assert msg.publisher() == publisher
        assert all(a.endswith(f"/p2p/{publisher}") for a in msg.addresses())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{}",
        b'{"Cid":"x"}',
        b'{"Cid":{"/":"nope"}}',
        b'{"Cid":{"/":"QmQzqxhK82kAmKvARFZSkUVS6fo9sySaiogAnx5EnZ6ZmC"},"Addrs":["!!"]}',
    ],
)
def test_bad_announce_json(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        Message.from_json(raw)


def test_bad_announce_cbor_and_addresses() -> None:
    with pytest.raises(DecodeError):
        Message.from_cbor(b"\x82\x01\x02")
    with pytest.raises(BadMultiaddr):
        Message.from_cbor(Message(cid=link(1), addrs=(b"\xff\xff",)).to_cbor())
    a, b = key(0).peer_id(), key(1).peer_id()
    mixed = Message(
        cid=link(1),
        addrs=(
            multiaddr_bytes(f"/ip4/1.1.1.1/tcp/1/p2p/{a}"),
            multiaddr_bytes(f"/ip4/1.1.1.1/tcp/1/p2p/{b}"),
        ),
    )
    with pytest.raises(BadMultiaddr, match="different publishers"):
        mixed.publisher()


def test_metadata_known_protocols() -> None:
    piece = Link.parse("baga6ea4seaqjtovkwk4myyzj56eztkh5pzsk5upksan6f5outesy62bsvl4dsha")
    raw = bitswap() + graphsync_filecoinv1(piece, True, False) + ipfs_gateway_http()
    raw += varint(FILECOIN_PIECE_HTTP) + varint(0)
    meta = decode_metadata(raw)
    assert meta.error is None
    assert meta.names() == [
        "transport-bitswap",
        "transport-graphsync-filecoinv1",
        "transport-ipfs-gateway-http",
        "transport-filecoin-piece-http",
    ]
    gs = meta.transports[1]
    assert gs.code == GRAPHSYNC_FILECOINV1
    assert gs.fields == {"PieceCID": str(piece), "VerifiedDeal": True, "FastRetrieval": False}
    assert b"".join(t.raw for t in meta.transports) == raw
    assert bitswap() == base64.b64decode("gBI=") and ipfs_gateway_http() == base64.b64decode("oBIA")


def test_metadata_unknown_and_broken_are_kept_opaque() -> None:
    unknown = varint(0x3F0000) + varint(3) + b"abc"
    meta = decode_metadata(bitswap() + unknown)
    assert meta.transports[1].fields == {"payload": b"abc".hex()} and meta.error is None
    broken = bitswap() + varint(GRAPHSYNC_FILECOINV1) + b"\xa3"
    meta = decode_metadata(broken)
    assert [t.code for t in meta.transports] == [BITSWAP]
    assert meta.opaque == broken[2:] and meta.error


@given(st.binary(max_size=64))
def test_metadata_decoding_never_raises(raw: bytes) -> None:
    meta = decode_metadata(raw)
    assert b"".join(t.raw for t in meta.transports) + meta.opaque == raw
