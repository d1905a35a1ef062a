"""Typed errors of the ``store`` package.

plyvel's and coredis's exceptions are translated at the adapter boundary (``store/kv.py``,
``store/cluster/redis_cluster.py``); none escapes the package.  Transient or permanent is decided
by class: a ``StoreUnavailable`` may succeed if retried (every cluster write is idempotent), any
other ``StoreError`` will not.

The tree::

    StoreError
    ├── StoreLocked      another process (usually the running daemon) holds the database lock
    ├── StoreNotFound    the database does not exist and was not to be created
    ├── StoreCorrupted   LevelDB reports corruption
    ├── StoreClosed      the database was used after close()
    ├── StoreFenced      a write carried a fencing token that is not the provider's (or the
    │                    publisher's) epoch (a stale owner: another node owns it now), or moved
    │                    it backward
    ├── AdOutOfOrder     an ad's final writes came before the previous ad of its chain was done
    ├── StoreRejected    permanent: the cluster refused the command (wrong type, script error)
    └── StoreUnavailable transient: the cluster did not answer (connection, timeout, failover in
        │                progress, redirections that did not settle); retry
        └── NotReplicated  a control write was applied on a primary but no replica acknowledged it
                         in time (``WAIT``): it may be lost in a failover; retry (idempotent)
"""

from __future__ import annotations

__all__ = [
    "AdOutOfOrder",
    "NotReplicated",
    "StoreClosed",
    "StoreCorrupted",
    "StoreError",
    "StoreFenced",
    "StoreLocked",
    "StoreNotFound",
    "StoreRejected",
    "StoreUnavailable",
]


class StoreError(Exception):
    """Base class of every error raised by the ``store`` package."""


class StoreLocked(StoreError):
    """The LevelDB directory is locked by another process."""


class StoreNotFound(StoreError):
    """The LevelDB directory holds no database."""


class StoreCorrupted(StoreError):
    """LevelDB found corruption."""


class StoreClosed(StoreError):
    """The database was used after it was closed."""


class StoreFenced(StoreError):
    """A fenced write carried a token other than its owner's epoch; nothing was written.

    The owner is a provider or a publisher (``provider`` holds its peer ID bytes either way).
    """

    def __init__(self, provider: bytes, token: int, epoch: int) -> None:
        super().__init__(f"fenced: token {token} is not the owner's epoch {epoch}")
        self.provider = provider
        self.token = token
        self.epoch = epoch


class AdOutOfOrder(StoreError):
    """An ad's final writes were refused: the previous ad of its chain is not done."""

    def __init__(self, provider: bytes, ad: bytes, previous: bytes) -> None:
        super().__init__("the previous ad is not done yet")
        self.provider = provider
        self.ad = ad
        self.previous = previous


class StoreRejected(StoreError):
    """Permanent: the cluster refused a command (retrying it will not help)."""


class StoreUnavailable(StoreError):
    """Transient: the cluster did not answer in time, or is failing over; retry."""


class NotReplicated(StoreUnavailable):
    """A control write reached its primary, but no replica acknowledged it within the wait."""
