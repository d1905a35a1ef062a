"""The index on a cluster: the ``IndexBackend`` seam, over LevelDB and over a Redis Cluster.

Scale-out puts the value store and each provider's state on the Redis Cluster protocol (Valkey,
Redis; Apache Kvrocks serves the same protocol from disk, untested here).  The seam is the
``IndexStore`` write plans and reads, not the byte-level ``KVStore``: a cluster has no
cross-slot batch, no cheap ordered global scan and no global version.

Rules this package keeps (each module states its own; ``protocol.py`` the contract):

- ``IndexBackend`` (``protocol.py``) is what ingest and find need; ``LevelDBBackend``
  (``local.py``) implements it over today's ``IndexStore`` unchanged, ``ClusterBackend``
  (``redis_cluster.py``) over a cluster through coredis.  One conformance suite
  (``tests/store/cluster``) runs against both.
- Index entries are idempotent, add-only set-adds, not fenced.  Everything else of a provider
  lives in its hash slot (``keys.py``) and is written by one script that checks the provider's
  fence epoch; an ad's final writes are one such script, which also refuses an ad whose
  previous ad is not done.  A publisher's state lives in its own slot (``{pub:<publisher>}``),
  fenced by the publisher's epoch the same way.  Control writes wait for a replica (``WAIT``).
- No coredis (or socket) exception leaves the package: ``StoreUnavailable`` is transient,
  every other ``StoreError`` permanent.
- coredis is imported on first use of ``ClusterBackend``, ``open_cluster`` or ``parse_url``
  (PEP 562): a single node, and every command that never names a cluster, does not pay the
  ~0.15 s it costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from store.cluster.local import LevelDBBackend
from store.cluster.protocol import (
    AdCommit,
    Announce,
    CommitOutcome,
    DoneMark,
    IndexBackend,
    PutValue,
    RemoveValue,
    ValueWrite,
)

if TYPE_CHECKING:
    from store.cluster.redis_cluster import ClusterBackend, open_cluster, parse_url

__all__ = [
    "AdCommit",
    "Announce",
    "ClusterBackend",
    "CommitOutcome",
    "DoneMark",
    "IndexBackend",
    "LevelDBBackend",
    "PutValue",
    "RemoveValue",
    "ValueWrite",
    "open_cluster",
    "parse_url",
]

_LAZY = frozenset({"ClusterBackend", "open_cluster", "parse_url"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from store.cluster import redis_cluster

        return getattr(redis_cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
