"""The find API's HTTP routes, on ``sync.net.httpserver``.

Rules this module keeps (storetheindex ``server/find/server.go``, ``internal/httpserver/util.go``):

- ``ROUTES`` lists every route and its methods (the OpenAPI document is tested against it).
  Every answer carries ``Access-Control-Allow-Origin: *``.  ``OPTIONS`` on a route is a CORS
  preflight: 200 with ``Allow``, ``Access-Control-Allow-Methods`` (the route's methods and
  ``OPTIONS``) and ``Access-Control-Allow-Headers: Content-Type, Accept`` (indexstar's; it
  answers 202, storetheindex 200); any other method not listed answers 405 with ``Allow``.
  A path that is no route answers 404 ``Not Found``; a path argument containing ``/`` is no route.
- The order of checks is Go's: method, then ``Accept`` (406), then the input (400).
- ``GET /multihash/{mh}`` and ``GET /cid/{cid}`` answer a ``FindResponse`` in JSON, or with
  ``Accept: application/x-ndjson`` one ``ProviderResult`` per line, streamed (chunked), with
  ``X-Content-Type-Options: nosniff``.  ``POST /multihash`` takes ``{"Multihashes": [...]}`` and
  answers JSON only; a batch is one ``lookup_many`` (on one node big batches are looked up in a
  worker thread).  No result at all: 404 ``no results for query``.
- ``GET /providers`` is a JSON array of ``ProviderInfo`` (``[]`` when empty), encoded in a worker
  thread; ``GET /providers/{id}`` is one, or 404 ``provider not found``.
- ``GET /health`` is ``ready <version>`` as text with ``Cache-Control: no-cache``; ``GET /stats``
  is ``{"EntriesEstimate", "EntriesCount"}`` (-1: unknown, as on a cluster); ``GET /openapi.json``
  is the OpenAPI document.
- Every read goes through an ``IndexReader`` (``reader.py``): ``find_handler``/``serve_find``
  take a single node's ``IndexStore`` (wrapped in a ``StoreReader``) or any reader, e.g. a
  ``BackendReader`` over a cluster's ``IndexBackend``.
- JSON is compact, ``application/json; charset=utf-8``, gzip-able; errors are one text line.
- Path arguments longer than 2,048 characters are refused with a 400 before any decoding, so no
  input costs more than a few microseconds to reject.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import trio

from indexer import __version__
from indexer.find.expand import Finder
from indexer.find.info import StatsCache, provider_info
from indexer.find.model import FindResponse, MultihashResult, ProviderResult, encode, encode_line
from indexer.find.openapi import openapi_json
from indexer.find.reader import IndexReader, as_reader
from indexer.find.request import (
    JSON,
    NDJSON,
    BadInput,
    batch_multihashes,
    negotiate,
    parse_cid,
    parse_multihash_text,
    parse_peer,
)
from store import IndexStore, ProviderRecord
from sync.net.httpserver import Handler, Request, Response, serve_tcp

__all__ = ["ROUTES", "find_handler", "serve_find"]

ROUTES: dict[str, tuple[str, ...]] = {
    "/multihash/{multihash}": ("GET",),
    "/multihash": ("POST",),
    "/cid/{cid}": ("GET",),
    "/providers": ("GET",),
    "/providers/{peerid}": ("GET",),
    "/health": ("GET",),
    "/stats": ("GET",),
    "/openapi.json": ("GET",),
}
_PREFIXES = {
    "/multihash/": "/multihash/{multihash}",
    "/cid/": "/cid/{cid}",
    "/providers/": "/providers/{peerid}",
}
_ALIASES = {"/cid": "/cid/{cid}"}  # Go's mux treats "/cid" as the "/cid/" subtree
_FIND_MEDIA = (NDJSON, JSON, "*/*")
_JSON_MEDIA = (JSON, "*/*")
_JSON_TYPE = "application/json; charset=utf-8"
_MAX_ARG = 2048
_CORS = ("access-control-allow-origin", "*")
_ALLOW_HEADERS = "Content-Type, Accept"

Route = Callable[[Request, str], Awaitable[Response]]


def _match(path: str) -> tuple[str, str] | None:
    if path in ROUTES:
        return path, ""
    if path in _ALIASES:
        return _ALIASES[path], ""
    for prefix, template in _PREFIXES.items():
        if path.startswith(prefix):
            arg = path[len(prefix) :]
            return None if "/" in arg else (template, arg)
    return None


def _json(body: bytes) -> Response:
    return Response(200, body, _JSON_TYPE, compressible=True)


def _no_results() -> Response:
    return Response.text(404, "no results for query")


async def _lines(results: Sequence[ProviderResult]) -> AsyncIterator[bytes]:
    for result in results:
        yield encode_line(result)


@dataclasses.dataclass
class _FindApi:
    reader: IndexReader
    version: str
    stats: StatsCache

    def __post_init__(self) -> None:
        self._finder = Finder(self.reader)

    async def find_one(self, request: Request, mh: bytes | BadInput) -> Response:
        media = negotiate(request, _FIND_MEDIA)
        if isinstance(media, Response):
            return media
        if isinstance(mh, BadInput):
            return mh.response()
        results = await self._finder.results(mh)
        if not results:
            return _no_results()
        if media == NDJSON:
            nosniff = (("x-content-type-options", "nosniff"),)
            return Response(200, _lines(results), NDJSON, headers=nosniff)
        return _json(encode(FindResponse([MultihashResult(mh, results)])))

    async def multihash(self, request: Request, arg: str) -> Response:
        too_long = len(arg) > _MAX_ARG
        return await self.find_one(request, parse_multihash_text("" if too_long else arg))

    async def cid(self, request: Request, arg: str) -> Response:
        too_long = BadInput("find: CID too long")
        return await self.find_one(request, too_long if len(arg) > _MAX_ARG else parse_cid(arg))

    async def batch(self, request: Request, arg: str) -> Response:
        media = negotiate(request, _JSON_MEDIA)
        if isinstance(media, Response):
            return media
        mhs = batch_multihashes(request.body)
        if isinstance(mhs, BadInput):
            return mhs.response()
        found = await self._finder.find(mhs)
        return _json(encode(FindResponse(found))) if found else _no_results()

    async def providers(self, request: Request, arg: str) -> Response:
        media = negotiate(request, _JSON_MEDIA)
        if isinstance(media, Response):
            return media

        listed = await self.reader.providers()
        lags = await self.reader.lags()

        def listing(records: Sequence[tuple[bytes, ProviderRecord]]) -> bytes:
            return encode([provider_info(p, record, lags.get(p, 0)) for p, record in records])

        return _json(await trio.to_thread.run_sync(listing, listed))

    async def provider(self, request: Request, arg: str) -> Response:
        media = negotiate(request, _JSON_MEDIA)
        if isinstance(media, Response):
            return media
        peer = parse_peer(arg) if len(arg) <= _MAX_ARG else BadInput("cannot decode provider id")
        if isinstance(peer, BadInput):
            return peer.response()
        record = await self.reader.provider(peer.raw)
        if record is None:
            return Response.text(404, "provider not found")
        lag = (await self.reader.lags(peer.raw)).get(peer.raw, 0)
        return _json(encode(provider_info(peer.raw, record, lag)))

    async def health(self, request: Request, arg: str) -> Response:
        message = f"ready {self.version}" if self.version else "ready"
        return Response.text(200, message, headers=(("cache-control", "no-cache"),))

    async def get_stats(self, request: Request, arg: str) -> Response:
        media = negotiate(request, _JSON_MEDIA)
        if isinstance(media, Response):
            return media
        return _json(encode(await self.stats.get()))

    async def openapi(self, request: Request, arg: str) -> Response:
        return _json(openapi_json())

    def routes(self) -> dict[str, Route]:
        return {
            "/multihash/{multihash}": self.multihash,
            "/multihash": self.batch,
            "/cid/{cid}": self.cid,
            "/providers": self.providers,
            "/providers/{peerid}": self.provider,
            "/health": self.health,
            "/stats": self.get_stats,
            "/openapi.json": self.openapi,
        }


def _with_cors(response: Response) -> Response:
    return dataclasses.replace(response, headers=(*response.headers, _CORS))


def find_handler(
    index: IndexStore | IndexReader, version: str = __version__, *, stats_ttl: float = 60.0
) -> Handler:
    """The find API over ``index`` (an ``IndexStore`` or any ``IndexReader``); ``version`` is
    what ``/health`` reports."""
    reader = as_reader(index)
    routes = _FindApi(reader, version, StatsCache(reader, stats_ttl)).routes()

    async def handle(request: Request) -> Response:
        matched = _match(request.path)
        if matched is None:
            return _with_cors(Response.text(404, "Not Found"))
        template, arg = matched
        methods = ROUTES[template]
        if request.method not in methods:
            allow = (("allow", ", ".join(methods)),)
            if request.method == "OPTIONS":  # a CORS preflight, answered as indexstar does
                preflight = (
                    ("access-control-allow-methods", ", ".join((*methods, "OPTIONS"))),
                    ("access-control-allow-headers", _ALLOW_HEADERS),
                )
                return _with_cors(Response.text(200, "", headers=(*allow, *preflight)))
            return _with_cors(Response.text(405, "method not allowed", headers=allow))
        return _with_cors(await routes[template](request, arg))

    return handle


async def serve_find(
    index: IndexStore | IndexReader,
    host: str = "127.0.0.1",
    port: int = 3000,
    *,
    version: str = __version__,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the find API on ``host:port`` (0 picks a free port) until cancelled."""
    await serve_tcp(find_handler(index, version), host, port, task_status=task_status)
