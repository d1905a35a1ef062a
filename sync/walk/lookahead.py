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
  walker asks for exactly that link, and the walker hashes and verifies them as always.
- Guesses chain: as soon as a guessed ad arrives, the ad its bytes name as previous is fetched
  too, without waiting for the walker, while fewer than 2 fetched guesses wait to be asked
  for (so at most 2 guessed blocks held or in flight, each under the fetcher's cap, whatever
  the chain's length or the publisher's speed).  The chain does not go past an ad the
  caller's ``stop`` names (known, the cursor: where the walk stops), so an incremental sync
  fetches at most one ad it does not need (the known one, guessed before the walker looks).
- A guess that fails to fetch ends the chain (the walker's own fetch then runs and reports); a
  link the walker asks for that the chain does not have, or does not hold next, drops the chain
  (cancelled, its blocks forgotten): at most 2 blocks are fetched for nothing per sync (a walk
  stopped by its depth limit, say), and 2 more per ad whose bytes lie about its previous one.
  Any failure of a guess is forgotten, a bug too (logged with its traceback): a block the walk
  never needed cannot fail it.
- ``entries_after``: a valid ad's first entries block (its ``Entries``, unless ``NO_ENTRIES``)
  is fetched while the store has room, and only while such blocks are small: the first one
  alone, then up to 8 at a time while each is at most 64 KiB; after a larger one, none for the
  rest of the walk (a big block costs its transfer, not its round trip, and the worker's own
  prefetch covers it).  A link that finds every fetch slot taken waits in a queue of at most
  64 links (past that it is dropped: the worker fetches it), and a fetch that ends starts the
  oldest one waiting, so on a chain of small ads every ad's entries arrive while the walk goes
  on.  So at most 8 blocks (each under the fetcher's cap) are in flight and 64 links wait, per
  walk, whatever the chain's length.  Fetched blocks go into ``AheadBlocks``:
  bounded in bytes (1 MiB, each block counted with its bookkeeping, ``ENTRY_COST``, so a store
  of tiny blocks is bounded too; a block that does not fit is dropped, except that an empty
  store takes one block up to the fetcher's 4 MiB cap: a full 16,384-entry DAG-JSON chunk is
  ~1.06 MB, which a 1 MiB bound dropped every time, and the worker fetched it again; so at most
  max(1 MiB, one block) is held), a block is handed out once
  (``take``, by publisher and link) and one never taken is dropped after two minutes.  Its
  bytes are trusted for nothing (the worker hash-checks them, ``indexer.ingest.prefetch``); a
  failed fetch is forgotten, as a guess's.  The store is the caller's: an ingester makes one and
  hands it to its walks and its workers, so nothing leaks between two indexers in one process.
- The fetches run in the caller's nursery and stop with it; ``close`` (the walk's end) stops
  the guesses and drops the entries waiting, and lets the at most 8 in flight finish.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import structlog
import trio

from sync.errors import SyncError
from sync.ipnisync.fetch import MAX_BLOCK, BlockFetcher
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
_GUESSES = 2  # guessed ads fetched and waiting for the walk, at most
_ENTRIES_IN_FLIGHT = 8
_ENTRIES_WAITING = 64
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

    def __init__(
        self, max_bytes: int = 1 << 20, max_age: float = 120.0, max_block: int = MAX_BLOCK
    ) -> None:
        self.max_bytes, self.max_age, self.max_block = max_bytes, max_age, max_block
        self._blocks: OrderedDict[tuple[bytes, bytes], tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def has_room(self) -> bool:
        self._expire()
        return self._bytes < self.max_bytes

    def put(self, publisher: PeerId, link: Link, raw: bytes) -> None:
        self._expire()
        key = (publisher.raw, link.raw)
        fits = self._bytes + len(raw) + ENTRY_COST <= self.max_bytes
        alone = not self._blocks and len(raw) <= self.max_block  # an empty store takes one
        if key not in self._blocks and (fits or alone):
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
        stop: Callable[[Link], bool] = lambda link: False,
    ) -> None:
        """With a ``publisher`` and a store, ``entries_after`` fetches entries into it; the
        chain of guesses goes no further than an ad ``stop`` says the walk stops at."""
        self._nursery = nursery
        self._fetcher = fetcher
        self._publisher, self._entries = publisher, entries
        self._stop = stop
        self._entries_in_flight = 0
        self._entries_waiting: deque[Link] = deque()
        self._entries_small = False  # an entries block came, and was small: go on 8 at a time
        self._entries_stopped = False  # a big one came: no more
        self._ready: dict[Link, bytes] = {}  # guessed ads fetched, not yet asked for
        self._pending: Link | None = None  # the guess being fetched, or to be fetched next
        self._changed = trio.Event()  # set (and replaced) when a guess ends or is taken
        self._scope = trio.CancelScope()

    async def block(self, link: Link) -> bytes:
        """The ad at ``link``: the guessed fetch's bytes when it guessed right, else a fetch."""
        # (With the guesses all taken by other links, the chain cannot go on: no waiting then.)
        while link not in self._ready and link == self._pending and len(self._ready) < _GUESSES:
            await self._changed.wait()
        raw = self._ready.pop(link, None)
        if raw is not None:
            self._wake()
            return raw
        self._forget()
        return await self._fetcher.block(link, "Advertisement")

    def guess_after(self, link: Link, raw: bytes) -> None:
        """Start fetching the ad that ``raw`` (the ad at ``link``) names as its previous one,
        unless the chain of guesses is already there."""
        previous = peek_previous(link, raw)
        if previous is not None and (previous in self._ready or previous == self._pending):
            return
        self._forget()
        if previous is None:
            return
        self._scope = trio.CancelScope()
        self._pending = previous
        self._nursery.start_soon(self._chain, previous, self._scope)

    def entries_after(self, link: Link, raw: bytes) -> None:
        """Start fetching the first entries block of the (checked, valid) ad at ``link``."""
        if self._entries is None or self._publisher is None or self._entries_stopped:
            return
        entries = peek_entries(link, raw)
        if entries is None or entries == NO_ENTRIES:
            return
        if len(self._entries_waiting) < _ENTRIES_WAITING:
            self._entries_waiting.append(entries)
        self._start_entries()

    def _start_entries(self) -> None:
        """Start the waiting entries fetches the slots allow (1 until a small block came)."""
        store, publisher = self._entries, self._publisher
        assert store is not None and publisher is not None
        limit = _ENTRIES_IN_FLIGHT if self._entries_small else 1
        while self._entries_waiting and self._entries_in_flight < limit:
            if self._entries_stopped or not store.has_room():
                self._entries_waiting.clear()
                return
            self._entries_in_flight += 1
            link = self._entries_waiting.popleft()
            self._nursery.start_soon(self._fetch_entries, store, publisher, link)

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
        self._start_entries()  # not on cancellation: the walk is over

    def close(self) -> None:
        """The walk is over: drop the guesses and the entries waiting; the entries fetches in
        flight finish (their blocks are the worker's first ones, and their requests went out:
        cancelled, the worker would fetch them again)."""
        self._forget()
        self._entries_waiting.clear()
        self._entries_stopped = True

    def _forget(self) -> None:
        self._scope.cancel()
        self._ready.clear()
        self._pending = None
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _chain(self, link: Link, scope: trio.CancelScope) -> None:
        """Fetch ``link``, then the ad its bytes name as previous, and so on, while at most
        ``_GUESSES`` fetched ads wait to be asked for: the next request goes out as soon as an
        ad arrives, not when the walk has checked the one before."""
        with scope:
            # Asked once of the first link (the walk may stop at it: fetched, a guess, but not
            # gone past); each later one was asked as ``nxt`` before it was fetched.
            stop_here = self._stop(link)
            while True:
                raw: bytes | None = None
                try:
                    raw = await self._fetcher.block(link, "Advertisement")
                except Exception as exc:  # the walker's own fetch will say what is wrong
                    if not isinstance(exc, SyncError):
                        log.error("lookahead fetch failed on a bug", block=str(link), exc_info=exc)
                if scope.cancel_called:  # forgotten meanwhile: nothing of it is kept
                    return
                self._pending = None
                if raw is not None:
                    self._ready[link] = raw
                self._wake()
                nxt = None if raw is None else peek_previous(link, raw)
                if nxt is None or stop_here or self._stop(nxt):
                    return
                self._pending = link = nxt  # the walker asking for it waits for this chain
                while len(self._ready) >= _GUESSES:
                    await self._changed.wait()
