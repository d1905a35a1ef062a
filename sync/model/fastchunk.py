"""Typed fast paths for the hottest block: an EntryChunk, in DAG-JSON and in DAG-CBOR.

A 16,384-multihash DAG-JSON chunk is ~600 KB of ``{"/":{"bytes":"..."}}`` objects.  msgspec parses
that shape in C into typed structs, leaving one strict base64 decode per entry in Python; that is
about twice as fast as the generic DAG-JSON decoder and faster than the reference ``dag-json``
package.  Its types bound what it builds (one struct per entry, nesting fixed by the schema), so
it needs none of ``dagjson``'s item or depth checks.

A chunk whose entries are all one length, laid out as canonical encoders write it (no
whitespace, ``Entries`` first), takes ``uniform_dagjson_chunk`` before that, which makes no
Python object per entry but the entries themselves: the entries' base64 text sits at a fixed
stride, so one ``bytes.replace`` turns every separator into the padding that makes each entry a
whole number of base64 quads (``A``s, whose bytes are skipped), one ``binascii.a2b_base64``
decodes them all, and ``struct`` cuts the entries out, 64 at a time.  For 16,384 sha2-256
entries that is 2-3x the msgspec path (``python -m bench codecs``:
``chunk_decode_dag-json.uniform_path_ratio_to_typed_path``).  It takes a chunk only when:

- it starts ``{"Entries":[{"/":{"bytes":"``; the entries end at the last ``"}}]``, after which
  comes ``}`` or ``,"Next":{"/":"<alphanumeric CID>"}}``; the characters on both sides of the
  entries' text are base64 characters, so no separator straddles either end;
- the text before the first separator gives the length L (not 1 more than a multiple of 4);
  the entries' text is then exactly ``count`` entries of L and ``count - 1`` separators long;
- the ``"}`` every separator starts with is at each of the ``count - 1`` strides;
- ``replace`` replaced exactly ``count - 1`` separators (the length after it says so); and
- the decoded length is what ``count`` entries of only base64 characters give: without strict
  mode ``a2b_base64`` skips any other character and stops at ``=``, so one would shorten it.

The ``"}`` at the strides are thus inside replaced separators, where ``"}`` only starts one, so
the separators are exactly those at the strides and each entry between them is L base64
characters: what the msgspec path decodes, to the same bytes (strict base64 ignores the unused
bits of a last partial quad, as this does).

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
import functools
import itertools
import operator
import struct
from collections.abc import Callable, Iterator
from typing import Any

import cbrrr
import msgspec

from sync.errors import BadCid, DecodeError
from sync.model import dagcbor
from sync.model.cid import Link

__all__ = [
    "decode_dagcbor_chunk",
    "decode_dagjson_chunk",
    "typed_dagjson_chunk",
    "uniform_dagjson_chunk",
]

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
    uniform = uniform_dagjson_chunk(raw)
    return uniform if uniform is not None else typed_dagjson_chunk(raw)


def typed_dagjson_chunk(raw: bytes) -> Chunk | None:
    """The msgspec path: typed structs, then one strict base64 decode per entry."""
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


_HEAD = b'{"Entries":[{"/":{"bytes":"'
_SEP = b'"}},{"/":{"bytes":"'
_END = b'"}}]'
_NEXT_JSON = b',"Next":{"/":"'
_LINK_END = b'"}}'
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def uniform_dagjson_chunk(raw: bytes) -> Chunk | None:
    """The chunk when its entries are one length, laid out canonically (see above), or None."""
    start, end = len(_HEAD), raw.rfind(_END)
    if not raw.startswith(_HEAD) or end <= start:
        return None
    # Base64 on both sides: no separator straddles the head or the end of the entries.
    if raw[start] not in _B64 or raw[end - 1] not in _B64:
        return None
    first = raw.find(_SEP, start, end)
    size = (end if first < 0 else first) - start  # base64 characters per entry
    stride = size + len(_SEP)
    count, extra = divmod(end - start + len(_SEP), stride)
    quads, rest = divmod(size, 4)
    tail_ok, nxt = _next_link(raw[end + len(_END) :])
    if extra or rest == 1 or size == 0 or not tail_ok:
        return None
    at, seps = start + size, count - 1  # where the first separator is; how many there are
    if raw[at:end:stride].count(b'"') != seps or raw[at + 1 : end : stride].count(b"}") != seps:
        return None
    pad = b"A" * (-rest % 4)  # makes each entry whole quads; decodes to bytes the unpack skips
    text = raw.replace(_SEP, pad)
    if len(text) != len(raw) - seps * (len(_SEP) - len(pad)):
        return None
    head = (size + len(pad)) * seps  # the text of every entry but the last
    try:
        body = _a2b(memoryview(text)[start : start + head])
        last = _a2b(text[start + head : start + head + size] + pad)
    except binascii.Error:
        return None
    width, span = quads * 3 + max(rest - 1, 0), (quads + (rest > 0)) * 3
    if len(last) != span or len(body) != span * seps:
        return None  # a character that is not base64 was skipped, or padding stopped the decode
    return (*_entries(width, span - width)(body), last[:width]), nxt


def _next_link(tail: bytes) -> tuple[bool, Link | None]:
    """``(True, Next)`` from the text after the entries; ``(False, None)`` for another tail."""
    if tail == b"}":
        return True, None
    cid = tail[len(_NEXT_JSON) : -len(_LINK_END)]
    if not (tail.startswith(_NEXT_JSON) and tail.endswith(_LINK_END) and cid.isalnum()):
        return False, None
    try:
        return True, Link.parse(cid.decode())
    except (BadCid, ValueError):
        return False, None


_BLOCK = 64  # entries per struct unpack: one tuple per 64 entries, not one per entry


@functools.lru_cache(maxsize=16)
def _entries(width: int, skip: int) -> Callable[[bytes], Iterator[bytes]]:
    """Each ``width`` bytes of a buffer, after which ``skip`` bytes are dropped."""
    one = struct.Struct(f"{width}s{skip}x")
    block = struct.Struct(f"{width}s{skip}x" * _BLOCK)

    def cut(body: bytes) -> Iterator[bytes]:
        whole = len(body) // block.size * block.size
        view = memoryview(body)
        blocks = itertools.chain.from_iterable(block.iter_unpack(view[:whole]))
        return itertools.chain(blocks, map(_first, one.iter_unpack(view[whole:])))

    return cut


_first = operator.itemgetter(0)


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
