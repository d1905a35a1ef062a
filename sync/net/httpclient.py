"""A lean keep-alive HTTP/1.1 client on h11 and trio: the fetcher's GETs over http and https.

httpx costs more per request than a small advertisement costs to index; ipnisync needs only GETs
of small blocks, so this client does only that, with the fetcher's rules (``fetcher.py``).

Rules this module keeps:

- ``http`` and ``https`` URLs only; https is ``trio.SSLStream`` with the caller's verifying
  ``ssl.SSLContext`` (server name sent and checked).
- One pool of idle keep-alive connections per client, per (scheme, host, port).  A request takes
  the most recently used idle connection, or opens a new one when none is idle, so concurrent
  requests each get their own.  A connection goes back to the pool only when its response was
  read to the end and neither side asked to close (h11 is ``DONE`` on both sides); it is dropped
  on ``Connection: close``, on any I/O, TLS or protocol error, and when the caller stops reading
  a body early.  At most ``max_idle`` connections per origin are kept idle.
- A reused connection that fails before any byte of its response arrived (the server closed it
  while it was idle) is retried once, on a fresh connection: GETs are idempotent.  Nothing is
  retried once a byte of the response arrived, nor on a fresh connection.
- Redirects (301, 302, 303, 307, 308 with a ``Location``, resolved against the request URL) are
  followed, at most 10 requests in all, as Go's client; an 11th would be ``FetchFailed``
  (TooManyRedirects).  A redirect's body is read (up to 64 KiB) so its connection can be reused.
- h11 reads and writes every message; a response head is capped at 64 KiB
  (``max_incomplete_event_size``).  Bodies are streamed raw (``Response`` is an async iterator of
  chunks, not decoded): caps and content codings are the caller's.
- ``get`` has one total deadline (``trio.fail_after``, as Go's ``Client.Timeout``) covering the
  connect, redirects and reading the body.
- Errors: connect, I/O, TLS, h11 and deadline errors are ``TransportFailed`` (a ``FetchFailed``:
  the address did not answer in full, another may); a redirect loop or a redirect to a URL this
  client cannot fetch (or that does not parse) is plain ``FetchFailed`` (the address
  answered).  An explicit port is used as given (``:0`` too: it fails to connect, it is never
  read as the default port).  No h11, trio, ssl or urllib exception escapes.  Statuses are not
  errors here: the caller decides what 404 or 500 mean.
- TCP connections are opened by ``connect(host, port)`` (``trio.open_tcp_stream`` unless the
  caller passes another: the fetcher's ``refuse_private_addrs`` check resolves and vets the
  addresses there, for the first request and for every redirect alike).  What ``connect``
  raises that is no ``OSError`` passes through unchanged.
- ``Opener`` and ``ResponseLike`` are the shape the fetcher reads ("open a GET; status, headers,
  body chunks"); ``HttpClient`` is one, the fetcher's httpx adapter for libp2p the other.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import h11
import trio

from sync.errors import FetchFailed, TransportFailed

__all__ = ["Connect", "HttpClient", "Opener", "Response", "ResponseLike", "TransportFailed"]

Connect = Callable[[str, int], Awaitable[trio.abc.Stream]]

_RECV = 65536
_MAX_HEAD = 64 << 10
_MAX_REQUESTS = 10  # Go's http.Client: "stopped after 10 redirects"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Everything the layers below can raise (ssl.SSLError and socket.gaierror are OSErrors;
# ValueError covers URLs and header values h11 or IDNA refuse).
_LOW_LEVEL = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.ProtocolError,
    ValueError,
)


def _why(exc: BaseException) -> str:
    """``exc`` and its cause: trio hides TLS errors behind ``BrokenResourceError``."""
    return f"{exc!r} from {exc.__cause__!r}" if exc.__cause__ else repr(exc)


class ResponseLike(Protocol):
    """What the fetcher reads of a response (``Response`` is one, its httpx adapter another)."""

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


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int


class _Connection:
    """One TCP (or TLS) connection and its h11 state machine."""

    def __init__(self, origin: _Origin, stream: trio.abc.Stream) -> None:
        self.origin = origin
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self.reused = False  # it served a whole exchange before this one
        self.received = 0  # bytes received since the current request was sent

    async def send(self, *events: Any) -> None:
        self.received = 0
        await self.stream.send_all(b"".join(self.h11.send(e) or b"" for e in events))

    async def next_event(self) -> Any:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            data = bytes(await self.stream.receive_some(_RECV))
            self.received += len(data)
            self.h11.receive_data(data)  # b"": end of stream, which h11 judges
        return event


class Response:
    """A response's status and headers (lower-case names, repeats joined with ", "); iterate it
    for the raw body chunks."""

    def __init__(self, conn: _Connection, url: str, head: h11.Response) -> None:
        self.url = url
        self.status: int = head.status_code
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers: Mapping[str, str] = headers
        self.complete = False
        self.connection = conn

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        if self.complete:
            raise StopAsyncIteration
        try:
            event = await self.connection.next_event()
        except _LOW_LEVEL as exc:
            raise TransportFailed(f"{self.url}: {_why(exc)}") from None
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            self.complete = True
            raise StopAsyncIteration
        raise TransportFailed(f"{self.url}: unexpected {event!r}")

    async def drain(self, limit: int = _MAX_HEAD) -> None:
        """Read the rest of the body, up to ``limit`` bytes (past that, dropping is cheaper)."""
        read = 0
        async for chunk in self:
            read += len(chunk)
            if read > limit:
                return


def _split(url: str) -> tuple[_Origin, str, str]:
    """(origin, Host header, request target) of an absolute http(s) URL; FetchFailed if not."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in _DEFAULT_PORTS or not host:
            raise ValueError("not an absolute http or https URL")
        port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port  # :0 is not :80
    except ValueError as exc:
        raise FetchFailed(f"{url}: cannot fetch: {exc}") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Origin(scheme, host, port), parts.netloc.rpartition("@")[2], target


class HttpClient:
    """Keep-alive GETs with redirects, a total deadline per request and typed errors."""

    def __init__(
        self,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext,
        headers: Mapping[str, str] | None = None,
        max_idle: int = 16,
        connect: Connect = trio.open_tcp_stream,
    ) -> None:
        self._timeout = timeout
        self._open_tcp = connect
        self._ssl = ssl_context
        self._headers = [("user-agent", "ipni-indexer"), *(headers or {}).items()]
        self._max_idle = max_idle
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False

    @asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Response]:
        """``async with client.get(url, headers) as response``: redirects already followed."""
        try:
            with trio.fail_after(self._timeout):
                response = await self._follow(url, headers)
                try:
                    yield response
                finally:
                    await self._release(response)
        except trio.TooSlowError:
            raise TransportFailed(f"{url}: TooSlowError: over {self._timeout} s") from None

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their response is done."""
        self._closed = True
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)

    async def _follow(self, url: str, headers: Mapping[str, str]) -> Response:
        for _ in range(_MAX_REQUESTS):
            response = await self._request(url, headers)
            location = response.headers.get("location")
            if response.status not in _REDIRECTS or location is None:
                return response
            try:
                await response.drain()
            finally:
                await self._release(response)
            try:
                url = urljoin(url, location)
            except ValueError as exc:  # e.g. "http://[::1": the address answered, with junk
                raise FetchFailed(f"{url}: bad redirect to {location!r}: {exc}") from None
        raise FetchFailed(f"{url}: TooManyRedirects: stopped after {_MAX_REQUESTS} requests")

    async def _request(self, url: str, headers: Mapping[str, str]) -> Response:
        origin, host, target = _split(url)
        for attempt in range(2):
            conn = self._checkout(origin) or await self._connect(origin, url)
            try:
                request = h11.Request(
                    method="GET",
                    target=target,
                    headers=[("host", host), *self._headers, *headers.items()],
                )
                await conn.send(request, h11.EndOfMessage())
                while not isinstance(head := await conn.next_event(), h11.Response):
                    if not isinstance(head, h11.InformationalResponse):  # 1xx: wait on
                        raise h11.RemoteProtocolError(f"{head!r} before a response")
            except _LOW_LEVEL as exc:
                await trio.aclose_forcefully(conn.stream)
                if attempt == 0 and conn.reused and conn.received == 0:
                    continue  # closed by the server while idle: once more, on a new connection
                raise TransportFailed(f"{url}: {_why(exc)}") from None
            return Response(conn, url, head)
        raise AssertionError("unreachable")

    def _checkout(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        return idle.pop() if idle else None

    async def _connect(self, origin: _Origin, url: str) -> _Connection:
        if self._closed:
            raise FetchFailed(f"{url}: the HTTP client is closed")
        stream: trio.abc.Stream | None = None
        try:
            stream = await self._open_tcp(origin.host, origin.port)
            if origin.scheme == "https":
                stream = trio.SSLStream(
                    stream, self._ssl, server_hostname=origin.host, https_compatible=True
                )
                await stream.do_handshake()
        except _LOW_LEVEL as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            raise TransportFailed(f"{url}: ConnectError: {_why(exc)}") from None
        return _Connection(origin, stream)

    async def _release(self, response: Response) -> None:
        conn = response.connection
        state = conn.h11
        idle = self._idle.setdefault(conn.origin, [])
        reusable = state.our_state is h11.DONE and state.their_state is h11.DONE
        if response.complete and reusable and not self._closed and len(idle) < self._max_idle:
            state.start_next_cycle()
            conn.reused = True
            idle.append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)
