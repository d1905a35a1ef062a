"""A small HTTP/1.1 server on h11, over any trio byte stream, that no client can break or stall.

One implementation serves TCP sockets, unix sockets and libp2p streams (``/http/1.1``), because
it only needs ``receive_some``/``send_all``/``aclose``.  Handlers are plain async functions from
``Request`` to ``Response``.

Rules this module keeps:

- **Nothing a client sends raises out of a connection task.**  Every h11 error (remote and
  local), every stream error and every handler failure is caught inside ``serve_connection``;
  what cannot be answered is closed.  A last-resort ``except Exception`` logs ``http connection
  task failed`` with its traceback: that line means a bug here, and the hostile-input tests
  assert it never appears.  (Before this rule, h11's ``LocalProtocolError`` from an error reply
  with a body after a HEAD escaped through the listeners' nursery and ended the daemon.)
- **Refused requests get a status and a closed connection**, never a 2xx: 400 for what h11
  refuses (no version, bad chunking, two different Content-Lengths, no Host, non-HTTP bytes) and
  for what we refuse beyond it: a HEAD with a body, both Content-Length and Transfer-Encoding
  (the request-smuggling shape RFC 9112 6.1 lets a server reject), an ``Upgrade:`` header; 408
  when the head or body deadline passes; 413 for a declared or received body over ``max_body``
  (before the body is read); 431 for a head over ``max_head`` bytes or ``max_headers`` fields;
  501 for CONNECT and any transfer coding but chunked; 505 for an HTTP version but 1.0/1.1.
  Refusals are written as raw bytes with ``Connection: close`` (no h11 state involved, so they
  cannot fail), never with a body after a HEAD; then the connection half-closes and drains what
  the peer still sends for up to a second (a lingering close, so the peer reads the status
  instead of a reset).  Each refusal is one structured log line, rate-limited per server.
- **No protocol switch, ever.**  h11 switches protocols on a 2xx to CONNECT or a 101 to
  ``Upgrade``; neither is ever sent.  CONNECT is 501 (RFC 9110 9.1: a method the server does not
  implement; this is no proxy); ``Upgrade`` is 400 rather than silently ignored: the websocket
  clients that send it fail either way, h2c's upgrade is deprecated (RFC 9113 3.1), and a
  refusal closes the "h2c smuggling" path through proxies that honour upgrades.
- **Methods are the handlers' business**: every other method, known or not (``BREW``), reaches
  the handler, which answers 405 with ``Allow`` (find, routing, admin, ipnisync, announce and the
  ingest status routes all do); a HEAD is answered as a GET without the body (a streamed body is
  closed unread).
- **Deadlines, none reset per byte.**  The whole request head must arrive within
  ``head_timeout`` (a new connection's clock starts at accept, a keep-alive request's at its
  first byte), so one byte at a time cannot hold a connection.  A body must keep up with
  ``body_timeout + received / min_rate`` from its start.  Each write must finish within
  ``send_timeout + size / min_rate``, so a peer that stops reading loses the connection.  A
  keep-alive connection idle for ``idle_timeout`` is closed silently.  A handler has no deadline
  (it is ours).
- **Limits.**  ``max_head`` is h11's ``max_incomplete_event_size``; the head is read in pieces
  no larger than what is left of it, so a head over the limit can never complete inside one read
  and always gets 431 (h11 alone checks only while incomplete).  ``max_headers`` fields at most.
- **Connection cap per server** (``ConnectionLimiter``).  At the cap, the connection idle the
  longest (keep-alive between requests, or accepted and silent) is closed to make room: idle
  connections are the cheapest to drop and an idle flood just rotates.  With none idle, the new
  connection gets a raw 503 with ``Retry-After`` and is closed; at most ``cap // 8 + 8`` such
  refusals linger at once, past that a new connection is closed at once.  So a server holds at
  most ``cap + cap // 8 + 8`` descriptors (``descriptors_for``), and ``share_open_files`` scales
  a process's caps down to fit its ``RLIMIT_NOFILE`` (``raise_open_files_limit`` first raises
  the soft limit to the hard one), so a flood on one server cannot starve the others.
- **accept(2) out of descriptors** (EMFILE, ENFILE, ENOMEM, ENOBUFS): log ``http accept
  failed``, sleep 0.1 s and retry, as ``trio.serve_listeners`` does (our own accept loop, so the
  cap is applied at accept and the line is structlog's, not the stdlib's).
- Keep-alive by default (pipelining works: h11 buffers the next request); ``Expect:
  100-continue`` is answered before the body is read.  A handler that raises gets 500 (logged
  with its traceback); a streamed body that raises mid-way, or a response h11 refuses, is
  logged and the connection closed (the peer sees a truncated response, never a wrong one).
- ``Response.compressible`` bodies are gzip-encoded when the client sends ``Accept-Encoding:
  gzip``; a streamed body (an async iterator) goes out chunked, one chunk per item.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import resource
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import structlog
import trio

__all__ = [
    "RESERVED_FILES",
    "ByteStream",
    "ConnectionLimiter",
    "Handler",
    "Limits",
    "Request",
    "Response",
    "descriptors_for",
    "fit_connection_caps",
    "raise_open_files_limit",
    "serve_connection",
    "serve_tcp",
    "serve_unix",
    "share_open_files",
]

log = structlog.get_logger(__name__)

_RECV = 65536
_GZIP_MIN = 512
_COALESCE = 64 << 10  # responses up to this size go out in one send
_LINGER = 1.0  # seconds a refused connection drains what its peer still sends
_LINGER_BYTES = 1 << 20
_ACCEPT_RETRY = 0.1  # seconds, as trio.serve_listeners
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_SNIFF = 64  # bytes of a connection's first request checked before h11 sees a whole head
_MAX_METHOD = 32
# Descriptors a serving process keeps out of its HTTP servers' share: LevelDB's table cache
# (max_open_files, 1000 by default), its logs and lock, libp2p, listeners, epoll, stdio.
RESERVED_FILES = 1100
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ByteStream(Protocol):
    """What the server needs of a connection (trio streams and libp2p stream adapters)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def send_all(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may take of a server (sizes in bytes, times in seconds)."""

    max_body: int = 1 << 20
    max_head: int = 32 << 10
    max_headers: int = 100
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    min_rate: float = 16 << 10  # bytes/s a body or a response must keep up, past the timeouts
    send_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_connections: int = 256


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes | AsyncIterator[bytes] = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())
    compressible: bool = False

    @classmethod
    def text(cls, status: int, message: str, **kw: Any) -> Response:
        return cls(status, message.encode() + b"\n", "text/plain; charset=utf-8", **kw)


Handler = Callable[[Request], Awaitable[Response]]


class _LogBudget:
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


def _rejecting_allowance(cap: int) -> int:
    return cap // 8 + 8


def descriptors_for(cap: int) -> int:
    """The most descriptors a server capped at ``cap`` connections holds (503s included)."""
    return cap + _rejecting_allowance(cap)


class _Slot:
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
        self.log = _LogBudget()
        self._open: set[_Slot] = set()
        self._idle: dict[_Slot, None] = {}  # insertion order = idle since
        self._rejecting = 0

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def admit(self) -> _Slot | None:
        if len(self._open) >= self.cap:
            if not self._idle:
                return None
            victim = next(iter(self._idle))
            self.release(victim)
            victim.scope.cancel()
            self.evicted += 1
        slot = _Slot(self)
        self._open.add(slot)
        return slot

    def idle(self, slot: _Slot) -> None:
        if slot in self._open:
            self._idle.pop(slot, None)
            self._idle[slot] = None

    def busy(self, slot: _Slot) -> None:
        self._idle.pop(slot, None)

    def release(self, slot: _Slot) -> None:
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
            await _close(stream, linger=False)
            return
        self._rejecting += 1
        try:
            body = b"busy: too many connections, retry later\n"
            reply = _raw_reply(503, body, head_only=False, extra=((b"retry-after", b"1"),))
            with trio.move_on_after(_LINGER):
                with _quiet():
                    await stream.send_all(reply)
            await _close(stream, linger=True)
        finally:
            self._rejecting -= 1


def _request(event: h11.Request, body: bytes) -> Request:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        method=event.method.decode("ascii"),
        path=unquote(parts.path) or "/",
        query=parse_qs(parts.query),
        headers=headers,
        body=body,
    )


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _status_line(status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
    return h11.Response(status_code=status, headers=headers, reason=_reason(status))


def _raw_reply(
    status: int, body: bytes, *, head_only: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """A complete ``Connection: close`` response, built without h11 (it cannot fail)."""
    lines = [b"HTTP/1.1 %d %s" % (status, _reason(status)), b"server: ipni-indexer"]
    lines += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body)]
    lines += [b"connection: close", *(k + b": " + v for k, v in extra)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def _garbage(prefix: bytes) -> bool:
    """True when ``prefix``, a connection's first bytes, cannot begin an HTTP request line."""
    method, space, _ = prefix.lstrip(b"\r\n").partition(b" ")
    if any(byte not in _TCHAR for byte in method):
        return True
    return len(method) > _MAX_METHOD or (bool(space) and not method)


class _Refuse(Exception):
    """Answer ``status`` and close."""

    def __init__(self, status: int, reason: str, *extra: tuple[bytes, bytes]) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


class _Hangup(Exception):
    """Close without a word (the peer left, went idle, or stopped reading)."""


def _quiet() -> contextlib.suppress:
    """Swallow what a stream raises when its peer has gone."""
    return contextlib.suppress(*_STREAM_ERRORS)


def _peer(stream: ByteStream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        name = sock.getpeername() if sock is not None else None
    except OSError:
        return ""
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name or "")


async def _close(stream: ByteStream, *, linger: bool) -> None:
    """Close ``stream``; with ``linger``, half-close first and drain the peer for a moment."""
    try:
        if linger:
            with trio.move_on_after(_LINGER), _quiet():
                send_eof = getattr(stream, "send_eof", None)
                if send_eof is not None:
                    await send_eof()
                drained = 0
                while drained < _LINGER_BYTES:
                    data = await stream.receive_some(_RECV)
                    if not data:
                        break
                    drained += len(data)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1), _quiet():
            await stream.aclose()


class _Connection:
    """One HTTP/1.1 connection: request/response cycles until either side ends it."""

    def __init__(
        self,
        stream: ByteStream,
        handler: Handler,
        limits: Limits,
        slot: _Slot | None,
        name: str,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits
        self.slot = slot
        self.name = name
        self.peer = _peer(stream)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)
        self.accepted = trio.current_time()
        self.served = 0
        self.linger = False
        self.method = b""
        self._sniff: bytearray | None = bytearray()

    # -- the cycle --------------------------------------------------------------------------

    async def run(self) -> None:
        while await self._cycle():
            self.h11.start_next_cycle()
            self.served += 1

    async def _cycle(self) -> bool:
        """One request and its response; False when the connection must close."""
        self.method = b""
        try:
            request = await self._read_request()
        except _Hangup:
            return False
        except _Refuse as refusal:
            await self._refuse(refusal)
            return False
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("http handler failed", method=request.method, path=request.path)
            response = Response.text(500, "internal error")
        try:
            await self._respond(request, response)
        except _Hangup:
            return False
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def _refuse(self, refusal: _Refuse) -> None:
        self.linger = True
        if self.slot is not None:
            self.slot.limiter.rejected += 1
        budget = self.slot.limiter.log if self.slot is not None else _DEFAULT_BUDGET
        if (suppressed := budget.take()) is not None:
            log.info(
                "http request refused", server=self.name, status=refusal.status,
                reason=refusal.reason, peer=self.peer, suppressed=suppressed,
            )  # fmt: skip
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already under way: closing is all that is left
        body = f"{refusal.reason}\n".encode("utf-8", "replace")
        reply = _raw_reply(
            refusal.status, body, head_only=self.method == b"HEAD", extra=refusal.extra
        )
        with contextlib.suppress(_Hangup):
            await self._send(reply)

    # -- reading ----------------------------------------------------------------------------

    def _next(self) -> Any:
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise _Refuse(exc.error_status_hint, f"bad request: {exc}") from None

    async def _receive(self, deadline: float, size: int) -> bytes | None:
        """Up to ``size`` bytes (b"" at EOF), or None when ``deadline`` passes first."""
        with trio.move_on_at(deadline):
            return bytes(await self.stream.receive_some(size))
        return None

    def _mark(self, idle: bool) -> None:
        if self.slot is not None:
            if idle:
                self.slot.limiter.idle(self.slot)
            else:
                self.slot.limiter.busy(self.slot)

    async def _read_head(self) -> h11.Request:
        limits, conn = self.limits, self.h11
        event = self._next()
        if event is h11.NEED_DATA:
            now = trio.current_time()
            waiting = not conn.trailing_data[0]  # no byte of this request has arrived yet
            if self.served == 0:
                deadline = self.accepted + limits.head_timeout
            else:
                deadline = now + (limits.idle_timeout if waiting else limits.head_timeout)
            fed = 0
            self._mark(idle=waiting)
            try:
                while event is h11.NEED_DATA:
                    size = min(_RECV, max(1, limits.max_head + 1 - fed))
                    data = await self._receive(deadline, size)
                    if data is None:
                        if waiting:
                            raise _Hangup
                        raise _Refuse(408, "request head not received in time")
                    if data and waiting:
                        waiting = False
                        self._mark(idle=False)
                        if self.served:
                            deadline = trio.current_time() + limits.head_timeout
                    self._check_start(data)
                    fed += len(data)
                    conn.receive_data(data)
                    event = self._next()
            finally:
                self._mark(idle=False)
        if isinstance(event, h11.ConnectionClosed):
            raise _Hangup
        if not isinstance(event, h11.Request):  # pragma: no cover - h11's server cycle
            raise _Refuse(400, f"unexpected {type(event).__name__}")
        return event

    def _check_start(self, data: bytes) -> None:
        """Refuse at once what cannot be HTTP (binary, a TLS ClientHello) on a new connection."""
        if self._sniff is None:
            return
        self._sniff += data[: _SNIFF - len(self._sniff)]
        if _garbage(bytes(self._sniff)):
            raise _Refuse(400, "not an HTTP/1.1 request")
        if b" " in self._sniff.lstrip(b"\r\n") or len(self._sniff) >= _SNIFF:
            self._sniff = None

    def _check(self, event: h11.Request) -> None:
        """What h11 accepts and we do not."""
        limits = self.limits
        self.method = event.method
        if event.http_version not in (b"1.0", b"1.1"):
            raise _Refuse(505, f"HTTP/{event.http_version.decode()} is not supported")
        if len(event.headers) > limits.max_headers:
            raise _Refuse(431, f"more than {limits.max_headers} header fields")
        if event.method == b"CONNECT":
            raise _Refuse(501, "CONNECT is not supported")
        names = {name for name, _ in event.headers}
        if b"upgrade" in names:
            raise _Refuse(400, "protocol upgrade is not supported")
        length = next((v for n, v in event.headers if n == b"content-length"), None)
        chunked = b"transfer-encoding" in names
        if chunked and length is not None:
            raise _Refuse(400, "both Content-Length and Transfer-Encoding")
        if event.method == b"HEAD" and (chunked or (length is not None and int(length))):
            raise _Refuse(400, "HEAD with a body")
        if length is not None and int(length) > limits.max_body:
            raise _Refuse(413, "request body too large")

    async def _read_body(self) -> bytes:
        limits, conn = self.limits, self.h11
        if conn.they_are_waiting_for_100_continue:
            await self._send(
                conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        body = bytearray()
        start, received = trio.current_time(), 0
        while True:
            event = self._next()
            if event is h11.NEED_DATA:
                deadline = start + limits.body_timeout + received / limits.min_rate
                data = await self._receive(deadline, _RECV)
                if data is None:
                    raise _Refuse(408, "request body not received in time")
                received += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_body:
                    raise _Refuse(413, "request body too large")
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # pragma: no cover - h11 raises on a body cut short
                raise _Hangup

    async def _read_request(self) -> Request:
        event = await self._read_head()
        self._check(event)
        return _request(event, await self._read_body())

    # -- writing ----------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        if not data:
            return
        limits = self.limits
        with trio.move_on_after(limits.send_timeout + len(data) / limits.min_rate) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            if self.slot is not None:
                self.slot.limiter.stalled += 1
            if (suppressed := _DEFAULT_BUDGET.take()) is not None:
                log.info(
                    "http peer stopped reading; closed", server=self.name, peer=self.peer,
                    pending=len(data), suppressed=suppressed,
                )  # fmt: skip
            raise _Hangup

    async def _send_event(self, event: Any) -> None:
        await self._send(self.h11.send(event) or b"")

    async def _respond(self, request: Request, response: Response) -> None:
        try:
            await self._respond_h11(request, response)
        except h11.LocalProtocolError as exc:
            log.error("http response refused by h11", path=request.path, error=str(exc))
            raise _Hangup from None

    async def _respond_h11(self, request: Request, response: Response) -> None:
        headers = [(b"server", b"ipni-indexer")]
        if response.content_type:
            headers.append((b"content-type", response.content_type.encode()))
        headers += [(k.encode(), v.encode()) for k, v in response.headers]
        body = response.body
        head_only = request.method == "HEAD"
        if isinstance(body, bytes):
            wants_gzip = "gzip" in request.header("accept-encoding")
            if response.compressible and wants_gzip and len(body) >= _GZIP_MIN:
                body = gzip.compress(body, compresslevel=1)  # ~3x faster than 5, ~same ratio
                headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            headers.append((b"content-length", str(len(body)).encode()))
            events: list[Any] = [_status_line(response.status, headers)]
            if body and not head_only:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            if len(body) <= _COALESCE:  # one send: a send per part costs a system call each
                await self._send(b"".join(self.h11.send(e) or b"" for e in events))
            else:
                for event in events:
                    await self._send_event(event)
            return
        await self._send_event(_status_line(response.status, headers))
        if head_only:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        else:
            try:
                async for chunk in body:
                    if chunk:
                        await self._send_event(h11.Data(data=chunk))
            except (_Hangup, h11.LocalProtocolError, *_STREAM_ERRORS):
                raise
            except Exception:
                log.exception("http response stream failed", path=request.path)
                raise _Hangup from None
        await self._send_event(h11.EndOfMessage())


_DEFAULT_BUDGET = _LogBudget()


async def serve_connection(
    stream: ByteStream,
    handler: Handler,
    *,
    max_body: int | None = None,
    idle_timeout: float | None = None,
    limits: Limits | None = None,
    limiter: ConnectionLimiter | None = None,
    name: str = "http",
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the peer or the protocol closes it.

    ``max_body`` and ``idle_timeout`` override those of ``limits``; with a ``limiter`` the
    connection counts against its cap (and may be refused, or closed while idle, by it).
    Returns normally whatever the peer sends; only cancellation propagates.
    """
    limits = limits or Limits()
    if max_body is not None:
        limits = replace(limits, max_body=max_body)
    if idle_timeout is not None:
        limits = replace(limits, idle_timeout=idle_timeout)
    slot = None
    if limiter is not None:
        slot = limiter.admit()
        if slot is None:
            await limiter.refuse(stream, _peer(stream))
            return
        name = limiter.name
    connection = _Connection(stream, handler, limits, slot, name)
    try:
        with slot.scope if slot is not None else trio.CancelScope():
            await connection.run()
    except _STREAM_ERRORS:
        pass  # the peer went away mid-exchange
    except Exception:
        log.exception("http connection task failed", server=name, peer=connection.peer)
        if limiter is not None:
            limiter.failures += 1
    finally:
        if slot is not None:
            slot.limiter.release(slot)
        await _close(stream, linger=connection.linger)


async def _accept_loop(
    listener: trio.SocketListener,
    on_stream: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
    name: str,
) -> None:
    budget = _LogBudget(1)
    failures = 0
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                failures += 1
                if (suppressed := budget.take()) is not None:
                    log.warning(
                        "http accept failed; retrying", server=name,
                        errno=errno.errorcode[exc.errno], error=os.strerror(exc.errno),
                        retry_in=_ACCEPT_RETRY, failures=failures, suppressed=suppressed,
                    )  # fmt: skip
                await trio.sleep(_ACCEPT_RETRY)
                continue
            nursery.start_soon(on_stream, stream)


async def _serve_listeners(
    listeners: Sequence[trio.SocketListener],
    handler: Handler,
    limits: Limits,
    limiter: ConnectionLimiter,
) -> None:
    name = limiter.name

    async def on_stream(stream: trio.SocketStream) -> None:
        await serve_connection(stream, handler, limits=limits, limiter=limiter)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, on_stream, nursery, name)


async def serve_tcp(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_body: int | None = None,
    limits: Limits | None = None,
    name: str = "http",
    limiter: ConnectionLimiter | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0 picks a free port) and serve until cancelled.

    ``limiter`` (default: a new one capped at ``limits.max_connections``) lets the caller read
    its counters.
    """
    limits = limits or Limits()
    if max_body is not None:
        limits = replace(limits, max_body=max_body)
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners)
    limiter = limiter or ConnectionLimiter(limits.max_connections, name)
    await _serve_listeners(listeners, handler, limits, limiter)


_UNIX_LIMITS = Limits(max_body=256 << 20, idle_timeout=3600, max_connections=64)


async def serve_unix(
    handler: Handler,
    path: str,
    *,
    max_body: int | None = None,
    limits: Limits = _UNIX_LIMITS,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on a unix socket at ``path`` (owner-only) and serve until cancelled."""
    if max_body is not None:
        limits = replace(limits, max_body=max_body)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started(path)
    try:
        limiter = ConnectionLimiter(limits.max_connections, "unix")
        await _serve_listeners([listener], handler, limits, limiter)
    finally:
        if os.path.exists(path):
            os.unlink(path)


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
