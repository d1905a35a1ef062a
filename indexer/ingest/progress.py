"""Live progress of syncs and workers, for the admin API, ``--wait`` and the metrics.

Rules this module keeps:

- Nothing here is durable: the durable state is the staging area; this is what a running daemon
  can say on top of it (how far a sync walked, what a worker applied since the sync started).
- A publisher's ``SyncProgress`` is replaced when a new sync of it is requested, so a client
  that asked for a sync watches that sync and not an older one.
- ``SyncHistory`` keeps the newest ``SyncProgress`` of at most ``limit`` publishers (the oldest
  go first, never one whose sync is running), so an announce flood cannot grow it.
- ``IngestObserver`` is the seam the metrics plug into; ``NullObserver`` does nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

__all__ = ["IngestObserver", "NullObserver", "SyncHistory", "SyncProgress"]


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


class SyncHistory(OrderedDict[bytes, SyncProgress]):
    """The newest sync progress per publisher, at most ``limit`` publishers (oldest go)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: bytes, value: SyncProgress) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            oldest = next(iter(self))
            if self[oldest].running:  # never forget a sync in flight
                self.move_to_end(oldest)
                if all(p.running for p in self.values()):
                    break
                continue
            del self[oldest]


class IngestObserver(Protocol):
    """What the ingester reports as it goes (the metrics implement it)."""

    def sync_finished(self, progress: SyncProgress, ok: bool) -> None: ...

    def ad_processed(self, ok: bool) -> None: ...

    def multihashes_indexed(self, count: int) -> None: ...

    def ad_ingested(self, provider: bytes, multihashes: int, seconds: float) -> None:
        """A provider's ad was processed: its multihashes and the time its worker took."""


class NullObserver:
    def sync_finished(self, progress: SyncProgress, ok: bool) -> None:
        pass

    def ad_processed(self, ok: bool) -> None:
        pass

    def multihashes_indexed(self, count: int) -> None:
        pass

    def ad_ingested(self, provider: bytes, multihashes: int, seconds: float) -> None:
        pass
