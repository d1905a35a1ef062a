"""The publisher's persistent state: its blocks, its head and its contexts, in LevelDB.

Key layout (one LevelDB per publisher data directory, ``publisher.db``)::

    b/<cid bytes>        raw block (ads and entry chunks), exactly the bytes served
    z/<cid bytes>        its gzip encoding, written with it (a block served gzip-encoded is
                         compressed once, not per request; absent for short blocks; a store
                         written before it was kept gets it when the block is first served)
    h                    head ad CID bytes
    s                    the encoded SignedHead served at /ipni/v1/ad/head
    c/<context id>       ContextRecord (JSON): latest ad, removed?, multihash count
    q/<seq, 8 bytes BE>  ChainRecord (JSON): one per ad, so listing is a reverse prefix scan
    cfg                  PublisherConfig (JSON)

Rules: entry chunks may be written ahead of their ad (orphans are harmless: content-addressed and
unreferenced); an ad, the head, the signed head, its chain record and its context record are
written in ONE synced batch, so a crash leaves either the old chain or the new one.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from store import KV, StoreError
from sync.announce.message import ANNOUNCE_TOPIC
from sync.model.cid import Link
from sync.net.httpmessage import GZIP_MIN, gzip_encoding

__all__ = ["ChainRecord", "ContextRecord", "PublisherConfig", "PublisherStore"]

_BLOCK = b"b/"
_GZIPPED = b"z/"
_HEAD = b"h"
_SIGNED_HEAD = b"s"
_CONTEXT = b"c/"
_CHAIN = b"q/"
_CONFIG = b"cfg"


class ContextRecord(msgspec.Struct, frozen=True):
    ad: str
    removed: bool
    count: int


class ChainRecord(msgspec.Struct, frozen=True):
    seq: int
    cid: str
    context_id: str  # padded base64
    kind: str  # "add" | "remove" | "metadata"
    count: int


class PublisherConfig(msgspec.Struct, frozen=True):
    topic: str = ANNOUNCE_TOPIC
    addresses: list[str] = msgspec.field(default_factory=list)
    chunk_size: int = 16_384
    codec: str = "dag-json"  # or "dag-cbor": how new ads and entry chunks are encoded


@dataclass(frozen=True)
class PublisherStore:
    kv: KV

    def block(self, link: Link) -> bytes | None:
        return self.kv.get(_BLOCK + link.raw)

    def gzipped_block(self, link: Link, raw: bytes) -> bytes | None:
        """The block's kept gzip encoding; for a block written before encodings were kept,
        made now and kept (best effort: a store that refuses the write still gets it sent)."""
        if len(raw) < GZIP_MIN:
            return None  # none kept or made: no read for it
        kept = self.kv.get(_GZIPPED + link.raw)
        if kept is not None:
            return kept
        made = gzip_encoding(raw)
        if made is not None:
            with contextlib.suppress(StoreError):
                self.kv.put(_GZIPPED + link.raw, made)
        return made

    def put_blocks(self, blocks: list[tuple[Link, bytes]]) -> None:
        """Write entry chunks ahead of their ad (not yet reachable from the head)."""
        self.kv.write_batch([w for link, raw in blocks for w in _block_writes(link, raw)])

    def head(self) -> Link | None:
        raw = self.kv.get(_HEAD)
        return Link(raw) if raw else None

    def signed_head(self) -> bytes | None:
        return self.kv.get(_SIGNED_HEAD)

    def context(self, context_id: bytes) -> ContextRecord | None:
        raw = self.kv.get(_CONTEXT + context_id)
        return msgspec.json.decode(raw, type=ContextRecord) if raw else None

    def config(self) -> PublisherConfig:
        raw = self.kv.get(_CONFIG)
        return msgspec.json.decode(raw, type=PublisherConfig) if raw else PublisherConfig()

    def set_config(self, config: PublisherConfig) -> None:
        self.kv.put(_CONFIG, msgspec.json.encode(config), sync=True)

    def last_seq(self) -> int:
        for key, _ in self.kv.scan(_CHAIN, reverse=True):
            return int.from_bytes(key[len(_CHAIN) :], "big")
        return 0

    def chain(self) -> Iterator[ChainRecord]:
        """Every published ad, newest first."""
        for _, raw in self.kv.scan(_CHAIN, reverse=True):
            yield msgspec.json.decode(raw, type=ChainRecord)

    def commit_ad(
        self,
        link: Link,
        raw: bytes,
        *,
        signed_head: bytes,
        chain: ChainRecord,
        context: tuple[bytes, ContextRecord],
    ) -> None:
        """Make ``link`` the new head, with everything that goes with it, atomically."""
        self.kv.write_batch(
            [
                *_block_writes(link, raw),
                (_HEAD, link.raw),
                (_SIGNED_HEAD, signed_head),
                (_CHAIN + chain.seq.to_bytes(8, "big"), msgspec.json.encode(chain)),
                (_CONTEXT + context[0], msgspec.json.encode(context[1])),
            ],
            sync=True,
        )


def _block_writes(link: Link, raw: bytes) -> list[tuple[bytes, bytes]]:
    gzipped = gzip_encoding(raw)
    writes = [(_BLOCK + link.raw, raw)]
    return writes if gzipped is None else [*writes, (_GZIPPED + link.raw, gzipped)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
