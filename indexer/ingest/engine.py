"""The ingest engine: one sync handler per publisher, one worker per provider, one nursery.

Rules this module keeps:

- ``announce`` (from HTTP, gossipsub, the admin API or the poller) wakes the publisher's
  handler.  While a sync runs, the newest request per address set is kept (at most
  ``ADDR_SETS`` sets per publisher, oldest dropped) and they run in arrival order.  Each sync's
  live progress (``SyncProgress``) is kept per publisher for the admin API, in a bounded history
  (``history``); ``observer`` hears of every finished sync and processed ad (the metrics).
  Handlers exit when they have nothing to do and are started again on the next announce.
- **Supervision.** A handler or a worker serves one publisher or provider: any failure of it,
  a ``SyncError`` in an exception group or not, or a bug, is caught (``indexer.ingest.supervise``),
  logged (a bug with its traceback) and recorded where an operator looks (the publisher's sync
  progress and record, the provider's stacks and record); a worker that dies on a bug is started
  again with backoff while its provider has staged work.  Only cancellation ends them, so no
  publisher or provider can stop the daemon, and start-up replay cannot stop the start.
- **Addresses.** An announce is unauthenticated.  A sync of a publisher that has synced before
  tries its last verified addresses first (those of its last successful sync) and the announced
  ones only if those fail (with a ``SyncError``: a sync past ``sync_timeout`` is over, and the
  deadline is for all attempts together); only the addresses that served a successful sync
  that proved them (its signed head or a valid head ad, ``sync.walk.syncer``) become the
  publisher's verified addresses.  So a spoofed announce cannot redirect or delay a known
  publisher.  A sync at unverified addresses yields (``SyncPreempted``) to a waiting request of
  the same publisher with other addresses once it has received nothing for ``stall_after``
  seconds, or, when it is the fallback after the verified addresses failed, once it has run
  ``slow_sync_after`` seconds (a spoof cannot hold a publisher it has never synced, nor drip
  blocks to hold a known one).  A sync at verified addresses never yields: a waiting request
  would try those same addresses first.  An announced head the verified addresses answer 404
  for is replaced by the head the publisher signed there (a spoofed announce that replaced or
  evicted the publisher's own waiting request cannot lose its head); the announced addresses
  are tried after that only if it found nothing new.
- **Fairness.** Syncs and workers take ``FairSlots`` (``indexer.ingest.slots``): at most
  ``max_syncs`` syncs (``max_workers`` workers) hold a slot; when all are taken, one held for
  ``slow_sync_after`` seconds is moved to a pool of at most ``max_slow_syncs``
  (``max_slow_workers``) slow ones to make way, so slow publishers cannot starve fast ones.
  Syncs at a publisher's verified addresses take their own ``FairSlots`` (as many again), so a
  flood of strangers with addresses that hold every connection cannot delay a known publisher.
  Every sync ends by ``sync_timeout``; each request by the fetcher's own timeout.
- **Bounded state.** A publisher that never synced successfully leaves nothing durable after its
  sync was tried (its announce record is dropped, no publisher record is written); the
  in-memory history of syncs and results is bounded, so an announce flood cannot grow memory,
  disk or restart time without bound.
- After every commit, and at start-up, every provider with staged work gets a worker unless it has
  one: never two workers for one provider, and work for a busy provider waits in its queue.
  At most ``max_workers`` providers apply an ad at once.
- At start-up, walks a crash left uncommitted are abandoned before anything else runs, then
  every recorded announce whose head is not yet staged is replayed.
- With ``poll_interval`` set, every known publisher is re-checked that often at its last
  addresses (a sync from its signed head: cheap when nothing changed, the walk stops at once).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import structlog
import trio

from indexer.errors import IndexerError, SyncPreempted, SyncTimedOut
from indexer.ingest.apply import FetcherFactory
from indexer.ingest.progress import IngestObserver, NullObserver, SyncProgress
from indexer.ingest.settings import IngestConfig
from indexer.ingest.slots import FairSlots
from indexer.ingest.supervise import backoff, describe, survivable
from indexer.ingest.worker import Worker
from staging import Entry, StagingArea
from store import KV, IndexStore
from sync import Link, PeerId, SyncError
from sync.errors import BlockNotFound, unwrap_group
from sync.ipnisync.fetch import BlockFetcher, SchemaKind
from sync.ipnisync.head import SignedHead
from sync.walk.chain import Policy, StopReason
from sync.walk.syncer import SyncResult, sync_publisher

__all__ = ["ADDR_SETS", "IngestConfig", "Ingester", "OwnProviderPolicy"]

log = structlog.get_logger("ingest")

ADDR_SETS = 4  # requests with distinct address sets kept waiting per publisher


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
class _Running:
    """A sync in flight: what the watchdog needs to demote or preempt it."""

    addrs: tuple[str, ...]  # the request's (announced) addresses
    scope: trio.CancelScope
    heard: float  # trio time of the last block received
    started: float  # trio time the attempt began
    trusted: bool = False  # this attempt is at the publisher's verified addresses
    fallback: bool = False  # the verified addresses failed; this attempt is at announced ones
    preempted: bool = False


class _Watched:
    """A fetcher that notes when each block arrives (the stall watchdog reads it)."""

    def __init__(self, inner: BlockFetcher, running: _Running) -> None:
        self._inner, self._running = inner, running

    async def head(self) -> SignedHead | None:
        head = await self._inner.head()
        self._running.heard = trio.current_time()
        return head

    async def block(self, link: Link, kind: SchemaKind | None = None) -> bytes:
        raw = await self._inner.block(link, kind)
        self._running.heard = trio.current_time()
        return raw

    async def aclose(self) -> None:
        await self._inner.aclose()


class _History(OrderedDict[bytes, SyncProgress]):
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


@dataclass
class Ingester:
    kv: KV
    open_fetcher: FetcherFactory
    policy: Policy = field(default_factory=OwnProviderPolicy)
    config: IngestConfig = field(default_factory=IngestConfig)
    clock: Callable[[], float] = time.time
    observer: IngestObserver = field(default_factory=NullObserver)

    def __post_init__(self) -> None:
        self.staging = StagingArea(self.kv, self.clock)
        self.index = IndexStore(self.kv)
        self._pending: dict[bytes, OrderedDict[tuple[str, ...], SyncRequest]] = {}
        self._handlers: set[bytes] = set()
        self._running: dict[bytes, _Running] = {}
        self._workers: set[bytes] = set()
        self._nursery: trio.Nursery | None = None
        self.progress: _History = _History(self.config.history)
        self.results: deque[SyncResult] = deque(maxlen=self.config.history)
        config = self.config
        self._sync_slots = FairSlots(
            config.max_syncs, config.max_slow_syncs, config.slow_sync_after
        )
        self._known_slots = FairSlots(  # for syncs at verified addresses only
            config.max_syncs, config.max_slow_syncs, config.slow_sync_after
        )
        self._work_slots = FairSlots(
            config.max_workers, config.max_slow_workers, config.slow_sync_after
        )
        self._changed = trio.Event()

    def _notify(self) -> None:
        """Wake whoever waits for a change of state (``wait_idle``)."""
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        abandoned = self.staging.cleanup_open_walks()
        if abandoned:
            log.info("abandoned walks a crash left open", walks=abandoned)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._wake_workers()
            replayed = 0
            for publisher, record in self.staging.unsynced_announces():
                try:
                    self.announce(PeerId(publisher), record.addrs, Link(record.head))
                    replayed += 1
                except SyncError as exc:  # a bad record (peer ID, CID) must not stop the start
                    log.error("an announce record cannot be replayed", error=describe(exc))
            if replayed:
                log.info("replaying announces accepted before a restart", announces=replayed)
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
        addrs: Sequence[str],
        head: Link | None = None,
        *,
        depth: int | None = None,
        resync: bool = False,
    ) -> None:
        """Ask for a sync of ``publisher`` (to ``head``, or to its current signed head)."""
        assert self._nursery is not None, "Ingester.run must be started first"
        if not self.is_syncing(publisher.raw):
            self.progress[publisher.raw] = SyncProgress(self.clock(), depth or 0, resync)
        waiting = self._pending.setdefault(publisher.raw, OrderedDict())
        key = tuple(addrs)
        waiting.pop(key, None)
        waiting[key] = SyncRequest(list(addrs), head, depth, resync)
        while len(waiting) > ADDR_SETS:
            waiting.popitem(last=False)
        self._notify()
        if publisher.raw not in self._handlers:
            self._handlers.add(publisher.raw)
            self._nursery.start_soon(self._handler, publisher)
        else:
            self._maybe_preempt(publisher.raw)

    def _next_request(self, publisher: bytes) -> SyncRequest | None:
        waiting = self._pending.get(publisher)
        if not waiting:
            self._pending.pop(publisher, None)
            return None
        _, request = waiting.popitem(last=False)
        if not waiting:
            del self._pending[publisher]
        return request

    def _maybe_preempt(self, publisher: bytes) -> None:
        """Cancel a stalled (or slow fallback) sync when a request with other addresses waits."""
        running = self._running.get(publisher)
        waiting = self._pending.get(publisher)
        if running is None or not waiting or running.preempted or running.trusted:
            return  # a waiting request would try the verified addresses first anyway
        now = trio.current_time()
        stalled = now - running.heard >= self.config.stall_after
        slow = running.fallback and now - running.started >= self.config.slow_sync_after
        if (stalled or slow) and any(key != running.addrs for key in waiting):
            running.preempted = True
            running.scope.cancel()

    async def _handler(self, publisher: PeerId) -> None:
        try:
            while (request := self._next_request(publisher.raw)) is not None:
                progress = self.progress.get(publisher.raw)
                if progress is None or not progress.running:
                    progress = SyncProgress(self.clock(), request.depth or 0, request.resync)
                    self.progress[publisher.raw] = progress
                progress.started = self.clock()
                try:
                    result = await self._sync(publisher, request, progress)
                except BaseException as exc:  # noqa: BLE001 -- a handler serves one publisher: record, go on
                    self._sync_failed(publisher, request, progress, survivable(exc))
                    continue
                self._sync_done(publisher, request, progress, result)
        finally:
            self._handlers.discard(publisher.raw)
            self._running.pop(publisher.raw, None)
            self._notify()

    def _attempts(self, publisher: PeerId, addrs: list[str]) -> list[tuple[list[str], bool]]:
        """Address sets to try in turn, each with whether it is the verified one: verified
        addresses first, unverified announced ones after."""
        verified = self.staging.publisher(publisher.raw).addrs
        if not addrs:
            return [(verified, True)] if verified else [([], False)]
        if not verified or set(addrs) <= set(verified):
            return [(addrs, bool(verified))]
        return [(verified, True), (addrs, False)]

    async def _sync(
        self, publisher: PeerId, request: SyncRequest, progress: SyncProgress
    ) -> SyncResult:
        attempts = self._attempts(publisher, request.addrs)
        deadline = trio.current_time() + self.config.sync_timeout  # for the whole sync
        for i, (addrs, trusted) in enumerate(attempts):
            progress.walked = 0
            try:
                return await self._sync_at(
                    publisher, request, progress, addrs, deadline, trusted=trusted, fallback=i > 0
                )
            except SyncError as exc:  # not SyncAborted: a timed-out sync is over
                failure: SyncError = exc
            if (
                trusted
                and request.head
                and isinstance(failure, BlockNotFound)
                and not progress.walked
            ):
                # The announced head is not where the publisher serves (a spoof's, or not there
                # yet): sync to the head it signed there; the announced addresses only if that
                # finds nothing new.
                try:
                    signed = replace(request, head=None)
                    result = await self._sync_at(
                        publisher, signed, progress, addrs, deadline, trusted=True, fallback=False
                    )
                    if result.walked or i + 1 == len(attempts):
                        return result
                except SyncError as exc:
                    failure = exc
            if i + 1 == len(attempts):
                raise failure
            log.info(
                "sync at verified addresses failed; trying the announced ones",
                publisher=str(publisher),
                addrs=addrs,
                error=describe(failure),
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sync_at(
        self,
        publisher: PeerId,
        request: SyncRequest,
        progress: SyncProgress,
        addrs: list[str],
        deadline: float,
        *,
        trusted: bool,
        fallback: bool,
    ) -> SyncResult:

        def walked(count: int) -> None:
            progress.walked = count

        depth = self.config.depth_limit if request.depth is None else request.depth
        async with (self._known_slots if trusted else self._sync_slots).hold():
            now = trio.current_time()  # a slot is held: the attempt starts now
            scope = trio.CancelScope()
            running = _Running(tuple(request.addrs), scope, now, now, trusted, fallback)
            self._running[publisher.raw] = running
            try:
                with unwrap_group():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watchdog, publisher.raw)
                        with running.scope, trio.move_on_at(deadline) as timeout:
                            async with self.open_fetcher(publisher, addrs) as fetcher:
                                result = await sync_publisher(
                                    publisher,
                                    addrs,
                                    _Watched(fetcher, running),
                                    self.staging,
                                    policy=self.policy,
                                    head=request.head,
                                    segment=self.config.segment,
                                    depth_limit=depth,
                                    resync=request.resync,
                                    on_walked=walked,
                                )
                        nursery.cancel_scope.cancel()
            finally:
                self._running.pop(publisher.raw, None)
        if running.preempted and running.scope.cancelled_caught:
            why = (
                f"no block for {self.config.stall_after:g} s"
                if trio.current_time() - running.heard >= self.config.stall_after
                else f"unverified and still running after {self.config.slow_sync_after:g} s"
            )
            raise SyncPreempted(f"{why} from {addrs} while an announce with other addresses waited")
        if timeout.cancelled_caught:
            raise SyncTimedOut(f"the sync did not finish in {self.config.sync_timeout:g} s")
        return result

    async def _watchdog(self, publisher: bytes) -> None:
        """Preempt the publisher's sync if it stalls (or is a slow fallback) while other
        addresses wait (see above)."""
        tick = max(0.05, min(self.config.stall_after, self.config.slow_sync_after) / 4)
        while True:
            await trio.sleep(tick)
            self._maybe_preempt(publisher)

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
        if not self.staging.set_publisher_error(publisher.raw, error) and request.head:
            # Never synced: nothing durable is kept for it once its announce was tried.
            self.staging.clear_announce(publisher.raw, request.head.raw, request.addrs)

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
            self.staging.clear_announce(publisher.raw, request.head.raw, request.addrs)
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
        for provider in self.staging.providers():
            if provider not in self._workers:
                self._workers.add(provider)
                self._nursery.start_soon(self._worker, provider)

    async def _worker(self, provider: bytes) -> None:
        failures = 0
        try:
            while True:
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
                    return
                except BaseException as exc:  # noqa: BLE001 -- a worker serves one provider: record, restart
                    failure = survivable(exc)
                failures += 1
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
            self._notify()

    def _record_worker_failure(self, provider: bytes, error: str) -> None:
        try:
            entry = self.staging.next_entry(provider)
            if entry is not None:
                self.staging.record_attempt(entry, error)
        except Exception as exc:  # noqa: BLE001 -- the supervisor's record; the store may have failed
            log.error("cannot record a worker failure", error=describe(exc))

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
        self._notify()

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

    async def wait_idle(self) -> None:
        """Return once no sync is pending or running and no worker has work."""
        while not self.idle or self.staging.providers():
            changed = self._changed
            if self.idle:
                self._wake_workers()  # staged work and no worker (committed by another path)
            with trio.move_on_after(1):  # staging can change under us: look again now and then
                await changed.wait()
