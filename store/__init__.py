"""Store: the embedded LevelDB key-value layer (later, the value store and provider registry).

The bottom of the dependency direction ``store <- staging <- sync <- indexer``: it imports none of
the other three packages.
"""

from .errors import StoreClosed, StoreCorrupted, StoreError, StoreLocked, StoreNotFound
from .index import IndexStore, ProviderRecord, ValueRecord, value_key
from .kv import KV, Tuning, Write

__all__ = [
    "KV",
    "IndexStore",
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
