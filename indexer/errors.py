"""Typed errors of the ``indexer`` package (the daemon, its services and the CLI).

The tree::

    IndexerError
    ├── CliError        bad command-line input or an unusable file: one line, exit 2
    └── SyncAborted     the ingester ended a sync; the next announce or poll tries again
        ├── SyncTimedOut    it ran past ``sync_timeout``
        └── SyncPreempted   it received nothing for ``stall_after`` seconds while an
                            announce of the same publisher with other addresses waited

Errors of lower packages (``sync.SyncError``, ``store.StoreError``...) are reported by the CLI as
one line each; nothing reaches the user as a traceback.
"""

from __future__ import annotations

__all__ = ["CliError", "IndexerError", "SyncAborted", "SyncPreempted", "SyncTimedOut"]


class IndexerError(Exception):
    """Base class of every error raised by the ``indexer`` package."""


class CliError(IndexerError):
    """Bad command-line input; the CLI prints the message on one line and exits 2."""


class SyncAborted(IndexerError):
    """The ingester ended a sync (nothing of it was staged; the cursor did not move)."""


class SyncTimedOut(SyncAborted):
    """A sync ran past the whole-sync deadline (``sync_timeout``)."""


class SyncPreempted(SyncAborted):
    """A stalled sync gave way to an announce of the same publisher with other addresses."""
