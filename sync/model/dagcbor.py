"""The DAG-CBOR codec (multicodec 0x71), on cbrrr.

Rules this module keeps:

- Strict DAG-CBOR both ways (cbrrr's C implementation): canonical map-key order, tag 42 for
  links with the 0x00 multibase prefix, no indefinite lengths.  Links come out as ``Link``.
- No cbrrr exception escapes: decoding failures are ``DecodeError``.
- Bounds, checked by a scan of the headers *before* cbrrr allocates anything: at most
  ``MAX_DEPTH`` nested lists/maps (DAG-JSON's limit, ``dagjson.MAX_DEPTH``) and at most
  ``MAX_ITEMS`` values and map keys in one block (a map of n entries declares 2n).  cbrrr itself
  has neither: it parses iteratively, so depth costs no stack but ~150 bytes per level, and it
  allocates each list at its *declared* length, so a 60 KB block of nested arrays each declaring
  as many items as bytes remain reserved 4.5 GB (2.2 GB resident) before failing.  The scan
  counts declared lengths, so nothing is allocated for a block that breaks a bound.
- The scan is Python, one step per header, but it skips a run of same-header strings (an
  EntryChunk's ``Entries``: 16,384 ``0x58 0x22`` + 34 bytes) or of one same one-byte item with
  one strided comparison per header byte, at C speed; the steps it does take are bounded by
  ``MAX_ITEMS`` (~50 ms at worst).  Anything the scan cannot read (indefinite lengths, reserved
  additional info, a tag other than 42 or not on a byte string, a truncated header) is not
  DAG-CBOR: ``DecodeError`` there too.
- The ``dag-cbor`` package of the design card is kept as the reference in tests only: it is
  ~50x slower on a 16,384-entry chunk.
"""

from __future__ import annotations

from typing import Any

import cbrrr

from sync.errors import BadCid, DecodeError
from sync.model.cid import Link
from sync.model.dagjson import MAX_DEPTH, MAX_ITEMS

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "check_bounds", "decode", "encode", "to_link", "uniform_end"]

_STRINGS = (2, 3)  # byte string, text string
_CONTAINERS = (4, 5)  # array, map
_TAG = 6
_CID_TAG = 42
_UNIFORM_MIN = 16  # an array this long is first tried as a run of same-header strings


def to_link(raw: bytes) -> Link:
    """cbrrr's ``cid_ctor``: a tag-42 byte string (without its 0x00 prefix) as a ``Link``."""
    try:
        return Link.from_bytes(raw)
    except BadCid as exc:
        raise DecodeError(f"bad link in DAG-CBOR: {exc}") from None


def decode(raw: bytes) -> Any:
    """Decode DAG-CBOR bytes into IPLD data-model values (within ``MAX_DEPTH``/``MAX_ITEMS``)."""
    check_bounds(raw)
    try:
        return cbrrr.decode_dag_cbor(raw, cid_ctor=to_link)
    except DecodeError:
        raise
    except ValueError as exc:  # cbrrr's: CbrrrDecodeError, UnicodeDecodeError, trailing bytes
        raise DecodeError(f"not valid DAG-CBOR: {exc}") from None


def encode(node: Any) -> bytes:
    """Encode IPLD data-model values as DAG-CBOR."""
    try:
        return cbrrr.encode_dag_cbor(node, cid_type=Link)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot encode as DAG-CBOR: {exc}") from None


def check_bounds(raw: bytes) -> None:
    """``DecodeError`` unless ``raw`` nests at most ``MAX_DEPTH`` deep and declares at most
    ``MAX_ITEMS`` values and keys.  It allocates nothing in proportion to what is declared."""
    try:
        end = _scan(raw)
    except IndexError:
        end = len(raw) + 1
    if end > len(raw):
        raise DecodeError("not valid DAG-CBOR: truncated")


def _scan(raw: bytes) -> int:
    """Where the first item of ``raw`` ends (trailing bytes are cbrrr's to refuse)."""
    pos = 0
    budget = MAX_ITEMS - 1  # the root is one item
    stack: list[int] = []  # per open container: what its parent still has to read after it
    left = 1  # items still to read at the current level
    while True:
        head = raw[pos]
        major, arg = head >> 5, head & 0x1F
        pos += 1
        if arg >= 24:
            arg, pos = _argument(raw, pos, arg)
        if major in _STRINGS:
            pos += arg
        elif major in _CONTAINERS:
            if len(stack) >= MAX_DEPTH:
                raise DecodeError(f"DAG-CBOR nested deeper than {MAX_DEPTH}")
            count = arg << (major - 4)  # a map's entries are a key and a value each
            if count:
                budget -= count
                if budget < 0:
                    raise DecodeError(f"DAG-CBOR declares more than {MAX_ITEMS} items")
                after = uniform_end(raw, pos, arg) if major == 4 and arg >= _UNIFORM_MIN else -1
                if after < 0:
                    stack.append(left - 1)
                    left = count
                    continue
                pos = after
        elif major == _TAG:
            if arg != _CID_TAG or raw[pos] >> 5 != 2:
                raise DecodeError("not valid DAG-CBOR: only tag 42 on a byte string (a CID)")
            continue  # the byte string after the tag is this same item
        # An item is done (a scalar, a string, an empty or skipped container).
        left -= 1
        while not left:
            if not stack:
                return pos
            left = stack.pop()


def _argument(raw: bytes, pos: int, info: int) -> tuple[int, int]:
    """The argument of additional info ``info`` >= 24 whose bytes start at ``pos``, and where
    they end."""
    if info == 24:
        return raw[pos], pos + 1
    if info < 28:
        size = 1 << (info - 24)
        return int.from_bytes(raw[pos : pos + size], "big"), pos + size
    raise DecodeError(f"not valid DAG-CBOR: additional info {info} (indefinite/reserved)")


def uniform_end(raw: bytes, pos: int, count: int) -> int:
    """Where an array of ``count`` items at ``pos`` ends if every one is a string with the same
    header (major type and length) as the first, or the same one-byte scalar or empty list/map,
    checked with strided slices; else -1."""
    head = raw[pos]
    info = head & 0x1F
    if head >> 5 not in _STRINGS:
        if info >= 24 or head >> 5 == _TAG or (head >> 5 in _CONTAINERS and info):
            return -1
        hlen, length = 1, 0
    elif info < 24:
        hlen, length = 1, info
    elif info == 24:
        hlen, length = 2, raw[pos + 1]
    elif info == 25:
        hlen, length = 3, int.from_bytes(raw[pos + 1 : pos + 3], "big")
    else:
        return -1
    size = hlen + length
    stop = pos + size * count
    if stop > len(raw):
        return -1
    for k in range(hlen):
        if raw[pos + k : stop : size] != raw[pos + k : pos + k + 1] * count:
            return -1
    return stop
