"""Fetching a chain's next ad while the current one is checked, and its entries for later.

A chain is a linked list, so a walk must learn an ad's ``PreviousID`` before it can fetch the
next ad; done strictly in turn, every ad costs a round trip plus its own decoding and signature
check.  ``Lookahead`` overlaps the two: as soon as an ad's bytes arrive its ``PreviousID`` is
peeked (a byte search in DAG-JSON, a decode in DAG-CBOR) and fetched while the walker works.
While that round trip is under way the walk would mostly wait, so each checked ad's first
entries block is fetched too, for the ingest worker that applies the ad after the walk
(``AheadBlocks``): the apply phase then finds most of its round trips done.

Rules this module keeps:

- The peeked link is a guess and is trusted for nothing: its bytes are handed out only when the
  walker asks for exactly that link next, and the walker hashes and verifies them as always.
- A guess that fails to fetch is forgotten (the walker's own fetch then runs and reports), and a
  guess the walker does not ask for (it stopped, at a known ad say) is cancelled: one block may
  be fetched for nothing per sync, never more than one at a time.  Any failure of a guess is
  forgotten, a bug too (logged with its traceback): a block the walk never needed cannot fail it.
- ``entries_after``: a valid ad's first entries block (its ``Entries``, unless ``NO_ENTRIES``)
  is fetched while the store has room, and only while such blocks are small: the first one
  alone, then up to 4 at a time while each is at most 64 KiB; after a larger one, none for the
  rest of the walk (a big block costs its transfer, not its round trip, and the worker's own
  prefetch covers it).  Fetched blocks go into ``AheadBlocks``:
  bounded in bytes (1 MiB, each block counted with its bookkeeping, ``ENTRY_COST``, so a store
  of tiny blocks is bounded too; a block that does not fit is dropped), a block is handed out once
  (``take``, by publisher and link) and one never taken is dropped after two minutes.  Its
  bytes are trusted for nothing (the worker hash-checks them, ``indexer.ingest.prefetch``); a
  failed fetch is forgotten, as a guess's.  The store is the caller's: an ingester makes one and
  hands it to its walks and its workers, so nothing leaks between two indexers in one process.
- The fetches run in the caller's nursery and stop with it.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict

import structlog
import trio

from sync.errors import SyncError
from sync.ipnisync.fetch import BlockFetcher
from sync.model.blocks import decode_node
from sync.model.cid import DAG_JSON, Link
from sync.model.peer import PeerId
from sync.model.schema import NO_ENTRIES

__all__ = ["ENTRY_COST", "AheadBlocks", "Lookahead", "peek_entries", "peek_previous"]

log = structlog.get_logger("sync")

_JSON_LINKS = {
    name: re.compile(rb'"' + name.encode() + rb'":\{"/":"([A-Za-z0-9]+)"\}')
    for name in ("PreviousID", "Entries")
}
_ENTRIES_IN_FLIGHT = 4
_SMALL_ENTRIES = 64 << 10
# Bytes an ``AheadBlocks`` entry costs beyond its block's: the key, the link's bytes, the bytes
# object's header, the (time, bytes) tuple and the ordered dict's node (~300 B measured).
ENTRY_COST = 320


def _peek(link: Link, raw: bytes, name: str) -> Link | None:
    try:
        if link.codec == DAG_JSON:
            found = _JSON_LINKS[name].search(raw)
            return Link.parse(found.group(1).decode()) if found else None
        node = decode_node(raw, link.codec)
        value = node.get(name) if isinstance(node, dict) else None
        return value if isinstance(value, Link) else None
    except (SyncError, ValueError):
        return None


def peek_previous(link: Link, raw: bytes) -> Link | None:
    """The ``PreviousID`` an ad's bytes seem to carry, or None (never raises)."""
    return _peek(link, raw, "PreviousID")


def peek_entries(link: Link, raw: bytes) -> Link | None:
    """The ``Entries`` an ad's bytes seem to carry, or None (never raises)."""
    return _peek(link, raw, "Entries")


class AheadBlocks:
    """Blocks fetched before they are needed, each waiting (bounded) for one ``take``."""

    def __init__(self, max_bytes: int = 1 << 20, max_age: float = 120.0) -> None:
        self.max_bytes, self.max_age = max_bytes, max_age
        self._blocks: OrderedDict[tuple[bytes, bytes], tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def has_room(self) -> bool:
        self._expire()
        return self._bytes < self.max_bytes

    def put(self, publisher: PeerId, link: Link, raw: bytes) -> None:
        self._expire()
        key = (publisher.raw, link.raw)
        if key not in self._blocks and self._bytes + len(raw) + ENTRY_COST <= self.max_bytes:
            self._blocks[key] = (time.monotonic(), raw)
            self._bytes += len(raw) + ENTRY_COST

    def take(self, publisher: PeerId, link: Link) -> bytes | None:
        found = self._blocks.pop((publisher.raw, link.raw), None)
        if found is None:
            return None
        self._bytes -= len(found[1]) + ENTRY_COST
        return found[1]

    def _expire(self) -> None:
        oldest = time.monotonic() - self.max_age
        while self._blocks:
            key, (born, raw) = next(iter(self._blocks.items()))
            if born >= oldest:
                return
            del self._blocks[key]
            self._bytes -= len(raw) + ENTRY_COST


class Lookahead:
    def __init__(
        self,
        nursery: trio.Nursery,
        fetcher: BlockFetcher,
        publisher: PeerId | None = None,
        entries: AheadBlocks | None = None,
    ) -> None:
        """With a ``publisher`` and a store, ``entries_after`` fetches entries into it."""
        self._nursery = nursery
        self._fetcher = fetcher
        self._publisher, self._entries = publisher, entries
        self._entries_in_flight = 0
        self._entries_small = False  # an entries block came, and was small: go on 4 at a time
        self._entries_stopped = False  # a big one came: no more
        self._guess: Link | None = None
        self._raw: bytes | None = None
        self._done = trio.Event()
        self._scope = trio.CancelScope()

    async def block(self, link: Link) -> bytes:
        """The ad at ``link``: the guessed fetch's bytes when it guessed right, else a fetch."""
        if self._guess == link:
            await self._done.wait()
            self._guess = None
            if self._raw is not None:
                raw, self._raw = self._raw, None
                return raw
        self._forget()
        return await self._fetcher.block(link, "Advertisement")

    def guess_after(self, link: Link, raw: bytes) -> None:
        """Start fetching the ad that ``raw`` (the ad at ``link``) names as its previous one."""
        self._forget()
        previous = peek_previous(link, raw)
        if previous is None:
            return
        self._guess, self._raw, self._done = previous, None, trio.Event()
        self._scope = trio.CancelScope()
        self._nursery.start_soon(self._fetch, previous, self._scope, self._done)

    def entries_after(self, link: Link, raw: bytes) -> None:
        """Start fetching the first entries block of the (checked, valid) ad at ``link``."""
        store, publisher = self._entries, self._publisher
        limit = _ENTRIES_IN_FLIGHT if self._entries_small else 1
        if store is None or publisher is None or self._entries_stopped:
            return
        if self._entries_in_flight >= limit:
            return
        entries = peek_entries(link, raw)
        if entries is None or entries == NO_ENTRIES or not store.has_room():
            return
        self._entries_in_flight += 1
        self._nursery.start_soon(self._fetch_entries, store, publisher, entries)

    async def _fetch_entries(self, store: AheadBlocks, publisher: PeerId, link: Link) -> None:
        try:
            raw = await self._fetcher.block(link, "EntryChunk")
            if len(raw) > _SMALL_ENTRIES:
                self._entries_stopped = True
            else:
                self._entries_small = True
            store.put(publisher, link, raw)
        except Exception as exc:  # the worker's own fetch will say what is wrong
            if not isinstance(exc, SyncError):
                log.error("entries fetch ahead failed on a bug", block=str(link), exc_info=exc)
        finally:
            self._entries_in_flight -= 1

    def _forget(self) -> None:
        self._scope.cancel()
        self._guess, self._raw = None, None

    async def _fetch(self, link: Link, scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                raw = await self._fetcher.block(link, "Advertisement")
                if self._guess == link:
                    self._raw = raw
        except Exception as exc:  # the walker's own fetch will say what is wrong
            if not isinstance(exc, SyncError):
                log.error("lookahead fetch failed on a bug", block=str(link), exc_info=exc)
        finally:
            done.set()
