"""The one HTTP client stack: GETs over TCP, TLS, proxies and libp2p streams, on httpcore.

httpcore's HTTP/1.1 code (h11) does every exchange; what is ours is the network under it
(``TcpBackend`` here, ``p2phttp.Libp2pBackend`` for libp2p streams, both yielding
``ClientStream``), which connection a request goes out on (``keepalive.KeepAlivePool`` for direct
connections, httpcore's proxy pools through a proxy) and the rules on top (``HttpClient``), the
fetcher's (``fetch.py``).

Rules this module keeps:

- ``http`` and ``https`` URLs only; https is ``trio.SSLStream`` with the caller's verifying
  ``ssl.SSLContext`` (server name sent and checked).  An explicit port is used as given (``:0``
  too: it fails to connect, it is never read as the default port).
- One pool per client (and one httpcore pool per proxy it uses): a request takes an idle keep-alive
  connection to its origin or opens a new one, so concurrent requests each get their own.  A
  connection goes back to the pool only when its response was read to the end and neither side
  asked to close; it is dropped on ``Connection: close``, on any I/O, TLS or protocol error, when
  the caller stops reading a body early, and when an idle TCP connection turns readable (the
  server hung up).  At most ``max_idle`` connections are kept.
- A reused connection that fails before any byte of its response arrived (the server closed it
  while it was idle) is retried once: GETs are idempotent.  Nothing is retried once a byte of
  the response arrived, nor a request that went out on a fresh connection.
- Proxies come from the environment, as Go's client takes them (``proxyenv``): ``http`` through
  ``HTTP_PROXY`` (absolute-form requests), ``https`` through ``HTTPS_PROXY`` (``CONNECT``, then
  TLS to the origin through the tunnel), ``NO_PROXY`` and loopback direct.  A proxy is dialled
  with ``trio.open_tcp_stream``, not with ``connect``: it is the operator's, not a publisher's.
- Redirects (301, 302, 303, 307, 308 with a ``Location``, resolved against the request URL) are
  followed, at most 10 requests in all, as Go's client; an 11th would be ``FetchFailed``
  (TooManyRedirects).  A redirect's body is read (up to 64 KiB) so its connection can be reused.
- A response head is capped at 64 KiB (``ClientStream``: no blank line within 64 KiB of a
  request is ``RemoteProtocolError``).  Bodies are streamed raw (``Response`` is an async
  iterator of chunks, not decoded): content codings are the caller's.  ``max_body`` caps the raw
  body: a ``Content-Length`` over it is ``ResponseTooLarge`` before a byte of the body is read,
  and so is a body that streams past it.
- ``get`` has one total deadline (``trio.fail_after``, as Go's ``Client.Timeout``) covering the
  connect, redirects and reading the body.
- Errors: connect, I/O, TLS, protocol and deadline errors are ``TransportFailed`` (a
  ``FetchFailed``: the address did not answer in full, another may), naming httpcore's error
  and what caused it; a redirect loop or a redirect to a URL this client cannot fetch (or that
  does not parse) is plain ``FetchFailed`` (the address answered).  No httpcore, h11, trio, ssl
  or urllib exception escapes.  Statuses are not errors here: the caller decides what 404 or
  500 mean.
- TCP connections are opened by ``connect(host, port)`` (``trio.open_tcp_stream`` unless the
  caller passes another: the fetcher's ``refuse_private_addrs`` check resolves and vets the
  addresses there, for the first request and for every redirect alike).  What ``connect``
  raises that is no ``OSError`` (``AddressRefused``) passes through unchanged.
- ``Opener`` and ``ResponseLike`` are the shape the fetcher reads ("open a GET; status, headers,
  body chunks"); ``HttpClient`` is one, over TCP or (``backend=``) over libp2p.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urljoin, urlsplit

import httpcore
import trio

from sync.errors import FetchFailed, ResponseTooLarge, TransportFailed
from sync.net.httpmessage import ByteStream
from sync.net.keepalive import KeepAlivePool
from sync.net.proxyenv import Proxy, ProxyEnv

__all__ = [
    "ClientStream",
    "Connect",
    "HttpClient",
    "Opener",
    "Response",
    "ResponseLike",
    "StreamBackend",
    "TcpBackend",
    "TransportFailed",
]

Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]

_MAX_HEAD = 64 << 10
_MAX_REQUESTS = 10  # Go's http.Client: "stopped after 10 redirects"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_STREAM_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
# Every error httpcore raises (it has no common base) but ConnectionNotAvailable, which its
# pool handles itself.
_HTTPCORE_ERRORS = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


def _why(exc: BaseException) -> str:
    """``exc`` and its causes, as one line: trio hides TLS errors behind
    ``BrokenResourceError`` and the refusals of every address it tried behind an ``OSError``
    from an ``ExceptionGroup``, so the causes are said too.  A cause the message already holds
    (an error this module raised with ``_why`` of its cause) is not said again; a group says
    each of its distinct errors once."""
    parts = [_said(exc)]
    current, cause = exc, exc.__cause__
    while cause is not None and len(parts) < 4 and _said(cause) not in str(current):
        parts.append(_said(cause))
        current, cause = cause, cause.__cause__
    return " from ".join(parts)


def _said(exc: BaseException) -> str:
    """``Type: message`` of ``exc``; a group's distinct errors, joined by ``; ``."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_said(inner) for inner in exc.exceptions))
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ascii(name: str) -> bytes:
    return name.encode() if name.isascii() else name.encode("idna")


class ResponseLike(Protocol):
    """What the fetcher reads of a response (``Response`` is one)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # lower-case names

    def __aiter__(self) -> AsyncIterator[bytes]: ...  # the raw (still encoded) body


class Opener(Protocol):
    """Open a GET (redirects followed, one total deadline); its errors are ``FetchFailed``, and
    ``TransportFailed`` when the address did not answer in full (``HttpClient`` is one)."""

    def get(
        self, url: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[ResponseLike]: ...

    async def aclose(self) -> None: ...


class _Pool(Protocol):
    """What a request goes through: a direct keep-alive pool or httpcore's proxy pool."""

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response: ...

    async def aclose(self) -> None: ...


class _Exchange:
    """The stream the current request went out on: set by the stream, read when it failed."""

    __slots__ = ("stream",)

    def __init__(self) -> None:
        self.stream: ClientStream | None = None


_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("http_exchange", default=None)


class ClientStream(httpcore.AsyncNetworkStream):
    """httpcore's view of one connection (a TCP or TLS stream, or a libp2p stream's adapter).

    It counts the exchanges it carried and the bytes received since the current request went
    out (for the retry rule), caps the response head, and raises httpcore's errors only.
    """

    def __init__(self, stream: ByteStream, socket: trio.socket.SocketType | None = None) -> None:
        self._stream = stream
        self._socket = socket
        self.exchanges = 0  # requests sent on it, the current one included
        self.received = 0  # bytes received since the current request went out
        self._head_left: int | None = None  # bytes the response head may still take
        self._tail = b""  # the last bytes read of the head (a blank line may straddle reads)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        try:
            data = bytes(await self._stream.receive_some(max_bytes))
        except _STREAM_ERRORS as exc:
            raise httpcore.ReadError(_why(exc)) from exc
        self.received += len(data)
        if self._head_left is not None and data:
            self._check_head(data)
        return data

    def _check_head(self, data: bytes) -> None:
        seen = self._tail + data if self._tail else data
        if b"\r\n\r\n" in seen:
            self._head_left = None
            return
        assert self._head_left is not None
        self._head_left -= len(data)
        if self._head_left < 0:
            raise httpcore.RemoteProtocolError(f"response head over {_MAX_HEAD} bytes")
        self._tail = seen[-3:]

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self.received or not self.exchanges:  # the first write of a new request
            self.exchanges += 1
            self.received, self._head_left, self._tail = 0, _MAX_HEAD, b""
        if (exchange := _EXCHANGE.get()) is not None:
            exchange.stream = self
        if not buffer:
            return
        try:
            await self._stream.send_all(buffer)
        except _STREAM_ERRORS as exc:
            raise httpcore.WriteError(_why(exc)) from exc

    async def aclose(self) -> None:
        if isinstance(self._stream, trio.abc.Stream):
            await trio.aclose_forcefully(self._stream)  # no TLS close_notify to wait for
        else:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
    ) -> httpcore.AsyncNetworkStream:
        if not isinstance(self._stream, trio.abc.Stream):
            raise httpcore.ConnectError("TLS needs a TCP stream")
        tls = trio.SSLStream(
            self._stream, ssl_context, server_hostname=server_hostname, https_compatible=True
        )
        try:
            await tls.do_handshake()
        except _STREAM_ERRORS as exc:
            await trio.aclose_forcefully(tls)
            raise httpcore.ConnectError(_why(exc)) from exc
        return ClientStream(tls, self._socket)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # idle and readable: the server hung up (httpcore drops it)
            return self._socket is not None and self._socket.is_readable()
        return None


class StreamBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network for a kind of stream: subclasses open ``connect_tcp``; there are no
    unix sockets, and sleeping is trio's."""

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(f"no unix sockets on {type(self).__name__}")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class TcpBackend(StreamBackend):
    """httpcore's network over TCP: connections opened by ``connect(host, port)``."""

    def __init__(self, connect: Connect = trio.open_tcp_stream) -> None:
        self._connect = connect

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            stream = await self._connect(host, port)
        except (*_STREAM_ERRORS, ValueError) as exc:  # ValueError: names IDNA refuses
            raise httpcore.ConnectError(_why(exc)) from exc
        socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        return ClientStream(stream, socket)


class Response:
    """A response's status and headers (lower-case names, repeats joined with ", "); iterate it
    for the raw body chunks."""

    def __init__(self, response: httpcore.Response, url: str, max_body: int | None) -> None:
        self.url = url
        self.status: int = response.status
        headers: dict[str, str] = {}
        for name, value in response.headers:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers: Mapping[str, str] = headers
        self._response = response
        self._chunks: AsyncIterator[bytes] | None = None
        self._max_body = max_body
        self._read = 0
        self._done = False  # the body was read to its end

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            self._check_length()
            self._chunks = aiter(cast("AsyncIterator[bytes]", self._response.stream))
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._done = True
            raise
        except _HTTPCORE_ERRORS as exc:
            raise TransportFailed(f"{self.url}: {_why(exc)}") from None
        self._read += len(chunk)
        if self._max_body is not None and self._read > self._max_body:
            raise ResponseTooLarge(f"{self.url}: response body over {self._max_body} bytes")
        return chunk

    def _check_length(self) -> None:
        length = self.headers.get("content-length", "")
        if self._max_body is not None and length.isdigit() and int(length) > self._max_body:
            raise ResponseTooLarge(
                f"{self.url}: response body over {self._max_body} bytes ({length} bytes)"
            )

    async def drain(self, limit: int = _MAX_HEAD) -> None:
        """Read the rest of the body, up to ``limit`` bytes (past that, dropping is cheaper)."""
        read = 0
        try:
            async for chunk in self:
                read += len(chunk)
                if read > limit:
                    return
        except ResponseTooLarge:
            return  # too big to drain: the connection is dropped

    async def aclose(self) -> None:
        """Hand the connection back (read to the end) or drop it (not)."""
        if self._chunks is not None and not self._done and hasattr(self._chunks, "aclose"):
            await self._chunks.aclose()  # an unfinished generator ends here, not in the GC
        await self._response.aclose()


class HttpClient:
    """Keep-alive GETs with redirects, a total deadline per request and typed errors."""

    def __init__(
        self,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext,
        headers: Mapping[str, str] | None = None,
        max_idle: int = 16,
        max_body: int | None = None,
        connect: Connect = trio.open_tcp_stream,
        backend: httpcore.AsyncNetworkBackend | None = None,
        proxies: ProxyEnv | None = None,
    ) -> None:
        """``backend`` replaces TCP (``connect``) and proxies: libp2p streams, say.  ``proxies``
        defaults to the environment's (none with a ``backend``)."""
        self._timeout = timeout
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._max_body = max_body
        self._headers = [
            (b"user-agent", b"ipni-indexer"),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
        ]
        if proxies is None:
            proxies = ProxyEnv() if backend is not None else ProxyEnv.from_environ()
        self._proxies = proxies
        self._direct = self._pool(backend or TcpBackend(connect))
        self._via: dict[Proxy, _Pool] = {}
        self._origins: dict[str, _Origin] = {}  # "scheme://netloc" of URLs already fetched
        self._closed = False

    def _pool(self, backend: httpcore.AsyncNetworkBackend, proxy: Proxy | None = None) -> _Pool:
        if proxy is None:
            return KeepAlivePool(backend, self._ssl, self._max_idle)
        url = httpcore.URL(scheme=proxy.scheme, host=proxy.host, port=proxy.port, target="/")
        return httpcore.AsyncHTTPProxy(
            proxy_url=url,
            proxy_auth=proxy.auth,
            ssl_context=self._ssl,
            proxy_ssl_context=self._ssl if proxy.scheme == "https" else None,
            max_connections=None,
            max_keepalive_connections=self._max_idle,
            network_backend=backend,
        )

    @asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Response]:
        """``async with client.get(url, headers) as response``: redirects already followed."""
        try:
            with trio.fail_after(self._timeout):
                response = await self._follow(url, headers)
                try:
                    yield response
                finally:
                    await response.aclose()
        except trio.TooSlowError:
            raise TransportFailed(f"{url}: TooSlowError: over {self._timeout} s") from None

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their response is done."""
        self._closed = True
        for pool in [self._direct, *self._via.values()]:
            await pool.aclose()

    async def _follow(self, url: str, headers: Mapping[str, str]) -> Response:
        for _ in range(_MAX_REQUESTS):
            response = await self._request(url, headers)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or location is None:
                return response
            try:
                await response.drain()
            finally:
                await response.aclose()
            try:
                url = urljoin(url, location)
            except ValueError as exc:  # e.g. "http://[::1": the address answered, with junk
                raise FetchFailed(f"{url}: bad redirect to {location!r}: {exc}") from None
        raise FetchFailed(f"{url}: TooManyRedirects: stopped after {_MAX_REQUESTS} requests")

    async def _request(self, url: str, headers: Mapping[str, str]) -> Response:
        if self._closed:
            raise FetchFailed(f"{url}: the HTTP client is closed")
        request, pool = self._prepare(url, headers)
        for attempt in range(2):
            exchange = _Exchange()
            token = _EXCHANGE.set(exchange)
            try:
                response = await pool.handle_async_request(request)
            except _HTTPCORE_ERRORS as exc:
                stream = exchange.stream
                stale = stream is not None and stream.exchanges > 1 and stream.received == 0
                if attempt == 0 and stale:
                    continue  # closed by the server while idle: once more
                raise TransportFailed(f"{url}: {_why(exc)}") from None
            finally:
                _EXCHANGE.reset(token)
            return Response(response, url, self._max_body)
        raise AssertionError("unreachable")

    def _prepare(self, url: str, headers: Mapping[str, str]) -> tuple[httpcore.Request, _Pool]:
        """The request for an absolute http(s) URL and the pool it goes through; FetchFailed if
        this client cannot fetch it."""
        slash = url.find("/", url.find("//") + 2)
        origin_text, target = (url[:slash], url[slash:]) if slash > 0 else (url, "/")
        origin = self._origins.get(origin_text)
        if origin is None or "#" in target:
            return self._prepare_slowly(url, headers)
        try:
            request = httpcore.Request(
                b"GET",
                httpcore.URL(
                    scheme=origin.scheme,
                    host=origin.host,
                    port=origin.port,
                    target=target.encode("ascii"),
                ),
                headers=[origin.host_header, *self._headers, *headers.items()],
            )
        except ValueError as exc:  # UnicodeError too
            raise FetchFailed(f"{url}: cannot fetch: {exc}") from None
        return request, origin.pool

    def _prepare_slowly(
        self, url: str, headers: Mapping[str, str]
    ) -> tuple[httpcore.Request, _Pool]:
        """``_prepare`` for a URL whose origin is not known yet (or with a fragment)."""
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme.lower(), parts.hostname
            if scheme not in _DEFAULT_PORTS or not host:
                raise ValueError("not an absolute http or https URL")
            port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port  # :0 is not :80
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            netloc = parts.netloc.rpartition("@")[2]
            host_header = (b"host", _ascii(netloc))
            request = httpcore.Request(
                b"GET",
                httpcore.URL(
                    scheme=scheme.encode(),
                    host=_ascii(host),
                    port=port,
                    target=target.encode("ascii"),
                ),
                headers=[host_header, *self._headers, *headers.items()],
            )
        except ValueError as exc:  # UnicodeError too
            raise FetchFailed(f"{url}: cannot fetch: {exc}") from None
        if port == 0:  # httpcore would read it as the default port
            raise TransportFailed(f"{url}: ConnectError: connect to {host}:0 failed: no port 0")
        proxy = self._proxies.proxy_for(scheme, host, port)
        pool = self._direct if proxy is None else self._via.get(proxy)
        if pool is None:
            assert proxy is not None
            pool = self._via[proxy] = self._pool(TcpBackend(), proxy)
        if "@" not in parts.netloc and "#" not in url and len(self._origins) < 64:
            origin_text = url[: url.find("/", url.find("//") + 2)] if parts.path else None
            if origin_text and origin_text.lower().startswith(scheme + "://"):
                self._origins[origin_text] = _Origin(
                    request.url.scheme, request.url.host, port, host_header, pool
                )
        return request, pool


@dataclass(frozen=True, slots=True)
class _Origin:
    """What ``_prepare`` parsed of a URL's ``scheme://host:port`` once, for the next URLs."""

    scheme: bytes
    host: bytes
    port: int
    host_header: tuple[bytes, bytes]
    pool: _Pool
