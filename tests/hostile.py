"""Hostile HTTP/1.1 clients over raw sockets: the malformed-request table, the tools to send it.

Shared by ``tests/sync/net/test_httpserver.py`` (the server alone) and
``tests/e2e/test_hostile_http.py`` (every server of a real daemon and a real publisher).
``{path}`` in a request is a path the server under test answers 200 to on GET, so what is
refused is refused for its bytes, not its path.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = [
    "CASES",
    "HALF_CLOSED",
    "HOST",
    "Case",
    "Reply",
    "client_hello",
    "exchange",
    "good",
    "open_raw",
    "parse",
    "pipelined_never_read",
    "read_all",
    "read_one",
    "slow_body",
    "slowloris",
]

HOST = "Host: test\r\n"


@dataclass(frozen=True)
class Reply:
    raw: bytes
    reset: bool = False  # the connection was reset rather than closed

    @property
    def status(self) -> int:
        """The first final status (0: no response at all)."""
        return parse(self.raw)[0]


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and what follows the head of the first final response in ``raw``."""
    while raw.startswith(b"HTTP/1.1 1"):  # 100 Continue and friends
        raw = raw.partition(b"\r\n\r\n")[2]
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return 0, {}, raw
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


async def open_raw(port: int, *, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def read_all(stream: trio.SocketStream, limit: float = 10) -> Reply:
    """Everything until the server closes (``limit`` seconds at most: then fail)."""
    data = bytearray()
    with trio.fail_after(limit):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return Reply(bytes(data), reset=True)
            if not chunk:
                return Reply(bytes(data))
            data += chunk


async def read_one(
    stream: trio.SocketStream, buffer: bytearray | None = None, limit: float = 10
) -> bytes:
    """One whole final response with a Content-Length (what keep-alive leaves open).

    Pass the same ``buffer`` for each response of one connection: bytes read past a response
    (pipelined answers) stay in it for the next call.
    """
    data = bytearray() if buffer is None else buffer
    with trio.fail_after(limit):
        while True:
            status, headers, rest = parse(bytes(data))
            length = int(headers.get("content-length", "0"))
            if status and len(rest) >= length:
                whole = len(data) - len(rest) + length
                response = bytes(data[:whole])
                del data[:whole]
                return response
            chunk = await stream.receive_some(65536)
            assert chunk, f"closed before a whole response: {bytes(data)!r}"
            data += chunk


async def exchange(port: int, data: bytes, *, shut_wr: bool = False, limit: float = 10) -> Reply:
    """Send ``data`` on a new connection and read until the server closes it."""
    stream = await open_raw(port)
    try:
        try:
            await stream.send_all(data)
            if shut_wr:
                await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # refused before we were done: what it said is still readable
        return await read_all(stream, limit)
    finally:
        await stream.aclose()


async def good(port: int, path: str) -> int:
    """The status a plain GET gets on a new connection (the server is still serving)."""
    reply = await exchange(port, f"GET {path} HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode())
    return reply.status


def client_hello() -> bytes:
    """A real TLS ClientHello, as a client that mistook us for HTTPS would send."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@dataclass(frozen=True)
class Case:
    """One malformed or unsupported request and what the server may answer."""

    name: str
    build: Callable[[str], bytes]
    statuses: frozenset[int]
    closes: bool = True  # the server closes the connection after answering
    head: bool = False  # a HEAD: the answer must carry no body

    def data(self, path: str) -> bytes:
        return self.build(path)


def _text(template: str) -> Callable[[str], bytes]:
    return lambda path: template.replace("{path}", path).encode("latin-1")


def _many_headers(path: str) -> bytes:
    fields = "".join(f"X-Field-{i}: {i}\r\n" for i in range(101))
    return f"GET {path} HTTP/1.1\r\n{HOST}{fields}\r\n".encode()


def _long_head(path: str) -> bytes:
    fields = "".join(f"X-L{i}: {'c' * 60}\r\n" for i in range(600))  # 40 KiB in 600 fields
    return f"GET {path} HTTP/1.1\r\n{HOST}{fields}\r\n".encode()


def _random(seed: int) -> Callable[[str], bytes]:
    return lambda path: random.Random(seed).randbytes(4096)


CASES = [
    Case("head-over-cap-content-length",
         _text("HEAD {path} HTTP/1.1\r\n" + HOST + "Content-Length: 99999999999\r\n\r\n"),
         frozenset({400}), head=True),
    Case("head-with-body",
         _text("HEAD {path} HTTP/1.1\r\n" + HOST + "Content-Length: 5\r\n\r\nhello"),
         frozenset({400}), head=True),
    Case("head-bad-chunked",
         _text("HEAD {path} HTTP/1.1\r\n" + HOST + "Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
         frozenset({400}), head=True),
    Case("bad-chunked",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"),
         frozenset({400})),
    Case("chunk-without-crlf",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Transfer-Encoding: chunked\r\n\r\n"
               "5\r\nhelloXX0\r\n\r\n"),
         frozenset({400})),
    Case("content-length-and-chunked",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Content-Length: 5\r\n"
               "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
         frozenset({400})),
    Case("two-content-lengths",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Content-Length: 5\r\n"
               "Content-Length: 6\r\n\r\nhello!"),
         frozenset({400})),
    Case("head-two-content-lengths",
         _text("HEAD {path} HTTP/1.1\r\n" + HOST + "Content-Length: 5\r\n"
               "Content-Length: 6\r\n\r\nhello!"),
         frozenset({400}), head=True),
    Case("negative-content-length",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Content-Length: -5\r\n\r\n"),
         frozenset({400})),
    Case("content-length-30-digits",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Content-Length: " + "9" * 30 + "\r\n\r\n"),
         frozenset({400})),
    Case("transfer-encoding-gzip",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Transfer-Encoding: gzip\r\n\r\n"),
         frozenset({501})),
    Case("expect-100-over-cap",
         _text("PUT {path} HTTP/1.1\r\n" + HOST + "Content-Length: 99999999\r\n"
               "Expect: 100-continue\r\n\r\n"),
         frozenset({413})),
    Case("connect",
         _text("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n"),
         frozenset({501})),
    Case("connect-to-a-route",  # a 200 here made h11 switch protocols; the next write raised
         _text("CONNECT {path} HTTP/1.1\r\n" + HOST + "\r\n"), frozenset({501})),
    Case("upgrade-websocket",
         _text("GET {path} HTTP/1.1\r\n" + HOST + "Connection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
         frozenset({400})),
    Case("upgrade-h2c",
         _text("GET {path} HTTP/1.1\r\n" + HOST + "Connection: Upgrade, HTTP2-Settings\r\n"
               "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
         frozenset({400})),
    Case("unknown-method-brew",
         _text("BREW {path} HTTP/1.1\r\n" + HOST + "\r\n"), frozenset({405}), closes=False),
    Case("trace", _text("TRACE {path} HTTP/1.1\r\n" + HOST + "\r\n"), frozenset({405}),
         closes=False),
    Case("oversize-header-block",
         _text("GET {path} HTTP/1.1\r\n" + HOST + "X-Big: " + "a" * 40_000 + "\r\n\r\n"),
         frozenset({431})),
    Case("oversize-header-block-many-lines", _long_head, frozenset({431})),
    Case("too-many-headers", _many_headers, frozenset({431})),
    Case("random-binary-1", _random(1), frozenset({400})),
    Case("random-binary-2", _random(2), frozenset({400})),
    Case("random-binary-3", _random(3), frozenset({400})),
    Case("tls-client-hello", lambda path: client_hello(), frozenset({400})),
    Case("http2-preface", lambda path: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", frozenset({400, 505})),
    Case("request-line-without-version", _text("GET {path}\r\n\r\n"), frozenset({400})),
    Case("request-line-only-method", _text("GET\r\n\r\n"), frozenset({400})),
    Case("http-2.0-version", _text("GET {path} HTTP/2.0\r\n" + HOST + "\r\n"), frozenset({505})),
    Case("no-host", _text("GET {path} HTTP/1.1\r\n\r\n"), frozenset({400})),
    Case("nul-in-header", _text("GET {path} HTTP/1.1\r\n" + HOST + "X-A: a\x00b\r\n\r\n"),
         frozenset({400})),
    Case("space-before-colon", _text("GET {path} HTTP/1.1\r\n" + HOST + "X-A : b\r\n\r\n"),
         frozenset({400})),
    Case("leading-space", _text("  GET {path} HTTP/1.1\r\n" + HOST + "\r\n"), frozenset({400})),
    Case("method-too-long", _text("G" * 40 + " {path} HTTP/1.1\r\n" + HOST + "\r\n"),
         frozenset({400})),
    # urlsplit raises on it: it once ended the connection task ("http connection task failed")
    Case("bad-target-ipv6", _text("GET //[{path} HTTP/1.1\r\n" + HOST + "\r\n"),
         frozenset({400})),
]  # fmt: skip

# (name, bytes, whether the server should answer something, the statuses it may answer)
HALF_CLOSED = [
    ("after-a-whole-request", "GET {path} HTTP/1.1\r\n" + HOST + "\r\n", frozenset({200, 204})),
    ("mid-head", "GET {path} HTTP/1.1\r\nHo", frozenset({400})),
    ("mid-body", "PUT {path} HTTP/1.1\r\n" + HOST + "Content-Length: 10\r\n\r\nabc",
     frozenset({400})),
    ("before-anything", "", frozenset({0})),
]  # fmt: skip


async def slowloris(port: int, path: str, *, interval: float, budget: int) -> tuple[Reply, int]:
    """A head sent one byte every ``interval`` seconds, never finished within ``budget`` bytes.

    Returns what the server said and how many bytes had been sent when it hung up.  A server
    whose head deadline restarted per byte would let all ``budget`` bytes through.
    """
    start = f"GET {path} HTTP/1.1\r\n{HOST}X-Slow: ".encode()
    return await _trickle(port, start, b"a", interval=interval, budget=budget)


async def slow_body(port: int, path: str, *, interval: float, budget: int) -> tuple[Reply, int]:
    """A whole head, then a 1,000,000-byte body one byte every ``interval`` seconds."""
    head = f"PUT {path} HTTP/1.1\r\n{HOST}Content-Length: 1000000\r\n\r\n".encode()
    return await _trickle(port, head, b"b", interval=interval, budget=budget)


async def _trickle(
    port: int, start: bytes, byte: bytes, *, interval: float, budget: int
) -> tuple[Reply, int]:
    """Send ``start``, then ``byte`` every ``interval`` s (at most ``budget``) until the server
    hangs up; what it said, and how many bytes were sent by then."""
    stream = await open_raw(port)
    sent = 0
    reply = Reply(b"")
    try:
        await stream.send_all(start)
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal reply
                reply = await read_all(stream, limit=interval * budget + 10)
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            for _ in range(budget):
                try:
                    await stream.send_all(byte)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                sent += 1
                await trio.sleep(interval)
            await trio.sleep_forever()  # the reader decides: the server must hang up
    finally:
        await stream.aclose()
    return reply, sent


async def pipelined_never_read(port: int, path: str, count: int = 4000) -> trio.SocketStream:
    """``count`` pipelined GETs on a connection with a tiny receive window, never read.

    The server's answers pile up until its writes stall; returns the open stream (the caller
    waits for the server to give up, then reads what reached it).
    """
    stream = await open_raw(port, rcvbuf=4096)
    request = f"GET {path} HTTP/1.1\r\n{HOST}\r\n".encode()
    with trio.move_on_after(5):  # the server stops reading once its writes stall: so do we
        for _ in range(count // 100):
            try:
                await stream.send_all(request * 100)
            except trio.BrokenResourceError:
                break
    return stream
