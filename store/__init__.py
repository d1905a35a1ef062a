"""Store: the key-value layer (``KVStore``: LevelDB ``KV``, in-memory ``MemoryKV``), the value
store and the provider registry (``IndexStore``), and the index's background compaction.

The bottom of the dependency direction ``store <- staging <- sync <- indexer``: it imports none of
the other three packages.
"""

from store.compaction import CompactionProgress
from store.errors import (
    AdOutOfOrder,
    NotReplicated,
    StoreClosed,
    StoreCorrupted,
    StoreError,
    StoreFenced,
    StoreLocked,
    StoreNotFound,
    StoreRejected,
    StoreUnavailable,
)
from store.index import IndexStore, ProviderRecord, ValueRecord, value_key
from store.kv import KV, Tuning
from store.memory import MemoryKV
from store.protocol import Add, AddEach, Discard, KVStore, Write

__all__ = [
    "KV",
    "AdOutOfOrder",
    "Add",
    "AddEach",
    "CompactionProgress",
    "Discard",
    "IndexStore",
    "KVStore",
    "MemoryKV",
    "NotReplicated",
    "ProviderRecord",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreFenced",
    "StoreLocked",
    "StoreNotFound",
    "StoreRejected",
    "StoreUnavailable",
    "Tuning",
    "ValueRecord",
    "Write",
    "value_key",
]
