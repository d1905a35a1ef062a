"""Typed errors of the ``store`` package.

plyvel's exceptions are translated here, at the adapter boundary; none escapes the package.

The tree::

    StoreError
    ├── StoreLocked      another process (usually the running daemon) holds the database lock
    ├── StoreNotFound    the database does not exist and was not to be created
    ├── StoreCorrupted   LevelDB reports corruption
    └── StoreClosed      the database was used after close()
"""

from __future__ import annotations

__all__ = ["StoreClosed", "StoreCorrupted", "StoreError", "StoreLocked", "StoreNotFound"]


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
