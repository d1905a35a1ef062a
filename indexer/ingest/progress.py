"""Live progress of syncs and workers, for the admin API, ``--wait`` and the metrics.

Rules this module keeps:

- Nothing here is durable: the durable state is the staging area; this is what a running daemon
  can say on top of it (how far a sync walked, what a worker applied since the sync started).
- A publisher's ``SyncProgress`` is replaced when a new sync of it is requested, so a client
  that asked for a sync watches that sync and not an older one.
- ``IngestObserver`` is the seam the metrics plug into; ``NullObserver`` does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["IngestObserver", "NullObserver", "SyncProgress"]


@dataclass
class SyncProgress:
    """One requested sync of one publisher and what came of it so far."""

    requested: float
    depth: int = 0
    resync: bool = False
    started: float | None = None
    finished: float | None = None
    walked: int = 0  # ads walked (fetched and verified)
    staged: int = 0  # ads the commit kept (new to this indexer)
    processed: int = 0  # this publisher's ads applied by workers since the request
    indexed: int = 0  # multihashes written for them
    ad_errors: int = 0  # ads the walk found invalid (recorded processed-with-error)
    error: str | None = None  # why the sync failed, or the newest invalid ad's error

    @property
    def running(self) -> bool:
        return self.finished is None

    def as_dict(self) -> dict[str, object]:
        return {
            "requested": self.requested,
            "depth": self.depth,
            "resync": self.resync,
            "started": self.started,
            "finished": self.finished,
            "running": self.running,
            "walked": self.walked,
            "staged": self.staged,
            "processed": self.processed,
            "indexed": self.indexed,
            "ad_errors": self.ad_errors,
            "error": self.error,
        }


class IngestObserver(Protocol):
    """What the ingester reports as it goes (the metrics implement it)."""

    def sync_finished(self, progress: SyncProgress, ok: bool) -> None: ...

    def ad_processed(self, ok: bool) -> None: ...

    def multihashes_indexed(self, count: int) -> None: ...


class NullObserver:
    def sync_finished(self, progress: SyncProgress, ok: bool) -> None:
        pass

    def ad_processed(self, ok: bool) -> None:
        pass

    def multihashes_indexed(self, count: int) -> None:
        pass
