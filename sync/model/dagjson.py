"""The DAG-JSON codec (multicodec 0x0129), on msgspec.

The IPLD data model in Python: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``Link``, ``list`` and ``dict[str, ...]``.

Rules this module keeps:

- Decoding is lenient where go-ipld-prime is: bytes may be base64 with or without padding
  (real Go-produced ads carry padded base64), and whitespace is allowed.  Anything else that is
  not DAG-JSON raises ``DecodeError``; no msgspec exception escapes.
- Bounds, checked before msgspec builds anything: at most ``MAX_ITEMS`` values and map keys as
  the JSON writes them (each ``{"/": ...}`` counts its map, key and value) -- counted at C speed
  from the structural characters ``[{,:`` and, only when that count (strings included) is over,
  again with strings blanked out; and at most ``MAX_DEPTH`` nested lists/maps of the data model
  (a link or bytes is a leaf), checked while converting.  DAG-CBOR keeps the same two bounds.
  Without them a 4 MiB block of ``[[],[],...]`` decoded to 1.4 million lists (~200 MiB), and the
  depth limit was Python's recursion limit, which depends on the caller's stack.
- Encoding refuses a map whose only key is ``/`` (reserved: it could not be decoded back).
- Encoding is canonical: map keys sorted bytewise, no whitespace, unpadded standard base64 for
  bytes, ``{"/": "<cid>"}`` for links.  Its output is byte-identical to the reference
  ``dag-json`` package (tested), ~30x faster.
- A decoded block is never re-encoded to check its CID: the caller hashes the bytes it received.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import msgspec

from sync.errors import BadCid, DecodeError
from sync.model.cid import Link

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "Node", "check_items", "decode", "encode"]

MAX_DEPTH = 256
"""Nested lists and maps one block may hold (IPNI's objects nest at most ~6 deep)."""
MAX_ITEMS = 1 << 18
"""Values plus map keys one block may hold (262,144: a 16,384-entry DAG-JSON chunk is 81,923)."""

# The IPLD data model as Python values (recursive; typed loosely for speed).
Node = Any

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder(order="sorted").encode


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def decode(raw: bytes) -> Node:
    """Decode DAG-JSON bytes into IPLD data-model values (within ``MAX_DEPTH``/``MAX_ITEMS``)."""
    check_items(raw)
    try:
        return _from_json(_json_decode(raw), MAX_DEPTH)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec: bad UTF-8 in a string
        raise DecodeError(f"not valid JSON: {exc}") from None
    except RecursionError:  # msgspec's own limit, below MAX_DEPTH only on a very deep stack
        raise DecodeError("DAG-JSON nested too deeply") from None


def check_items(raw: bytes) -> None:
    """``DecodeError`` if the JSON ``raw`` holds more than ``MAX_ITEMS`` values and keys.

    Each value takes a byte at least and each key two (its quotes), so a block no longer than
    ``MAX_ITEMS`` bytes (every ad, every head) is not counted at all."""
    if (
        len(raw) > MAX_ITEMS
        and _items(raw) > MAX_ITEMS
        and _items(_STRING.sub(b'""', raw)) > MAX_ITEMS
    ):
        raise DecodeError(f"DAG-JSON holds more than {MAX_ITEMS} items")


def _items(raw: bytes) -> int:
    """An upper bound of the values and keys: the root, the first item of each list or map (a
    ``[`` or ``{`` not closed at once), one more per ``,`` and a key per ``:``; exact for
    compact JSON whose strings are blanked."""
    opened = raw.count(b"[") - raw.count(b"[]") + raw.count(b"{") - raw.count(b"{}")
    return 1 + opened + raw.count(b",") + raw.count(b":")


def _from_json(value: Any, depth: int) -> Node:
    if isinstance(value, dict):
        if "/" in value and len(value) == 1:
            return _special(value["/"])
        if not depth:
            raise DecodeError(f"DAG-JSON nested deeper than {MAX_DEPTH}")
        return {k: _from_json(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        if not depth:
            raise DecodeError(f"DAG-JSON nested deeper than {MAX_DEPTH}")
        return [_from_json(v, depth - 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise DecodeError("non-finite float")
    return value


def _special(inner: Any) -> Node:
    if isinstance(inner, str):
        try:
            return Link.parse(inner)
        except BadCid as exc:
            raise DecodeError(f"bad link: {exc}") from None
    if isinstance(inner, dict) and len(inner) == 1 and isinstance(inner.get("bytes"), str):
        text = inner["bytes"]
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"bad base64 bytes: {exc}") from None
    raise DecodeError('a map with the single key "/" must hold a CID string or {"bytes": ...}')


def encode(node: Node) -> bytes:
    """Encode IPLD data-model values as canonical DAG-JSON."""
    return _json_encode(_to_json(node))


def _to_json(node: Node) -> Any:
    if isinstance(node, dict):
        if len(node) == 1 and "/" in node:
            raise ValueError('DAG-JSON reserves maps whose only key is "/"')
        return {_key(k): _to_json(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_to_json(v) for v in node]
    if isinstance(node, bytes):
        return {"/": {"bytes": base64.b64encode(node).decode().rstrip("=")}}
    if isinstance(node, Link):
        return {"/": str(node)}
    if isinstance(node, float) and not math.isfinite(node):
        raise ValueError("DAG-JSON cannot encode a non-finite float")
    if node is None or isinstance(node, bool | int | float | str):
        return node
    raise TypeError(f"cannot encode {type(node).__name__} as DAG-JSON")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"DAG-JSON map keys must be strings, not {type(key).__name__}")
    return key
