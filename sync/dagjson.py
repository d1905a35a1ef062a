"""The DAG-JSON codec (multicodec 0x0129), on msgspec.

The IPLD data model in Python: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
``Link``, ``list`` and ``dict[str, ...]``.

Rules this module keeps:

- Decoding is lenient where go-ipld-prime is: bytes may be base64 with or without padding
  (real Go-produced ads carry padded base64), and whitespace is allowed.  Anything else that is
  not DAG-JSON raises ``DecodeError``; no msgspec exception escapes.
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
from typing import Any

import msgspec

from .cid import Link
from .errors import BadCid, DecodeError

__all__ = ["Node", "decode", "encode"]

# The IPLD data model as Python values (recursive; typed loosely for speed).
Node = Any

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder(order="sorted").encode


def decode(raw: bytes) -> Node:
    """Decode DAG-JSON bytes into IPLD data-model values."""
    try:
        return _from_json(_json_decode(raw))
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError("DAG-JSON nested too deeply") from None


def _from_json(value: Any) -> Node:
    if isinstance(value, dict):
        if "/" in value and len(value) == 1:
            return _special(value["/"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
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
