"""Fetching the first entries block of a provider's next ads while the current one is applied.

A worker applies its provider's ads strictly one after another; each needs at least one round
trip to the publisher for its entries.  ``Prefetcher`` overlaps those round trips with the work
on the ads before them: the worker names the ads coming next, and their first blocks are
fetched in the background.

Rules this module keeps:

- Which block an ad needs first is a guess (``peek_entries`` on DAG-JSON ads: no decode); a
  wrong guess costs a fetch, never a result, as the block is checked when taken.
- A fetched block is hash-checked and decoded here too, while the worker's previous write runs
  in its thread: a big one, still gzip-encoded, in a decode process (``offload``:
  ``indexer.ingest.offload``), a small one (or with no offload) in the event loop
  (``parse_block``).  The applier takes that result by link (``take_parsed``) in place of
  fetching the block.  A block that fails its check is dropped, not trusted.
- With decode processes, an ad's later chain blocks go the same way when the applier needs them
  (``parsed_for``: fetched then, still encoded, decoded in a process while the block before
  is written); that is the applier's own fetch, so its errors are the applier's, not forgotten.
  HAMT nodes are fetched and decoded by the applier's walk, as before.
- At most ``depth`` blocks are wanted at once, each at most the fetcher's block cap, so the
  memory held is bounded; a block is handed out once and forgotten, and one never claimed is
  dropped after ``2 * depth`` more ads.
- A prefetch that fails is forgotten: the worker's own fetch of that block then runs and fails
  (or succeeds) through the normal path, with its retries and error records.  That holds for any
  failure, a bug too (logged with its traceback): a prefetch of a later ad's block must never
  stop the worker applying the ad before it.  So a prefetch can make ingest faster, never
  different.
- A block the walk already fetched ahead (``ahead``: the ingester's
  ``sync.walk.lookahead.AheadBlocks``) is taken from there instead of fetched, by a prefetch or
  by the worker's own fetch (``wrap``, with ``depth`` 0 too), and checked the same way; a
  prefetch of one up to ``INLINE_MAX`` bytes is checked at once, in ``want``, with no task.
- The background fetches run in the worker's nursery and stop with it.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog
import trio

from indexer.ingest.apply import GetFetcher, Parsed
from indexer.ingest.offload import Offload
from staging import StagedAd
from sync import DAG_JSON, NO_ENTRIES, Advertisement, Link, PeerId, SyncError, decode_node
from sync.ipnisync.fetch import BlockFetcher, EncodedFetcher, SchemaKind
from sync.ipnisync.head import SignedHead
from sync.walk.entries import ParsedBlock, parse_block
from sync.walk.lookahead import AheadBlocks, peek_entries

_REMOVAL = b'"IsRm":true'  # DAG-JSON sorts keys and writes no spaces
# A block the walk fetched ahead up to this size is checked and decoded in ``want`` itself: for
# a small ad a task (spawn, event, wake-up) costs more than the check, and there is no LevelDB
# write in a thread to overlap (small ads' batches are written in the event loop).
INLINE_MAX = 4 << 10

__all__ = ["INLINE_MAX", "Prefetcher"]

log = structlog.get_logger("ingest")


@dataclass
class _Slot:
    born: int  # the ``want`` call that asked for it
    done: trio.Event = field(default_factory=trio.Event)
    parsed: ParsedBlock | None = None


@dataclass
class Prefetcher:
    nursery: trio.Nursery
    get_fetcher: GetFetcher
    depth: int = 4
    ahead: AheadBlocks | None = None  # blocks the walk fetched ahead (the ingester's)
    offload: Offload = field(default_factory=Offload.inline)  # where big blocks are decoded
    _slots: OrderedDict[Link, _Slot] = field(default_factory=OrderedDict)
    _seen: set[bytes] = field(default_factory=set)
    _calls: int = 0

    def want(self, ads: list[StagedAd], publisher: PeerId, addrs: list[str]) -> None:
        """Start fetching the first entries block of each of ``ads`` not yet asked for."""
        self._calls += 1
        for old, slot in list(self._slots.items()):
            # An ad is applied within ``depth`` calls of being asked for: a block older than
            # that was never needed after all (the ad resumed mid-way, say); drop it.
            if slot.done.is_set() and self._calls - slot.born > 2 * self.depth:
                del self._slots[old]
        for staged in ads:
            if len(self._slots) >= self.depth:
                return
            if staged.cid in self._seen or staged.error is not None or staged.skip_entries:
                continue
            self._seen.add(staged.cid)
            if len(self._seen) > 16 * self.depth:
                self._seen.clear()
            first = _first_block(staged)
            if first is not None and first not in self._slots:
                slot = self._slots[first] = _Slot(self._calls)
                raw = self.take_ahead(publisher, first)
                if raw is not None and len(raw) <= INLINE_MAX:  # here already: no task
                    with self._settling(first, slot, publisher):
                        slot.parsed = parse_block(first, raw)
                else:
                    self.nursery.start_soon(self._fetch, first, slot, publisher, addrs, raw)

    async def _fetch(
        self, link: Link, slot: _Slot, publisher: PeerId, addrs: list[str], raw: bytes | None
    ) -> None:
        with self._settling(link, slot, publisher):
            if raw is None:
                slot.parsed = await self._fetch_parsed(publisher, addrs, link)
            else:
                slot.parsed = parse_block(link, raw)

    async def _fetch_parsed(self, publisher: PeerId, addrs: list[str], link: Link) -> ParsedBlock:
        """``link``'s block fetched from ``publisher``, checked and decoded: where ``offload``
        says when the fetcher can hand it over still encoded, else here."""
        fetcher = await self.get_fetcher(publisher, addrs)
        if isinstance(fetcher, EncodedFetcher):
            return await self.offload.parse(link, await fetcher.block_encoded(link, "EntryChunk"))
        return parse_block(link, await fetcher.block(link, "EntryChunk"))

    @contextmanager
    def _settling(self, link: Link, slot: _Slot, publisher: PeerId) -> Iterator[None]:
        """A prefetch's end: any failure forgotten (a bug logged), the slot's waiters woken."""
        try:
            yield
        except Exception as exc:  # the worker's own fetch will say what is wrong
            if not isinstance(exc, SyncError):
                log.error(
                    "prefetch failed on a bug",
                    publisher=str(publisher),
                    block=str(link),
                    exc_info=exc,
                )
            if self._slots.get(link) is slot:
                del self._slots[link]
        finally:
            slot.done.set()

    async def take_parsed(self, link: Link) -> ParsedBlock | None:
        """``link``'s block, prefetched, checked and decoded (waiting for a fetch under way),
        handed out once; None when it was not prefetched or failed."""
        slot = self._slots.get(link)
        if slot is None:
            return None
        await slot.done.wait()
        self._slots.pop(link, None)
        return slot.parsed

    def parsed_for(self, publisher: PeerId, addrs: list[str]) -> Parsed:
        """An applier's ``parsed`` for an ad of ``publisher`` (see ``_parsed``)."""
        return functools.partial(self._parsed, publisher, addrs)

    async def _parsed(
        self, publisher: PeerId, addrs: list[str], link: Link, chain: bool
    ) -> ParsedBlock | None:
        """``link``'s block prefetched; else, for a chain block or root with a decode process,
        taken from the walk's blocks or fetched now (the applier's own fetch: its errors are
        the applier's) and decoded where ``offload`` says; else None (the applier fetches it)."""
        ready = await self.take_parsed(link)
        if ready is not None or not chain or self.offload.context is None:
            return ready
        raw = self.take_ahead(publisher, link)
        if raw is not None:
            return parse_block(link, raw)
        return await self._fetch_parsed(publisher, addrs, link)

    async def take(self, link: Link) -> bytes | None:
        """The prefetched bytes of ``link`` (``take_parsed``'s block), or None."""
        parsed = await self.take_parsed(link)
        return None if parsed is None else parsed.data()

    def wrap(self, fetcher: BlockFetcher, publisher: PeerId | None = None) -> BlockFetcher:
        """``fetcher`` taking what was fetched ahead first (``publisher``'s, from ``ahead``)."""
        return _Prefetched(fetcher, self, publisher)

    def take_ahead(self, publisher: PeerId | None, link: Link) -> bytes | None:
        """The walk's bytes for ``link`` of ``publisher`` (``ahead``), handed out once."""
        if self.ahead is None or publisher is None:
            return None
        return self.ahead.take(publisher, link)


def _first_block(staged: StagedAd) -> Link | None:
    """The ad's ``Entries`` to fetch ahead: a guess (the block is checked when taken), so a
    DAG-JSON ad is only searched for its link and its ``IsRm``, not decoded."""
    try:
        link = Link(staged.cid)
        if link.codec == DAG_JSON:
            entries = peek_entries(link, staged.raw)
            if entries is None or entries == NO_ENTRIES or _REMOVAL in staged.raw:
                return None
            return entries
        ad = Advertisement.from_node(decode_node(staged.raw, link.codec))
    except SyncError:
        return None
    return ad.entries if ad.has_entries and not ad.is_rm else None


@dataclass
class _Prefetched:
    inner: BlockFetcher
    prefetcher: Prefetcher
    publisher: PeerId | None = None

    async def head(self) -> SignedHead | None:
        return await self.inner.head()

    async def block(self, link: Link, kind: SchemaKind | None = None) -> bytes:
        raw = await self.prefetcher.take(link)
        if raw is None:
            raw = self.prefetcher.take_ahead(self.publisher, link)
        return raw if raw is not None else await self.inner.block(link, kind)

    async def aclose(self) -> None:
        pass  # the inner fetcher belongs to the worker, which closes it
