"""``GET /routing/v1/providers/{cid}``: the IPFS Delegated Routing V1 HTTP API over the index.

Rules this module keeps (ipfs/specs ``src/routing/http-routing-v1.md``; ipni/indexstar
``delegated_translator.go``, which serves it on cid.contact; ipfs/boxo ``routing/http/server``):

- Paths: ``/routing/v1/providers/{cid}`` is answered.  The spec's other endpoints (``peers``,
  ``ipns``, ``dht``) get 501; any other path under ``/routing/v1/`` gets 400 (the spec's unknown
  path); a path outside ``/routing/v1/`` gets 404, so the handler mounts beside others by prefix.
- Methods: GET and HEAD; OPTIONS answers a CORS preflight with 200; any other method gets 405
  with ``Allow``.  Every answer carries ``Access-Control-Allow-Origin: *``.
- The CID may be any CID string (v0, or v1 in a multibase); the lookup is by its multihash.  A
  missing or malformed CID is a 400 that says why; bad filters are a 400 too (``filters``).
- ``Accept`` naming ``application/x-ndjson`` (q > 0) gets NDJSON, one record per line, streamed;
  anything else gets ``application/json`` ``{"Providers": [...]}`` with at most ``max_json``
  records (100: the spec's SHOULD and indexstar's default; legacy records count).
  ``streaming=False`` always answers JSON, which the spec allows a server to do.
- No record after filtering: ``empty_status``, 404 by default as cid.contact does (clients must
  read a 404 as zero results); 200 is IPIP-0513's answer.  The body is still an empty answer of
  the negotiated type (``{"Providers":[]}``, or no NDJSON line).
- Headers: ``Vary: Accept``; ``Last-Modified``: now; ``Cache-Control: public, max-age=300`` with
  records, ``max-age=15`` without (the spec's examples), ``stale-while-revalidate`` and
  ``stale-if-error`` of an hour (an index answer changes with each ingested ad, unlike the DHT's
  48 h provider records); ``X-Content-Type-Options: nosniff``.
- Compatibility (a documented choice, not the spec's): clients older than IPIP-417 (boxo < 0.13,
  kubo <= 0.22) keep only ``Schema: "bitswap"`` records and drop ``peer`` ones.  For a request
  ``legacy`` picks (by default ``pre_ipip417_client``: such a client's ``User-Agent``, and no
  IPIP-484 filter), each ``peer`` record with bitswap is followed by the same peer as a
  ``bitswap`` record (``records.PeerRecord.legacy_json``).  Newer clients read both schemas, so
  they are not sent it: they would see each bitswap peer twice.
- ``routing_handler`` takes a single node's ``IndexStore`` or any ``IndexReader``
  (``indexer.find.reader``; e.g. a ``BackendReader`` over a cluster), as ``find_handler`` does.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from email.utils import formatdate
from typing import Any

import msgspec

from indexer.find.reader import as_reader
from indexer.routing.filters import BadFilter, Filters
from indexer.routing.records import Index, PeerRecord, find_records
from sync import BadCid, Link
from sync.net.httpserver import Handler, Request, Response

__all__ = [
    "FILTER_PARAMS",
    "JSON",
    "NDJSON",
    "PREFIX",
    "ROUTES",
    "pre_ipip417_client",
    "routing_handler",
    "wants_ndjson",
]

PREFIX = "/routing/v1/"
# The route answered, as the OpenAPI document (``indexer/find/openapi.py``) describes it.
ROUTES: dict[str, tuple[str, ...]] = {PREFIX + "providers/{cid}": ("GET",)}
JSON = "application/json"
NDJSON = "application/x-ndjson"
UNSUPPORTED = frozenset({"peers", "ipns", "dht"})
METHODS = "GET, HEAD, OPTIONS"
MAX_AGE_FOUND = 300
MAX_AGE_EMPTY = 15
MAX_STALE = 3600

CORS = (("access-control-allow-origin", "*"), ("access-control-allow-methods", METHODS))
_encode = msgspec.json.Encoder().encode


def wants_ndjson(accept: str) -> bool:
    """Whether an ``Accept`` header asks for NDJSON (listed with a q-value above zero)."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() != NDJSON:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def _error(status: int, message: str, *extra: tuple[str, str]) -> Response:
    return Response.text(status, message, headers=(*CORS, *extra))


def _headers(found: bool) -> tuple[tuple[str, str], ...]:
    age = MAX_AGE_FOUND if found else MAX_AGE_EMPTY
    cache = f"public, max-age={age}, stale-while-revalidate={MAX_STALE}, stale-if-error={MAX_STALE}"
    return (
        ("vary", "Accept"),
        ("cache-control", cache),
        ("last-modified", formatdate(usegmt=True)),
        ("x-content-type-options", "nosniff"),
        *CORS,
    )


_OLD_KUBO = re.compile(r"(?:kubo|go-ipfs)/0\.(\d+)\.")
_OLD_BOXO = re.compile(r"github\.com/ipfs/boxo/routing/http/client@v0\.(\d+)\.")
FILTER_PARAMS = ("filter-addrs", "filter-protocols")


def pre_ipip417_client(request: Request) -> bool:
    """Whether the request comes from a client that reads only ``bitswap`` schema records:
    kubo <= 0.22 (``kubo/0.22.0/...``; go-ipfs) or boxo's client < 0.13 (its default
    ``User-Agent``, ``github.com/ipfs/boxo/routing/http/client@v0.12.0``).  A request with
    IPIP-484 filters comes from a newer client."""
    if any(name in request.query for name in FILTER_PARAMS):
        return False
    agent = request.header("user-agent")
    kubo = _OLD_KUBO.match(agent)
    if kubo is not None:
        return int(kubo.group(1)) <= 22
    boxo = _OLD_BOXO.search(agent)
    return boxo is not None and int(boxo.group(1)) < 13


def _answer(records: Sequence[PeerRecord], legacy: bool) -> list[dict[str, Any]]:
    """Each record, followed (for old clients) by its legacy ``bitswap`` record if it has one."""
    out = []
    for record in records:
        out.append(record.to_json())
        if legacy and (old := record.legacy_json()) is not None:
            out.append(old)
    return out


async def _lines(records: Sequence[dict[str, Any]]) -> AsyncIterator[bytes]:
    for record in records:
        yield _encode(record) + b"\n"


def routing_handler(
    index: Index,
    *,
    streaming: bool = True,
    empty_status: int = 404,
    max_json: int = 100,
    legacy: Callable[[Request], bool] = pre_ipip417_client,
) -> Handler:
    """A handler answering ``/routing/v1/...`` from ``index`` (404 for any other path);
    ``legacy`` says which requests also get the pre-IPIP-417 ``bitswap`` records."""
    reader = as_reader(index)

    async def handle(request: Request) -> Response:
        path = request.path
        if not path.startswith(PREFIX):
            return Response.text(404, "not found")
        kind, _, arg = path[len(PREFIX) :].partition("/")
        if kind != "providers":
            if kind in UNSUPPORTED:
                return _error(501, f"{PREFIX}{kind} is not implemented: only providers is served")
            return _error(
                400, f"unknown path {path}: this server answers {PREFIX}providers/{{cid}}"
            )
        if request.method == "OPTIONS":
            return Response(200, headers=(*CORS, ("allow", METHODS)))
        if request.method not in ("GET", "HEAD"):
            return _error(405, "method not allowed", ("allow", METHODS))
        if not arg or "/" in arg:
            return _error(400, f"expected {PREFIX}providers/{{cid}}, got {path}")
        try:
            multihash = Link.parse(arg).multihash.raw
        except (BadCid, ValueError, IndexError) as exc:
            return _error(400, f"bad CID: {exc}")
        try:
            filters = Filters.parse(request.query)
        except BadFilter as exc:
            return _error(400, str(exc))
        records = [
            r for r in map(filters.apply, await find_records(reader, multihash)) if r is not None
        ]
        status = 200 if records else empty_status
        headers = _headers(bool(records))
        answer = _answer(records, legacy(request))
        if streaming and wants_ndjson(request.header("accept")):
            body = _lines(answer) if answer else b""
            return Response(status, body, NDJSON, headers)
        payload = _encode({"Providers": answer[:max_json]})
        return Response(status, payload, JSON, headers, compressible=True)

    return handle
