"""HTTP/1.1 over libp2p streams, as go-libp2p's ``p2p/http`` (libp2phttp) speaks it.

Imports py-libp2p: import this module lazily (see ``sync.net.p2p``).

Rules this module keeps (go-libp2p ``p2p/http/libp2phttp.go``):

- One libp2p stream per HTTP/1.1 connection, multistream protocol ID ``/http/1.1``.  The server
  side runs ``httpserver.serve_connection`` on each stream (keep-alive is allowed but not needed).
- ``GET /.well-known/libp2p/protocols`` answers ``application/json``: a map from protocol ID to
  ``{"path": prefix}``, every prefix ending in ``/``, keys sorted and compact, as Go's
  ``encoding/json`` writes ``PeerMeta``.  An ``Accept`` header naming neither
  ``application/json`` nor ``*/*`` gets 406, any other method 405, as Go's ``WellKnownHandler``.
- The client does what Go's ``streamRoundTripper`` does: one request per stream, a
  ``Connection: close`` header, the write side half-closed once the request is sent, the
  response read to its end, then the stream closed.  Go's server ignores the half-close
  (``gostream.IgnoreEOF``) and so does ours.
- libp2p errors never escape as libp2p types: the server adapter raises
  ``trio.BrokenResourceError`` and the client raises httpx's own exceptions (``ConnectError``,
  ``ReadError``, ``WriteError``, the ``*Timeout`` family, ``RemoteProtocolError``), and ours,
  ``sync.errors.ResponseTooLarge``, for a body past ``max_response``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import h11
import httpx
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.peerinfo import PeerInfo

from sync.errors import ResponseTooLarge
from sync.net.httpmessage import STREAM_ERRORS
from sync.net.httpserver import Handler, Request, Response, serve_connection
from sync.net.p2p import peer_info

__all__ = [
    "HTTP_PROTOCOL",
    "WELL_KNOWN_PROTOCOLS",
    "Libp2pTransport",
    "ResponseTooLarge",
    "StreamAdapter",
    "fetch_over_libp2p",
    "serve_http_over_libp2p",
    "well_known_body",
]

HTTP_PROTOCOL = TProtocol("/http/1.1")
WELL_KNOWN_PROTOCOLS = "/.well-known/libp2p/protocols"
_RECV = 65536
_MAX_RESPONSE = 64 << 20
# Go's encoding/json escapes these inside strings (HTML safety); json.dumps does not.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_GO_ESCAPES["\u2029"] = "\\u2029"


class StreamAdapter:
    """A libp2p stream seen as the ``ByteStream`` the HTTP server needs."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._stream.read(max_bytes or _RECV)
        except StreamEOF:
            return b""
        except Exception as exc:  # StreamReset, StreamError, muxer errors
            raise trio.BrokenResourceError(f"libp2p stream read: {exc!r}") from exc

    async def send_all(self, data: bytes) -> None:
        try:
            await self._stream.write(data)
        except Exception as exc:
            raise trio.BrokenResourceError(f"libp2p stream write: {exc!r}") from exc

    async def aclose(self) -> None:
        try:
            await self._stream.close()
        except (BaseLibp2pError, *STREAM_ERRORS):
            await self._stream.reset()


def _path_prefix(path: str) -> str:
    return path if path.endswith("/") else path + "/"


def well_known_body(protocols: Mapping[str, str]) -> bytes:
    """The ``/.well-known/libp2p/protocols`` JSON for protocol ID -> path prefix."""
    meta = {p: {"path": _path_prefix(path)} for p, path in protocols.items()}
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in _GO_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text.encode()


def _with_well_known(handler: Handler, protocols: Mapping[str, str]) -> Handler:
    body = well_known_body(protocols)

    async def handle(request: Request) -> Response:
        if request.path != WELL_KNOWN_PROTOCOLS:
            return await handler(request)
        accept = request.header("accept")
        if accept and "application/json" not in accept and "*/*" not in accept:
            return Response.text(406, "Only application/json is supported")
        if request.method != "GET":
            return Response.text(405, "Only GET requests are supported")
        return Response(200, body, "application/json")

    return handle


def serve_http_over_libp2p(
    host: IHost,
    handler: Handler,
    protocols: Mapping[str, str],
    *,
    max_body: int = 1 << 20,
    idle_timeout: float = 60.0,
) -> None:
    """Serve ``handler`` on ``/http/1.1`` streams, plus the well-known protocols map.

    ``protocols`` maps each protocol ID to its path prefix, e.g. ``{"/ipni/v1/ad":
    "/ipni/v1/ad/"}``; ``handler`` sees full paths (prefixes are not stripped).
    """
    served = _with_well_known(handler, protocols)

    async def on_stream(stream: INetStream) -> None:
        adapter = StreamAdapter(stream)
        await serve_connection(adapter, served, max_body=max_body, idle_timeout=idle_timeout)

    host.set_stream_handler(HTTP_PROTOCOL, on_stream)


def _timeout(request: httpx.Request, which: str) -> float:
    value = request.extensions.get("timeout", {}).get(which)
    return float("inf") if value is None else float(value)


class Libp2pTransport(httpx.AsyncBaseTransport):
    """An httpx transport sending each request over a new ``/http/1.1`` stream to one peer."""

    def __init__(
        self, host: IHost, peer: PeerInfo | str, *, max_response: int = _MAX_RESPONSE
    ) -> None:
        self._host = host
        self._peer = peer_info(peer) if isinstance(peer, str) else peer
        self._max_response = max_response

    async def _open(self, request: httpx.Request) -> INetStream:
        with trio.move_on_after(_timeout(request, "connect")) as scope:
            try:
                await self._host.connect(self._peer)
                return await self._host.new_stream(self._peer.peer_id, [HTTP_PROTOCOL])
            except Exception as exc:  # py-libp2p may turn our timeout into its own error
                msg = f"libp2p {self._peer.peer_id}: {exc!r}"
                if scope.cancel_called:
                    raise httpx.ConnectTimeout(msg, request=request) from exc
                raise httpx.ConnectError(msg, request=request) from exc
        raise httpx.ConnectTimeout(f"libp2p {self._peer.peer_id}: timed out", request=request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = await self._open(request)
        try:
            response = await self._exchange(stream, request)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.reset()
            raise
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await StreamAdapter(stream).aclose()
        return response

    async def _write(self, stream: INetStream, request: httpx.Request, data: bytes) -> None:
        if not data:
            return
        with trio.move_on_after(_timeout(request, "write")) as scope:
            try:
                await stream.write(data)
            except Exception as exc:
                raise httpx.WriteError(f"libp2p stream write: {exc!r}", request=request) from exc
        if scope.cancelled_caught:
            raise httpx.WriteTimeout("libp2p stream write timed out", request=request)

    async def _read(self, stream: INetStream, request: httpx.Request) -> bytes:
        with trio.move_on_after(_timeout(request, "read")) as scope:
            try:
                return await stream.read(_RECV)
            except StreamEOF:
                return b""
            except Exception as exc:
                raise httpx.ReadError(f"libp2p stream read: {exc!r}", request=request) from exc
        assert scope.cancelled_caught
        raise httpx.ReadTimeout("libp2p stream read timed out", request=request)

    async def _exchange(self, stream: INetStream, request: httpx.Request) -> httpx.Response:
        conn = h11.Connection(h11.CLIENT)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"connection"]
        headers.append((b"connection", b"close"))
        target = request.url.raw_path
        try:
            head = h11.Request(method=request.method, target=target, headers=headers)
            await self._write(stream, request, conn.send(head) or b"")
            body = await request.aread()
            if body:
                await self._write(stream, request, conn.send(h11.Data(data=body)) or b"")
            await self._write(stream, request, conn.send(h11.EndOfMessage()) or b"")
            try:
                if isinstance(stream, NetStream):  # INetStream has no half-close
                    await stream.close_write()
            except Exception as exc:
                raise httpx.WriteError(f"libp2p stream close: {exc!r}", request=request) from exc
            return await self._receive(conn, stream, request)
        except h11.ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None

    async def _receive(
        self, conn: h11.Connection, stream: INetStream, request: httpx.Request
    ) -> httpx.Response:
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._read(stream, request))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_response:
                    raise ResponseTooLarge(f"response body over {self._max_response} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("peer closed before responding", request=request)
        assert head is not None
        return httpx.Response(
            head.status_code,
            headers=list(head.headers),
            stream=httpx.ByteStream(bytes(body)),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            request=request,
        )


async def fetch_over_libp2p(
    host: IHost,
    peer_addr: str,
    path: str,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 -- httpx's per-operation timeout, not a deadline
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from the peer at ``peer_addr`` (``.../p2p/<id>``): status, headers, body.

    Header names are lower-case; a repeated header's values are joined with ``", "``; a gzip
    body is decoded.
    """
    info = peer_info(peer_addr)
    transport = Libp2pTransport(host, info)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        response = await client.get(f"http://{info.peer_id}{path}")
        return response.status_code, dict(response.headers), response.content
