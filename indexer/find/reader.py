"""``IndexReader``: what find and delegated routing read of the index, as async operations.

Find and routing read through this seam only, so one find server answers from a single node's
``store.IndexStore`` or from a cluster's ``store.cluster.IndexBackend`` alike.  ``as_reader``
turns either (or a reader) into a reader.

Rules this module keeps:

- ``lookup``/``lookup_many`` return the live value records of each multihash (dangling value keys
  skipped), in the index's value-key order; ``lookup_many`` answers in request order, one list
  per multihash, and is the one call a batch makes (on a cluster: pipelined round trips).
- ``registry`` gives, for each provider asked, its registry record with its base58 peer ID, or
  None when it has none; it may serve a cached record.  ``provider``/``providers`` read the
  registry uncached (``/providers``, ``/providers/{id}``).
- ``StoreReader`` (one node) keeps today's semantics exactly: registry records are cached by
  ``ProviderCache`` for one ``kv.version`` (any write empties it, so nothing stale is served),
  reads are the store's synchronous ones (no thread hop) except a batch of more than
  ``thread_batch`` multihashes and the full registry listing, which run in a worker thread.
- ``BackendReader`` (a cluster) caches registry records for at most ``ttl`` seconds of its
  ``clock`` (the backend caches value records for its own ``record_ttl``): a context or provider
  another node removed stops being served within those bounds.  Registry misses of one request
  are read concurrently.
- ``lags`` is each provider's count of staged ads not yet applied (``ProviderInfo.Lag``), only
  those with some; on one node it reads the staging area in the same database (the listing in a
  worker thread), on a cluster it is empty (each node stages its own: no lag is reported).
- ``stats`` is ``/stats``.  On one node it is computed in a worker thread (``count_keys``, the
  database's size on disk over 40, as storetheindex estimates).  A cluster has no cheap global
  key count nor a disk to measure: both fields are ``UNKNOWN`` (-1), the API's "unknown" form.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from indexer.find.model import Stats
from staging import StagingArea
from store import IndexStore, ProviderRecord, ValueRecord
from store.cluster import IndexBackend
from sync import PeerId

__all__ = [
    "UNKNOWN",
    "UNKNOWN_STATS",
    "BackendReader",
    "IndexReader",
    "Known",
    "ProviderCache",
    "StoreReader",
    "as_reader",
]

_CACHE_MAX = 100_000
_AVG_MH_SIZE = 40
# Batches larger than this are looked up in a worker thread.  Smaller ones run inline: threads
# fighting the event loop for the GIL made 100-multihash batches 2.5x slower (bench/find.py).
THREAD_BATCH = 1024
UNKNOWN = -1
UNKNOWN_STATS = Stats(entries_estimate=UNKNOWN, entries_count=UNKNOWN)

Known = tuple[str, ProviderRecord] | None  # (base58 peer ID, registry record); None: no record


def _known(raw: bytes, record: ProviderRecord | None) -> Known:
    return None if record is None else (str(PeerId(raw)), record)


class IndexReader(Protocol):
    """The index as find and routing read it (``StoreReader``, ``BackendReader``)."""

    async def lookup(self, multihash: bytes) -> Sequence[ValueRecord]: ...

    async def lookup_many(
        self, multihashes: Sequence[bytes]
    ) -> Sequence[Sequence[ValueRecord]]: ...

    async def registry(self, providers: Collection[bytes]) -> Mapping[bytes, Known]: ...

    async def provider(self, provider: bytes) -> ProviderRecord | None: ...

    async def providers(self) -> Sequence[tuple[bytes, ProviderRecord]]: ...

    async def stats(self) -> Stats: ...

    async def lags(self, only: bytes | None = None) -> Mapping[bytes, int]: ...


@dataclass
class ProviderCache:
    """Registry records and base58 IDs read at one ``kv.version``; swapped whole, never patched."""

    index: IndexStore
    _current: tuple[int, dict[bytes, Known]] = (-1, {})

    def get(self, raw: bytes) -> Known:
        version = self.index.kv.version  # read before anything it guards
        seen, records = self._current
        if seen != version or len(records) > _CACHE_MAX:
            records = {}
            self._current = (version, records)
        if raw not in records:
            records[raw] = _known(raw, self.index.provider(raw))
        return records[raw]


def _disk_size(index: IndexStore) -> int:
    total = 0
    for path in index.kv.path.iterdir():
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:  # a compaction removed it meanwhile
            continue
    return total


@dataclass
class StoreReader:
    """An ``IndexReader`` over one node's ``IndexStore``."""

    index: IndexStore
    thread_batch: int = THREAD_BATCH
    cache: ProviderCache = field(init=False)

    def __post_init__(self) -> None:
        self.cache = ProviderCache(self.index)

    async def lookup(self, multihash: bytes) -> list[ValueRecord]:
        return self.index.lookup(multihash)

    async def lookup_many(self, multihashes: Sequence[bytes]) -> list[list[ValueRecord]]:
        if len(multihashes) > self.thread_batch:
            return await trio.to_thread.run_sync(self.index.lookup_many, multihashes)
        return self.index.lookup_many(multihashes)

    async def registry(self, providers: Collection[bytes]) -> dict[bytes, Known]:
        get = self.cache.get
        return {raw: get(raw) for raw in providers}

    async def provider(self, provider: bytes) -> ProviderRecord | None:
        return self.index.provider(provider)

    async def providers(self) -> list[tuple[bytes, ProviderRecord]]:
        return await trio.to_thread.run_sync(lambda: list(self.index.providers()))

    def compute_stats(self) -> Stats:
        count = self.index.count_keys()
        return Stats(entries_estimate=_disk_size(self.index) // _AVG_MH_SIZE, entries_count=count)

    async def stats(self) -> Stats:
        return await trio.to_thread.run_sync(self.compute_stats)

    def compute_lags(self, only: bytes | None = None) -> dict[bytes, int]:
        staging = StagingArea(self.index.kv)
        providers = [only] if only is not None else staging.providers()
        lags = {p: sum(stack.count for _, stack in staging.stacks(p)) for p in providers}
        return {p: n for p, n in lags.items() if n}

    async def lags(self, only: bytes | None = None) -> dict[bytes, int]:
        if only is not None:
            return self.compute_lags(only)
        return await trio.to_thread.run_sync(self.compute_lags)


@dataclass
class BackendReader:
    """An ``IndexReader`` over any ``IndexBackend`` (a cluster's), registry cached ``ttl`` s."""

    backend: IndexBackend
    ttl: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _records: dict[bytes, tuple[float, Known]] = field(default_factory=dict, init=False)

    async def lookup(self, multihash: bytes) -> list[ValueRecord]:
        return await self.backend.lookup(multihash)

    async def lookup_many(self, multihashes: Sequence[bytes]) -> list[list[ValueRecord]]:
        return await self.backend.lookup_many(multihashes)

    async def registry(self, providers: Collection[bytes]) -> dict[bytes, Known]:
        now = self.clock()
        out: dict[bytes, Known] = {}
        missing = []
        for raw in providers:
            hit = self._records.get(raw)
            if hit is not None and hit[0] > now:
                out[raw] = hit[1]
            else:
                missing.append(raw)
        if not missing:
            return out
        fetched: dict[bytes, ProviderRecord | None] = {}

        async def read(raw: bytes) -> None:
            fetched[raw] = await self.backend.provider(raw)

        if len(missing) == 1:
            await read(missing[0])
        else:
            async with trio.open_nursery() as nursery:
                for raw in missing:
                    nursery.start_soon(read, raw)
        if len(self._records) + len(missing) > _CACHE_MAX:
            self._records.clear()
        expires = now + self.ttl
        for raw in missing:
            out[raw] = known = _known(raw, fetched[raw])
            if self.ttl > 0:
                self._records[raw] = (expires, known)
        return out

    async def provider(self, provider: bytes) -> ProviderRecord | None:
        return await self.backend.provider(provider)

    async def providers(self) -> list[tuple[bytes, ProviderRecord]]:
        return await self.backend.providers()

    async def stats(self) -> Stats:
        return UNKNOWN_STATS

    async def lags(self, only: bytes | None = None) -> dict[bytes, int]:
        return {}  # a node's staged ads are its own: the cluster reports no lag


def as_reader(index: IndexStore | IndexReader) -> IndexReader:
    """``index`` as an ``IndexReader``: an ``IndexStore`` is wrapped in a ``StoreReader``."""
    return StoreReader(index) if isinstance(index, IndexStore) else index
