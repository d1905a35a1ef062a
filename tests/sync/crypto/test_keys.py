"""libp2p keys, peer IDs and envelopes, cross-checked against py-libp2p's implementation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.rsa import create_new_key_pair as rsa_pair
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_pair
from libp2p.peer.envelope import Envelope as P2PEnvelope
from libp2p.peer.envelope import make_unsigned, unmarshal_envelope
from libp2p.peer.id import ID

from sync import (
    BadEnvelope,
    BadPeerId,
    KeyType,
    PeerId,
    PrivateKey,
    PublicKey,
    SignatureError,
    UnsupportedKeyType,
)
from sync.crypto.envelope import AD_SIGNATURE_TYPE, EP_SIGNATURE_TYPE, open_envelope, seal
from sync.crypto.keys import _SECP256K1_N as SECP256K1_N
from sync.crypto.protobuf import encode_fields

PAIRS: dict[str, Callable[[], KeyPair]] = {
    "ed25519": ed25519_pair,
    "secp256k1": secp256k1_pair,
    "rsa": rsa_pair,
}


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_envelope_sealed_by_py_libp2p_opens_here(kind: str) -> None:
    pair = PAIRS[kind]()
    payload = b"\x12\x20" + b"\x07" * 32
    sig = pair.private_key.sign(make_unsigned("indexer", AD_SIGNATURE_TYPE, payload))
    raw = P2PEnvelope(pair.public_key, AD_SIGNATURE_TYPE, payload, sig).marshal_envelope()
    env = open_envelope(raw, AD_SIGNATURE_TYPE)
    assert env.payload == payload
    assert str(env.public_key.peer_id()) == ID.from_pubkey(pair.public_key).to_base58()
    with pytest.raises(BadEnvelope):
        open_envelope(raw, EP_SIGNATURE_TYPE)


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.SECP256K1])
def test_envelope_sealed_here_opens_in_py_libp2p(key_type: KeyType) -> None:
    key = PrivateKey.generate(key_type)
    raw = seal(key, AD_SIGNATURE_TYPE, b"payload")
    env = unmarshal_envelope(raw)
    env.validate("indexer")
    assert env.raw_payload == b"payload" and env.payload_type == AD_SIGNATURE_TYPE
    assert ID.from_pubkey(env.public_key).to_base58() == str(key.peer_id())
    with pytest.raises(ValueError):
        env.validate("other-domain")


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.SECP256K1])
def test_private_key_round_trip_and_peer_id_prefix(key_type: KeyType) -> None:
    key = PrivateKey.generate(key_type)
    again = PrivateKey.unmarshal(key.marshal())
    assert again.peer_id() == key.peer_id()
    prefix = "12D3KooW" if key_type is KeyType.ED25519 else "16Uiu2HA"
    assert str(key.peer_id()).startswith(prefix)
    assert key.public_key().verify(b"x", key.sign(b"x"))
    assert not key.public_key().verify(b"y", key.sign(b"x"))
    if key_type is KeyType.SECP256K1:  # low-S, every time
        for _ in range(20):
            _, s = decode_dss_signature(key.sign(b"x"))
            assert s <= SECP256K1_N // 2


def test_ecdsa_p256_public_keys_verify() -> None:
    impl = ec.generate_private_key(ec.SECP256R1())
    der = impl.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub = PublicKey.unmarshal(encode_fields([(1, int(KeyType.ECDSA)), (2, der)]))
    sig = impl.sign(b"data", ec.ECDSA(hashes.SHA256()))
    assert pub.verify(b"data", sig)
    assert not pub.verify(b"other", sig)
    assert str(pub.peer_id()).startswith("Qm")  # 91-byte key: sha2-256 peer ID


def test_rsa_keys_below_2048_bits_are_refused() -> None:
    small = rsa.generate_private_key(65537, 1024)
    der = small.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(BadPeerId, match="1024 bits"):
        PublicKey.unmarshal(encode_fields([(1, 0), (2, der)]))


def test_uncompressed_secp256k1_key_gets_the_canonical_peer_id() -> None:
    key = PrivateKey.generate(KeyType.SECP256K1)
    uncompressed = key._impl.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    pub = PublicKey.unmarshal(encode_fields([(1, 2), (2, uncompressed)]))
    assert pub.peer_id() == key.peer_id()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (encode_fields([(1, 9), (2, b"x")]), UnsupportedKeyType),
        (encode_fields([(1, 1)]), BadPeerId),
        (encode_fields([(1, 1), (2, b"short")]), BadPeerId),
        (b"\xff", BadPeerId),
    ],
)
def test_malformed_public_keys(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        PublicKey.unmarshal(raw)


def test_signing_with_rsa_is_refused() -> None:
    with pytest.raises(UnsupportedKeyType):
        PrivateKey.generate(KeyType.RSA)


def test_peer_id_forms_normalize() -> None:
    key = PrivateKey.generate()
    pid = key.peer_id()
    assert PeerId.parse(str(pid)) == pid
    assert PeerId.parse(pid.to_cid()) == pid
    assert pid.to_cid().startswith("bafz")
    for bad in [
        "",
        "12D3KooWnotreally",
        "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
    ]:
        with pytest.raises(BadPeerId):
            PeerId.parse(bad)


def test_envelope_rejects_garbage_and_forged_signatures() -> None:
    key = PrivateKey.generate()
    raw = seal(key, AD_SIGNATURE_TYPE, b"payload")
    with pytest.raises(BadEnvelope):
        open_envelope(b"", AD_SIGNATURE_TYPE)
    with pytest.raises(BadEnvelope):
        open_envelope(b"\x0a\xff", AD_SIGNATURE_TYPE)
    forged = raw.replace(b"payload", b"PAYLOAD")
    with pytest.raises(SignatureError):
        open_envelope(forged, AD_SIGNATURE_TYPE)
