"""A typed fast path for the hottest block: a DAG-JSON EntryChunk.

A 16,384-multihash chunk is ~600 KB of ``{"/":{"bytes":"..."}}`` objects.  msgspec parses that
shape in C into typed structs, leaving one strict base64 decode per entry in Python; that is about
twice as fast as the generic DAG-JSON decoder and faster than the reference ``dag-json`` package.

Rules: the fast path accepts exactly the EntryChunk schema (``Entries`` required, ``Next``
optional, no other keys, strict base64 with or without padding).  Anything else returns ``None``
and the caller takes the generic path, which produces the precise ``SchemaError`` or
``DecodeError``; so the fast path never changes what is accepted.
"""

from __future__ import annotations

import binascii

import msgspec

from .cid import Link
from .errors import BadCid

__all__ = ["decode_dagjson_chunk"]


class _Bytes(msgspec.Struct, forbid_unknown_fields=True):
    b64: str = msgspec.field(name="bytes")


class _BytesNode(msgspec.Struct, forbid_unknown_fields=True):
    inner: _Bytes = msgspec.field(name="/")


class _LinkNode(msgspec.Struct, forbid_unknown_fields=True):
    cid: str = msgspec.field(name="/")


class _Chunk(msgspec.Struct, forbid_unknown_fields=True):
    Entries: list[_BytesNode]
    Next: _LinkNode | msgspec.UnsetType = msgspec.UNSET


_decoder = msgspec.json.Decoder(_Chunk)
_a2b = binascii.a2b_base64


def decode_dagjson_chunk(raw: bytes) -> tuple[tuple[bytes, ...], Link | None] | None:
    """``(entries, next)`` of a well-formed DAG-JSON chunk, or None to take the generic path."""
    try:
        chunk = _decoder.decode(raw)
        entries = tuple(
            _a2b(s + "=" * (-len(s) % 4), strict_mode=True)
            for s in (e.inner.b64 for e in chunk.Entries)
        )
        nxt = None if chunk.Next is msgspec.UNSET else Link.parse(chunk.Next.cid)
    except (msgspec.DecodeError, binascii.Error, ValueError, BadCid):
        return None
    return entries, nxt
