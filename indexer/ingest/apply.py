"""Applying one staged advertisement to the index (a worker's unit of work).

Rules this module keeps:

- The provider registry is updated from every ad: addresses (when the ad lists any), publisher,
  last ad (a later success keeps the last ingest error: it is history, not state); extended
  providers are replaced, chain-level when the ad has no ContextID, else for that context
  together with the ad's ``Override`` flag (kept only when true); an empty list, or a removal
  of the context, deletes them and the flag.
- A (provider, ContextID) gets its value key from ``IndexStore.allocate`` the first time an ad
  writes its value record (a small batch of its own; a replay finds it again).
- ``IsRm`` removes the (provider, ContextID) value record and its allocation; an ad with
  ``NoEntries`` sets the context's metadata; an ad marked ``skip_entries`` (removed later in its
  stack) only updates the registry; an ad staged with an error (bad signature, over a limit,
  signed by a stranger) is marked processed-with-error, applies nothing, and its error is kept
  on the provider's record (``last_error``, if the provider is registered) where find's
  ProviderInfo and the admin views show it.
- An ad that fails for good (``fail``: its entries could not be fetched after the retries, or
  they were wrong) still registers its provider from the ad (addresses, publisher, last ad,
  extended providers), with the error in ``last_error``: storetheindex registers the provider
  before it syncs the entries.  Not an invalid ad's provider (unauthenticated: as above).  Both
  appliers build that record with the pure ``failed_record``.
- Entries are applied block by block; each block's multihashes go in one batch with the walk's
  progress after it, and the last block's batch also pops the ad and marks it done.  A block's
  batch is written in a thread (LevelDB releases the GIL) while the next block is fetched and
  decoded; batches are still written strictly in order, one at a time.  Replaying
  after a crash resumes at the first block not recorded; every write is idempotent.
- The entries walk has a budget (``sync.walk.entries.EntriesBudget``: idle blocks, and time on
  ``walk_clock`` in proportion to the multihashes yielded); over it, or on a HAMT that repeats a
  link, the walk raises a permanent ``ModelError`` and the ad is processed-with-error.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec
import trio

from indexer.ingest.settings import IngestConfig
from staging import Entry, StagingArea
from store import IndexStore, ProviderRecord, Write
from store.index import ExtendedProviderRecord
from sync import Advertisement, Link, PeerId, decode_node
from sync.errors import ModelError, unwrap_group
from sync.ipnisync.fetch import BlockFetcher
from sync.walk.entries import (
    DEFAULT_BUDGET,
    EntriesBudget,
    EntriesProgress,
    EntriesWalk,
    ParsedBlock,
)

__all__ = [
    "Applier",
    "FetcherFactory",
    "GetFetcher",
    "LocalApplier",
    "Outcome",
    "Parsed",
    "apply_entry",
    "failed_record",
    "feed_next",
    "no_parsed",
    "registry_record",
]

FetcherFactory = Callable[[PeerId, list[str]], AbstractAsyncContextManager[BlockFetcher]]
# An open fetcher for (publisher, addresses), owned and reused by the caller.
GetFetcher = Callable[[PeerId, list[str]], Awaitable[BlockFetcher]]
_THREAD_MIN = 1024  # a final batch with this many multihashes is written in a thread
Outcome = Literal["indexed", "removed", "metadata", "skipped", "error", "already"]
# ``parsed(link, chain)``: the block ``link`` fetched, checked and decoded elsewhere (fetched
# ahead, or now in a decode process: ``Prefetcher.parsed_for``), or None: then the applier
# fetches it.  ``chain`` is False inside a HAMT, whose nodes only the walk decodes.
Parsed = Callable[[Link, bool], Awaitable[ParsedBlock | None]]


async def no_parsed(link: Link, chain: bool) -> ParsedBlock | None:
    """The ``Parsed`` of an applier with no prefetcher: nothing is ever ready."""
    return None


async def feed_next(
    walk: EntriesWalk, link: Link, fetcher: BlockFetcher, parsed: Parsed
) -> list[bytes]:
    """Feed ``walk`` the block ``link`` (parsed ahead, else fetched); its multihashes."""
    ready = await parsed(link, not walk.in_hamt)
    if ready is not None:
        return walk.feed(link, parsed=ready)
    return walk.feed(link, await fetcher.block(link, "EntryChunk"))


class Applier(Protocol):
    """How a worker applies its provider's staged ads to an index (the seam between the
    single node's LevelDB, ``LocalApplier``, and a cluster's, ``indexer.cluster.apply``)."""

    def hold(self, provider: bytes) -> AbstractAsyncContextManager[None]:
        """Held for a worker's run: a cluster claims the provider (or raises ``NotOwner``)."""
        ...

    async def apply(
        self,
        entry: Entry,
        get_fetcher: GetFetcher,
        *,
        on_block: Callable[[int], None] | None,
        parsed: Parsed,
    ) -> Outcome:
        """Apply ``entry`` and pop it; raise the error if it cannot (nothing popped)."""
        ...

    async def fail(self, entry: Entry, error: str) -> None:
        """Pop ``entry`` as processed-with-``error``, kept on the provider's record."""
        ...


@dataclass
class LocalApplier:
    """Ads applied to the node's own ``IndexStore``, each ad's last writes in one batch with
    its pop from staging (``apply_entry``)."""

    staging: StagingArea
    index: IndexStore
    config: IngestConfig
    clock: Callable[[], float] = time.time

    @contextlib.asynccontextmanager
    async def hold(self, provider: bytes) -> AsyncIterator[None]:
        yield  # one node: this worker is the provider's only one

    async def apply(
        self,
        entry: Entry,
        get_fetcher: GetFetcher,
        *,
        on_block: Callable[[int], None] | None,
        parsed: Parsed,
    ) -> Outcome:
        return await apply_entry(
            entry,
            self.staging,
            self.index,
            get_fetcher,
            max_blocks=self.config.max_entry_blocks,
            budget=self.config.entries_budget,
            clock=self.clock,
            on_block=on_block,
            parsed=parsed,
        )

    async def fail(self, entry: Entry, error: str) -> None:
        record = failed_record(self.index.provider(entry.provider), entry, error, self.clock())
        writes = [] if record is None else IndexStore.put_provider(entry.provider, record)
        self.staging.finish(entry, ok=False, error=error, writes=writes)


def _registry(index: IndexStore, entry: Entry, ad: Advertisement, now: float) -> list[Write]:
    record = registry_record(index.provider(entry.provider), entry, ad, now)
    return IndexStore.put_provider(entry.provider, record)


def registry_record(
    prior: ProviderRecord | None, entry: Entry, ad: Advertisement, now: float
) -> ProviderRecord:
    """The provider's registry record after ``ad`` (pure: the rules above)."""
    record = msgspec.structs.replace(
        prior or ProviderRecord(),
        addresses=list(ad.addresses) or (prior.addresses if prior else []),
        publisher=entry.stack.publisher,
        publisher_addrs=entry.stack.addrs,
        last_ad=entry.ad.cid,
        last_ad_time=now,
        inactive=False,  # an ad: active again
    )
    ep = ad.extended_provider
    key = base64.b64encode(ad.context_id).decode()
    if ep is not None:
        eps = [ExtendedProviderRecord(p.id, list(p.addresses), p.metadata) for p in ep.providers]
        if not ad.context_id:
            record = msgspec.structs.replace(record, extended=eps, extended_override=ep.override)
        elif eps:
            record = _set_context(record, key, eps, ep.override)
        else:
            record = _drop_context(record, key)
    if ad.is_rm:
        record = _drop_context(record, key)
    return record


def failed_record(
    prior: ProviderRecord | None, entry: Entry, error: str, now: float
) -> ProviderRecord | None:
    """The provider's record after ``entry`` failed for good with ``error`` (pure).

    A valid ad registers its provider as ``registry_record`` does, with ``last_error`` set; an
    invalid one (staged with an error, or no longer decodable) only sets ``last_error`` on a
    provider already registered, and ``None`` (no record) otherwise.
    """
    ad: Advertisement | None = None
    if entry.ad.error is None:
        link = Link(entry.ad.cid)
        try:
            ad = Advertisement.from_node(decode_node(entry.ad.raw, link.codec))
        except ModelError:
            ad = None
    if ad is not None:
        record = registry_record(prior, entry, ad, now)
        return msgspec.structs.replace(record, last_error=error, last_error_time=now)
    if prior is None:
        return None
    return msgspec.structs.replace(prior, last_error=error, last_error_time=now)


def _set_context(
    record: ProviderRecord, key: str, eps: list[ExtendedProviderRecord], override: bool
) -> ProviderRecord:
    """The record with context ``key``'s extended providers and ``Override`` flag replaced."""
    overrides = {k: v for k, v in record.context_override.items() if k != key}
    if override:
        overrides[key] = True
    return msgspec.structs.replace(
        record,
        context_extended={**record.context_extended, key: eps},
        context_override=overrides,
    )


def _drop_context(record: ProviderRecord, key: str) -> ProviderRecord:
    """The record without context ``key``'s extended providers (nor its ``Override`` flag)."""
    if key not in record.context_extended and key not in record.context_override:
        return record
    return msgspec.structs.replace(
        record,
        context_extended={k: v for k, v in record.context_extended.items() if k != key},
        context_override={k: v for k, v in record.context_override.items() if k != key},
    )


async def apply_entry(
    entry: Entry,
    staging: StagingArea,
    index: IndexStore,
    get_fetcher: GetFetcher,
    *,
    max_blocks: int = 1_000_000,
    clock: Callable[[], float] = time.time,
    on_block: Callable[[int], None] | None = None,
    parsed: Parsed = no_parsed,
    budget: EntriesBudget = DEFAULT_BUDGET,
    walk_clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Apply ``entry`` and pop it; raises the fetch/model error if it cannot (nothing popped).

    ``on_block`` hears how many multihashes each entries block wrote (progress, metrics);
    ``parsed`` may hold a block already checked and decoded (``indexer.ingest.prefetch``);
    ``budget`` and ``walk_clock`` bound the entries walk's blocks and time (``sync.walk.entries``).
    """
    if entry.ad.error is not None:
        # Kept on a provider already registered; an invalid ad's provider is unauthenticated, so
        # it creates no record (the publisher's record and the logs have the error).
        writes: list[Write] = []
        if (prior := index.provider(entry.provider)) is not None:
            error = f"ad {Link(entry.ad.cid)}: {entry.ad.error}"
            record = msgspec.structs.replace(prior, last_error=error, last_error_time=clock())
            writes = IndexStore.put_provider(entry.provider, record)
        staging.finish(entry, ok=False, error=entry.ad.error, writes=writes)
        return "error"
    walk_of = functools.partial(EntriesWalk, max_blocks=max_blocks, budget=budget, clock=walk_clock)
    with unwrap_group():
        return await _apply(entry, staging, index, get_fetcher, walk_of, clock, on_block, parsed)


async def _apply(
    entry: Entry,
    staging: StagingArea,
    index: IndexStore,
    get_fetcher: GetFetcher,
    walk_of: Callable[..., EntriesWalk],
    clock: Callable[[], float],
    on_block: Callable[[int], None] | None,
    parsed: Parsed,
) -> Outcome:
    link = Link(entry.ad.cid)
    ad = Advertisement.from_node(decode_node(entry.ad.raw, link.codec))
    registry = _registry(index, entry, ad, clock())
    if ad.is_rm:
        old = index.allocated(entry.provider, ad.context_id)
        removal = [] if old is None else IndexStore.remove_value(old, entry.provider, ad.context_id)
        staging.finish(entry, ok=True, writes=[*removal, *registry])
        return "removed"
    if not ad.has_entries:
        value: list[Write] = []
        if ad.metadata:
            vk = index.allocate(entry.provider, ad.context_id)
            value = IndexStore.put_value_at(vk, entry.provider, ad.context_id, ad.metadata)
        staging.finish(entry, ok=True, writes=[*value, *registry])
        return "metadata"
    if entry.ad.skip_entries:
        staging.finish(entry, ok=True, writes=registry)
        return "skipped"
    vk = index.allocate(entry.provider, ad.context_id)
    value = IndexStore.put_value_at(vk, entry.provider, ad.context_id, ad.metadata)
    saved = staging.load_progress(entry.ad.cid)
    progress = EntriesProgress.decode(saved) if saved else None
    walk = walk_of(ad.entries, progress=progress)
    first: list[Write] = [*value, *registry]
    fetcher = await get_fetcher(PeerId(entry.stack.publisher), entry.stack.addrs)
    need = walk.next_block()
    if need is None:
        staging.finish(entry, ok=True, writes=first)
        return "indexed"
    mhs = await feed_next(walk, need, fetcher, parsed)
    while True:
        writes = [*first, *IndexStore.put_multihashes(vk, mhs)]
        first = []
        if on_block is not None:
            on_block(len(mhs))
        nxt = walk.next_block()
        if nxt is None:
            if entry.pos and len(mhs) >= _THREAD_MIN:
                # In a thread, so the event loop goes on (prefetching the next ads' entries)
                # while LevelDB writes.  Not for a stack's last ad: that finish updates the
                # walk's record, a read-modify-write that must not race another worker's.
                await trio.to_thread.run_sync(
                    functools.partial(staging.finish, entry, ok=True, writes=writes)
                )
            else:
                staging.finish(entry, ok=True, writes=writes)
            return "indexed"
        state = walk.progress.encode()  # the state after this block, before the next one
        # LevelDB's write releases the GIL: write this block in a thread while the next one is
        # fetched and decoded.  The next batch is built only after this one is durable.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_save_progress, staging, entry, state, writes)
            mhs = await feed_next(walk, nxt, fetcher, parsed)


async def _save_progress(
    staging: StagingArea, entry: Entry, progress: bytes, writes: list[Write]
) -> None:
    await trio.to_thread.run_sync(staging.save_progress, entry, progress, writes)
