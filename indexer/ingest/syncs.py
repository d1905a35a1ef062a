"""The sync side of the ingest engine: the requests waiting per publisher, and one sync run.

``Waiting`` holds what waits to run; ``SyncRunner.run`` runs one request: the addresses to try
in turn, the slot to hold, the deadline, and when to yield.  The engine (``indexer.ingest.engine``)
owns the handler per publisher that takes requests from ``Waiting`` and records what came of each.

Rules this module keeps:

- **Waiting.** The newest request per address set is kept (at most ``ADDR_SETS`` sets per
  publisher, oldest dropped) and they run in arrival order.
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
- **Fairness.** Syncs take ``FairSlots`` (``indexer.ingest.slots``): at most ``max_syncs`` hold a
  slot; when all are taken, one held for ``slow_sync_after`` seconds is moved to a pool of at
  most ``max_slow_syncs`` slow ones to make way, so slow publishers cannot starve fast ones.
  Syncs at a publisher's verified addresses take their own ``FairSlots`` (as many again), so a
  flood of strangers with addresses that hold every connection cannot delay a known publisher.
  Every sync ends by ``sync_timeout``; each request by the fetcher's own timeout.
- **Floor.** With ``floor`` set (a cluster node), it is awaited before a sync: it may refuse
  (``NotOwner``: another node syncs this publisher) or name an ad at and below which every ad
  of the chain is applied (the cluster's cursor), where the walk stops as at its own cursor.
- Settings (``config``, ``policy``, ``open_fetcher``, ``floor``) are read from the owner at
  each use, so what its owner holds is what runs; the slots are sized once, when the runner is made.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, KeysView
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog
import trio

from indexer.errors import SyncPreempted, SyncTimedOut
from indexer.ingest.apply import FetcherFactory
from indexer.ingest.progress import SyncProgress
from indexer.ingest.settings import IngestConfig
from indexer.ingest.slots import FairSlots
from indexer.ingest.supervise import describe
from staging import StagingArea
from sync import Link, PeerId, SyncError
from sync.errors import BlockNotFound, unwrap_group
from sync.ipnisync.fetch import BlockFetcher, SchemaKind
from sync.ipnisync.head import SignedHead
from sync.walk.chain import Policy
from sync.walk.lookahead import AheadBlocks
from sync.walk.syncer import SyncResult, sync_publisher

__all__ = [
    "ADDR_SETS",
    "Floor",
    "SyncRequest",
    "SyncRunner",
    "SyncSettings",
    "Waiting",
    "walk_depth",
]

log = structlog.get_logger("ingest")

ADDR_SETS = 4  # requests with distinct address sets kept waiting per publisher

AddrKey = tuple[str, ...]
# Before a sync: refuse it (raise) or name an ad the walk may stop at (see the rules).
Floor = Callable[[PeerId], Awaitable[Link | None]]


def walk_depth(config: IngestConfig, requested: int | None, *, first: bool) -> int:
    """The depth limit of one sync walk, as ``ChainWalk`` takes it (0: none).

    A depth asked for (admin sync) wins: -1 is no limit (storetheindex's), 0 as configured;
    else a publisher's first sync (nothing walked yet) takes ``first_sync_depth`` when set
    (go-libipni's ``FirstSyncDepth``), every other one ``depth_limit``.
    """
    if requested:
        return max(requested, 0)
    if first and config.first_sync_depth:
        return max(config.first_sync_depth, 0)
    return max(config.depth_limit, 0)


@dataclass(frozen=True)
class SyncRequest:
    addrs: list[str]
    head: Link | None
    depth: int | None = None  # None: as configured (``walk_depth``); -1: no limit
    resync: bool = False


class Waiting:
    """The sync requests waiting per publisher (see the rules)."""

    def __init__(self) -> None:
        self._by_publisher: dict[bytes, OrderedDict[AddrKey, SyncRequest]] = {}

    def __contains__(self, publisher: object) -> bool:
        return publisher in self._by_publisher

    def __bool__(self) -> bool:
        return bool(self._by_publisher)

    def publishers(self) -> KeysView[bytes]:
        return self._by_publisher.keys()

    def add(self, publisher: bytes, request: SyncRequest) -> None:
        waiting = self._by_publisher.setdefault(publisher, OrderedDict())
        key = tuple(request.addrs)
        waiting.pop(key, None)
        waiting[key] = request
        while len(waiting) > ADDR_SETS:
            waiting.popitem(last=False)

    def pop(self, publisher: bytes) -> SyncRequest | None:
        """The publisher's oldest waiting request, if any."""
        waiting = self._by_publisher.get(publisher)
        if not waiting:
            self._by_publisher.pop(publisher, None)
            return None
        _, request = waiting.popitem(last=False)
        if not waiting:
            del self._by_publisher[publisher]
        return request

    def addr_sets(self, publisher: bytes) -> Collection[AddrKey]:
        """The address sets of the publisher's waiting requests."""
        return self._by_publisher.get(publisher, {}).keys()


class SyncSettings(Protocol):
    """What a ``SyncRunner`` reads from its owner (the ``Ingester``) at each use."""

    @property
    def config(self) -> IngestConfig: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def open_fetcher(self) -> FetcherFactory: ...

    @property
    def floor(self) -> Floor | None: ...


@dataclass
class _Running:
    """A sync in flight: what the watchdog needs to demote or preempt it."""

    addrs: AddrKey  # the request's (announced) addresses
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


@dataclass
class SyncRunner:
    """Runs one sync request of one publisher at a time per publisher (see the rules)."""

    settings: SyncSettings
    staging: StagingArea
    waiting: Waiting
    ahead: AheadBlocks | None = None  # entries blocks the walks fetch for the workers
    _running: dict[bytes, _Running] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        config = self.settings.config
        self._slots = FairSlots(config.max_syncs, config.max_slow_syncs, config.slow_sync_after)
        self._known_slots = FairSlots(  # for syncs at verified addresses only
            config.max_syncs, config.max_slow_syncs, config.slow_sync_after
        )

    def maybe_preempt(self, publisher: bytes) -> None:
        """Cancel a stalled (or slow fallback) sync when a request with other addresses waits."""
        running = self._running.get(publisher)
        waiting = self.waiting.addr_sets(publisher)
        if running is None or not waiting or running.preempted or running.trusted:
            return  # a waiting request would try the verified addresses first anyway
        config, now = self.settings.config, trio.current_time()
        stalled = now - running.heard >= config.stall_after
        slow = running.fallback and now - running.started >= config.slow_sync_after
        if (stalled or slow) and any(key != running.addrs for key in waiting):
            running.preempted = True
            running.scope.cancel()

    def _attempts(self, publisher: PeerId, addrs: list[str]) -> list[tuple[list[str], bool]]:
        """Address sets to try in turn, each with whether it is the verified one: verified
        addresses first, unverified announced ones after."""
        verified = self.staging.publisher(publisher.raw).addrs
        if not addrs:
            return [(verified, True)] if verified else [([], False)]
        if not verified or set(addrs) <= set(verified):
            return [(addrs, bool(verified))]
        return [(verified, True), (addrs, False)]

    async def run(
        self, publisher: PeerId, request: SyncRequest, progress: SyncProgress
    ) -> SyncResult:
        """Sync ``publisher`` as ``request`` asks, updating ``progress`` as it walks."""
        floor = None if self.settings.floor is None else await self.settings.floor(publisher)
        attempts = self._attempts(publisher, request.addrs)
        deadline = trio.current_time() + self.settings.config.sync_timeout  # the whole sync
        for i, (addrs, trusted) in enumerate(attempts):
            progress.walked = 0
            try:
                return await self._sync_at(
                    publisher, request, progress, addrs, deadline,
                    trusted=trusted, fallback=i > 0, floor=floor,
                )  # fmt: skip
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
                        publisher, signed, progress, addrs, deadline,
                        trusted=True, fallback=False, floor=floor,
                    )  # fmt: skip
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
        floor: Link | None,
    ) -> SyncResult:

        def walked(count: int) -> None:
            progress.walked = count

        settings = self.settings
        config = settings.config
        first = floor is None and self.staging.publisher(publisher.raw).latest_scanned is None
        depth = walk_depth(config, request.depth, first=first)
        async with (self._known_slots if trusted else self._slots).hold():
            now = trio.current_time()  # a slot is held: the attempt starts now
            scope = trio.CancelScope()
            running = _Running(tuple(request.addrs), scope, now, now, trusted, fallback)
            self._running[publisher.raw] = running
            try:
                with unwrap_group():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watchdog, publisher.raw)
                        with running.scope, trio.move_on_at(deadline) as timeout:
                            async with settings.open_fetcher(publisher, addrs) as fetcher:
                                result = await sync_publisher(
                                    publisher,
                                    addrs,
                                    _Watched(fetcher, running),
                                    self.staging,
                                    policy=settings.policy,
                                    head=request.head,
                                    segment=config.segment,
                                    depth_limit=depth,
                                    resync=request.resync,
                                    on_walked=walked,
                                    ahead=self.ahead,
                                    floor=floor,
                                )
                        nursery.cancel_scope.cancel()
            finally:
                self._running.pop(publisher.raw, None)
        if running.preempted and running.scope.cancelled_caught:
            why = (
                f"no block for {config.stall_after:g} s"
                if trio.current_time() - running.heard >= config.stall_after
                else f"unverified and still running after {config.slow_sync_after:g} s"
            )
            raise SyncPreempted(f"{why} from {addrs} while an announce with other addresses waited")
        if timeout.cancelled_caught:
            raise SyncTimedOut(f"the sync did not finish in {config.sync_timeout:g} s")
        return result

    async def _watchdog(self, publisher: bytes) -> None:
        """Preempt the publisher's sync if it stalls (or is a slow fallback) while other
        addresses wait (see above)."""
        config = self.settings.config
        tick = max(0.05, min(config.stall_after, config.slow_sync_after) / 4)
        while True:
            await trio.sleep(tick)
            self.maybe_preempt(publisher)
