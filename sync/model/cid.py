"""CIDs, multihashes and varints as raw bytes.

Rules this module keeps:

- A CID is held as its binary form (``Link.raw``); strings are made only at the edges (logs,
  JSON, CLI).  ``multiformats.CID`` objects cost ~240 us each, so they are never built here.
- CIDv0 is the bare sha2-256 multihash (``Qm...`` in base58btc); CIDv1 is
  ``0x01 || uvarint(codec) || multihash``.  Both parse; ``str()`` gives base58 for v0 and
  base32 (``b...``) for v1, as go-cid does.
- ``check_block`` hashes the raw bytes received with the CID's own hash function and compares
  digests.  Nothing is ever re-encoded before the check.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import base58

from sync.errors import BadCid, HashMismatch, UnknownCodec

__all__ = [
    "BLAKE2B_256",
    "DAG_CBOR",
    "DAG_JSON",
    "IDENTITY",
    "LIBP2P_KEY",
    "RAW",
    "SHA2_256",
    "Link",
    "Multihash",
    "base32_decode",
    "check_block",
    "check_multihash",
    "decode_uvarint",
    "encode_uvarint",
    "hash_block",
    "parse_multihash",
]

# Multicodec codes used by IPNI.
RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
DAG_JSON = 0x0129
LIBP2P_KEY = 0x72
IDENTITY = 0x00
SHA2_256 = 0x12
SHA2_512 = 0x13
BLAKE2B_256 = 0xB220

_CODEC_NAMES = {RAW: "raw", DAG_CBOR: "dag-cbor", DAG_JSON: "dag-json", LIBP2P_KEY: "libp2p-key"}

_HASHERS: dict[int, tuple[str, Callable[[bytes], bytes]]] = {
    IDENTITY: ("identity", lambda b: b),
    SHA2_256: ("sha2-256", lambda b: hashlib.sha256(b).digest()),
    SHA2_512: ("sha2-512", lambda b: hashlib.sha512(b).digest()),
    BLAKE2B_256: ("blake2b-256", lambda b: hashlib.blake2b(b, digest_size=32).digest()),
}

_MAX_VARINT_BYTES = 9


def encode_uvarint(value: int) -> bytes:
    """Unsigned LEB128, as multiformats and protobuf use."""
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(buf: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a minimal uvarint at ``offset``; return ``(value, new_offset)``."""
    value = 0
    shift = 0
    for i in range(offset, min(len(buf), offset + _MAX_VARINT_BYTES)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > offset:
                raise BadCid("varint is not minimally encoded")
            return value, i + 1
        shift += 7
    raise BadCid("truncated or oversized varint")


@dataclass(frozen=True, slots=True)
class Multihash:
    """A parsed multihash: its function code, its digest and its full bytes."""

    code: int
    digest: bytes
    raw: bytes

    @property
    def name(self) -> str:
        known = _HASHERS.get(self.code)
        return known[0] if known else f"0x{self.code:x}"

    def b58(self) -> str:
        return base58.b58encode(self.raw).decode()


def parse_multihash(raw: bytes, offset: int = 0) -> tuple[Multihash, int]:
    """Parse one multihash at ``offset``; return it and the offset just past it."""
    code, pos = decode_uvarint(raw, offset)
    length, pos = decode_uvarint(raw, pos)
    end = pos + length
    if end > len(raw):
        raise BadCid(f"multihash digest truncated: needs {length} bytes, has {len(raw) - pos}")
    return Multihash(code, raw[pos:end], raw[offset:end]), end


def check_multihash(raw: bytes) -> None:
    """Raise ``BadCid`` unless ``raw`` is exactly one multihash (sha2-256 is checked fastest)."""
    if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32:
        return
    _, end = parse_multihash(raw)
    if end != len(raw):
        raise BadCid("trailing bytes after the multihash")


def _multihash_only(raw: bytes) -> Multihash:
    mh, end = parse_multihash(raw)
    if end != len(raw):
        raise BadCid("trailing bytes after multihash")
    return mh


@dataclass(frozen=True, slots=True)
class Link:
    """A CID (an IPLD link), held as its binary form."""

    raw: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> Link:
        """Parse and validate a binary CID."""
        if len(raw) == 34 and raw[0] == SHA2_256 and raw[1] == 32:
            return cls(bytes(raw))
        if not raw or raw[0] != 1:
            raise BadCid(f"unsupported CID version byte 0x{raw[:1].hex()}")
        _, pos = decode_uvarint(raw, 1)
        _multihash_only(raw[pos:])
        return cls(bytes(raw))

    @classmethod
    def parse(cls, text: str) -> Link:
        """Parse a CID string: base58 CIDv0 or a multibase CIDv1 (base32, base36, base58...)."""
        text = text.strip()
        if len(text) == 46 and text.startswith("Qm"):
            try:
                return cls.from_bytes(base58.b58decode(text))
            except ValueError as exc:
                raise BadCid(f"bad CIDv0 {text!r}: {exc}") from None
        if not text:
            raise BadCid("empty CID")
        try:
            raw = _multibase_decode(text)
        except (ValueError, KeyError) as exc:
            raise BadCid(f"bad CID {text!r}: {exc}") from None
        try:
            return cls.from_bytes(raw)
        except BadCid as exc:
            raise BadCid(f"bad CID {text!r}: {exc}") from None

    @classmethod
    def make(cls, codec: int, data: bytes, hash_code: int = SHA2_256) -> Link:
        """The CIDv1 of ``data`` under ``codec``, hashed with ``hash_code``."""
        digest = hash_block(hash_code, data)
        mh = encode_uvarint(hash_code) + encode_uvarint(len(digest)) + digest
        return cls(b"\x01" + encode_uvarint(codec) + mh)

    def __bytes__(self) -> bytes:
        """The binary CID (what cbrrr's encoder writes under tag 42)."""
        return self.raw

    @property
    def version(self) -> int:
        return 0 if self.raw[0] == SHA2_256 else 1

    @property
    def codec(self) -> int:
        if self.version == 0:
            return DAG_PB
        return decode_uvarint(self.raw, 1)[0]

    @property
    def codec_name(self) -> str:
        return _CODEC_NAMES.get(self.codec, f"0x{self.codec:x}")

    @property
    def multihash(self) -> Multihash:
        if self.version == 0:
            return _multihash_only(self.raw)
        _, pos = decode_uvarint(self.raw, 1)
        return _multihash_only(self.raw[pos:])

    def __str__(self) -> str:
        if self.version == 0:
            return base58.b58encode(self.raw).decode()
        return "b" + base64.b32encode(self.raw).decode().lower().rstrip("=")

    def __repr__(self) -> str:
        return f"Link({self})"


def hash_block(hash_code: int, data: bytes) -> bytes:
    """The digest of ``data`` under multihash function ``hash_code``."""
    hasher = _HASHERS.get(hash_code)
    if hasher is None:
        raise UnknownCodec(f"unsupported multihash function 0x{hash_code:x}")
    return hasher[1](data)


def check_block(link: Link, raw: bytes) -> None:
    """Raise ``HashMismatch`` unless ``raw`` (the bytes received) hashes to ``link``."""
    mh = link.multihash
    digest = hash_block(mh.code, raw)
    if mh.code != IDENTITY and len(mh.digest) < len(digest):
        digest = digest[: len(mh.digest)]  # truncated digests are legal multihashes
    if digest != mh.digest:
        raise HashMismatch(f"block does not hash to {link} ({mh.name})")


def _multibase_decode(text: str) -> bytes:
    prefix, body = text[0], text[1:]
    if prefix in "bB":
        return base32_decode(body)
    if prefix == "z":
        return base58.b58decode(body)
    if prefix in "kK":
        return _base36_decode(body.lower())
    if prefix == "f":
        return bytes.fromhex(body)
    if prefix in "mMuU":
        alt = b"-_" if prefix in "uU" else None
        return base64.b64decode(body + "=" * (-len(body) % 4), altchars=alt, validate=True)
    raise ValueError(f"unsupported multibase prefix {prefix!r}")


_B32_AS_DIGITS = str.maketrans(
    "abcdefghijklmnopqrstuvwxyz234567", "0123456789abcdefghijklmnopqrstuv"
)
_B32_BODY = re.compile("[a-z2-7]*")


def base32_decode(body: str) -> bytes:
    """RFC 4648 base32 without padding, either case: what ``base64.b32decode`` returns for
    ``body`` padded (and ``ValueError`` where it raises), in about a tenth of its time (every CID
    in a DAG-JSON block is one; ``tests/sync/model/test_cid.py`` checks the two agree)."""
    body = body.lower()
    if len(body) % 8 in (1, 3, 6) or not _B32_BODY.fullmatch(body):
        raise ValueError("not base32")
    if not body:
        return b""
    bits = len(body) * 5
    size = bits // 8
    return (int(body.translate(_B32_AS_DIGITS), 32) >> (bits - size * 8)).to_bytes(size, "big")


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36_decode(body: str) -> bytes:
    zeros = len(body) - len(body.lstrip("0"))
    value = 0
    for ch in body:
        idx = _B36.find(ch)
        if idx < 0:
            raise ValueError(f"bad base36 character {ch!r}")
        value = value * 36 + idx
    rest = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return b"\x00" * zeros + rest
