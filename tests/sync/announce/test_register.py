"""RegisterRequest (go-libipni ``ingest/model``): a libp2p peer record in a signed envelope.

Interop both ways with py-libp2p's own peer-record code (the libp2p spec's implementation in
Python): a request it seals reads here, one made here is consumed there; forgeries are refused.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_pair
from libp2p.peer.envelope import consume_envelope, seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord as P2PRecord
from multiaddr import Multiaddr

from sync import PrivateKey
from sync.announce.register import make_register_request, read_register_request
from sync.crypto.envelope import AD_SIGNATURE_TYPE, seal
from sync.crypto.protobuf import encode_fields
from sync.errors import BadEnvelope, DecodeError, SignatureError

PAIRS: dict[str, Callable[[], KeyPair]] = {"ed25519": ed25519_pair, "secp256k1": secp256k1_pair}
ADDRS = ["/ip4/10.0.0.1/tcp/4001", "/dns4/provider.example/tcp/443/https"]


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_a_request_sealed_by_py_libp2p_reads_here(kind: str) -> None:
    pair = PAIRS[kind]()
    peer = ID.from_pubkey(pair.public_key)
    record = P2PRecord(peer, [Multiaddr(a) for a in ADDRS], seq=42)
    raw = seal_record(record, pair.private_key).marshal_envelope()
    got = read_register_request(raw)
    assert (str(got.peer), got.seq, list(got.addrs)) == (peer.to_base58(), 42, ADDRS)


def test_a_request_made_here_is_consumed_by_py_libp2p() -> None:
    key = PrivateKey.generate()
    raw = make_register_request(key, ADDRS, seq=7)
    _, record = consume_envelope(raw, "libp2p-peer-record")
    assert record.peer_id.to_base58() == str(key.peer_id()) and record.seq == 7
    assert [str(a) for a in record.addrs] == ADDRS
    assert read_register_request(raw).addrs == tuple(ADDRS)


def test_forgeries_are_refused() -> None:
    key, other = PrivateKey.generate(), PrivateKey.generate()
    record = encode_fields([(1, other.peer_id().raw), (2, 1), (3, encode_fields([(1, b"\x04")]))])
    signed_by_another = seal(key, b"\x03\x01", record, domain="libp2p-peer-record")
    with pytest.raises(SignatureError, match="not signed by that provider"):
        read_register_request(signed_by_another)
    wrong_domain = seal(key, b"\x03\x01", record)  # the ad-signature domain: never a registration
    with pytest.raises(SignatureError):
        read_register_request(wrong_domain)
    with pytest.raises(BadEnvelope):
        read_register_request(seal(key, AD_SIGNATURE_TYPE, record, domain="libp2p-peer-record"))
    raw = bytearray(make_register_request(key, ADDRS))
    raw[-1] ^= 1  # the signature
    with pytest.raises(SignatureError):
        read_register_request(bytes(raw))
    no_addrs = encode_fields([(1, key.peer_id().raw), (2, 1)])
    with pytest.raises(DecodeError, match="no address"):
        read_register_request(seal(key, b"\x03\x01", no_addrs, domain="libp2p-peer-record"))
    with pytest.raises(BadEnvelope):
        read_register_request(b"")
