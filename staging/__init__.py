"""Staging: the persistent per-provider stacks of advertisements waiting to be indexed.

It may import ``store`` and nothing else of this project.  See ``area.py`` for the rules and
``keys.py`` for the key layout.
"""

from staging.area import Entry, StagingArea
from staging.errors import StagingCorrupt, StagingError
from staging.records import (
    AnnounceRecord,
    DoneRecord,
    PublisherRecord,
    StackRecord,
    StagedAd,
    WalkRecord,
)

__all__ = [
    "AnnounceRecord",
    "DoneRecord",
    "Entry",
    "PublisherRecord",
    "StackRecord",
    "StagedAd",
    "StagingArea",
    "StagingCorrupt",
    "StagingError",
    "WalkRecord",
]
