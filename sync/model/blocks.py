"""Blocks: raw bytes plus the CID they are known by.

Rules this module keeps:

- ``check_block`` runs on the bytes as received, before decoding; a block is never re-encoded to
  check its CID (Go-produced ads use padded base64, which is not canonical, and still hash right).
- The CID's codec picks the decoder: dag-json (0x0129) or dag-cbor (0x71); anything else is
  ``UnknownCodec``.  Without a CID, ``{`` as first non-space byte means dag-json.
- ``encode_block`` makes new blocks: dag-json by default, dag-cbor on request, sha2-256.
"""

from __future__ import annotations

import enum
from typing import Any

from sync.errors import SchemaError, UnknownCodec
from sync.model import dagcbor, dagjson
from sync.model.cid import DAG_CBOR, DAG_JSON, Link, check_block
from sync.model.fastchunk import decode_dagcbor_chunk, decode_dagjson_chunk
from sync.model.schema import Advertisement, EntryChunk

__all__ = [
    "BlockKind",
    "classify",
    "decode_chunk_fast",
    "decode_node",
    "encode_block",
    "guess_codec",
    "load_advertisement",
    "load_entry_chunk",
]


class BlockKind(enum.Enum):
    ADVERTISEMENT = "advertisement"
    ENTRY_CHUNK = "entry-chunk"
    SIGNED_HEAD = "signed-head"


def guess_codec(raw: bytes) -> int:
    """The codec of a block whose CID is unknown."""
    return DAG_JSON if raw.lstrip()[:1] == b"{" else DAG_CBOR


def decode_node(raw: bytes, codec: int) -> Any:
    if codec == DAG_JSON:
        return dagjson.decode(raw)
    if codec == DAG_CBOR:
        return dagcbor.decode(raw)
    raise UnknownCodec(f"unsupported IPLD codec 0x{codec:x} (dag-json and dag-cbor are)")


def encode_block(node: Any, codec: int = DAG_JSON) -> tuple[Link, bytes]:
    """Encode a node and return its CID and bytes."""
    if codec == DAG_JSON:
        raw = dagjson.encode(node)
    elif codec == DAG_CBOR:
        raw = dagcbor.encode(node)
    else:
        raise UnknownCodec(f"unsupported IPLD codec 0x{codec:x}")
    return Link.make(codec, raw), raw


def classify(node: Any) -> BlockKind:
    """Which IPNI object a decoded node is, by its keys."""
    if isinstance(node, dict):
        keys = node.keys()
        if {"Provider", "Signature", "Entries"} <= keys:
            return BlockKind.ADVERTISEMENT
        if {"head", "sig"} <= keys:
            return BlockKind.SIGNED_HEAD
        if "Entries" in keys and keys <= {"Entries", "Next"}:
            return BlockKind.ENTRY_CHUNK
    raise SchemaError("block is not an advertisement, an entry chunk or a signed head")


def load_advertisement(link: Link, raw: bytes) -> Advertisement:
    """Check, decode and validate an advertisement block fetched as ``link``."""
    check_block(link, raw)
    ad = Advertisement.from_node(decode_node(raw, link.codec))
    ad.validate()
    return ad


def load_entry_chunk(link: Link, raw: bytes) -> EntryChunk:
    """Check and decode an entry chunk block fetched as ``link``."""
    check_block(link, raw)
    fast = decode_chunk_fast(link.codec, raw)
    if fast is not None:
        return fast
    return EntryChunk.from_node(decode_node(raw, link.codec))


def decode_chunk_fast(codec: int, raw: bytes) -> EntryChunk | None:
    """The chunk by its codec's typed fast path (``fastchunk``), or None for the generic path."""
    if codec == DAG_JSON:
        fast = decode_dagjson_chunk(raw)
    elif codec == DAG_CBOR:
        fast = decode_dagcbor_chunk(raw)
    else:
        return None
    return None if fast is None else EntryChunk(entries=fast[0], next=fast[1])
