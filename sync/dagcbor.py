"""The DAG-CBOR codec (multicodec 0x71), on cbrrr.

Rules this module keeps:

- Strict DAG-CBOR both ways (cbrrr's C implementation): canonical map-key order, tag 42 for
  links with the 0x00 multibase prefix, no indefinite lengths.  Links come out as ``Link``.
- No cbrrr exception escapes: decoding failures are ``DecodeError``.
- The ``dag-cbor`` package of the design card is kept as the reference in tests only: it is
  ~50x slower on a 16,384-entry chunk.
"""

from __future__ import annotations

from typing import Any

import cbrrr

from .cid import Link
from .errors import BadCid, DecodeError

__all__ = ["decode", "encode"]


def _to_link(raw: bytes) -> Link:
    try:
        return Link.from_bytes(raw)
    except BadCid as exc:
        raise DecodeError(f"bad link in DAG-CBOR: {exc}") from None


def decode(raw: bytes) -> Any:
    """Decode DAG-CBOR bytes into IPLD data-model values."""
    try:
        return cbrrr.decode_dag_cbor(raw, cid_ctor=_to_link)
    except DecodeError:
        raise
    except Exception as exc:  # cbrrr raises ValueError, EOFError, CbrrrDecodeError, ...
        raise DecodeError(f"not valid DAG-CBOR: {exc}") from None


def encode(node: Any) -> bytes:
    """Encode IPLD data-model values as DAG-CBOR."""
    try:
        return cbrrr.encode_dag_cbor(node, cid_type=Link)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot encode as DAG-CBOR: {exc}") from None
