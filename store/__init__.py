"""Store: the key-value layer (``KVStore``: LevelDB ``KV``, in-memory ``MemoryKV``), the value
store and the provider registry (``IndexStore``), and the index's background compaction.

The bottom of the dependency direction ``store <- staging <- sync <- indexer``: it imports none of
the other three packages.
"""

from .compaction import CompactionProgress
from .errors import StoreClosed, StoreCorrupted, StoreError, StoreLocked, StoreNotFound
from .index import IndexStore, ProviderRecord, ValueRecord, value_key
from .kv import KV, Tuning
from .memory import MemoryKV
from .protocol import Add, AddEach, Discard, KVStore, Write

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
