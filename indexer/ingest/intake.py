"""Announce intake: HTTP ``PUT /announce`` (and ``/ingest/announce``) and gossipsub messages.

Rules this module keeps:

- The body is the JSON form when ``Content-Type`` is ``application/json``, else the CBOR tuple
  (storetheindex decides the same way); the server caps bodies at 1 MiB.
- At most ``MAX_ADDRS`` addresses of at most ``MAX_ADDR_BYTES`` (binary) each, else 400 (stricter
  than go-libipni, which sets none: every pending sync, record and table entry holds them, so
  this bounds what one announce can make the indexer keep).
- Every address must carry the same ``/p2p/<publisher>`` (over HTTP it is the only way to know
  the publisher; over gossipsub the sender is the publisher when the addresses carry none).
  Addresses with a protocol code we do not know are skipped and logged, not refused (go-libipni
  ``GetAddrs``).
- ``OrigPeer`` (go-libipni's re-published announces): over gossipsub, a message that carries it
  is a relay's, and the original publisher it names is the publisher (addresses naming another
  ``/p2p/`` peer are a 400); the relay still spends its own rate-limit buckets as the source.
  Our own re-published message (``self_id`` sent it) is dropped.  Over HTTP it is ignored, as
  storetheindex's handler does.
- ``republish`` (the daemon's, with ``ingest.resend_direct_announce``: storetheindex's
  ``ResendDirectAnnounce``): every accepted HTTP announce (not a duplicate) is handed to it as
  the message to re-publish on gossipsub: the addresses kept, without ``/p2p/``, and
  ``OrigPeer`` naming the publisher.  It must not block (the daemon queues it).
- A publisher the policy denies gets 403; so does, with ``refuse_private``, an announce none of
  whose addresses is public (``sync.ipnisync.maurl.is_public``); its private ones are dropped.
- Announces are unauthenticated, so rate limits are kept per source (the client's IP, or the
  gossip peer that sent it: ``source_rate``) and per (source, publisher) pair (``rate``), after
  a burst each; past either, 429.  An IPv6 source counts by its /64 (one host's usual share).
  A stranger naming publisher X spends its own buckets, never X's.
- An announce accepted less than ``dedupe_window`` seconds ago (same publisher, head and
  addresses) is acknowledged and dropped only while that publisher's sync is still pending or
  running, or once the head is staged or indexed: after a failed sync the same announce is acted
  on again.  With ``max_publishers`` syncs pending, new ones get 503, except publishers that
  synced before (a flood of strangers cannot lock them out; there are only so many).  Every
  table here is bounded (``table`` entries, oldest dropped), so intake memory is bounded
  whatever arrives.
- An accepted announce is recorded durably (publisher, addresses, head) BEFORE it is answered
  204, so a restarted daemon syncs it even if it never comes again (``Ingester`` replays them).
  On a cluster node (``relay`` set, ``admit``) the record is the cluster's instead, written
  before the 204 (a 503 if the cluster cannot take it within ``RELAY_TIMEOUT``); its owner
  syncs it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
import trio

from indexer.ingest.engine import Ingester
from indexer.ingest.supervise import describe
from store import StoreError
from sync import Link, Message, PeerId, SyncError
from sync.errors import BadMultiaddr
from sync.ipnisync.maurl import is_public, publisher_endpoint
from sync.net.httpserver import Request, Response

__all__ = [
    "MAX_ADDRS",
    "MAX_ADDR_BYTES",
    "AnnounceIntake",
    "IntakeResult",
    "Relay",
    "TokenBuckets",
    "source_key",
]

log = structlog.get_logger("intake")

ANNOUNCE_PATHS = ("/announce", "/ingest/announce")
_TABLE = 10_000
MAX_ADDRS = 32
MAX_ADDR_BYTES = 512
RELAY_TIMEOUT = 5.0  # seconds an announce may wait for the cluster before it is a 503


@dataclass(frozen=True, slots=True)
class _Accepted:
    publisher: PeerId
    head: Link
    addrs: list[str]
    key: bytes  # the dedupe key
    now: float
    direct: bool  # over HTTP (not gossipsub)


# A cluster node's: make an accepted announce the cluster's (raises a ``StoreError`` if not).
Relay = Callable[[PeerId, Link, Sequence[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IntakeResult:
    status: int  # 204 accepted; 400, 403, 429, 503 refused
    message: str = ""


class _Lru(OrderedDict[bytes, float]):
    limit = _TABLE

    def touch(self, key: bytes, value: float) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def source_key(source: str) -> bytes:
    """The rate-limit key of a source: an IPv6 address by its /64 (one host's share), else as is."""
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return source.encode()
    if ip.version == 6 and ip.ipv4_mapped is None:
        return ipaddress.ip_network(f"{ip}/64", strict=False).network_address.packed[:8]
    return source.encode()


@dataclass
class TokenBuckets:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``; at most ``limit`` keys."""

    rate: float
    burst: float
    limit: int = _TABLE
    _tokens: OrderedDict[bytes, tuple[float, float]] = field(default_factory=OrderedDict)

    def has(self, key: bytes, now: float) -> bool:
        tokens, last = self._tokens.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate) >= 1

    def take(self, key: bytes, now: float) -> None:
        tokens, last = self._tokens.pop(key, (self.burst, now))
        self._tokens[key] = (min(self.burst, tokens + (now - last) * self.rate) - 1, now)
        while len(self._tokens) > self.limit:
            self._tokens.popitem(last=False)


def _publisher(message: Message, sender: PeerId | None) -> PeerId | None:
    """Whose announce ``message`` is: a gossip relay's names the original in ``OrigPeer``."""
    named = message.publisher()
    if sender is None or not message.orig_peer:
        return named or sender
    try:
        orig = PeerId.parse(message.orig_peer)
    except SyncError as exc:
        raise BadMultiaddr(f"announce OrigPeer: {exc}") from None
    if named is not None and named != orig:
        raise BadMultiaddr(f"announce addresses name {named}, its OrigPeer {orig}")
    return orig


@dataclass
class AnnounceIntake:
    ingester: Ingester
    allow: Callable[[PeerId], bool] = lambda _: True
    rate: float = 10.0  # per (source, publisher)
    burst: float = 20.0
    source_rate: float = 50.0  # per source, whatever publishers it names
    source_burst: float = 100.0
    dedupe_window: float = 60.0
    max_publishers: int = 10_000
    refuse_private: bool = False  # the config's refuse_private_addrs: 403 unless one is public
    table: int = _TABLE  # entries per intake table (dedupe, both kinds of bucket)
    clock: Callable[[], float] = time.monotonic
    relay: Relay | None = None
    self_id: PeerId | None = None  # this node's libp2p peer: its own re-published announces
    republish: Callable[[Message], None] | None = None  # accepted HTTP announces, for gossipsub
    _seen: _Lru = field(default_factory=_Lru)

    def __post_init__(self) -> None:
        self._seen.limit = self.table
        self._pairs = TokenBuckets(self.rate, self.burst, self.table)
        self._sources = TokenBuckets(self.source_rate, self.source_burst, self.table)

    def rates_changed(self) -> None:
        """Apply ``rate``, ``burst``, ``source_rate``, ``source_burst`` changed since made (a
        config reload); buckets keep the tokens they hold."""
        self._pairs.rate, self._pairs.burst = self.rate, self.burst
        self._sources.rate, self._sources.burst = self.source_rate, self.source_burst

    def accept(
        self, message: Message, sender: PeerId | None = None, *, source: str = ""
    ) -> IntakeResult:
        """Decide on one announce; ``source`` is who sent it (IP, or gossip peer ID)."""
        decided = self._decide(message, sender, source)
        if isinstance(decided, IntakeResult):
            return decided
        return self._act(decided)

    async def admit(
        self, message: Message, sender: PeerId | None = None, *, source: str = ""
    ) -> IntakeResult:
        """``accept``, with an accepted announce first handed to ``relay`` (a cluster node's:
        it is the cluster's before the 204); a relay that fails is a 503."""
        decided = self._decide(message, sender, source)
        if isinstance(decided, IntakeResult):
            return decided
        if self.relay is not None:
            try:
                with trio.move_on_after(RELAY_TIMEOUT) as waited:
                    await self.relay(decided.publisher, decided.head, decided.addrs)
            except StoreError as exc:
                log.warning("announce not relayed to the cluster", error=describe(exc))
                return IntakeResult(503, "the cluster is unavailable; announce again later")
            if waited.cancelled_caught:
                log.warning("announce not relayed to the cluster in time", timeout=RELAY_TIMEOUT)
                return IntakeResult(503, "the cluster is slow to answer; announce again later")
        return self._act(decided)

    def _act(self, accepted: _Accepted) -> IntakeResult:
        if self.relay is None:  # one node: the record is local (a cluster's is the relay's)
            self.ingester.record_announce(accepted.publisher, accepted.head, accepted.addrs)
        self._seen.touch(accepted.key, accepted.now)
        self.ingester.request_sync(accepted.publisher, accepted.addrs, accepted.head)
        if accepted.direct and self.republish is not None:
            relayed = Message.create(accepted.head, accepted.addrs)
            self.republish(Message(relayed.cid, relayed.addrs, orig_peer=str(accepted.publisher)))
        return IntakeResult(204)

    def _decide(
        self, message: Message, sender: PeerId | None, source: str
    ) -> IntakeResult | _Accepted:
        if len(message.addrs) > MAX_ADDRS or any(len(a) > MAX_ADDR_BYTES for a in message.addrs):
            return IntakeResult(
                400, f"at most {MAX_ADDRS} addresses of at most {MAX_ADDR_BYTES} bytes each"
            )
        try:
            publisher = _publisher(message, sender)
            addrs = [a.rsplit("/p2p/", 1)[0] for a in message.addresses()]
        except SyncError as exc:
            return IntakeResult(400, str(exc))
        if sender is not None and message.orig_peer and sender == self.self_id:
            return IntakeResult(204, "our own re-published announce")
        if unknown := message.unknown():
            log.info("announce addresses with unknown multiaddr codes skipped",
                     publisher=str(publisher), skipped=unknown, kept=len(addrs))  # fmt: skip
        if publisher is None:
            return IntakeResult(400, "announce addresses must end in /p2p/<publisher>")
        if not self.allow(publisher):
            return IntakeResult(403, f"publisher {publisher} is not allowed")
        if self.refuse_private:
            try:
                publisher_endpoint(addrs, publisher, refuse_private=True)
            except SyncError as exc:
                return IntakeResult(403, str(exc))
            addrs = [a for a in addrs if is_public(a)]  # only what the fetcher will dial
        now = self.clock()
        joined = b"\0".join([publisher.raw, message.cid.raw, *(a.encode() for a in addrs)])
        key = hashlib.blake2b(joined, digest_size=16).digest()  # 16 bytes, however long
        if now - self._seen.get(key, -1e18) < self.dedupe_window and (
            self.ingester.is_syncing(publisher.raw) or self.ingester.is_known_ad(message.cid)
        ):
            return IntakeResult(204, "already accepted")
        by_source = source_key(source or (str(sender) if sender else ""))
        pair = by_source + b"\0" + publisher.raw
        if not (self._sources.has(by_source, now) and self._pairs.has(pair, now)):
            return IntakeResult(429, f"too many announces from {source or publisher}")
        self._sources.take(by_source, now)
        self._pairs.take(pair, now)
        if (
            self.ingester.pending_publishers >= self.max_publishers
            and not self.ingester.is_syncing(publisher.raw)
            and not self.ingester.is_known_publisher(publisher)
        ):
            return IntakeResult(503, "too many syncs pending; announce again later")
        return _Accepted(publisher, message.cid, addrs, key, now, direct=sender is None)

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
        result = await self.admit(message, source=request.client)
        if result.status != 204:
            log.info("announce refused", source=request.client, status=result.status,
                     reason=result.message)  # fmt: skip
        if result.status == 204:
            return Response(204)
        return Response.text(result.status, result.message)
