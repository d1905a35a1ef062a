"""The HTTP client stack (``sync.net.httpclient``, on httpcore) as the fetcher uses it:
keep-alive, retries, redirects, bodies and their caps, proxies from the environment.

Real servers on 127.0.0.1: ``sync.net.httpserver`` serving ipnisync, and tiny raw trio socket
servers for what a well-behaved server never does.  Connections are counted where they are
accepted, on the server side.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from cryptography import x509

from sync import PrivateKey, encode_block
from sync.errors import BlockNotFound, BlockTooLarge, FetchFailed, ResponseTooLarge
from sync.ipnisync.fetch import HttpFetcher, _tls_context, open_fetcher
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpclient import HttpClient
from sync.net.httpserver import Handler, Request, Response, serve_connection
from tests.builders import MemorySource
from tests.sync.ipnisync.test_fetcher_tls import BLOCKS as TLS_BLOCKS
from tests.sync.ipnisync.test_fetcher_tls import self_signed, serve_tls

KEY = PrivateKey.generate()
PEER = KEY.peer_id()
BLOCKS = [encode_block({"block": i}) for i in range(40)]
LINK, RAW = BLOCKS[0]
CAP = 4096


async def serve_counted(nursery: trio.Nursery, handler: Handler) -> tuple[str, list[int]]:
    """``serve_connection`` on a fresh port; the multiaddr and the list of accepted connections."""
    accepts: list[int] = []

    async def on_connection(stream: trio.SocketStream) -> None:
        accepts.append(1)
        await serve_connection(stream, handler)

    listeners = await nursery.start(partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1"))
    return f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http", accepts


RawHandler = Callable[[trio.SocketStream, int], Awaitable[None]]


async def serve_raw(nursery: trio.Nursery, handle: RawHandler) -> tuple[str, list[int]]:
    """A raw socket server: ``handle(stream, n)`` for the n-th accepted connection (from 1)."""
    accepts: list[int] = []

    async def on_connection(stream: trio.SocketStream) -> None:
        accepts.append(1)
        try:
            await handle(stream, len(accepts))
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1"))
    return f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http", accepts


async def read_request(stream: trio.SocketStream) -> bytes:
    """One request head (the client sends nothing more); b"" if the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = await stream.receive_some(65536)
        if not more:
            return b""
        data += more
    return data


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)


def _tls() -> ssl.SSLContext:
    return _tls_context()


def source() -> MemorySource:
    return MemorySource(*BLOCKS)


# --- keep-alive ------------------------------------------------------------------------------


async def test_one_connection_serves_many_requests_and_errors() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_counted(nursery, ipnisync_handler(source()))
            async with open_fetcher([addr], PEER) as fetcher:
                for link, raw in BLOCKS:
                    assert await fetcher.block(link, "EntryChunk") == raw
                with pytest.raises(BlockNotFound):  # a small 404 body is read: kept alive
                    await fetcher.block(encode_block({"absent": 1})[0])
                assert await fetcher.block(LINK) == RAW
            nursery.cancel_scope.cancel()
    assert len(accepts) == 1


async def test_concurrent_requests_on_one_fetcher() -> None:
    inner = ipnisync_handler(source())
    waiting = 8
    all_in = trio.Event()

    async def barrier(request: Request) -> Response:  # answers only once 8 requests are in
        nonlocal waiting
        waiting -= 1
        if waiting == 0:
            all_in.set()
        await all_in.wait()
        return await inner(request)

    got: dict[int, bytes] = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_counted(nursery, barrier)
            async with open_fetcher([addr], PEER) as fetcher:

                async def fetch(i: int) -> None:
                    got[i] = await fetcher.block(BLOCKS[i][0])

                async with trio.open_nursery() as fetches:
                    for i in range(8):
                        fetches.start_soon(fetch, i)
                assert len(accepts) == 8  # one connection each, none waited for another
                for link, raw in BLOCKS[8:24]:  # the idle ones are reused
                    assert await fetcher.block(link) == raw
            nursery.cancel_scope.cancel()
    assert got == {i: BLOCKS[i][1] for i in range(8)}
    assert len(accepts) == 8


async def test_connection_close_and_unread_bodies_drop_the_connection() -> None:
    inner = ipnisync_handler(source())

    async def handler(request: Request) -> Response:
        if request.path.endswith("/close"):
            return Response(200, RAW, headers=(("connection", "close"),))
        if request.path.endswith("/ipni/v1/ad/big-404"):  # the legacy retry at the root
            return Response(404, b"x" * (200 << 10))  # gets a small 404; this one is dropped
        if request.path.endswith("/huge"):
            return Response(200, b"x" * (CAP + 1))  # over the cap: not read on
        return await inner(request)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_counted(nursery, handler)
            async with open_fetcher([addr], PEER, max_block=CAP) as fetcher:
                assert await fetcher.block(LINK) == RAW
                assert await _body_of(fetcher, "close") == RAW
                assert len(accepts) == 1
                assert await fetcher.block(LINK) == RAW
                assert len(accepts) == 2
                with pytest.raises(BlockNotFound):
                    await fetcher._get("big-404", {}, CAP, allow_empty=False)
                assert await fetcher.block(LINK) == RAW
                assert len(accepts) == 3
                with pytest.raises(BlockTooLarge):
                    await fetcher._get("huge", {}, CAP, allow_empty=False)
                assert await fetcher.block(LINK) == RAW
                assert await fetcher.block(LINK) == RAW
            nursery.cancel_scope.cancel()
    assert len(accepts) == 4


# --- stale connections and broken responses ---------------------------------------------------


async def test_a_connection_closed_while_idle_is_retried_on_a_new_one() -> None:
    async def one_response_each(stream: trio.SocketStream, n: int) -> None:
        if await read_request(stream):  # answers keep-alive, then hangs up anyway
            await stream.send_all(ok(RAW))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_raw(nursery, one_response_each)
            async with open_fetcher([addr], PEER) as fetcher:
                for _ in range(3):
                    assert await fetcher.block(LINK) == RAW
            nursery.cancel_scope.cancel()
    assert len(accepts) == 3


async def test_the_retry_is_once_and_only_on_a_reused_connection() -> None:
    async def then_hang_up(stream: trio.SocketStream, n: int) -> None:
        if n == 1 and await read_request(stream):
            await stream.send_all(ok(RAW))
        # every later connection is closed before it answers anything

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_raw(nursery, then_hang_up)
            async with open_fetcher([addr], PEER) as fetcher:
                assert await fetcher.block(LINK) == RAW
                with pytest.raises(FetchFailed, match=r"RemoteProtocolError|Broken"):
                    await fetcher.block(LINK)  # stale, then a fresh one that hangs up: no more
                assert len(accepts) == 2
                with pytest.raises(FetchFailed):
                    await fetcher.block(LINK)  # fresh (none idle): not retried
            nursery.cancel_scope.cancel()
    assert len(accepts) == 3


@pytest.mark.parametrize("chunked", [False, True])
async def test_closed_mid_body_is_fetch_failed_and_not_retried(chunked: bool) -> None:
    async def cut_off(stream: trio.SocketStream, n: int) -> None:
        assert await read_request(stream)
        await stream.send_all(ok(RAW))  # the first answer is whole: the connection is kept
        assert await read_request(stream)
        if chunked:
            await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab")
        else:
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_raw(nursery, cut_off)
            async with open_fetcher([addr], PEER) as fetcher:
                assert await fetcher.block(LINK) == RAW
                with pytest.raises(FetchFailed, match="RemoteProtocolError"):
                    await fetcher.block(LINK)
            nursery.cancel_scope.cancel()
    assert len(accepts) == 1  # bytes of the answer had arrived: no second try


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nx-big: " + b"x" * (70 << 10),  # 64 KiB and no end of the head
        b"HTTP/1.1 200 OK\r\ncontent-length: nan\r\n\r\n",
        b"SMTP ready\r\n\r\n",
    ],
    ids=["huge-head", "bad-length", "not-http"],
)
async def test_protocol_errors_are_fetch_failed(answer: bytes) -> None:
    async def answer_badly(stream: trio.SocketStream, n: int) -> None:
        await read_request(stream)
        await stream.send_all(answer)
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, _ = await serve_raw(nursery, answer_badly)
            async with open_fetcher([addr], PEER, timeout=5) as fetcher:
                with pytest.raises(FetchFailed, match="RemoteProtocolError"):
                    await fetcher.block(LINK)
            nursery.cancel_scope.cancel()


# --- bodies ------------------------------------------------------------------------------------


async def test_raw_chunked_bodies_with_and_without_gzip() -> None:
    packed = gzip.compress(RAW)
    pieces = [RAW[i : i + 3] for i in range(0, len(RAW), 3)]
    answers = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"%x;ext=1\r\n%b\r\n" % (len(piece), piece) for piece in pieces)
        + b"0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n"
        + b"%x\r\n%b\r\n" % (len(packed), packed)
        + b"0\r\nx-trailer: 1\r\n\r\n",
    ]

    async def chunked(stream: trio.SocketStream, n: int) -> None:
        for answer in answers:
            assert await read_request(stream)
            await stream.send_all(answer)
        await read_request(stream)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_raw(nursery, chunked)
            async with open_fetcher([addr], PEER) as fetcher:
                assert await fetcher.block(LINK) == RAW
                assert await fetcher.block(LINK) == RAW
            nursery.cancel_scope.cancel()
    assert len(accepts) == 1


def _streamed(body: bytes) -> AsyncIterator[bytes]:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    return parts()


@pytest.mark.parametrize("coding", ["identity", "gzip"])
@pytest.mark.parametrize("size", [CAP, CAP + 1])
@pytest.mark.parametrize("chunked", [False, True])
async def test_caps_with_and_without_gzip(coding: str, size: int, chunked: bool) -> None:
    plain = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    body = gzip.compress(plain) if coding == "gzip" else plain
    headers = (("content-encoding", "gzip"),) if coding == "gzip" else ()

    async def handler(request: Request) -> Response:
        return Response(200, _streamed(body) if chunked else body, headers=headers)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, _ = await serve_counted(nursery, handler)
            async with open_fetcher([addr], PEER, max_block=CAP) as fetcher:
                if size <= CAP:
                    assert await fetcher.block(LINK) == plain
                else:
                    with pytest.raises(BlockTooLarge, match="over the"):
                        await fetcher.block(LINK)
            nursery.cancel_scope.cancel()


# --- redirects --------------------------------------------------------------------------------


async def test_redirects_relative_absolute_and_too_many() -> None:
    hops: list[str] = []

    async def other(request: Request) -> Response:
        hops.append(request.path)
        return Response(200, RAW)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            elsewhere, _ = await serve_counted(nursery, other)
            port = elsewhere.split("/")[4]

            async def redirecting(request: Request) -> Response:
                hops.append(request.path)
                name = request.path.rsplit("/", 1)[1]
                if name == "relative":
                    return Response(301, headers=(("location", "../moved/here?x=1"),))
                if name == "absolute":
                    return Response(307, headers=(("location", f"http://127.0.0.1:{port}/b"),))
                if name.isdigit():  # /n redirects to /n-1, /0 answers
                    if name == "0":
                        return Response(200, RAW)
                    return Response(302, b"moved", headers=(("location", str(int(name) - 1)),))
                if name == "ftp":
                    return Response(308, headers=(("location", "ftp://127.0.0.1/x"),))
                return Response(200, RAW)

            addr, accepts = await serve_counted(nursery, redirecting)
            async with open_fetcher([addr], PEER) as fetcher:
                assert await _body_of(fetcher, "relative") == RAW
                assert hops[-2:] == ["/ipni/v1/ad/relative", "/ipni/v1/moved/here"]
                assert await _body_of(fetcher, "absolute") == RAW
                assert hops[-1] == "/b"
                assert await _body_of(fetcher, "9") == RAW  # 10 requests
                with pytest.raises(FetchFailed, match="TooManyRedirects"):
                    await fetcher._get("10", {}, CAP, allow_empty=False)
                with pytest.raises(FetchFailed, match="cannot fetch"):
                    await fetcher._get("ftp", {}, CAP, allow_empty=False)
            nursery.cancel_scope.cancel()
    assert len(accepts) == 1  # every redirect's connection was reused


# --- addresses ----------------------------------------------------------------------------------


async def test_refused_address_then_the_next_then_fetch_failed() -> None:
    dead = []
    for _ in range(2):
        with socket.socket() as sock:  # bound, never listening: connections are refused
            sock.bind(("127.0.0.1", 0))
            dead.append(f"/ip4/127.0.0.1/tcp/{sock.getsockname()[1]}/http")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, _ = await serve_counted(nursery, ipnisync_handler(source()))
            async with open_fetcher([dead[0], addr], PEER) as fetcher:
                assert await fetcher.block(LINK) == RAW
                assert fetcher._urls[0].endswith(addr.split("/")[4] + "/ipni/v1/ad")
            async with open_fetcher(dead, PEER) as fetcher:
                with pytest.raises(FetchFailed, match=r"ConnectError.*ConnectError") as info:
                    await fetcher.block(LINK)
            nursery.cancel_scope.cancel()
    # Each address's causes (trio's OSError, and the refusal in the ExceptionGroup under it) are
    # said once each, as "Type: message", not again after the message that already holds them.
    failures = str(info.value).split(" ConnectError: ")[1:]
    assert len(failures) == 2, str(info.value)
    for failure in failures:
        assert failure.count("all attempts to connect") == 1, failure
        assert failure.count("Connection refused") == 1, failure


async def test_a_closed_client_opens_nothing() -> None:
    client = HttpClient(timeout=5, ssl_context=ssl.create_default_context())
    await client.aclose()
    with pytest.raises(FetchFailed, match="closed"):
        async with client.get("http://127.0.0.1:1/x", {}):
            pass


async def test_a_junk_redirect_and_port_zero_are_fetch_failed() -> None:
    async def junk(request: Request) -> Response:
        return Response(302, headers=(("location", "http://[::1"),))  # urljoin: ValueError

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, _ = await serve_counted(nursery, junk)
            async with open_fetcher([addr], PEER) as fetcher:
                with pytest.raises(FetchFailed, match="bad redirect"):
                    await fetcher.block(LINK)
            async with open_fetcher(["/ip4/127.0.0.1/tcp/0/http"], PEER) as fetcher:
                with pytest.raises(FetchFailed, match=r"127\.0\.0\.1:0 failed"):  # never :80
                    await fetcher.block(LINK)
            nursery.cancel_scope.cancel()


# --- the raw body cap -------------------------------------------------------------------------


async def test_a_body_over_max_body_is_refused_by_its_length_and_as_it_streams() -> None:
    async def answers(stream: trio.SocketStream, n: int) -> None:
        assert await read_request(stream)
        if n == 1:  # says how big first: refused before a byte of the body is read
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\nxx")
            await trio.sleep_forever()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            await stream.send_all(b"400\r\n" + b"x" * 1024 + b"\r\n")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, _ = await serve_raw(nursery, answers)
            url = f"http://127.0.0.1:{addr.split('/')[4]}/x"
            client = HttpClient(timeout=5, ssl_context=_tls(), max_body=10_000)
            for expected in (r"over 10000 bytes \(100000 bytes\)", "over 10000 bytes$"):
                with pytest.raises(ResponseTooLarge, match=expected):
                    async with client.get(url, {}) as response:
                        assert response.status == 200
                        async for _ in response:
                            pass
            await client.aclose()
            nursery.cancel_scope.cancel()


# --- proxies from the environment ---------------------------------------------------------------


async def serve_proxy(nursery: trio.Nursery) -> tuple[int, list[str]]:
    """A tiny HTTP proxy on 127.0.0.1 (any host it is asked for is 127.0.0.1): absolute-form
    requests forwarded one per connection, CONNECT tunnels spliced.  The port and the request
    lines it saw."""
    seen: list[str] = []

    async def splice(src: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await src.receive_some(65536):
                await sink.send_all(data)
        done.cancel()

    async def on_connection(client: trio.SocketStream) -> None:
        head = await read_request(client)
        if not head:
            return
        line, _, rest = head.partition(b"\r\n")
        seen.append(line.decode())
        method, target, _ = line.split(b" ")
        if method == b"CONNECT":
            upstream = await trio.open_tcp_stream("127.0.0.1", int(target.rsplit(b":", 1)[1]))
            await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target.decode())
            assert url.port is not None
            upstream = await trio.open_tcp_stream("127.0.0.1", url.port)
            path = url.path.encode() + (b"?" + url.query.encode() if url.query else b"")
            await upstream.send_all(b"GET %b HTTP/1.1\r\nconnection: close\r\n%b" % (path, rest))
        async with upstream, trio.open_nursery() as both:
            both.start_soon(splice, client, upstream, both.cancel_scope)
            both.start_soon(splice, upstream, client, both.cancel_scope)

    listeners = await nursery.start(partial(trio.serve_tcp, on_connection, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], seen


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The machine's proxy settings out of the way; the test sets its own."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [("", True), ("other.test", True), ("publisher.test:1", True), ("publisher.test", False),
     (".test", False), ("*", False), ("PORT", False)],
)  # fmt: skip
async def test_http_goes_through_http_proxy_unless_no_proxy_matches(
    no_proxy_env: pytest.MonkeyPatch, no_proxy: str, proxied: bool
) -> None:
    dialled: list[str] = []

    async def connect(host: str, port: int) -> trio.abc.Stream:  # stands in for DNS
        dialled.append(host)
        return await trio.open_tcp_stream("127.0.0.1" if host == "publisher.test" else host, port)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr, accepts = await serve_counted(nursery, ipnisync_handler(source()))
            port = addr.split("/")[4]
            proxy_port, seen = await serve_proxy(nursery)
            no_proxy_env.setenv("HTTP_PROXY", f"127.0.0.1:{proxy_port}")  # no scheme: http://
            no_proxy_env.setenv("NO_PROXY", no_proxy.replace("PORT", f"publisher.test:{port}"))
            client = HttpClient(timeout=5, ssl_context=_tls(), connect=connect)
            url = f"http://publisher.test:{port}/ipni/v1/ad"
            async with HttpFetcher(PEER, [url], opener=client) as fetcher:
                for link, raw in BLOCKS[:3]:
                    assert await fetcher.block(link) == raw
            if proxied:
                assert seen == [f"GET {url}/{link} HTTP/1.1" for link, _ in BLOCKS[:3]]
                assert dialled == [] and len(accepts) == 3  # the proxy's, one each
            else:
                assert seen == [] and dialled == ["publisher.test"] and len(accepts) == 1
            # Loopback is never proxied, NO_PROXY or not (as Go's client).
            no_proxy_env.delenv("NO_PROXY")
            async with open_fetcher([addr], PEER) as fetcher:
                assert await fetcher.block(LINK) == RAW
            assert len(seen) == (3 if proxied else 0)
            nursery.cancel_scope.cancel()


async def test_https_tunnels_through_https_proxy_and_tls_is_checked_end_to_end(
    no_proxy_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key = self_signed([x509.DNSName("publisher.test")])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    accepts: list[int] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await serve_tls(
                nursery, (tmp_path / "cert.pem", tmp_path / "key.pem", cert.decode()), accepts
            )
            proxy_port, seen = await serve_proxy(nursery)
            no_proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
            no_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # not for https
            url = f"https://publisher.test:{port}/ipni/v1/ad"
            trusted = ssl.create_default_context(cadata=cert.decode())
            async with HttpFetcher(PEER, [url], ssl_context=trusted) as fetcher:
                for link, raw in TLS_BLOCKS[:3]:
                    assert await fetcher.block(link) == raw
            assert seen == [f"CONNECT publisher.test:{port} HTTP/1.1"]  # one kept-alive tunnel
            async with HttpFetcher(PEER, [url]) as fetcher:  # the system's CAs: refused
                with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
                    await fetcher.block(TLS_BLOCKS[0][0])
            assert len(seen) == 2 and len(accepts) == 2
            nursery.cancel_scope.cancel()


async def _body_of(fetcher: HttpFetcher, resource: str) -> bytes:
    """``resource``'s body through the fetcher's request path (``_get``), decoded."""
    got = await fetcher._get(resource, {}, CAP, allow_empty=False)
    assert got is not None
    return got.body
