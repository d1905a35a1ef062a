"""Typed errors of the ``indexer`` package (the daemon, its services and the CLI).

The tree::

    IndexerError
    └── CliError        bad command-line input or an unusable file: one line, exit 2

Errors of lower packages (``sync.SyncError``, ``store.StoreError``...) are reported by the CLI as
one line each; nothing reaches the user as a traceback.
"""

from __future__ import annotations

__all__ = ["CliError", "IndexerError"]


class IndexerError(Exception):
    """Base class of every error raised by the ``indexer`` package."""


class CliError(IndexerError):
    """Bad command-line input; the CLI prints the message on one line and exits 2."""
