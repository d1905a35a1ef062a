"""``POST /register`` on the ingest server: a provider registers its addresses (storetheindex's
``postRegisterProvider``), without publishing an advertisement.

Rules this module keeps:

- The body is go-libipni's RegisterRequest (``sync.announce.register``): verified before anything
  is written; a bad one is 400 with the reason, a provider the policy refuses is 403.
- Its sequence number must be newer than the last one accepted from that provider (storetheindex's
  ``CheckSequence``): a replayed request is 400.  The last numbers are kept for ``table``
  providers (oldest dropped): memory stays bounded.
- Registration is unauthenticated but signed, and a key is free: requests are rate limited per
  source (``rate`` a second after a ``burst``), past it 429, so a flood of fresh keys cannot
  grow the registry faster than that.
- The registry write keeps what the record holds (last ad, publisher, errors) and replaces the
  addresses: ``save`` (the daemon's: the node's ``IndexStore``, or the cluster's backend).
- Answers: 200 (empty body) as storetheindex; 405 for a method other than POST.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from indexer.ingest.intake import TokenBuckets, source_key
from store import StoreError
from sync import PeerId, SyncError
from sync.announce.register import PeerRecord, read_register_request
from sync.net.httpserver import Request, Response

__all__ = ["RegisterIntake", "Save"]

log = structlog.get_logger("intake")

# Write the provider's addresses into its registry record (creating it if needed).
Save = Callable[[PeerRecord], Awaitable[None]]
_TABLE = 10_000


@dataclass
class RegisterIntake:
    save: Save
    allow: Callable[[PeerId], bool] = lambda _: True
    rate: float = 1.0  # registrations a second per source, after the burst
    burst: float = 10.0
    table: int = _TABLE
    clock: Callable[[], float] = time.monotonic
    _seqs: OrderedDict[bytes, int] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._sources = TokenBuckets(self.rate, self.burst, self.table)

    async def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.text(405, "method not allowed", headers=(("allow", "POST"),))
        now, source = self.clock(), source_key(request.client)
        if not self._sources.has(source, now):
            return Response.text(429, f"too many registrations from {request.client}")
        self._sources.take(source, now)
        try:
            record = read_register_request(request.body)
        except SyncError as exc:
            return Response.text(400, f"cannot read register request: {exc}")
        if not self.allow(record.peer):
            return Response.text(403, f"provider {record.peer} is not allowed")
        last = self._seqs.get(record.peer.raw)
        if last is not None and record.seq <= last:
            return Response.text(400, f"sequence {record.seq} is not newer than {last}")
        try:
            await self.save(record)
        except StoreError as exc:
            log.warning("registration not saved", provider=str(record.peer), error=str(exc))
            return Response.text(503, "the index is unavailable; register again later")
        self._seqs.pop(record.peer.raw, None)
        self._seqs[record.peer.raw] = record.seq
        while len(self._seqs) > self.table:
            self._seqs.popitem(last=False)
        log.info("provider registered", provider=str(record.peer), addrs=list(record.addrs))
        return Response(200)
