"""libp2p public and private keys: parse, verify, sign.

Rules this module keeps (go-libp2p ``core/crypto``):

- Key protobuf ``{1: KeyType, 2: Data}``; RSA=0 (PKIX DER, PKCS#1 v1.5 over SHA-256, at least
  2048 bits), Ed25519=1 (32 raw bytes, plain Ed25519), Secp256k1=2 (compressed point, DER ECDSA
  over SHA-256), ECDSA=3 (PKIX DER, DER ECDSA over SHA-256 on any curve).
- A parsed public key is re-marshalled canonically (secp256k1 compressed, DER re-encoded), so its
  peer ID is the one go-libp2p computes for it.
- We verify all four types and sign with Ed25519 and secp256k1 only; secp256k1 signatures are
  low-S normalized (libsecp256k1 verifiers reject the other half).
- ``cryptography`` exceptions never escape: malformed keys raise ``BadPeerId``, unknown types
  ``UnsupportedKeyType``; a wrong signature makes ``verify`` return False.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from sync.crypto.protobuf import encode_fields, parse_fields
from sync.errors import BadPeerId, DecodeError, UnsupportedKeyType
from sync.model.peer import PeerId

__all__ = ["KeyType", "PrivateKey", "PublicKey"]

# The order of the secp256k1 group: signatures are normalized to s <= n/2 (low-S), as btcec and
# libsecp256k1 produce and as libsecp256k1 (py-libp2p, rust-libp2p) requires on verification.
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 8192


class KeyType(enum.IntEnum):
    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


_PublicImpl = rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def _key_fields(buf: bytes) -> tuple[KeyType, bytes]:
    try:
        fields = parse_fields(buf)
    except DecodeError as exc:
        raise BadPeerId(f"key protobuf: {exc}") from None
    types, datas = fields.get(1, [0]), fields.get(2)
    if not datas or not isinstance(datas[-1], bytes) or not isinstance(types[-1], int):
        raise BadPeerId("key protobuf lacks its Type or Data field")
    try:
        return KeyType(types[-1]), datas[-1]
    except ValueError:
        raise UnsupportedKeyType(f"unknown libp2p key type {types[-1]}") from None


def _der(key: _PublicImpl) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class PublicKey:
    """A libp2p public key with its canonical data bytes."""

    key_type: KeyType
    data: bytes
    _impl: _PublicImpl

    @classmethod
    def unmarshal(cls, buf: bytes) -> PublicKey:
        """Parse a protobuf-encoded public key."""
        key_type, data = _key_fields(buf)
        try:
            return cls._from_data(key_type, data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise BadPeerId(f"malformed {key_type.name} public key: {exc}") from None

    @classmethod
    def _from_data(cls, key_type: KeyType, data: bytes) -> PublicKey:
        if key_type is KeyType.ED25519:
            ed = ed25519.Ed25519PublicKey.from_public_bytes(data)
            return cls(key_type, ed.public_bytes_raw(), ed)
        if key_type is KeyType.SECP256K1:
            k1 = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data)
            compressed = k1.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            )
            return cls(key_type, compressed, k1)
        loaded = serialization.load_der_public_key(data)
        if key_type is KeyType.RSA:
            if not isinstance(loaded, rsa.RSAPublicKey):
                raise ValueError("not an RSA key")
            if not _MIN_RSA_BITS <= loaded.key_size <= _MAX_RSA_BITS:
                raise ValueError(f"RSA key of {loaded.key_size} bits (2048-8192 allowed)")
            return cls(key_type, _der(loaded), loaded)
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise ValueError("not an ECDSA key")
        return cls(key_type, _der(loaded), loaded)

    def marshal(self) -> bytes:
        """The canonical protobuf encoding (what peer IDs are derived from)."""
        return encode_fields([(1, int(self.key_type)), (2, self.data)])

    def peer_id(self) -> PeerId:
        return PeerId.from_public_key_bytes(self.marshal())

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's signature of ``data``."""
        impl = self._impl
        try:
            if isinstance(impl, ed25519.Ed25519PublicKey):
                impl.verify(signature, data)
            elif isinstance(impl, rsa.RSAPublicKey):
                impl.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                impl.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 or secp256k1 private key that can sign."""

    key_type: KeyType
    _impl: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, key_type: KeyType = KeyType.ED25519) -> PrivateKey:
        if key_type is KeyType.ED25519:
            return cls(key_type, ed25519.Ed25519PrivateKey.generate())
        if key_type is KeyType.SECP256K1:
            return cls(key_type, ec.generate_private_key(ec.SECP256K1()))
        raise UnsupportedKeyType(f"cannot generate {key_type.name} keys")

    @classmethod
    def unmarshal(cls, buf: bytes) -> PrivateKey:
        """Parse a protobuf-encoded private key (go-libp2p ``MarshalPrivateKey``)."""
        key_type, data = _key_fields(buf)
        try:
            if key_type is KeyType.ED25519:
                # Go stores seed || public key (64 bytes); older keys add the public key twice.
                if len(data) not in (64, 96):
                    raise ValueError(f"Ed25519 private key of {len(data)} bytes")
                return cls(key_type, ed25519.Ed25519PrivateKey.from_private_bytes(data[:32]))
            if key_type is KeyType.SECP256K1:
                if len(data) != 32:
                    raise ValueError(f"secp256k1 private key of {len(data)} bytes")
                scalar = int.from_bytes(data, "big")
                return cls(key_type, ec.derive_private_key(scalar, ec.SECP256K1()))
        except ValueError as exc:
            raise BadPeerId(f"malformed {key_type.name} private key: {exc}") from None
        raise UnsupportedKeyType(f"signing with {key_type.name} keys is not supported")

    def marshal(self) -> bytes:
        impl = self._impl
        if isinstance(impl, ed25519.Ed25519PrivateKey):
            data = impl.private_bytes_raw() + impl.public_key().public_bytes_raw()
        else:
            data = impl.private_numbers().private_value.to_bytes(32, "big")
        return encode_fields([(1, int(self.key_type)), (2, data)])

    def public_key(self) -> PublicKey:
        impl = self._impl.public_key()
        if isinstance(impl, ed25519.Ed25519PublicKey):
            return PublicKey(self.key_type, impl.public_bytes_raw(), impl)
        compressed = impl.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        return PublicKey(self.key_type, compressed, impl)

    def peer_id(self) -> PeerId:
        return self.public_key().peer_id()

    def sign(self, data: bytes) -> bytes:
        impl = self._impl
        if isinstance(impl, ed25519.Ed25519PrivateKey):
            return impl.sign(data)
        r, s = decode_dss_signature(impl.sign(data, ec.ECDSA(hashes.SHA256())))
        if s > _SECP256K1_N // 2:
            s = _SECP256K1_N - s
        return encode_dss_signature(r, s)
