"""One provider's worker: it pops and applies that provider's staged ads, oldest first.

Rules this module keeps:

- Ads are applied one at a time, in order (invariant 1); the next ads' first entries blocks are
  fetched (and checked and decoded: big ones in the ingester's decode processes, ``offload``)
  ahead by a ``Prefetcher``, which changes speed, not results.
- What a failure means is decided once, by ``sync.errors.retry_of``: ``ALWAYS`` (publisher down,
  or a bug: an exception that is not a ``SyncError``, logged with its traceback) keeps the stack
  intact and retries with exponential backoff; ``LIMITED`` (``BlockNotFound``,
  ``HashMismatch``) becomes permanent after ``max_attempts``; ``NEVER`` marks the ad
  processed-with-error (recorded on the provider too) and the worker goes on.  Every failure,
  in an exception group or not, is caught here: only cancellation ends a worker.
- Every ad that ends with an error (including ads staged invalid by the walk) is one structured
  log line naming the provider, the ad and the error.
- The index is written through an ``Applier`` (``indexer.ingest.apply``): the node's own
  ``IndexStore``, or a cluster's (``indexer.cluster.apply``), whose ``hold`` claims the provider
  for the run.  A ``HANDED_OVER`` failure (``NotOwner``, ``LeaseLost``, ``StoreFenced``: another
  node owns the provider now) is never an ad's failure: the run ends, the ad stays staged.
- ``paused`` (the indexer is frozen) ends the run before the next ad; the ad in hand finishes.
- One fetcher per (publisher, addresses) for the worker's life, closed when it ends; at most
  ``slots`` workers apply an ad at once across the node (``FairSlots``: a worker slow on its
  publisher is moved aside for a newcomer after a while).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from indexer.errors import LeaseLost, NotOwner
from indexer.ingest.apply import Applier, FetcherFactory, GetFetcher
from indexer.ingest.offload import Offload
from indexer.ingest.prefetch import Prefetcher
from indexer.ingest.settings import IngestConfig
from indexer.ingest.slots import FairSlots
from indexer.ingest.supervise import backoff, describe, survivable
from staging import Entry, StagingArea
from store import StoreFenced, StoreUnavailable
from sync import Link, PeerId, SyncError
from sync.errors import Retry, retry_of
from sync.ipnisync.fetch import BlockFetcher
from sync.walk.lookahead import AheadBlocks

__all__ = ["HANDED_OVER", "Worker"]

log = structlog.get_logger("ingest")

# This node lost the provider (its lease, its claim, or a newer owner's fence): never retried on
# the ad; the worker's run ends and its supervisor claims again later.
HANDED_OVER = (NotOwner, LeaseLost, StoreFenced)


@dataclass
class Worker:
    provider: bytes
    staging: StagingArea
    applier: Applier
    open_fetcher: FetcherFactory
    config: IngestConfig
    slots: FairSlots
    on_indexed: Callable[[Entry, int], None]
    on_processed: Callable[[Entry, bool], None]
    clock: Callable[[], float] = time.time
    ahead: AheadBlocks | None = None  # what the walk fetched for these ads
    paused: Callable[[], bool] = lambda: False  # frozen: the run ends before its next ad
    offload: Offload = field(default_factory=Offload.inline)  # where big blocks are decoded
    _fetchers: dict[tuple[bytes, tuple[str, ...]], BlockFetcher] = field(default_factory=dict)

    async def run(self) -> None:
        """Apply the provider's ads until none is staged."""
        async with self.applier.hold(self.provider), contextlib.AsyncExitStack() as stack:

            async def get_fetcher(publisher: PeerId, addrs: list[str]) -> BlockFetcher:
                key = (publisher.raw, tuple(addrs))
                if key not in self._fetchers:
                    opened = self.open_fetcher(publisher, addrs)
                    self._fetchers[key] = await stack.enter_async_context(opened)
                return self._fetchers[key]

            async def prefetching(publisher: PeerId, addrs: list[str]) -> BlockFetcher:
                return prefetcher.wrap(await get_fetcher(publisher, addrs), publisher)

            async with trio.open_nursery() as background:
                prefetcher = Prefetcher(
                    background, get_fetcher, self.config.prefetch, self.ahead, self.offload
                )
                await self._work(prefetcher, prefetching)
                background.cancel_scope.cancel()

    async def _work(self, prefetcher: Prefetcher, get_fetcher: GetFetcher) -> None:
        entry: Entry | None = None
        while not self.paused() and (entry := self._next(entry)) is not None:
            # One checkpoint per ad whatever the ad needs: an ad settled without I/O (staged with
            # an error, say) must not let a worker run ad after ad without yielding, starving the
            # daemon's other tasks (its listeners were not even started, with 100k such ads).
            await trio.lowlevel.checkpoint()
            if self.config.prefetch:
                upcoming = self.staging.upcoming(entry, self.config.prefetch)
                prefetcher.want(upcoming, PeerId(entry.stack.publisher), entry.stack.addrs)
            try:
                async with self.slots.hold():
                    outcome = await self.applier.apply(
                        entry,
                        get_fetcher,
                        on_block=functools.partial(self.on_indexed, entry),
                        parsed=prefetcher.parsed_for(
                            PeerId(entry.stack.publisher), entry.stack.addrs
                        ),
                    )
            except HANDED_OVER:
                raise  # this node no longer owns the provider: the run ends (the caller logs it)
            except BaseException as exc:  # noqa: BLE001 -- a worker serves one provider: records, goes on
                await self._failed(entry, survivable(exc))
                continue
            if outcome == "error":
                log.warning(
                    "ad invalid, recorded processed-with-error",
                    provider=str(PeerId(self.provider)),
                    ad=str(Link(entry.ad.cid)),
                    error=entry.ad.error,
                )
            self.on_processed(entry, outcome != "error")

    def _next(self, last: Entry | None) -> Entry | None:
        """The next ad to apply: after the first, read by key while its stack lasts."""
        if last is None:
            return self.staging.next_entry(self.provider)
        return self.staging.next_after(last)

    async def _failed(self, entry: Entry, exc: BaseException) -> None:
        message = describe(exc)
        retry = retry_of(exc)
        ad, provider = str(Link(entry.ad.cid)), str(PeerId(self.provider))
        if retry is Retry.ALWAYS and not isinstance(exc, SyncError | StoreUnavailable):
            log.error("ad failed on a bug; will retry", provider=provider, ad=ad, exc_info=exc)
        if retry is Retry.NEVER or (
            retry is Retry.LIMITED and entry.stack.attempts + 1 >= self.config.max_attempts
        ):
            log.warning("ad failed permanently", provider=provider, ad=ad, error=message)
            await self.applier.fail(entry, message)
            self.on_processed(entry, False)
            return
        stack = self.staging.record_attempt(entry, message)
        delay = backoff(self.config.retry_base, self.config.retry_max, stack.attempts)
        log.warning("ad will be retried", provider=provider, ad=ad, error=message, delay=delay)
        await trio.sleep(delay)
