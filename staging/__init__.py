"""Staging: the persistent per-provider stacks of advertisements waiting to be indexed.

Only its error types exist so far; the staging area itself is issue 4.  It may import ``store``
and nothing else of this project.
"""

from .errors import StagingCorrupt, StagingError

__all__ = ["StagingCorrupt", "StagingError"]
