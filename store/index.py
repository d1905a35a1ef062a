"""The value store and provider registry, as write plans over the one LevelDB.

Layout (issue 5 tunes it; the read side builds on it)::

    i <multihash> <value key:8>   b""            multihash -> value keys (one per provider+context)
    v <value key:8>               ValueRecord    provider, context ID, metadata
    r <provider>                  ProviderRecord addresses, publisher, last ad, extended providers

The value key is the first 8 bytes of sha2-256(len(provider) || provider || context ID), so
removing or re-describing a whole context touches one record: ``remove_context`` deletes ``v``;
the ``i`` keys left dangling are skipped at read time (issue 5 adds background compaction).

Rules: every write method returns ``Write`` tuples instead of writing, so the caller can put them
in the same batch as the staging change they belong to (an ad is marked processed atomically with
its last index writes).  Every write is idempotent: replaying a batch after a crash changes
nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec

from .kv import KV, Write

__all__ = ["IndexStore", "ProviderRecord", "ValueRecord", "value_key"]


class ValueRecord(msgspec.Struct, frozen=True):
    provider: bytes
    context_id: bytes
    metadata: bytes


class ExtendedProviderRecord(msgspec.Struct, frozen=True):
    id: str
    addresses: list[str]
    metadata: bytes


class ProviderRecord(msgspec.Struct, frozen=True):
    addresses: list[str] = msgspec.field(default_factory=list)
    publisher: bytes | None = None
    publisher_addrs: list[str] = msgspec.field(default_factory=list)
    last_ad: bytes | None = None
    last_ad_time: float | None = None
    extended: list[ExtendedProviderRecord] = msgspec.field(default_factory=list)
    extended_override: bool = False
    context_extended: dict[str, list[ExtendedProviderRecord]] = msgspec.field(default_factory=dict)
    last_error: str | None = None


def value_key(provider: bytes, context_id: bytes) -> bytes:
    return hashlib.sha256(bytes([len(provider)]) + provider + context_id).digest()[:8]


_enc = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class IndexStore:
    kv: KV

    # --- write plans -----------------------------------------------------------------------

    @staticmethod
    def put_multihashes(vk: bytes, multihashes: Iterable[bytes]) -> list[Write]:
        return [(b"i" + mh + vk, b"") for mh in multihashes]

    @staticmethod
    def put_value(provider: bytes, context_id: bytes, metadata: bytes) -> list[Write]:
        vk = value_key(provider, context_id)
        return [(b"v" + vk, _enc.encode(ValueRecord(provider, context_id, metadata)))]

    @staticmethod
    def remove_context(provider: bytes, context_id: bytes) -> list[Write]:
        return [(b"v" + value_key(provider, context_id), None)]

    @staticmethod
    def put_provider(provider: bytes, record: ProviderRecord) -> list[Write]:
        return [(b"r" + provider, _enc.encode(record))]

    # --- reads -----------------------------------------------------------------------------

    def provider(self, provider: bytes) -> ProviderRecord | None:
        raw = self.kv.get(b"r" + provider)
        return None if raw is None else msgspec.msgpack.decode(raw, type=ProviderRecord)

    def value(self, vk: bytes) -> ValueRecord | None:
        raw = self.kv.get(b"v" + vk)
        return None if raw is None else msgspec.msgpack.decode(raw, type=ValueRecord)

    def lookup(self, multihash: bytes) -> list[ValueRecord]:
        """Every live (provider, context) record of a multihash; dangling keys are skipped."""
        prefix = b"i" + multihash
        out = []
        for key, _ in self.kv.scan(prefix):
            vk = key[len(prefix) :]
            if len(vk) == 8 and (record := self.value(vk)) is not None:
                out.append(record)
        return out

    def providers(self) -> Iterator[tuple[bytes, ProviderRecord]]:
        """Every provider in the registry (peer ID bytes, record), in key order."""
        for key, raw in self.kv.scan(b"r"):
            yield key[1:], msgspec.msgpack.decode(raw, type=ProviderRecord)

    def count_keys(self) -> int:
        return sum(1 for _ in self.kv.scan(b"i"))
