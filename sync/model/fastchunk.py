"""Typed fast paths for the hottest block: an EntryChunk, in DAG-JSON and in DAG-CBOR.

A 16,384-multihash DAG-JSON chunk is ~600 KB of ``{"/":{"bytes":"..."}}`` objects.  msgspec parses
that shape in C into typed structs, leaving one strict base64 decode per entry in Python; that is
about twice as fast as the generic DAG-JSON decoder and faster than the reference ``dag-json``
package.  Its types bound what it builds (one struct per entry, nesting fixed by the schema), so
it needs none of ``dagjson``'s item or depth checks.

A DAG-CBOR chunk's layout is checked on the bytes: a map of ``Next`` (a tag-42 byte string) and
``Entries`` (canonical key order: shorter first) or of ``Entries`` alone, whose array holds byte
strings that all share the first one's header (``dagcbor``'s strided skip: 16,384 sha2-256
multihashes are ``0x58 0x22`` + 34 bytes each).  That layout is two deep and holds n + 5 items at
most, within ``dagcbor``'s bounds, so cbrrr decodes it at once; and every entry is known to be
bytes, so the per-entry type check of ``EntryChunk.from_node`` (~40% of a chunk's load) is not
needed.

Rules: a fast path accepts exactly what the generic path accepts for that layout (``Entries``
required, ``Next`` optional and a link, no other keys; DAG-JSON: strict base64 with or without
padding; DAG-CBOR: whatever cbrrr accepts).  Anything else returns ``None`` and the caller takes
the generic path, which produces the precise ``SchemaError`` or ``DecodeError``; so a fast path
never changes what is accepted.
"""

from __future__ import annotations

import binascii
from typing import Any

import cbrrr
import msgspec

from sync.errors import BadCid, DecodeError
from sync.model import dagcbor
from sync.model.cid import Link

__all__ = ["decode_dagcbor_chunk", "decode_dagjson_chunk"]

Chunk = tuple[tuple[bytes, ...], Link | None]


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


def decode_dagjson_chunk(raw: bytes) -> Chunk | None:
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


_NEXT = b"\x64Next\xd8\x2a"  # the key "Next", then tag 42
_ENTRIES = b"\x67Entries"
_BYTES = 2


def decode_dagcbor_chunk(raw: bytes) -> Chunk | None:
    """``(entries, next)`` of a DAG-CBOR chunk of same-header entries, or None (generic path)."""
    try:
        pos = _entries_at(raw)
        if pos < 0 or raw[pos] >> 5 != 4:
            return None
        count, pos = _argument(raw, pos)
        if not 0 < count < dagcbor.MAX_ITEMS - 4 or raw[pos] >> 5 != _BYTES:
            return None
        if dagcbor.uniform_end(raw, pos, count) != len(raw):
            return None
        node: dict[str, Any] = cbrrr.decode_dag_cbor(raw, cid_ctor=dagcbor.to_link)  # type: ignore[assignment]
    except (IndexError, ValueError, DecodeError):  # cbrrr's ValueErrors: the generic path reports
        return None
    nxt = node.get("Next")
    return tuple(node["Entries"]), nxt if type(nxt) is Link else None


def _entries_at(raw: bytes) -> int:
    """Where the ``Entries`` array's header starts, or -1 for another layout."""
    if raw[0] == 0xA1:
        pos = 1
    elif raw[0] == 0xA2 and raw.startswith(_NEXT, 1):
        pos = 1 + len(_NEXT)
        if raw[pos] >> 5 != _BYTES:
            return -1
        length, pos = _argument(raw, pos)
        pos += length
    else:
        return -1
    return pos + len(_ENTRIES) if raw.startswith(_ENTRIES, pos) else -1


def _argument(raw: bytes, pos: int) -> tuple[int, int]:
    """The argument of the CBOR header at ``pos`` and where the header ends."""
    info = raw[pos] & 0x1F
    if info < 24:
        return info, pos + 1
    if info > 27:
        raise IndexError("not a definite length")
    size = 1 << (info - 24)
    return int.from_bytes(raw[pos + 1 : pos + 1 + size], "big"), pos + 1 + size
