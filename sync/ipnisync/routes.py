"""ipnisync over HTTP: the publisher side (the IPNI HTTP provider spec, ``IPNI_HTTP_PROVIDER.md``).

Routes, under the ``/ipni/v1/ad`` prefix (``ProtocolID`` in go-libipni, also the libp2p HTTP
protocol ID):

- ``GET /ipni/v1/ad/head``: the encoded SignedHead, ``Cache-Control: no-cache, no-store,
  must-revalidate``, ``ETag`` = the head CID (``If-None-Match`` gets 304); 204 when nothing is
  published yet.
- ``GET /ipni/v1/ad/<cid>``: the block exactly as stored (its bytes hash to the CID), with the
  codec's media type and ``Cache-Control: public, max-age=29030400, immutable``; 404 when unknown,
  400 when the CID is malformed.

Everything else is 404, other methods 405.  Bodies are gzip-encoded when the client asks.  The
handler reads through the ``BlockSource`` protocol, so any store (or a test double) can serve;
a source that keeps its blocks' gzip encodings too (``PrecompressedSource``: a block is
content-addressed, so its encoding never changes) has them sent as they are, not compressed per
request (the server asks only for a client that accepts gzip).
"""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

from sync.errors import BadCid
from sync.ipnisync.protocol import BLOCK_CACHE, HEAD_CACHE, IPNI_PATH, MEDIA_TYPES
from sync.model.cid import DAG_JSON, Link
from sync.net.httpserver import Handler, Request, Response

__all__ = ["BlockSource", "PrecompressedSource", "ipnisync_handler"]


class BlockSource(Protocol):
    def head(self) -> Link | None: ...

    def signed_head(self) -> bytes | None: ...

    def block(self, link: Link) -> bytes | None: ...


@runtime_checkable
class PrecompressedSource(BlockSource, Protocol):
    def gzipped_block(self, link: Link, raw: bytes) -> bytes | None:
        """``sync.net.httpmessage.gzip_encoding(raw)`` of ``link``'s block ``raw``, kept since
        the block was written (or made now and kept, for a block written before)."""
        ...


def ipnisync_handler(source: BlockSource, prefix: str = IPNI_PATH) -> Handler:
    """An HTTP handler serving ``source``'s chain under ``prefix``."""
    base = prefix.rstrip("/") + "/"
    gzipped = source.gzipped_block if isinstance(source, PrecompressedSource) else None

    async def handle(request: Request) -> Response:
        if not request.path.startswith(base):
            return Response.text(404, "not found")
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, "method not allowed", headers=(("allow", "GET, HEAD"),))
        ask = request.path[len(base) :]
        if ask == "head":
            return _head(source, request)
        if not ask or "/" in ask:
            return Response.text(404, "not found")
        try:
            link = Link.parse(ask)
        except BadCid:
            return Response.text(400, "invalid request: not a cid")
        raw = source.block(link)
        if raw is None:
            return Response.text(404, "cid not found")
        return Response(
            200,
            raw,
            MEDIA_TYPES.get(link.codec, "application/octet-stream"),
            BLOCK_CACHE,
            compressible=True,
            gzipped=None if gzipped is None else functools.partial(gzipped, link),
        )

    return handle


def _head(source: BlockSource, request: Request) -> Response:
    head, signed = source.head(), source.signed_head()
    if head is None or signed is None:
        return Response(204, headers=HEAD_CACHE)
    etag = f'"{head}"'
    headers = (*HEAD_CACHE, ("etag", etag))
    if etag in request.header("if-none-match"):
        return Response(304, headers=headers)
    return Response(200, signed, MEDIA_TYPES[DAG_JSON], headers, compressible=True)
