"""The HTTP/1.1 messages of ``sync.net.httpserver``: what handlers see and return, and the checks
and raw replies that need no h11 state.

Rules this module keeps (the server's full rules are in ``sync.net.httpserver``):

- ``check_request`` refuses what h11 accepts and the server does not; ``is_garbage`` refuses a
  connection's first bytes when no HTTP request line can start with them.
- ``raw_reply`` builds a complete ``Connection: close`` response without h11, so a refusal can
  never fail, and never carries a body after a HEAD.
- ``Refusal`` and ``Hangup`` (classes of ``sync.errors``) are control flow inside the server:
  they never leave it.
- ``close_stream`` always closes (shielded); with ``linger`` it first half-closes and drains
  the peer for at most ``LINGER`` seconds / ``LINGER_BYTES``, so the peer reads the status
  instead of a reset.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

from sync.errors import Hangup, Refusal

__all__ = [
    "LINGER",
    "STREAM_ERRORS",
    "ByteStream",
    "Handler",
    "Hangup",
    "Limits",
    "Refusal",
    "Request",
    "Response",
    "check_request",
    "client_ip",
    "close_stream",
    "gzip_encoding",
    "is_garbage",
    "parse_request",
    "peer_name",
    "quiet",
    "raw_reply",
    "split_target",
    "status_line",
]

RECV = 65536
GZIP_MIN = 512  # bodies shorter than this go out as they are
LINGER = 1.0  # seconds a refused connection drains what its peer still sends
LINGER_BYTES = 1 << 20
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_MAX_METHOD = 32
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


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
    # Where ``body``'s gzip encoding comes from instead of ``gzip_encoding`` (same contract), e.g.
    # a content-addressed block's encoding kept since it was written; asked only when the
    # response goes to a client that accepts gzip.
    gzipped: Callable[[bytes], bytes | None] | None = None

    @classmethod
    def text(cls, status: int, message: str, **kw: Any) -> Response:
        return cls(status, message.encode() + b"\n", "text/plain; charset=utf-8", **kw)


Handler = Callable[[Request], Awaitable[Response]]


def gzip_encoding(body: bytes) -> bytes | None:
    """``body`` as a compressible response sends it gzip-encoded, or None when it goes out as
    it is (too short to be worth it).  Level 1: ~3x faster than 5 at about the same ratio on
    what is served (base64 and varint digests of random hashes)."""
    return gzip.compress(body, compresslevel=1) if len(body) >= GZIP_MIN else None


def split_target(target: str) -> tuple[str, str]:
    """A request target's (path, query), as ``urlsplit`` gives them.  The usual origin-form
    target (``/path?query``, no fragment) is split without ``urlsplit``, whose cache only helps
    a target asked before (``/health``), never ``/multihash/<a new key>``; h11 lets no
    whitespace or control byte into a target, which is all ``urlsplit`` would strip first.  A
    target ``urlsplit`` refuses is a ``Refusal`` (400)."""
    if target[:1] == "/" and target[:2] != "//" and "#" not in target:
        path, _, query = target.partition("?")
        return path, query
    try:
        parts = urlsplit(target)
    except ValueError:  # "//[": urlsplit refuses the authority's bracketed IPv6 address
        raise Refusal(400, "bad request target") from None
    return parts.path, parts.query


def parse_request(event: h11.Request, body: bytes, client: str = "") -> Request:
    path, query = split_target(event.target.decode("latin-1"))
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        method=event.method.decode("ascii"),
        path=unquote(path) or "/",
        query=parse_qs(query) if query else {},
        headers=headers,
        body=body,
        client=client,
    )


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def status_line(status: int, headers: list[tuple[bytes, bytes]]) -> h11.Response:
    return h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))


def raw_reply(
    status: int, body: bytes, *, head_only: bool, extra: Sequence[tuple[bytes, bytes]] = ()
) -> bytes:
    """A complete ``Connection: close`` response, built without h11 (it cannot fail)."""
    lines = [b"HTTP/1.1 %d %s" % (status, reason_phrase(status)), b"server: ipni-indexer"]
    lines += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body)]
    lines += [b"connection: close", *(k + b": " + v for k, v in extra)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def is_garbage(prefix: bytes) -> bool:
    """True when ``prefix``, a connection's first bytes, cannot begin an HTTP request line."""
    method, space, _ = prefix.lstrip(b"\r\n").partition(b" ")
    if any(byte not in _TCHAR for byte in method):
        return True
    return len(method) > _MAX_METHOD or (bool(space) and not method)


def check_request(event: h11.Request, limits: Limits) -> None:
    """Refuse what h11 accepts and this server does not (raises ``Refusal``)."""
    if event.http_version not in (b"1.0", b"1.1"):
        raise Refusal(505, f"HTTP/{event.http_version.decode()} is not supported")
    if len(event.headers) > limits.max_headers:
        raise Refusal(431, f"more than {limits.max_headers} header fields")
    if event.method == b"CONNECT":
        raise Refusal(501, "CONNECT is not supported")
    names = {name for name, _ in event.headers}
    if b"upgrade" in names:
        raise Refusal(400, "protocol upgrade is not supported")
    length = next((v for n, v in event.headers if n == b"content-length"), None)
    chunked = b"transfer-encoding" in names
    if chunked and length is not None:
        raise Refusal(400, "both Content-Length and Transfer-Encoding")
    if event.method == b"HEAD" and (chunked or (length is not None and int(length))):
        raise Refusal(400, "HEAD with a body")
    if length is not None and int(length) > limits.max_body:
        raise Refusal(413, "request body too large")


def quiet() -> contextlib.suppress:
    """Swallow what a stream raises when its peer has gone."""
    return contextlib.suppress(*STREAM_ERRORS)


def client_ip(stream: ByteStream) -> str:
    """The peer's IP address on a TCP stream ("" on unix sockets and libp2p streams)."""
    sock = getattr(stream, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return ""
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


def peer_name(stream: ByteStream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        name = sock.getpeername() if sock is not None else None
    except OSError:
        return ""
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name or "")


async def close_stream(stream: ByteStream, *, linger: bool) -> None:
    """Close ``stream``; with ``linger``, half-close first and drain the peer for a moment."""
    try:
        if linger:
            with trio.move_on_after(LINGER), quiet():
                send_eof = getattr(stream, "send_eof", None)
                if send_eof is not None:
                    await send_eof()
                drained = 0
                while drained < LINGER_BYTES:
                    data = await stream.receive_some(RECV)
                    if not data:
                        break
                    drained += len(data)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1), quiet():
            await stream.aclose()
