"""Keep-alive HTTP/1.1 connections per origin, each one httpcore's ``AsyncHTTP11Connection``.

httpcore's own ``AsyncConnectionPool`` costs about 0.1 ms of CPU per request more than this
(its request queue, per-request connection assignment and tracing): on a chain of small ads,
where every ad is a few small GETs, that was 20% of the ingest rate (``bench/ingest.py``
``small_ads``; the figures are in ``docs/design.md``).  Every byte on the wire is still
httpcore's HTTP/1.1 code; what is here is only which connection a request goes out on.

Rules this module keeps:

- A request takes an idle connection to its origin (newest first) or opens a new one, so
  concurrent requests each get their own; nothing waits for a connection.
- A connection goes back to the idle set only when its response was closed and httpcore calls
  it idle (read to the end, neither side asked to close); otherwise it is closed.  An idle
  connection that expired (httpcore's ``has_expired``: the server hung up, it turned readable) is
  closed when next looked at.  At most ``max_idle`` idle connections are kept in all.
- https: TLS is started on the new stream with the caller's context and the origin's name.
- A connection is used by one request at a time (it is in the idle set or with one request,
  never both), so its httpcore state lock is dropped (``unshared``): it guarded nothing here.
- Errors are httpcore's (the caller translates them); a connection whose request failed is
  closed.  After ``aclose`` no connection is handed out or kept.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import cast

import httpcore

__all__ = ["KeepAlivePool", "unshared"]

_Key = tuple[bytes, bytes, int]  # an origin (httpcore's Origin is not hashable)


class KeepAlivePool:
    """``handle_async_request`` over keep-alive HTTP/1.1 connections, per origin."""

    def __init__(
        self, backend: httpcore.AsyncNetworkBackend, ssl_context: ssl.SSLContext, max_idle: int
    ) -> None:
        self._backend = backend
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle: dict[_Key, list[httpcore.AsyncHTTP11Connection]] = {}
        self._idle_count = 0
        self._closed = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._closed:
            raise httpcore.ConnectError("the connection pool is closed")
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        connection = await self._take(key) or await self._open(origin)
        try:
            response = await connection.handle_async_request(request)
        except BaseException:
            await connection.aclose()
            raise
        response.stream = _Body(self, key, connection, response.stream)
        return response

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle, self._idle_count = self._idle, {}, 0
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()

    async def _take(self, key: _Key) -> httpcore.AsyncHTTP11Connection | None:
        connections = self._idle.get(key)
        while connections:
            connection = connections.pop()
            self._idle_count -= 1
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return None

    async def _open(self, origin: httpcore.Origin) -> httpcore.AsyncHTTP11Connection:
        host = origin.host.decode("ascii")
        stream = await self._backend.connect_tcp(host, origin.port)
        if origin.scheme == b"https":
            try:
                stream = await stream.start_tls(self._ssl, server_hostname=host)
            except BaseException:
                await stream.aclose()
                raise
        return unshared(httpcore.AsyncHTTP11Connection(origin=origin, stream=stream))

    async def _done(self, key: _Key, connection: httpcore.AsyncHTTP11Connection) -> None:
        """The response on ``connection`` was closed: keep the connection, or close it."""
        if self._closed or not connection.is_idle() or self._idle_count >= self._max_idle:
            await connection.aclose()
            return
        self._idle.setdefault(key, []).append(connection)
        self._idle_count += 1


class _NoLock:
    """The state lock of a connection one request uses at a time: there is nothing to wait for."""

    async def __aenter__(self) -> _NoLock:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def unshared(
    connection: httpcore.AsyncHTTP11Connection,
) -> httpcore.AsyncHTTP11Connection:
    """``connection`` without its state lock: this pool hands a connection to one request at a
    time, and a trio lock costs a trip through the scheduler on every acquire, two per request
    (~8% of ``small_ads``).  httpcore 1.0 keeps the lock in ``_state_lock``; should a later
    release not, the connection keeps its lock (``tests/sync/net/test_keepalive.py`` says so)."""
    state = vars(connection)
    if "_state_lock" in state:
        state["_state_lock"] = _NO_LOCK
    return connection


class _Body:
    """A response body that hands its connection back to the pool when it is closed."""

    def __init__(
        self,
        pool: KeepAlivePool,
        key: _Key,
        connection: httpcore.AsyncHTTP11Connection,
        stream: AsyncIterable[bytes] | Iterable[bytes],
    ) -> None:
        self._pool, self._key, self._connection = pool, key, connection
        self._stream = cast("AsyncIterable[bytes]", stream)  # an async connection's: async
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return aiter(self._stream)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._stream, "aclose", None)
            if close is not None:
                await close()
        finally:
            await self._pool._done(self._key, self._connection)
