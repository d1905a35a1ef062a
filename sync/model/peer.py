"""libp2p peer IDs.

Rules this module keeps:

- A peer ID is a multihash of the protobuf-encoded public key: ``identity`` when that encoding is
  at most 42 bytes (Ed25519, secp256k1), ``sha2-256`` otherwise (RSA, ECDSA), as go-libp2p.
- Both textual forms parse: legacy base58btc (``12D3KooW...``, ``Qm...``, ``16Uiu2...``) and a
  CIDv1 with the ``libp2p-key`` codec in any multibase (``bafz...``, ``k51...``).  ``str()``
  always gives the base58btc form, so equal peers compare and print equal.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import base58

from sync.errors import BadCid, BadPeerId
from sync.model.cid import IDENTITY, LIBP2P_KEY, SHA2_256, Link, parse_multihash

__all__ = ["PeerId"]

_MAX_INLINE_KEY = 42


@dataclass(frozen=True, slots=True)
class PeerId:
    """A libp2p peer ID, held as its multihash bytes."""

    raw: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> PeerId:
        try:
            mh, end = parse_multihash(raw)
        except BadCid as exc:
            raise BadPeerId(f"peer ID is not a multihash: {exc}") from None
        if end != len(raw):
            raise BadPeerId("trailing bytes after peer ID multihash")
        if mh.code == SHA2_256 and len(mh.digest) == 32:
            return cls(bytes(raw))
        if mh.code == IDENTITY and len(mh.digest) <= _MAX_INLINE_KEY:
            return cls(bytes(raw))
        raise BadPeerId(f"peer ID multihash must be identity or sha2-256, not {mh.name}")

    @classmethod
    def parse(cls, text: str) -> PeerId:
        """Parse either textual form of a peer ID (the last 4,096 good ones are remembered: a
        chain names its provider in every ad, and base58 costs ~30 us a time)."""
        return _parse(text)

    @classmethod
    def _parse(cls, text: str) -> PeerId:
        text = text.strip()
        if text.startswith(("Qm", "1")):
            try:
                return cls.from_bytes(base58.b58decode(text))
            except ValueError:
                raise BadPeerId(f"bad base58 peer ID {text!r}") from None
        try:
            link = Link.parse(text)
        except BadCid as exc:
            raise BadPeerId(f"bad peer ID {text!r}: {exc}") from None
        if link.version != 1 or link.codec != LIBP2P_KEY:
            raise BadPeerId(f"CID {text!r} is not a libp2p-key CID")
        return cls.from_bytes(link.multihash.raw)

    @classmethod
    def from_public_key_bytes(cls, marshalled: bytes) -> PeerId:
        """The peer ID of a protobuf-encoded (canonical) public key."""
        if len(marshalled) <= _MAX_INLINE_KEY:
            return cls(bytes([IDENTITY, len(marshalled)]) + marshalled)
        return cls(bytes([SHA2_256, 32]) + hashlib.sha256(marshalled).digest())

    def inline_public_key(self) -> bytes | None:
        """The protobuf public key embedded in an identity peer ID, if it is one."""
        mh, _ = parse_multihash(self.raw)
        return mh.digest if mh.code == IDENTITY else None

    def to_cid(self) -> str:
        """The CIDv1 ``libp2p-key`` form (``bafz...``)."""
        return str(Link(b"\x01" + bytes([LIBP2P_KEY]) + self.raw))

    def __str__(self) -> str:
        return base58.b58encode(self.raw).decode()

    def __repr__(self) -> str:
        return f"PeerId({self})"


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> PeerId:
    """``PeerId._parse``, remembered: a failure raises and so is never cached."""
    return PeerId._parse(text)
