"""The values stored in the staging area (msgspec MessagePack structs).

Rules: records are immutable values; a field added later gets a default so old records still
decode; a record that does not decode raises ``StagingCorrupt`` naming its key.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from staging.errors import StagingCorrupt

__all__ = [
    "AnnounceRecord",
    "DoneRecord",
    "KnownRecord",
    "PublisherRecord",
    "StackHeader",
    "StackRecord",
    "StackState",
    "StagedAd",
    "WalkRecord",
    "decode",
    "encode",
]

T = TypeVar("T")


class WalkRecord(msgspec.Struct, frozen=True):
    publisher: bytes
    addrs: list[str]
    head: bytes
    started: float
    committed: bool = False
    stacks: int = 0  # committed stacks not yet finished; the record goes when it reaches 0


class StagedAd(msgspec.Struct, frozen=True):
    """One advertisement as fetched and verified: everything a worker needs to apply it."""

    cid: bytes
    raw: bytes
    skip_entries: bool = False  # a newer ad of the same stack removes its (provider, context)
    error: str | None = None  # a permanent error found while walking: record it, apply nothing


class StackHeader(msgspec.Struct, frozen=True):
    """A stack's immutable part, stored under ``S`` and found by prefix scans."""

    walk_id: int
    publisher: bytes
    addrs: list[str]
    created: float
    total: int


class StackState(msgspec.Struct, frozen=True):
    """A stack's mutable part, stored under ``T`` and only ever read by key.

    Kept apart because LevelDB iterators step over every superseded version of a rewritten key
    still in the memtable: a record rewritten per ad must never be found by a prefix scan.
    """

    count: int  # entries [0, count) of the walk are still to do; count - 1 pops next
    last_error: str | None = None
    attempts: int = 0


class StackRecord(msgspec.Struct, frozen=True):
    """A stack as callers see it: its header and its state together (not stored as such)."""

    walk_id: int
    count: int
    publisher: bytes
    addrs: list[str]
    created: float
    total: int = 0
    last_error: str | None = None
    attempts: int = 0

    @classmethod
    def of(cls, header: StackHeader, state: StackState) -> StackRecord:
        return cls(
            header.walk_id,
            state.count,
            header.publisher,
            header.addrs,
            header.created,
            header.total,
            state.last_error,
            state.attempts,
        )


class KnownRecord(msgspec.Struct, frozen=True):
    walk_id: int
    provider: bytes
    pos: int


class AnnounceRecord(msgspec.Struct, frozen=True):
    """The newest announce accepted from a publisher (durable before the announce is answered)."""

    head: bytes
    addrs: list[str]
    at: float


class DoneRecord(msgspec.Struct, frozen=True):
    ok: bool
    at: float
    error: str | None = None


class PublisherRecord(msgspec.Struct, frozen=True):
    latest_scanned: bytes | None = None
    latest_processed: bytes | None = None
    addrs: list[str] = msgspec.field(default_factory=list)
    last_sync: float | None = None
    last_error: str | None = None


_encoder = msgspec.msgpack.Encoder()


def encode(record: Any) -> bytes:
    return _encoder.encode(record)


def decode(raw: bytes, kind: type[T], key: bytes = b"") -> T:
    try:
        return msgspec.msgpack.decode(raw, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StagingCorrupt(f"staging record {key!r} does not decode: {exc}") from None
