"""Store: the key-value layer (``KVStore``: LevelDB ``KV``, in-memory ``MemoryKV``), the value
store and the provider registry (``IndexStore``), and the index's background compaction.

The bottom of the dependency direction ``store <- staging <- sync <- indexer``: it imports none of
the other three packages.
"""

from store.compaction import CompactionProgress
from store.errors import StoreClosed, StoreCorrupted, StoreError, StoreLocked, StoreNotFound
from store.index import IndexStore, ProviderRecord, ValueRecord, value_key
from store.kv import KV, Tuning
from store.memory import MemoryKV
from store.protocol import Add, AddEach, Discard, KVStore, Write

__all__ = [
    "KV",
    "Add",
    "AddEach",
    "CompactionProgress",
    "Discard",
    "IndexStore",
    "KVStore",
    "MemoryKV",
    "ProviderRecord",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreLocked",
    "StoreNotFound",
    "Tuning",
    "ValueRecord",
    "Write",
    "value_key",
]
