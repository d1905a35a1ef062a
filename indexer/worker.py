"""One provider's worker: it pops and applies that provider's staged ads, oldest first.

Rules this module keeps:

- Ads are applied one at a time, in order (invariant 1); the next ads' first entries blocks are
  fetched (and checked and decoded) ahead by a ``Prefetcher``, which changes speed, not results.
- A transient error (publisher down) keeps the stack intact and retries with exponential
  backoff; ``BlockNotFound`` and ``HashMismatch`` become permanent after ``max_attempts``; a
  permanent error marks the ad processed-with-error (recorded on the provider too) and the
  worker goes on.
- One fetcher per (publisher, addresses) for the worker's life, closed when it ends; at most
  ``slots`` workers apply an ad at once across the node.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import structlog
import trio

from staging import Entry, StagingArea
from store import IndexStore, ProviderRecord
from sync import HashMismatch, Link, PeerId, SyncError
from sync.errors import BlockNotFound, TransientError
from sync.fetcher import BlockFetcher

from .apply import FetcherFactory, GetFetcher, apply_entry
from .prefetch import Prefetcher

if TYPE_CHECKING:
    from .ingest import IngestConfig

__all__ = ["Worker"]

log = structlog.get_logger("ingest")


@dataclass
class Worker:
    provider: bytes
    staging: StagingArea
    index: IndexStore
    open_fetcher: FetcherFactory
    config: IngestConfig
    slots: trio.CapacityLimiter
    on_indexed: Callable[[Entry, int], None]
    on_processed: Callable[[Entry, bool], None]
    clock: Callable[[], float] = time.time
    _fetchers: dict[tuple[bytes, tuple[str, ...]], BlockFetcher] = field(default_factory=dict)

    async def run(self) -> None:
        """Apply the provider's ads until none is staged."""
        async with contextlib.AsyncExitStack() as stack:

            async def get_fetcher(publisher: PeerId, addrs: list[str]) -> BlockFetcher:
                key = (publisher.raw, tuple(addrs))
                if key not in self._fetchers:
                    opened = self.open_fetcher(publisher, addrs)
                    self._fetchers[key] = await stack.enter_async_context(opened)
                return self._fetchers[key]

            async def prefetching(publisher: PeerId, addrs: list[str]) -> BlockFetcher:
                return prefetcher.wrap(await get_fetcher(publisher, addrs))

            async with trio.open_nursery() as background:
                prefetcher = Prefetcher(background, get_fetcher, self.config.prefetch)
                await self._work(prefetcher, prefetching)
                background.cancel_scope.cancel()

    async def _work(self, prefetcher: Prefetcher, get_fetcher: GetFetcher) -> None:
        while (entry := self.staging.next_entry(self.provider)) is not None:
            if self.config.prefetch:
                upcoming = self.staging.upcoming(entry, self.config.prefetch)
                prefetcher.want(upcoming, PeerId(entry.stack.publisher), entry.stack.addrs)
            try:
                async with self.slots:
                    outcome = await apply_entry(
                        entry,
                        self.staging,
                        self.index,
                        get_fetcher,
                        max_blocks=self.config.max_entry_blocks,
                        clock=self.clock,
                        on_block=functools.partial(self.on_indexed, entry),
                        parsed=prefetcher.parsed,
                    )
            except SyncError as exc:
                await self._failed(entry, exc)
                continue
            self.on_processed(entry, outcome != "error")

    async def _failed(self, entry: Entry, exc: SyncError) -> None:
        message = f"{type(exc).__name__}: {exc}"
        retryable = isinstance(exc, TransientError | HashMismatch)
        limited = isinstance(exc, BlockNotFound | HashMismatch)
        if not retryable or (limited and entry.stack.attempts + 1 >= self.config.max_attempts):
            log.warning("ad failed permanently", ad=str(Link(entry.ad.cid)), error=message)
            prior = self.index.provider(entry.provider) or ProviderRecord()
            record = msgspec.structs.replace(prior, last_error=message)
            self.staging.finish(
                entry,
                ok=False,
                error=message,
                writes=IndexStore.put_provider(entry.provider, record),
            )
            self.on_processed(entry, False)
            return
        stack = self.staging.record_attempt(entry, message)
        delay = min(self.config.retry_max, self.config.retry_base * 2 ** (stack.attempts - 1))
        log.info("ad will be retried", ad=str(Link(entry.ad.cid)), error=message, delay=delay)
        await trio.sleep(delay)
