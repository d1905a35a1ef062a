"""Typed errors of the ``staging`` package.

The tree::

    StagingError
    └── StagingCorrupt   a staging record that does not decode (written by a newer version?)
"""

from __future__ import annotations

__all__ = ["StagingCorrupt", "StagingError"]


class StagingError(Exception):
    """Base class of every error raised by the ``staging`` package."""


class StagingCorrupt(StagingError):
    """A staging record that cannot be decoded."""
