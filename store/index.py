"""The value store and provider registry, as write plans over one ``KVStore``.

Layout::

    i <multihash>     <vk:8>...      multihash -> its value keys, a sorted member set (protocol.py)
    v <vk:8>          ValueRecord    provider, context ID, metadata
    c <len><provider><context ID>  <vk:8>   the value key allocated to a (provider, context)
    n                 <vk:8>         the last value key allocated
    r <provider>      ProviderRecord addresses, publisher, last ad, extended providers
    g                 <key>          compaction: the next ``i`` key the running sweep examines
    G                 b""            compaction: a context was removed since the sweep started

A value key names one (provider, context), so removing or re-describing a whole context touches
one record: ``remove_value`` deletes ``v`` (and the allocation); the members left dangling are
skipped at read time and dropped by ``compact``.

Rules this module keeps:

- Value keys are allocated (``allocate``): an 8-byte big-endian counter, so a key has five or
  more zero bytes.  Every multihash key's value carries one, and those zeros are what lets
  snappy compress a LevelDB block whose pairs belong to many contexts: with random 8-byte keys
  (a hash of the pair) such a block compresses by less than LevelDB's 12.5% threshold and is
  stored raw, about 7 bytes more per pair (``bench/store.py``).  Allocation is its own small
  batch, written before the ad's writes, under one lock; replaying an ad after a
  crash finds the allocation and reuses it.  A context indexed before allocation existed keeps
  its hashed key (``value_key``), which ``allocate`` adopts.
- Removing a context deletes its allocation too, so re-adding it later gets a fresh value key
  and never revives the multihashes of its earlier life that no sweep has dropped yet.
- Every write method returns ``Write`` tuples instead of writing (``allocate`` aside), so the
  caller can put them in the same batch as the staging change they belong to (an ad is marked
  processed atomically with its last index writes).  Every write is idempotent: replaying a
  batch after a crash changes nothing.  A chunk's multihashes are one ``AddEach`` set operation:
  the caller reads nothing, the store reads each key under its write lock (sorted; see
  ``kv.py`` on the GIL) without building a write per key, and concurrent ads of one multihash
  never lose each other's value keys.
- The hashed forms (``value_key``, ``put_value``, ``remove_context``) write plans with no read
  at all, for tools and tests that build an index directly; they keep the known limit that
  re-adding a removed pair revives its undropped multihashes.  Ingest uses the allocated form.
- A lookup is one point read (the usual multihash has one value key): LevelDB's bloom filters
  answer an unknown multihash without touching a data block.  What a member set resolves to (its
  live value records) is cached per ``kv.version``: any write empties the cache, so a lookup
  never returns a removed context.  The cached answer itself is returned (``Records``, a list
  that refuses changes), never a copy: a copy per lookup touched every record again (about a
  tenth of a random lookup's time in ``bench/store.py``).  The point read is the backend's raw
  one when it offers it (``KV.point_reader``: no wrapper call per lookup); an error from it is
  asked again of ``get``, which raises the store's own error (``StoreClosed`` after close).
- A ``ProviderRecord`` only grows fields with defaults, so records written by an older version
  still decode (``context_override`` was added so).
- A provider is removed in bounded batches (``remove_provider_batch``): each reads at most
  ``limit`` of its allocations and deletes them with their value records, so removing a provider
  of millions of contexts never holds more than one batch; its multihashes are left dangling for
  ``compact``.  Contexts written by the hashed form (no allocation) are not found so.
- ``IndexStore`` is typed against the ``KVStore`` protocol (generic over the backend, LevelDB's
  ``KV`` by default), and works on ``MemoryKV`` the same.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, NoReturn, TypeVar

import msgspec

from store.compaction import CompactionProgress, Sweep, compact
from store.kv import KV
from store.protocol import AddEach, KVStore, Write

__all__ = ["COUNTER_KEY", "IndexStore", "ProviderRecord", "Records", "ValueRecord", "value_key"]

VK = 8  # bytes of a value key
CACHE_LIMIT = 100_000  # value records cached at most (then the cache starts afresh)


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
    # The ``Override`` flag of each context in ``context_extended`` (same keys: base64 of the
    # ContextID).  Records written before it existed decode with none: no context overrides.
    context_override: dict[str, bool] = msgspec.field(default_factory=dict)
    # When ``last_error`` was recorded (Unix seconds), and whether the provider is inactive (its
    # publisher silent past the polling bound); records written before either decode without.
    last_error_time: float | None = None
    inactive: bool = False
    # Set while the indexer is frozen (storetheindex's registry ``FrozenAt``/``FrozenAtTime``):
    # the last ad at the freeze (None: none yet) and its time (the freeze's time without one).
    frozen_at: bytes | None = None
    frozen_at_time: float | None = None

    def overrides(self, context_key: str) -> bool:
        """Whether the context's extended providers replace the chain-level ones for it."""
        return context_key in self.context_extended and self.context_override.get(
            context_key, False
        )


def value_key(provider: bytes, context_id: bytes) -> bytes:
    return hashlib.sha256(bytes([len(provider)]) + provider + context_id).digest()[:VK]


def _record_key(vk: bytes) -> bytes:
    return b"v" + vk


def _allocation_key(provider: bytes, context_id: bytes) -> bytes:
    return b"c" + bytes([len(provider)]) + provider + context_id


COUNTER_KEY = b"n"
_allocating = threading.Lock()  # one allocation at a time, whichever IndexStore asks


SWEEP = Sweep(prefix=b"i", width=VK, cursor_key=b"g", pending_key=b"G", record_key=_record_key)

_enc = msgspec.msgpack.Encoder()
_value_dec = msgspec.msgpack.Decoder(ValueRecord)
_provider_dec = msgspec.msgpack.Decoder(ProviderRecord)

if TYPE_CHECKING:  # the default lets ``IndexStore`` alone mean ``IndexStore[KV]``
    from typing_extensions import TypeVar as DefaultTypeVar

    Backend = DefaultTypeVar("Backend", bound=KVStore, default=KV)
else:
    Backend = TypeVar("Backend", bound=KVStore)


class Records(list[ValueRecord]):
    """What ``IndexStore.lookup`` answers: a list that refuses every change (``TypeError``), so
    the one cached for a member set is handed to every lookup of it without a copy."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("lookup records are read-only (cached and shared): copy them to change")

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


_NONE = Records()  # no live record


class _Cache:
    """What lookups read at one ``kv.version``: each member set (an ``i`` key's whole value, so
    also each single value key) to its live records (``_NONE``: none is left), swapped whole,
    never patched; and the backend's raw point read, when it has one (``KV.point_reader``)."""

    __slots__ = ("read", "records", "version")

    def __init__(self) -> None:
        self.version = -1
        self.records: dict[bytes, Records] = {}
        self.read: Callable[[bytes], bytes | None] | None = None


@dataclass(frozen=True)
class IndexStore(Generic[Backend]):
    kv: Backend
    _cache: _Cache = field(default_factory=_Cache, init=False, repr=False, compare=False)

    # --- write plans -----------------------------------------------------------------------

    @staticmethod
    def put_multihashes(vk: bytes, multihashes: Iterable[bytes]) -> list[Write]:
        return [(b"i", AddEach(vk, list(multihashes)))]

    @staticmethod
    def multihash_key(mh: bytes) -> bytes:
        """The key under which a multihash's value keys are stored."""
        return b"i" + mh

    @staticmethod
    def put_value(provider: bytes, context_id: bytes, metadata: bytes) -> list[Write]:
        vk = value_key(provider, context_id)
        return [(b"v" + vk, _enc.encode(ValueRecord(provider, context_id, metadata)))]

    @staticmethod
    def remove_context(provider: bytes, context_id: bytes) -> list[Write]:
        return [(b"v" + value_key(provider, context_id), None), (SWEEP.pending_key, b"")]

    @staticmethod
    def put_value_at(vk: bytes, provider: bytes, context_id: bytes, metadata: bytes) -> list[Write]:
        """The value record of an allocated value key ``vk``."""
        return [(b"v" + vk, _enc.encode(ValueRecord(provider, context_id, metadata)))]

    @staticmethod
    def remove_value(vk: bytes, provider: bytes, context_id: bytes) -> list[Write]:
        """Remove the (provider, context) ``vk`` names, and its allocation."""
        return [
            (b"v" + vk, None),
            (_allocation_key(provider, context_id), None),
            (SWEEP.pending_key, b""),
        ]

    def remove_provider_batch(self, provider: bytes, limit: int) -> int:
        """Remove at most ``limit`` of the provider's allocated contexts (values and
        allocations) in one batch; the number removed (0: none is left).  Memory is bounded by
        ``limit``: call it until it answers 0 (``DELETE /removeprovider``)."""
        prefix = _allocation_key(provider, b"")
        found: list[tuple[bytes, bytes]] = []
        for key, vk in self.kv.scan(prefix):
            found.append((key[len(prefix) :], vk))
            if len(found) >= limit:
                break
        writes: list[Write] = []
        for context_id, vk in found:
            writes += self.remove_value(vk, provider, context_id)
        if writes:
            self.kv.write_batch(writes)
        return len(found)

    @staticmethod
    def remove_provider_record(provider: bytes) -> list[Write]:
        """Drop the provider's registry record."""
        return [(b"r" + provider, None)]

    def has_contexts(self, provider: bytes) -> bool:
        """Does the provider hold any allocated context?"""
        return any(True for _ in self.kv.scan(_allocation_key(provider, b"")))

    # --- value key allocation ----------------------------------------------------------------

    def allocated(self, provider: bytes, context_id: bytes) -> bytes | None:
        """The value key allocated to (provider, context), if any."""
        return self.kv.get(_allocation_key(provider, context_id))

    def allocate(self, provider: bytes, context_id: bytes) -> bytes:
        """The value key of (provider, context), allocated and written now if it has none."""
        key = _allocation_key(provider, context_id)
        vk = self.kv.get(key)
        if vk is not None:
            return vk
        with _allocating:
            vk = self.kv.get(key)
            if vk is not None:
                return vk
            hashed = value_key(provider, context_id)
            if self.kv.get(b"v" + hashed) is not None:  # indexed before allocation existed
                vk = hashed
                writes: list[Write] = [(key, vk)]
            else:
                last = self.kv.get(COUNTER_KEY)
                vk = (1 if last is None else int.from_bytes(last, "big") + 1).to_bytes(VK, "big")
                writes = [(COUNTER_KEY, vk), (key, vk)]
            self.kv.write_batch(writes)
            return vk

    @staticmethod
    def put_provider(provider: bytes, record: ProviderRecord) -> list[Write]:
        return [(b"r" + provider, _enc.encode(record))]

    # --- reads -----------------------------------------------------------------------------

    def provider(self, provider: bytes) -> ProviderRecord | None:
        raw = self.kv.get(b"r" + provider)
        return None if raw is None else _provider_dec.decode(raw)

    def value(self, vk: bytes) -> ValueRecord | None:
        raw = self.kv.get(b"v" + vk)
        return None if raw is None else _value_dec.decode(raw)

    def lookup(self, multihash: bytes) -> list[ValueRecord]:
        """Every live (provider, context) record of a multihash; dangling value keys are skipped.

        One point read and one cache hit: what the member set resolves to is cached whole, and
        that cached ``Records`` (read-only) is what is returned: no copy per lookup.
        """
        cache = self._cache
        version = self.kv.version  # read before anything it guards
        records = cache.records
        if cache.version != version:
            records = cache.records = {}
            cache.version = version
        key = b"i" + multihash
        try:
            raw = (cache.read or self._reader())(key)
        except Exception:  # noqa: BLE001 -- the raw read's, untranslated: get raises the store's
            raw = self.kv.get(key)
        if raw is None:
            return _NONE
        hit = records.get(raw)
        return hit if hit is not None else self._resolve(records, raw)

    def lookup_many(self, multihashes: Iterable[bytes]) -> list[list[ValueRecord]]:
        """``lookup`` of each multihash, in order."""
        lookup = self.lookup
        return [lookup(mh) for mh in multihashes]

    def _reader(self) -> Callable[[bytes], bytes | None]:
        point_reader = getattr(self.kv, "point_reader", None)
        read: Callable[[bytes], bytes | None] = (
            self.kv.get if point_reader is None else point_reader()
        )
        self._cache.read = read
        return read

    def _resolve(self, records: dict[bytes, Records], raw: bytes) -> Records:
        """The live records of member set ``raw``, read and remembered in ``records``."""
        if len(raw) == VK:
            record = self.value(raw)
            hit = _NONE if record is None else Records((record,))
        else:
            out: list[ValueRecord] = []
            for at in range(0, len(raw), VK):
                vk = raw[at : at + VK]
                part = records.get(vk)
                out.extend(part if part is not None else self._resolve(records, vk))
            hit = Records(out)
        if len(records) >= CACHE_LIMIT:
            records.clear()
        records[raw] = hit
        return hit

    def providers(self) -> Iterator[tuple[bytes, ProviderRecord]]:
        """Every provider in the registry (peer ID bytes, record), in key order."""
        for key, raw in self.kv.scan(b"r"):
            yield key[1:], _provider_dec.decode(raw)

    def count_keys(self) -> int:
        """Index entries, one per (multihash, value key); dangling ones count until compacted."""
        return sum(len(raw) // VK for _, raw in self.kv.scan(b"i"))

    # --- maintenance -----------------------------------------------------------------------

    def compact(self, budget: int) -> CompactionProgress:
        """One step of the background sweep that drops dangling value keys (``compaction.py``)."""
        return compact(self.kv, SWEEP, budget)
