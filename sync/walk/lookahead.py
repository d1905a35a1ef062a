"""Fetching a chain's next ad while the current one is checked: one speculative fetch ahead.

A chain is a linked list, so a walk must learn an ad's ``PreviousID`` before it can fetch the
next ad; done strictly in turn, every ad costs a round trip plus its own decoding and signature
check.  ``Lookahead`` overlaps the two: as soon as an ad's bytes arrive its ``PreviousID`` is
peeked (a byte search in DAG-JSON, a decode in DAG-CBOR) and fetched while the walker works.

Rules this module keeps:

- The peeked link is a guess and is trusted for nothing: its bytes are handed out only when the
  walker asks for exactly that link next, and the walker hashes and verifies them as always.
- A guess that fails to fetch is forgotten (the walker's own fetch then runs and reports), and a
  guess the walker does not ask for (it stopped, at a known ad say) is cancelled: one block may
  be fetched for nothing per sync, never more than one at a time.  Any failure of a guess is
  forgotten, a bug too (logged with its traceback): a block the walk never needed cannot fail it.
- The fetches run in the caller's nursery and stop with it.
"""

from __future__ import annotations

import re

import structlog
import trio

from sync.errors import SyncError
from sync.ipnisync.fetch import BlockFetcher
from sync.model.blocks import decode_node
from sync.model.cid import DAG_JSON, Link

__all__ = ["Lookahead"]

log = structlog.get_logger("sync")

_PREVIOUS_JSON = re.compile(rb'"PreviousID":\{"/":"([A-Za-z0-9]+)"\}')


def peek_previous(link: Link, raw: bytes) -> Link | None:
    """The ``PreviousID`` an ad's bytes seem to carry, or None (never raises)."""
    try:
        if link.codec == DAG_JSON:
            found = _PREVIOUS_JSON.search(raw)
            return Link.parse(found.group(1).decode()) if found else None
        node = decode_node(raw, link.codec)
        previous = node.get("PreviousID") if isinstance(node, dict) else None
        return previous if isinstance(previous, Link) else None
    except (SyncError, ValueError):
        return None


class Lookahead:
    def __init__(self, nursery: trio.Nursery, fetcher: BlockFetcher) -> None:
        self._nursery = nursery
        self._fetcher = fetcher
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
