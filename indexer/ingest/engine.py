"""The ingest engine: one sync handler per publisher, one worker per provider, one nursery.

``Ingester`` is the one object the daemon's services talk to about ingest: they request syncs
(``request_sync``), record accepted announces (``record_announce``), ask what is known
(``is_known_ad``, ``is_known_publisher``) and read the live state (``syncing``, ``working``,
``progress``, ``results``).  Its staging area is its own; code that shows the durable state
(the admin views, the metrics) reads it through a ``StagingArea`` of its own over the same
``KV``, which the daemon passes in.  The sync side is ``indexer.ingest.syncs`` (waiting
requests, addresses, preemption, sync slots), the worker side ``indexer.ingest.worker``.

Rules this module keeps:

- ``request_sync`` (from an HTTP or gossipsub announce, the admin API or the poller) wakes the
  publisher's handler, which runs the publisher's waiting requests in turn (``syncs.Waiting``).
  Each sync's live progress (``SyncProgress``) is kept per publisher for the admin API, in a
  bounded history (``progress``); ``observer`` hears of every finished sync and processed ad
  (the metrics), and of each provider's ad with its multihashes and the time since the
  provider's previous ad (or its worker's start): storetheindex's ingest rates.  Handlers
  exit when they have nothing to do and are started again on the next request.
- **Supervision.** A handler or a worker serves one publisher or provider: any failure of it,
  a ``SyncError`` in an exception group or not, or a bug, is caught (``indexer.ingest.supervise``),
  logged (a bug with its traceback) and recorded where an operator looks (the publisher's sync
  progress and record, the provider's stacks and record); a worker that dies on a bug is started
  again with backoff while its provider has staged work.  Only cancellation ends them, so no
  publisher or provider can stop the daemon, and start-up replay cannot stop the start.
- **Fairness.** Syncs take ``FairSlots`` (``indexer.ingest.syncs``), and so do workers: at most
  ``max_workers`` hold a slot, one held for ``slow_sync_after`` seconds is moved to a pool of at
  most ``max_slow_workers`` slow ones to make way.
- **Bounded state.** A publisher that never synced successfully leaves nothing durable after its
  sync was tried (its announce record is dropped, no publisher record is written); the
  in-memory history of syncs and results is bounded, so an announce flood cannot grow memory,
  disk or restart time without bound.
- After every sync that committed (one that failed after its commit too: timed out or preempted
  while closing), and at start-up, every provider with staged work gets a worker unless it has
  one: never two workers for one provider, and work for a busy provider waits in its queue; a
  worker ends only once its provider has no staged work, with no checkpoint between that look and
  its end.  So staged work always has a worker.  At most ``max_workers`` providers apply an ad
  at once.
- Every change of what ``wait_idle`` waits for (a request, a handler or worker ending, an ad
  processed) sets the change event, so ``wait_idle`` waits on events alone.
- At start-up, walks a crash left uncommitted are abandoned before anything else runs, then
  every recorded announce whose head is not yet staged is replayed.
- Big entries blocks fetched ahead are decoded where ``offload`` says (``open_offload``: the
  daemon's decode processes, opened around the ingester's run so they outlive its workers; by
  default, in this process).
- On a cluster node (``applier``, ``owns``, ``floor`` set by ``indexer.cluster.node``) only the
  publishers it owns are synced; a worker whose provider another node holds waits (at most
  ``HANDOVER_RETRY_MAX`` seconds, less if a sync stages work for it) and claims again.
- **Freeze** (``freeze``, durable in the staging area): no sync starts (announces are recorded
  by the intake as ever, and replayed at ``unfreeze``), and every worker stops before its next
  ad and waits; the staged work stays staged.  Find is not touched, but every registry record
  gets ``frozen_at`` (its last ad then, or None) and ``frozen_at_time`` (that ad's time, or the
  freeze's without one), in one batch, as storetheindex's registry ``freezeProviders``;
  ``unfreeze`` clears both (storetheindex's offline ``Unfreeze`` also rewinds
  ``LastAdvertisement`` to ``FrozenAt``, since it kept syncing ads while frozen; nothing is
  synced here while frozen, so there is nothing to rewind).
- With ``poll_interval`` set, every known publisher is re-checked that often at its last
  addresses (a sync from its signed head: cheap when nothing changed, the walk stops at once).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog
import trio

from indexer.errors import IndexerError
from indexer.ingest.apply import (
    Applier,
    FetcherFactory,
    GetFetcher,
    LocalApplier,
    Outcome,
    Parsed,
)
from indexer.ingest.offload import Offload
from indexer.ingest.progress import IngestObserver, NullObserver, SyncHistory, SyncProgress
from indexer.ingest.settings import IngestConfig
from indexer.ingest.slots import FairSlots
from indexer.ingest.supervise import backoff, describe, survivable
from indexer.ingest.syncs import ADDR_SETS, Floor, SyncRequest, SyncRunner, Waiting
from indexer.ingest.worker import HANDED_OVER, Worker
from staging import Entry, StagingArea
from store import KV, IndexStore
from sync import Link, PeerId, SyncError
from sync.walk.chain import Policy, StopReason
from sync.walk.lookahead import AheadBlocks
from sync.walk.syncer import SyncResult

__all__ = ["ADDR_SETS", "IngestConfig", "Ingester", "OwnProviderPolicy"]

log = structlog.get_logger("ingest")

HANDOVER_RETRY_MAX = 5.0  # seconds: a worker whose provider another node holds looks this often


@dataclass(frozen=True)
class OwnProviderPolicy:
    """Publishers publish for themselves, plus any (publisher, provider) pair listed."""

    allowed: frozenset[tuple[bytes, bytes]] = frozenset()

    def may_publish(self, publisher: PeerId, provider: PeerId) -> bool:
        return publisher == provider or (publisher.raw, provider.raw) in self.allowed


@dataclass(frozen=True)
class _Tracked:
    """An ``Applier`` that keeps, while an ad is applied or failed, its provider in ``busy``:
    what ``Ingester.applying`` answers (the admin API must not pop an ad being applied)."""

    inner: Applier
    busy: set[bytes]
    notify: Callable[[], None]  # when an ad is out of hand

    def hold(self, provider: bytes) -> contextlib.AbstractAsyncContextManager[None]:
        return self.inner.hold(provider)

    async def apply(
        self, entry: Entry, get_fetcher: GetFetcher, *, on_block: Callable[[int], None] | None,
        parsed: Parsed,
    ) -> Outcome:  # fmt: skip
        self.busy.add(entry.provider)
        try:
            return await self.inner.apply(entry, get_fetcher, on_block=on_block, parsed=parsed)
        finally:
            self.busy.discard(entry.provider)
            self.notify()

    async def fail(self, entry: Entry, error: str) -> None:
        self.busy.add(entry.provider)
        try:
            await self.inner.fail(entry, error)
        finally:
            self.busy.discard(entry.provider)
            self.notify()


@dataclass
class Ingester:
    """Syncs publishers and indexes what their syncs staged (see the module's rules).

    ``policy``, ``config``, ``observer`` may be replaced before ``run`` starts (the daemon plugs
    the metrics in as the observer once they exist); the slots are sized at construction.
    """

    kv: KV
    open_fetcher: FetcherFactory
    policy: Policy = field(default_factory=OwnProviderPolicy)
    config: IngestConfig = field(default_factory=IngestConfig)
    clock: Callable[[], float] = time.time
    observer: IngestObserver = field(default_factory=NullObserver)
    # Scale-out (``indexer.cluster.node``): how ads are applied (None: to ``self.index``), which
    # publishers this node syncs (None: every one), and where a sync may stop (see SyncRunner).
    applier: Applier | None = None
    owns: Callable[[bytes], bool] | None = None
    floor: Floor | None = None
    offload: Offload = field(default_factory=Offload.inline)  # where big blocks are decoded

    def __post_init__(self) -> None:
        self._staging = StagingArea(self.kv, self.clock)
        self.index = IndexStore(self.kv)
        if self.applier is None:
            self.applier = LocalApplier(self._staging, self.index, self.config, self.clock)
        self._waiting = Waiting()
        self._ahead = AheadBlocks()  # what the walks fetch ahead for the workers
        self._syncs = SyncRunner(self, self._staging, self._waiting, self._ahead)
        self._handlers: set[bytes] = set()
        self._workers: set[bytes] = set()
        self._nudges: dict[bytes, trio.Event] = {}  # workers waiting to own their provider
        # Per provider being worked: when its current ad began, multihashes indexed of it.
        self._ad_began: dict[bytes, float] = {}
        self._ad_count: dict[bytes, int] = {}
        self._applying: set[bytes] = set()  # providers whose worker is inside an ad (_Tracked)
        self._nursery: trio.Nursery | None = None
        self.progress = SyncHistory(self.config.history)
        self.results: deque[SyncResult] = deque(maxlen=self.config.history)
        config = self.config
        self._work_slots = FairSlots(
            config.max_workers, config.max_slow_workers, config.slow_sync_after
        )
        self._changed = trio.Event()
        self._reconfigured = trio.Event()
        self.frozen_at = self._staging.frozen_at()  # durable: a restart stays frozen
        self._thawed = trio.Event()
        if self.frozen_at is None:
            self._thawed.set()

    # --- freeze ----------------------------------------------------------------------------

    def freeze(self, at: float) -> None:
        """Stop ingesting content (durably): syncs are not started (announces are still
        recorded, and replayed at ``unfreeze``), workers stop before their next ad."""
        if self.frozen_at is None:
            self._staging.set_frozen(at)
            self.frozen_at, self._thawed = at, trio.Event()
            self._mark_registry(at)
            log.warning("indexer frozen: no content is ingested until it is unfrozen")

    def unfreeze(self) -> None:
        if self.frozen_at is None:
            return
        self._staging.set_frozen(None)
        self.frozen_at = None
        self._mark_registry(None)
        self._thawed.set()
        log.info("indexer unfrozen")
        if self._nursery is not None:
            self._wake_workers()
            self._replay_announces()
        self._notify()

    def _mark_registry(self, at: float | None) -> None:
        """Set (``at``: the freeze's time) or clear every record's ``frozen_at``."""
        writes = []
        for provider, record in list(self.index.providers()):
            if at is None and record.frozen_at is None and record.frozen_at_time is None:
                continue
            frozen = msgspec.structs.replace(
                record,
                frozen_at=None if at is None else record.last_ad,
                frozen_at_time=None if at is None else record.last_ad_time or at,
            )
            writes += IndexStore.put_provider(provider, frozen)
        if writes:
            self.index.kv.write_batch(writes)

    def _notify(self) -> None:
        """Wake whoever waits for a change of state (``wait_idle``)."""
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        abandoned = self._staging.cleanup_open_walks()
        if abandoned:
            log.info("abandoned walks a crash left open", walks=abandoned)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._wake_workers()
            self._replay_announces()
            task_status.started()
            while True:
                interval = self.config.poll_interval
                reconfigured = self._reconfigured
                with trio.move_on_after(interval if interval > 0 else math.inf):
                    await reconfigured.wait()
                    continue  # a reload: wait again, for the new interval
                self.poll_known_publishers()

    def reconfigure(self, config: IngestConfig) -> None:
        """Use ``config`` from now on (a reload): read at each use, so it applies at once; the
        slots sized at construction stay as they are."""
        self.config = config
        self._reconfigured.set()
        self._reconfigured = trio.Event()
        self._notify()

    def _replay_announces(self) -> None:
        if self.frozen_at is not None:
            return  # replayed at unfreeze
        replayed = 0
        for publisher, record in self._staging.unsynced_announces():
            try:
                self.request_sync(PeerId(publisher), record.addrs, Link(record.head))
                replayed += 1
            except SyncError as exc:  # a bad record (peer ID, CID) must not stop the start
                log.error("an announce record cannot be replayed", error=describe(exc))
        if replayed:
            log.info("replaying announces accepted before a restart", announces=replayed)

    def poll_known_publishers(self) -> int:
        """Re-check every publisher the staging area knows, at its last addresses."""
        known = self._staging.known_publishers()
        for publisher, addrs in known:
            if addrs and publisher not in self._waiting:
                self.request_sync(PeerId(publisher), addrs)
        return len(known)

    # --- announces -------------------------------------------------------------------------

    def record_announce(self, publisher: PeerId, head: Link, addrs: Sequence[str]) -> None:
        """Make an accepted announce durable (a synced write) before it is acknowledged: a
        restarted ingester replays it until a sync of it was tried."""
        self._staging.record_announce(publisher.raw, head.raw, addrs)

    def is_known_ad(self, cid: Link) -> bool:
        """The ad is staged (by a committed walk) or done."""
        return self._staging.is_known(cid.raw)

    def is_known_publisher(self, publisher: PeerId) -> bool:
        """The publisher synced successfully at least once (it has a durable record)."""
        return self._staging.has_publisher(publisher.raw)

    # --- syncs -----------------------------------------------------------------------------

    def request_sync(
        self,
        publisher: PeerId,
        addrs: Sequence[str],
        head: Link | None = None,
        *,
        depth: int | None = None,
        resync: bool = False,
    ) -> None:
        """Ask for a sync of ``publisher`` (to ``head``, or to its current signed head)."""
        assert self._nursery is not None, "Ingester.run must be started first"
        if self.frozen_at is not None:
            return  # frozen: the announce (recorded by the intake) is replayed at unfreeze
        if not self.syncs_here(publisher.raw):
            return  # another node syncs it (the cluster holds the announce for its owner)
        if not self.is_syncing(publisher.raw):
            self.progress[publisher.raw] = SyncProgress(self.clock(), depth or 0, resync)
        self._waiting.add(publisher.raw, SyncRequest(list(addrs), head, depth, resync))
        self._notify()
        if publisher.raw not in self._handlers:
            self._handlers.add(publisher.raw)
            self._nursery.start_soon(self._handler, publisher)
        else:
            self._syncs.maybe_preempt(publisher.raw)

    async def _handler(self, publisher: PeerId) -> None:
        try:
            while (request := self._waiting.pop(publisher.raw)) is not None:
                progress = self.progress.get(publisher.raw)
                if progress is None or not progress.running:
                    progress = SyncProgress(self.clock(), request.depth or 0, request.resync)
                    self.progress[publisher.raw] = progress
                progress.started = self.clock()
                seq = None
                try:
                    seq = self._staging.commit_seq()
                    result = await self._syncs.run(publisher, request, progress)
                except BaseException as exc:  # noqa: BLE001 -- a handler serves one publisher: record, go on
                    self._sync_failed(publisher, request, progress, survivable(exc))
                    if seq is not None and self._staging.commit_seq() != seq:
                        self._wake_workers()  # it committed, then failed (timed out, preempted)
                    continue
                self._sync_done(publisher, request, progress, result)
        finally:
            self._handlers.discard(publisher.raw)
            self._notify()

    def _sync_failed(
        self, publisher: PeerId, request: SyncRequest, progress: SyncProgress, exc: BaseException
    ) -> None:
        error = describe(exc)
        if isinstance(exc, SyncError | IndexerError):
            log.warning("sync failed", publisher=str(publisher), addrs=request.addrs, error=error)
        else:
            log.error("sync failed on a bug", publisher=str(publisher), exc_info=exc)
        progress.error, progress.finished = error, self.clock()
        self.observer.sync_finished(progress, ok=False)
        if not self._staging.set_publisher_error(publisher.raw, error) and request.head:
            # Never synced: nothing durable is kept for it once its announce was tried.
            self._staging.clear_announce(publisher.raw, request.head.raw, request.addrs)

    def _sync_done(
        self, publisher: PeerId, request: SyncRequest, progress: SyncProgress, result: SyncResult
    ) -> None:
        progress.walked, progress.staged = result.walked, sum(result.staged.values())
        progress.ad_errors, progress.error = result.ad_errors, result.ad_error
        if result.stop in (StopReason.NOT_ALLOWED, StopReason.BROKEN):
            progress.error = result.detail
        progress.finished = self.clock()
        self.observer.sync_finished(progress, ok=True)
        self.results.append(result)
        if request.head is not None:
            self._staging.clear_announce(publisher.raw, request.head.raw, request.addrs)
        log.info(
            "synced",
            publisher=str(publisher),
            walked=result.walked,
            staged=result.staged,
            stop=result.stop.name if result.stop else None,
            ad_errors=result.ad_errors or None,
            ad_error=result.ad_error,
        )
        self._wake_workers()

    # --- workers ---------------------------------------------------------------------------

    def _wake_workers(self) -> None:
        assert self._nursery is not None
        for provider in self._staging.providers():
            if provider in self._nudges:
                self._nudges.pop(provider).set()
            if provider not in self._workers:
                self._workers.add(provider)
                self._nursery.start_soon(self._worker, provider)

    async def _worker(self, provider: bytes) -> None:
        failures = 0
        try:
            while True:
                assert self.applier is not None
                while self.frozen_at is not None:
                    await self._thawed.wait()
                worker = Worker(
                    provider,
                    self._staging,
                    _Tracked(self.applier, self._applying, self._notify),
                    self.open_fetcher,
                    self.config,
                    self._work_slots,
                    self._indexed,
                    self._processed,
                    self.clock,
                    self._ahead,
                    paused=lambda: self.frozen_at is not None,
                    offload=self.offload,
                )
                self._ad_began[provider] = self.clock()
                try:
                    await worker.run()
                    # A sync may have committed for this provider while the run was closing (it
                    # saw this worker and started none): look again, with no checkpoint before
                    # the ``finally`` that lets the next commit start a worker.
                    if self._staging.next_entry(provider) is None:
                        return
                    continue
                except BaseException as exc:  # noqa: BLE001 -- a worker serves one provider: record, restart
                    failure = survivable(exc)
                failures += 1
                if isinstance(failure, HANDED_OVER):  # expected in a cluster: no traceback
                    delay = backoff(self.config.retry_base, HANDOVER_RETRY_MAX, failures)
                    log.info(
                        "provider not owned here; will try again",
                        provider=str(PeerId(provider)),
                        delay=delay,
                        reason=describe(failure),
                    )
                    nudge = self._nudges[provider] = trio.Event()
                    with trio.move_on_after(delay):
                        await nudge.wait()  # a sync that stages for it wakes it at once
                    continue
                delay = backoff(self.config.retry_base, self.config.retry_max, failures)
                log.error(
                    "worker failed; restarting",
                    provider=str(PeerId(provider)),
                    delay=delay,
                    exc_info=failure,
                )
                self._record_worker_failure(provider, describe(failure))
                await trio.sleep(delay)
        finally:
            self._workers.discard(provider)
            self._nudges.pop(provider, None)
            self._ad_began.pop(provider, None)
            self._ad_count.pop(provider, None)
            self._notify()

    def _record_worker_failure(self, provider: bytes, error: str) -> None:
        try:
            entry = self._staging.next_entry(provider)
            if entry is not None:
                self._staging.record_attempt(entry, error)
        except Exception as exc:  # noqa: BLE001 -- the supervisor's record; the store may have failed
            log.error("cannot record a worker failure", error=describe(exc))

    def _indexed(self, entry: Entry, count: int) -> None:
        self.observer.multihashes_indexed(count)
        self._ad_count[entry.provider] = self._ad_count.get(entry.provider, 0) + count
        progress = self.progress.get(entry.stack.publisher)
        if progress is not None:
            progress.indexed += count

    def _processed(self, entry: Entry, ok: bool) -> None:
        self.observer.ad_processed(ok)
        now, provider = self.clock(), entry.provider
        began = self._ad_began.get(provider, now)
        self._ad_began[provider] = now
        self.observer.ad_ingested(provider, self._ad_count.pop(provider, 0), max(0.0, now - began))
        progress = self.progress.get(entry.stack.publisher)
        if progress is not None:
            progress.processed += 1
        self._notify()

    # --- state -----------------------------------------------------------------------------

    def syncs_here(self, publisher: bytes) -> bool:
        """This node syncs ``publisher`` (always on a single node; its owner on a cluster)."""
        return self.owns is None or self.owns(publisher)

    def is_syncing(self, publisher: bytes) -> bool:
        """A sync of ``publisher`` is running or waiting to run."""
        return publisher in self._handlers or publisher in self._waiting

    @property
    def syncing(self) -> list[bytes]:
        """Publishers with a sync running or waiting."""
        return sorted(self._waiting.publishers() | self._handlers)

    def applying(self, provider: bytes) -> bool:
        """A worker is applying (or failing) one of ``provider``'s ads right now."""
        return provider in self._applying

    @property
    def working(self) -> frozenset[bytes]:
        """Providers a worker is applying ads for."""
        return frozenset(self._workers)

    @property
    def pending_publishers(self) -> int:
        """Publishers with a sync waiting or running."""
        return len(self._waiting.publishers() | self._handlers)

    @property
    def idle(self) -> bool:
        return not (self._waiting or self._handlers or self._workers)

    async def wait_changed(self) -> None:
        """Return at the next change of state: a request, a handler or worker ending, an ad
        processed or out of a worker's hands (``applying``)."""
        await self._changed.wait()

    async def wait_idle(self) -> None:
        """Return once no sync is pending or running and no provider has staged work.

        It waits on the change event alone: every change of what it looks at sets it (see the
        rules), and staged work always has a worker, which notifies when it ends.
        """
        while not self.idle or self._staging.providers():
            if self.idle:  # staged work and no worker: a path that commits did not wake one
                raise AssertionError("staged work has no worker: wait_idle would never return")
            await self._changed.wait()
