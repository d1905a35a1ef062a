"""A small HTTP/1.1 server on h11, over any trio byte stream, that no client can break or stall.

One implementation serves TCP sockets, unix sockets and libp2p streams (``/http/1.1``), because
it only needs ``receive_some``/``send_all``/``aclose``.  Handlers are plain async functions from
``Request`` to ``Response``.  This module listens and runs connections; ``httpmessage`` holds
the messages, the checks and the raw replies, ``httpconnection`` one connection's cycles, and
``httplimits`` the connection caps and descriptor budget.

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
  instead of a reset; it still counts against the cap).  A new connection whose first bytes
  cannot start a request line (binary, a TLS ClientHello: a method must be a token) is refused
  at once, without waiting for a whole head.  Each refusal is one structured log line,
  rate-limited per server.
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
  gzip`` (by ``Response.gzipped`` when the handler has its own source of the encoding, such as
  one kept since the body was written); a streamed body (an async iterator) goes out chunked,
  one chunk per item.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import structlog
import trio

from sync.net.httpconnection import Connection
from sync.net.httplimits import (
    RESERVED_FILES,
    ConnectionLimiter,
    LogBudget,
    descriptors_for,
    fit_connection_caps,
    raise_open_files_limit,
    share_open_files,
)
from sync.net.httpmessage import (
    STREAM_ERRORS,
    ByteStream,
    Handler,
    Limits,
    Request,
    Response,
    close_stream,
    peer_name,
)

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

_ACCEPT_RETRY = 0.1  # seconds, as trio.serve_listeners
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


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
            await limiter.refuse(stream, peer_name(stream))
            return
        name = limiter.name
    connection = Connection(stream, handler, limits, slot, name)
    try:
        with slot.scope if slot is not None else trio.CancelScope():
            await connection.run()
    except STREAM_ERRORS:
        pass  # the peer went away mid-exchange
    except Exception:
        log.exception("http connection task failed", server=name, peer=connection.peer)
        if limiter is not None:
            limiter.failures += 1
    finally:
        try:
            await close_stream(stream, linger=connection.linger)
        finally:  # a lingering close still holds its descriptor: it counts until closed
            if slot is not None:
                slot.limiter.release(slot)


async def _accept_loop(
    listener: trio.SocketListener,
    on_stream: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
    name: str,
) -> None:
    budget = LogBudget(1)
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
