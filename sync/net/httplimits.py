"""Connection caps and file descriptors for ``sync.net.httpserver``.

Rules this module keeps:

- ``ConnectionLimiter``: at most ``cap`` connections open on one server.  At the cap the
  connection idle the longest (between keep-alive requests, or accepted and silent) is closed to
  make room; with none idle the newcomer gets a raw 503 with ``Retry-After`` and is closed, and
  past ``cap // 8 + 8`` such refusals at once it is closed without a word.  So a server holds at
  most ``descriptors_for(cap)`` descriptors.
- ``share_open_files`` scales caps down, in proportion, to fit the descriptors a process has;
  ``fit_connection_caps`` first raises the soft ``RLIMIT_NOFILE`` to the hard limit and keeps
  ``RESERVED_FILES`` for the rest of the process.
- ``LogBudget``: a flood never floods the log; lines left out are counted in the next one.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence

import structlog
import trio

from sync.net.httpmessage import LINGER, ByteStream, close_stream, quiet, raw_reply

__all__ = [
    "DEFAULT_BUDGET",
    "RESERVED_FILES",
    "ConnectionLimiter",
    "LogBudget",
    "Slot",
    "descriptors_for",
    "fit_connection_caps",
    "raise_open_files_limit",
    "share_open_files",
]

log = structlog.get_logger("sync.net.httpserver")

# Descriptors a serving process keeps out of its HTTP servers' share: LevelDB's table cache
# (max_open_files, 1000 by default), its logs and lock, libp2p, listeners, epoll, stdio.
RESERVED_FILES = 1100


class LogBudget:
    """At most ``per_second`` lines a second; the lines left out are counted in the next one."""

    def __init__(self, per_second: int = 20) -> None:
        self._per_second = per_second
        self._window = -1.0
        self._count = 0
        self._suppressed = 0

    def take(self) -> int | None:
        """None: stay quiet; else log, reporting this many lines suppressed before it."""
        now = trio.current_time()
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        if self._count >= self._per_second:
            self._suppressed += 1
            return None
        self._count += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


DEFAULT_BUDGET = LogBudget()  # for what no server's limiter counts


def _rejecting_allowance(cap: int) -> int:
    return cap // 8 + 8


def descriptors_for(cap: int) -> int:
    """The most descriptors a server capped at ``cap`` connections holds (503s included)."""
    return cap + _rejecting_allowance(cap)


class Slot:
    """One admitted connection: cancelling ``scope`` closes it (the limiter does, to evict)."""

    __slots__ = ("limiter", "scope")

    def __init__(self, limiter: ConnectionLimiter) -> None:
        self.limiter = limiter
        self.scope = trio.CancelScope()


class ConnectionLimiter:
    """At most ``cap`` connections open on one server; at the cap, the longest idle one goes."""

    def __init__(self, cap: int, name: str = "http") -> None:
        self.cap = max(1, cap)
        self.name = name
        self.refused = 0  # connections answered 503 (or closed) at the cap
        self.evicted = 0  # idle connections closed to make room
        self.rejected = 0  # requests refused (4xx/5xx and closed)
        self.stalled = 0  # connections closed because the peer stopped reading
        self.failures = 0  # connection tasks that hit the last-resort catch: bugs
        self.log = LogBudget()
        self._open: set[Slot] = set()
        self._idle: dict[Slot, None] = {}  # insertion order = idle since
        self._rejecting = 0

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def admit(self) -> Slot | None:
        if len(self._open) >= self.cap:
            if not self._idle:
                return None
            victim = next(iter(self._idle))
            self.release(victim)
            victim.scope.cancel()
            self.evicted += 1
        slot = Slot(self)
        self._open.add(slot)
        return slot

    def idle(self, slot: Slot) -> None:
        if slot in self._open:
            self._idle.pop(slot, None)
            self._idle[slot] = None

    def busy(self, slot: Slot) -> None:
        self._idle.pop(slot, None)

    def release(self, slot: Slot) -> None:
        self._open.discard(slot)
        self._idle.pop(slot, None)

    async def refuse(self, stream: ByteStream, peer: str) -> None:
        """A connection past the cap with no idle one to drop: 503 and close (or just close)."""
        self.refused += 1
        if (suppressed := self.log.take()) is not None:
            log.warning(
                "http connection cap reached", server=self.name, cap=self.cap, peer=peer,
                refused=self.refused, suppressed=suppressed,
            )  # fmt: skip
        if self._rejecting >= _rejecting_allowance(self.cap):
            await close_stream(stream, linger=False)
            return
        self._rejecting += 1
        linger = False
        try:
            body = b"busy: too many connections, retry later\n"
            reply = raw_reply(503, body, head_only=False, extra=((b"retry-after", b"1"),))
            with trio.move_on_after(LINGER), quiet():
                await stream.send_all(reply)
                linger = True
        finally:
            try:
                await close_stream(stream, linger=linger)
            finally:
                self._rejecting -= 1


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return (and log) the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files limit not raised", soft=soft, hard=hard, error=str(exc))
            return soft
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log.info("open files limit", soft=now, was=soft, hard=hard)
    return int(now)


def share_open_files(caps: Sequence[int], available: int, *, floor: int = 8) -> list[int]:
    """``caps`` scaled down, in proportion, so their servers fit in ``available`` descriptors.

    Unchanged when they fit; never below ``floor`` each (a process that cannot give each server
    ``floor`` connections is misconfigured, and the warning says so).
    """
    need = sum(descriptors_for(c) for c in caps)
    if need <= available:
        return list(caps)
    # descriptors_for(c) <= c * 9/8 + 8: scale the proportional part to what the 8s leave
    scale = max(available - 8 * len(caps), 0) / sum(c + c / 8 for c in caps)
    shared = [max(floor, int(c * scale)) for c in caps]
    log.warning(
        "connection caps lowered to fit the open files limit",
        asked=list(caps), shared=shared, available=available,
    )  # fmt: skip
    return shared


def fit_connection_caps(caps: Sequence[int], reserved: int = RESERVED_FILES) -> list[int]:
    """Raise the open files limit, then share it (less ``reserved``) among servers of ``caps``."""
    return share_open_files(caps, raise_open_files_limit() - reserved)
