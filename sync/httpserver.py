"""A small HTTP/1.1 server on h11, over any trio byte stream.

One implementation serves TCP sockets, unix sockets and libp2p streams (``/http/1.1``), because
it only needs ``receive_some``/``send_all``/``aclose``.  Handlers are plain async functions from
``Request`` to ``Response``.

Rules this module keeps:

- Keep-alive by default; a connection idle for ``idle_timeout`` seconds is closed.
- Request bodies are capped (``max_body``): 413 before reading past the cap.
- Malformed requests get 400 and the connection is closed; a handler that raises gets 500 (logged
  with its traceback) and never takes the server down.  Nothing here answers 500 for bad input.
- ``Response.compressible`` bodies are gzip-encoded when the client sends ``Accept-Encoding:
  gzip``; a streamed body (an async iterator) goes out chunked, one chunk per item.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import structlog
import trio

__all__ = [
    "ByteStream",
    "Handler",
    "Request",
    "Response",
    "serve_connection",
    "serve_tcp",
    "serve_unix",
]

log = structlog.get_logger(__name__)

_RECV = 65536
_GZIP_MIN = 512


class ByteStream(Protocol):
    """What the server needs of a connection (trio streams and libp2p stream adapters)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def send_all(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""
    client: str = ""  # the peer's address (IP for TCP), when the transport knows it

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


async def _send(conn: h11.Connection, stream: ByteStream, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


_COALESCE = 64 << 10  # responses up to this size go out in one send


def _status_line(status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    return h11.Response(status_code=status, headers=headers, reason=reason)


async def _respond(
    conn: h11.Connection, stream: ByteStream, request: Request | None, response: Response
) -> None:
    headers = [(b"server", b"ipni-indexer")]
    if response.content_type:
        headers.append((b"content-type", response.content_type.encode()))
    headers += [(k.encode(), v.encode()) for k, v in response.headers]
    body = response.body
    head_only = request is not None and request.method == "HEAD"
    if isinstance(body, bytes):
        wants_gzip = request is not None and "gzip" in request.header("accept-encoding")
        if response.compressible and wants_gzip and len(body) >= _GZIP_MIN:
            body = gzip.compress(body, compresslevel=1)  # ~3x faster than 5, ~same ratio here
            headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
        headers.append((b"content-length", str(len(body)).encode()))
        events: list[Any] = [_status_line(response.status, headers)]
        if body and not head_only:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        if len(body) <= _COALESCE:  # one send: a send per part costs a system call each
            await stream.send_all(b"".join(conn.send(e) or b"" for e in events))
        else:
            for event in events:
                await _send(conn, stream, event)
        return
    else:
        await _send(conn, stream, _status_line(response.status, headers))
        async for chunk in body:
            if chunk and not head_only:
                await _send(conn, stream, h11.Data(data=chunk))
    await _send(conn, stream, h11.EndOfMessage())


async def _next_event(conn: h11.Connection, stream: ByteStream, idle_timeout: float) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = b""
        with trio.move_on_after(idle_timeout):
            data = bytes(await stream.receive_some(_RECV))
        conn.receive_data(data)


async def serve_connection(
    stream: ByteStream,
    handler: Handler,
    *,
    max_body: int = 1 << 20,
    idle_timeout: float = 60.0,
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the peer or the protocol closes it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=32 * 1024)
    try:
        while await _serve_one(conn, stream, handler, max_body, idle_timeout):
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, OSError):
        pass  # the peer went away mid-exchange
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.aclose()


async def _serve_one(
    conn: h11.Connection, stream: ByteStream, handler: Handler, max_body: int, idle: float
) -> bool:
    """One request/response cycle; False when the connection must close."""
    try:
        event = await _next_event(conn, stream, idle)
        if not isinstance(event, h11.Request):
            return False  # ConnectionClosed
        length = dict(event.headers).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            await _respond(conn, stream, None, Response.text(413, "request body too large"))
            return False
        body = bytearray()
        while True:
            part = await _next_event(conn, stream, idle)
            if isinstance(part, h11.EndOfMessage):
                break
            if isinstance(part, h11.ConnectionClosed):
                return False
            body += part.data
            if len(body) > max_body:
                await _respond(conn, stream, None, Response.text(413, "request body too large"))
                return False
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await _respond(conn, stream, None, Response.text(400, f"bad request: {exc}"))
        return False
    request = _request(event, bytes(body))
    try:
        response = await handler(request)
    except Exception:
        log.exception("http handler failed", method=request.method, path=request.path)
        response = Response.text(500, "internal error")
    await _respond(conn, stream, request, response)
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def serve_tcp(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_body: int = 1 << 20,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0 picks a free port) and serve until cancelled."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners)

    async def on_connection(stream: trio.SocketStream) -> None:
        try:
            client = str(stream.socket.getpeername()[0])
        except OSError:
            client = ""

        async def with_client(request: Request) -> Response:
            return await handler(dataclasses.replace(request, client=client))

        await serve_connection(stream, with_client, max_body=max_body)

    await trio.serve_listeners(on_connection, listeners)


async def serve_unix(
    handler: Handler,
    path: str,
    *,
    max_body: int = 256 << 20,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on a unix socket at ``path`` (owner-only) and serve until cancelled."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started(path)

    async def on_connection(stream: trio.SocketStream) -> None:
        await serve_connection(stream, handler, max_body=max_body, idle_timeout=3600)

    try:
        await trio.serve_listeners(on_connection, [listener])
    finally:
        if os.path.exists(path):
            os.unlink(path)
