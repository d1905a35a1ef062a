"""Announce intake: HTTP ``PUT /announce`` (and ``/ingest/announce``) and gossipsub messages.

Rules this module keeps:

- The body is the JSON form when ``Content-Type`` is ``application/json``, else the CBOR tuple
  (storetheindex decides the same way); the server caps bodies at 1 MiB.
- Every address must carry the same ``/p2p/<publisher>`` (over HTTP it is the only way to know
  the publisher; over gossipsub the sender is the publisher when the addresses carry none).
- A publisher the policy denies gets 403; more than ``rate`` announces a second from one
  publisher (after a burst) get 429; an announce already accepted recently (same publisher and
  head) is acknowledged and dropped; with ``max_publishers`` syncs pending, new ones get 503.
  Every table here is bounded, so intake memory is bounded whatever arrives.
- An accepted announce is recorded durably (publisher, addresses, head) BEFORE it is answered
  204, so a restarted daemon syncs it even if it never comes again (``Ingester`` replays them).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sync import Message, PeerId, SyncError
from sync.httpserver import Request, Response

from .ingest import Ingester

__all__ = ["AnnounceIntake", "IntakeResult"]

ANNOUNCE_PATHS = ("/announce", "/ingest/announce")
_TABLE = 10_000


@dataclass(frozen=True, slots=True)
class IntakeResult:
    status: int  # 204 accepted; 400, 403, 429, 503 refused
    message: str = ""


class _Lru(OrderedDict[bytes, float]):
    def touch(self, key: bytes, value: float) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _TABLE:
            self.popitem(last=False)


@dataclass
class AnnounceIntake:
    ingester: Ingester
    allow: Callable[[PeerId], bool] = lambda _: True
    rate: float = 10.0
    burst: float = 20.0
    dedupe_window: float = 60.0
    max_publishers: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _seen: _Lru = field(default_factory=_Lru)
    _tokens: dict[bytes, tuple[float, float]] = field(default_factory=dict)

    def accept(self, message: Message, sender: PeerId | None = None) -> IntakeResult:
        try:
            publisher = message.publisher() or sender
        except SyncError as exc:
            return IntakeResult(400, str(exc))
        if publisher is None:
            return IntakeResult(400, "announce addresses must end in /p2p/<publisher>")
        if not self.allow(publisher):
            return IntakeResult(403, f"publisher {publisher} is not allowed")
        now = self.clock()
        key = publisher.raw + message.cid.raw
        if now - self._seen.get(key, -1e18) < self.dedupe_window:
            return IntakeResult(204, "already accepted")
        if not self._take_token(publisher.raw, now):
            return IntakeResult(429, f"too many announces from {publisher}")
        if self.ingester.pending_publishers >= self.max_publishers:
            return IntakeResult(503, "too many syncs pending; announce again later")
        addrs = [a.rsplit("/p2p/", 1)[0] for a in message.addresses()]
        self.ingester.staging.record_announce(publisher.raw, message.cid.raw, addrs)
        self._seen.touch(key, now)
        self.ingester.announce(publisher, addrs, message.cid)
        return IntakeResult(204)

    def _take_token(self, publisher: bytes, now: float) -> bool:
        tokens, last = self._tokens.get(publisher, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._tokens[publisher] = (tokens, now)
            return False
        if len(self._tokens) >= _TABLE and publisher not in self._tokens:
            self._tokens.pop(next(iter(self._tokens)))
        self._tokens[publisher] = (tokens - 1, now)
        return True

    async def handle(self, request: Request) -> Response:
        """The HTTP handler for ``PUT /announce`` and ``PUT /ingest/announce``."""
        if request.path not in ANNOUNCE_PATHS:
            return Response.text(404, "not found")
        if request.method not in ("PUT", "POST"):
            return Response.text(405, "method not allowed", headers=(("allow", "PUT"),))
        as_json = request.header("content-type").split(";")[0].strip() == "application/json"
        try:
            message = (
                Message.from_json(request.body) if as_json else Message.from_cbor(request.body)
            )
        except SyncError as exc:
            return Response.text(400, f"bad announce: {exc}")
        result = self.accept(message)
        if result.status == 204:
            return Response(204)
        return Response.text(result.status, result.message)
