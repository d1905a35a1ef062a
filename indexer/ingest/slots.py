"""Fair slots: a bounded pool where long holders make way for newcomers.

Syncs and workers spend most of their time waiting on publishers.  A plain capacity limiter lets
as many slow publishers as there are slots hold every slot, so an honest one waits behind them
(33 slow publishers against 32 slots).  ``FairSlots`` keeps the bound on *fast* holders and adds a
second pool for *slow* ones.

Rules this module keeps:

- At most ``fast`` holders hold a fast slot.  A newcomer that finds them all taken moves the
  oldest holder that has held its slot for ``slow_after`` seconds or more into the slow pool
  (at most ``slow`` there) and takes the freed slot.  When the slow pool is full, or nobody is
  old enough, the newcomer waits, and looks again when the oldest holder comes of age.
- Nothing moves while nobody waits: without contention this is a plain limiter.
- Demotion is bookkeeping only: the demoted task keeps running and never notices; ``release``
  frees whichever slot the holder has by then.  Time is trio's clock (a ``MockClock`` in tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["FairSlots"]

_MIN_WAIT = 0.01


class FairSlots:
    def __init__(self, fast: int, slow: int, slow_after: float) -> None:
        self._fast = trio.CapacityLimiter(fast)
        self._slow = trio.CapacityLimiter(slow) if slow > 0 else None
        self.slow_after = slow_after
        self._since: dict[object, float] = {}  # fast holders, oldest first, and since when
        self.demoted = 0  # holders moved to the slow pool so far (for tests and metrics)

    @property
    def fast_holders(self) -> int:
        return len(self._since)

    @property
    def slow_holders(self) -> int:
        return 0 if self._slow is None else int(self._slow.borrowed_tokens)

    async def acquire(self) -> object:
        """Wait for a fast slot (moving an old holder aside if one may be); returns the token."""
        token = object()
        while True:
            try:
                self._fast.acquire_on_behalf_of_nowait(token)
                break
            except trio.WouldBlock:
                pass
            if self._demote_oldest():
                continue
            got = False
            with trio.move_on_after(self._until_next_of_age()):
                await self._fast.acquire_on_behalf_of(token)
                got = True
            if got:
                break
        self._since[token] = trio.current_time()
        return token

    def release(self, token: object) -> None:
        if self._since.pop(token, None) is not None:
            self._fast.release_on_behalf_of(token)
        elif self._slow is not None:
            self._slow.release_on_behalf_of(token)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        token = await self.acquire()
        try:
            yield
        finally:
            self.release(token)

    def _demote_oldest(self) -> bool:
        if self._slow is None or not self._since:
            return False
        token, since = next(iter(self._since.items()))
        if trio.current_time() - since < self.slow_after:
            return False
        try:
            self._slow.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            return False
        del self._since[token]
        self._fast.release_on_behalf_of(token)
        self.demoted += 1
        return True

    def _until_next_of_age(self) -> float:
        if self._slow is None or not self._since:
            return float("inf")  # only a release can help
        if self._slow.available_tokens < 1:
            return max(_MIN_WAIT, self.slow_after)  # look again once the slow pool may have room
        oldest = next(iter(self._since.values()))
        return max(_MIN_WAIT, oldest + self.slow_after - trio.current_time())
