"""The ingest engine: one sync handler per publisher, one worker per provider, one nursery.

Rules this module keeps:

- ``announce`` (from HTTP, gossipsub, the admin API or the poller) wakes the publisher's
  handler; while a sync runs only the newest pending request is kept.  Each sync's live
  progress (``SyncProgress``) is kept per publisher for the admin API; ``observer`` hears of
  every finished sync and processed ad (the metrics).  Handlers exit when they
  have nothing to do and are started again on the next announce.
- After every commit, and at start-up, every provider with staged work gets a worker unless it has
  one: never two workers for one provider, and work for a busy provider waits in its queue.
- At most ``max_syncs`` syncs and ``max_workers`` workers run at once; the rest wait their turn.
- A worker (``indexer.worker``) pops and applies its provider's ads one at a time, oldest
  first, retrying transient errors and recording permanent ones.
- At start-up, walks a crash left uncommitted are abandoned before anything else runs, then
  every recorded announce whose head is not yet staged is replayed.
- With ``poll_interval`` set, every known publisher is re-checked that often at its last
  addresses (a sync from its signed head: cheap when nothing changed, the walk stops at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from staging import Entry, StagingArea
from store import KV, IndexStore
from sync import Link, PeerId, SyncError
from sync.syncer import SyncResult, sync_publisher
from sync.walker import Policy

from .apply import FetcherFactory
from .progress import IngestObserver, NullObserver, SyncProgress
from .worker import Worker

__all__ = ["IngestConfig", "Ingester", "OwnProviderPolicy"]

log = structlog.get_logger("ingest")


@dataclass(frozen=True)
class IngestConfig:
    segment: int = 2000
    depth_limit: int = 0  # 0: walk until a known ad (any limit leaves older ads unindexed)
    max_entry_blocks: int = 1_000_000
    retry_base: float = 1.0
    retry_max: float = 300.0
    max_attempts: int = 5  # for BlockNotFound / HashMismatch before they count as permanent
    poll_interval: float = 0  # seconds between re-checks of every known publisher; 0: never
    max_syncs: int = 32  # syncs running at once (more wait their turn)
    max_workers: int = 32  # providers whose ads are applied at once
    prefetch: int = 4  # next ads whose first entries block a worker fetches ahead; 0: none


@dataclass(frozen=True)
class OwnProviderPolicy:
    """Publishers publish for themselves, plus any (publisher, provider) pair listed."""

    allowed: frozenset[tuple[bytes, bytes]] = frozenset()

    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        return publisher == provider or (publisher.raw, provider.raw) in self.allowed


@dataclass(frozen=True)
class SyncRequest:
    addrs: list[str]
    head: Link | None
    depth: int | None = None  # None: the configured depth limit
    resync: bool = False


@dataclass
class Ingester:
    kv: KV
    open_fetcher: FetcherFactory
    policy: Policy = field(default_factory=OwnProviderPolicy)
    config: IngestConfig = field(default_factory=IngestConfig)
    clock: Callable[[], float] = time.time
    results: list[SyncResult] = field(default_factory=list)
    observer: IngestObserver = field(default_factory=NullObserver)

    def __post_init__(self) -> None:
        self.staging = StagingArea(self.kv, self.clock)
        self.index = IndexStore(self.kv)
        self._pending: dict[bytes, SyncRequest] = {}
        self._handlers: set[bytes] = set()
        self._workers: set[bytes] = set()
        self._nursery: trio.Nursery | None = None
        self.progress: dict[bytes, SyncProgress] = {}
        self._sync_slots = trio.CapacityLimiter(self.config.max_syncs)
        self._work_slots = trio.CapacityLimiter(self.config.max_workers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        abandoned = self.staging.cleanup_open_walks()
        if abandoned:
            log.info("abandoned walks a crash left open", walks=abandoned)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._wake_workers()
            for publisher, record in self.staging.unsynced_announces():
                log.info("replaying an announce accepted before a restart", head=record.head.hex())
                self.announce(PeerId(publisher), record.addrs, Link(record.head))
            task_status.started()
            while True:
                if self.config.poll_interval <= 0:
                    await trio.sleep_forever()
                await trio.sleep(self.config.poll_interval)
                self.poll_known_publishers()

    def poll_known_publishers(self) -> int:
        """Re-check every publisher the staging area knows, at its last addresses."""
        known = self.staging.known_publishers()
        for publisher, addrs in known:
            if addrs and publisher not in self._pending:
                self.announce(PeerId(publisher), addrs)
        return len(known)

    # --- syncs -----------------------------------------------------------------------------

    def announce(
        self,
        publisher: PeerId,
        addrs: list[str],
        head: Link | None = None,
        *,
        depth: int | None = None,
        resync: bool = False,
    ) -> None:
        """Ask for a sync of ``publisher`` (to ``head``, or to its current signed head)."""
        assert self._nursery is not None, "Ingester.run must be started first"
        if not self.is_syncing(publisher.raw):
            self.progress[publisher.raw] = SyncProgress(self.clock(), depth or 0, resync)
        self._pending[publisher.raw] = SyncRequest(addrs, head, depth, resync)
        if publisher.raw not in self._handlers:
            self._handlers.add(publisher.raw)
            self._nursery.start_soon(self._handler, publisher)

    async def _handler(self, publisher: PeerId) -> None:
        try:
            while (request := self._pending.pop(publisher.raw, None)) is not None:
                progress = self.progress.get(publisher.raw)
                if progress is None or not progress.running:
                    progress = SyncProgress(self.clock(), request.depth or 0, request.resync)
                    self.progress[publisher.raw] = progress
                progress.started = self.clock()

                def walked(count: int, progress: SyncProgress = progress) -> None:
                    progress.walked = count

                try:
                    async with (
                        self._sync_slots,
                        self.open_fetcher(publisher, request.addrs) as fetcher,
                    ):
                        result = await sync_publisher(
                            publisher,
                            request.addrs,
                            fetcher,
                            self.staging,
                            policy=self.policy,
                            head=request.head,
                            segment=self.config.segment,
                            depth_limit=(
                                self.config.depth_limit if request.depth is None else request.depth
                            ),
                            resync=request.resync,
                            on_walked=walked,
                        )
                except SyncError as exc:
                    log.warning("sync failed", publisher=str(publisher), error=str(exc))
                    progress.error, progress.finished = f"{type(exc).__name__}: {exc}", self.clock()
                    self.observer.sync_finished(progress, ok=False)
                    continue
                progress.walked, progress.staged = result.walked, sum(result.staged.values())
                progress.finished = self.clock()
                self.observer.sync_finished(progress, ok=True)
                self.results.append(result)
                log.info(
                    "synced",
                    publisher=str(publisher),
                    walked=result.walked,
                    staged=result.staged,
                    stop=result.stop.name if result.stop else None,
                )
                self._wake_workers()
        finally:
            self._handlers.discard(publisher.raw)

    # --- workers ---------------------------------------------------------------------------

    def _wake_workers(self) -> None:
        assert self._nursery is not None
        for provider in self.staging.providers():
            if provider not in self._workers:
                self._workers.add(provider)
                self._nursery.start_soon(self._worker, provider)

    async def _worker(self, provider: bytes) -> None:
        worker = Worker(
            provider,
            self.staging,
            self.index,
            self.open_fetcher,
            self.config,
            self._work_slots,
            self._indexed,
            self._processed,
            self.clock,
        )
        try:
            await worker.run()
        finally:
            self._workers.discard(provider)

    def _indexed(self, entry: Entry, count: int) -> None:
        self.observer.multihashes_indexed(count)
        progress = self.progress.get(entry.stack.publisher)
        if progress is not None:
            progress.indexed += count

    def _processed(self, entry: Entry, ok: bool) -> None:
        self.observer.ad_processed(ok)
        progress = self.progress.get(entry.stack.publisher)
        if progress is not None:
            progress.processed += 1

    # --- state -----------------------------------------------------------------------------

    def is_syncing(self, publisher: bytes) -> bool:
        """A sync of ``publisher`` is running or waiting to run."""
        return publisher in self._handlers or publisher in self._pending

    @property
    def syncing(self) -> list[bytes]:
        """Publishers with a sync running or waiting."""
        return sorted(self._pending.keys() | self._handlers)

    @property
    def working(self) -> frozenset[bytes]:
        """Providers a worker is applying ads for."""
        return frozenset(self._workers)

    @property
    def pending_publishers(self) -> int:
        """Publishers with a sync waiting or running."""
        return len(self._pending.keys() | self._handlers)

    @property
    def idle(self) -> bool:
        return not (self._pending or self._handlers or self._workers)

    async def wait_idle(self, poll: float = 0.01) -> None:
        """Return once no sync is pending or running and no worker has work."""
        while not self.idle or self.staging.providers():
            await trio.sleep(poll)
