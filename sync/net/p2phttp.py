"""HTTP/1.1 over libp2p streams, as go-libp2p's ``p2p/http`` (libp2phttp) speaks it.

Imports py-libp2p: import this module lazily (see ``sync.net.p2p``).

Rules this module keeps (go-libp2p ``p2p/http/libp2phttp.go``):

- One libp2p stream per HTTP/1.1 connection, multistream protocol ID ``/http/1.1``.  The server
  side runs ``httpserver.serve_connection`` on each stream (keep-alive is allowed but not needed).
- ``GET /.well-known/libp2p/protocols`` answers ``application/json``: a map from protocol ID to
  ``{"path": prefix}``, every prefix ending in ``/``, keys sorted and compact, as Go's
  ``encoding/json`` writes ``PeerMeta``.  An ``Accept`` header naming neither
  ``application/json`` nor ``*/*`` gets 406, any other method 405, as Go's ``WellKnownHandler``.
- The client side is ``httpclient.HttpClient`` itself: ``Libp2pBackend`` is an httpcore
  network backend whose ``connect_tcp`` opens a ``/http/1.1`` stream to its one peer (dialling
  it first if need be), so the same httpcore HTTP/1.1 code speaks over TCP and over libp2p.
  Each stream is one HTTP/1.1 connection, kept alive for further requests as a TCP connection
  would be (Go's server serves streams with ``net/http``, which allows it; Go's own client
  closes after one request, and the half-close it sends is ignored by Go's server and ours).
  A URL's host must be the peer's ID (``http://<peer id>/path``); no TLS over streams (Noise
  secures them).
- libp2p errors never escape as libp2p types: the server adapter raises
  ``trio.BrokenResourceError``; the client backend raises httpcore's, which the client turns
  into ``sync.errors`` ones (``TransportFailed``, ``ResponseTooLarge``, ...).
"""

from __future__ import annotations

import functools
import gzip
import json
import ssl
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import httpcore
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import PeerInfo

from sync.errors import FetchFailed
from sync.net.httpclient import ClientStream, HttpClient, StreamBackend
from sync.net.httpmessage import STREAM_ERRORS
from sync.net.httpserver import Handler, Request, Response, serve_connection
from sync.net.p2p import peer_info

__all__ = [
    "HTTP_PROTOCOL",
    "WELL_KNOWN_PROTOCOLS",
    "Libp2pBackend",
    "StreamAdapter",
    "fetch_over_libp2p",
    "libp2p_client",
    "serve_http_over_libp2p",
    "well_known_body",
]

HTTP_PROTOCOL = TProtocol("/http/1.1")
WELL_KNOWN_PROTOCOLS = "/.well-known/libp2p/protocols"
_RECV = 65536
_MAX_RESPONSE = 64 << 20
CLIENT_TIMEOUT = 30.0  # seconds for one request over a stream, body included
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


class Libp2pBackend(StreamBackend):
    """httpcore's network over libp2p: each connection a new ``/http/1.1`` stream to one peer."""

    def __init__(self, host: IHost, peer: PeerInfo | str) -> None:
        self._host = host
        self._peer = peer_info(peer) if isinstance(peer, str) else peer

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        peer = self._peer.peer_id
        if host.lower() != str(peer).lower():  # URL hosts come lower-cased
            raise httpcore.ConnectError(f"libp2p: {host} is not the peer {peer}")
        try:
            await self._host.connect(self._peer)
            stream = await self._host.new_stream(peer, [HTTP_PROTOCOL])
        except Exception as exc:  # py-libp2p raises many kinds (and may turn a cancel into one)
            raise httpcore.ConnectError(f"libp2p {peer}: {exc!r}") from exc
        return ClientStream(StreamAdapter(stream))


def libp2p_client(
    host: IHost,
    peer: PeerInfo | str,
    *,
    timeout: float = CLIENT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
    max_body: int | None = _MAX_RESPONSE,
) -> HttpClient:
    """An ``HttpClient`` whose connections are ``/http/1.1`` streams to ``peer``: fetch
    ``http://<peer id>/<path>``."""
    return HttpClient(
        timeout=timeout,
        ssl_context=_no_tls(),
        headers=headers,
        max_body=max_body,
        backend=Libp2pBackend(host, peer),
    )


@functools.cache
def _no_tls() -> ssl.SSLContext:
    """The client wants a context; libp2p streams never use it (Noise secures them)."""
    return ssl.create_default_context()


async def fetch_over_libp2p(
    host: IHost,
    peer_addr: str,
    path: str,
    *,
    timeout: float = CLIENT_TIMEOUT,  # noqa: ASYNC109 -- the client's per-request deadline
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from the peer at ``peer_addr`` (``.../p2p/<id>``): status, headers, body.

    Header names are lower-case; a repeated header's values are joined with ``", "``; a gzip
    body is decoded.  Errors are ``FetchFailed`` (``TransportFailed`` when the peer did not
    answer in full).
    """
    info = peer_info(peer_addr)
    client = libp2p_client(host, info, timeout=timeout, headers={"accept-encoding": "gzip"})
    url = f"http://{info.peer_id}{path}"
    try:
        async with client.get(url, {}) as response:
            body = b"".join([chunk async for chunk in response])
            status, headers = response.status, dict(response.headers)
    finally:
        await client.aclose()
    if headers.get("content-encoding", "").lower() in ("gzip", "x-gzip"):
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise FetchFailed(f"{url}: bad gzip body: {exc}") from None
    return status, headers, body
