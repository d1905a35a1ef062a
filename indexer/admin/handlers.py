"""The admin API (default 127.0.0.1:3002): storetheindex's admin paths, plus staging views.

Routes (storetheindex's where they exist, so its tools and scripts work):

- ``POST /ingest/sync/{peer}?depth=N&resync=B`` with an optional JSON-string multiaddr body:
  202 and the sync runs in the background; 409 while a sync of that peer runs; 400 for a bad
  peer ID, depth, flag or address, or when no address of the publisher is known; 403 when the
  policy denies the publisher.  ``GET /ingest/sync/``: the peers syncing, sorted.
- ``PUT /ingest/allow/{peer}``, ``PUT /ingest/block/{peer}``: 200 (until restart).
- ``GET /status`` (``{"ID", "Frozen", "Usage"}``, plus ``"FrozenAt"`` (RFC 3339) when frozen),
  ``GET /healthcheck`` (``"OK"``).
- ``PUT /freeze``: freeze the indexer (``Ingester.freeze``: durable; no content ingested, find
  served, announces recorded); ours: ``DELETE /freeze`` unfreezes.  With ``freeze_at_percent``
  above 0, ``check_usage`` freezes it once ``usage()`` (the data directory's disk, in percent;
  injectable) reaches it: run every ``USAGE_EVERY`` seconds by ``watch_usage`` and at each
  ``GET /status``.  While frozen ``POST /ingest/sync`` is 409.
- ``DELETE /removeprovider/{peer}?block=B``, ``PUT /markadprocessed/{peer}?cid=C``,
  ``POST /importproviders`` (``{"indexer": <base64 or plain URL>}``): ``indexer.admin.controls``;
  each answers a JSON summary (storetheindex answers an empty 200; its client reads only the
  status).  404 for an unknown provider, 409 for an ad not staged or a provider being worked,
  502 when the other indexer cannot be read.
- ``GET /telemetry/providers`` (``{peer: {"Count", "Elapsed", "Samples"}}``, 204 when there is
  none) and ``GET /telemetry/providers/{peer}`` (one rate; 404 for a provider with none): the
  ingest rates since last read (``Metrics.rates``).
- ``POST /config/log/level?<regex>=<level>...`` and ``GET /config/log/subsystems`` (text, one
  logger name a line): logger levels at run time (``indexer.logs``).
- Ours: ``GET /staging``, ``GET /staging/{provider}``, ``GET /publishers``,
  ``GET /publishers/{peer}`` (``indexer.admin.views``), ``GET /metrics`` (Prometheus).

Rules: bad input is a 4xx with a one-line message, never a 500; a wrong method is 405 with
``Allow``; every JSON body is UTF-8 ``application/json``.

Authentication: with a ``token`` (the daemon's ``$INDEXER_ADMIN_TOKEN`` or ``admin_token_file``)
every request needs ``Authorization: Bearer <token>`` (the scheme case-insensitive, the token
compared in constant time with ``hmac.compare_digest``), checked before routing, so an unknown
path or a wrong method also gets 401 and nothing about the routes leaks.  A refusal is 401 with
``WWW-Authenticate: Bearer realm="ipni-indexer admin"`` (plus ``error="invalid_token"`` when a
token was sent) and is logged, at most once per ``_LOG_EVERY`` seconds with the count since.
``GET /healthcheck`` stays open (it says only "the database answers"; storetheindex's k8s
probes call it unauthenticated); ``/metrics`` is not open: Prometheus sends the token with
``authorization: {credentials: ...}`` in its scrape config.  Without a token (the default, only
allowed on loopback) every path is open, as in storetheindex.

With ``refuse_private`` (``ingest.refuse_private_addrs``), ``POST /ingest/sync/{peer}`` answers
403 when every address it would sync from (sent or known) is refused (``sync.ipnisync.maurl``).
"""

from __future__ import annotations

import datetime
import hmac
import inspect
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import structlog
import trio

from indexer.admin import controls
from indexer.admin.metrics import CONTENT_TYPE, Metrics
from indexer.admin.views import UnknownPeer, publisher_rows, staging_detail, staging_rows
from indexer.errors import BadRequest as _BadRequest  # control flow of this module (see errors.py)
from indexer.errors import ConfigError
from indexer.ingest.engine import Ingester
from indexer.logs import LEVELS, LOG_LEVELS
from indexer.policy import LivePolicy
from staging import StagingArea
from sync import BadCid, BadPeerId, Link, PeerId, SyncError
from sync.errors import AddressRefused
from sync.ipnisync.maurl import publisher_endpoint
from sync.net.httpserver import Handler, Request, Response

__all__ = ["AdminApi"]

log = structlog.get_logger("admin")

_LEAVES = {
    "/status",
    "/healthcheck",
    "/metrics",
    "/cluster",
    "/reloadconfig",
    "/importproviders",
    "/config/log/level",
    "/config/log/subsystems",
    "/freeze",
}  # no sub-paths under these
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_OPEN = "/healthcheck"  # the one path served without the token
_REALM = 'Bearer realm="ipni-indexer admin"'
_LOG_EVERY = 10.0  # seconds between two log lines about refused requests
USAGE_EVERY = 60.0  # seconds between two looks at the disk usage (freeze_at_percent)


_Answer = Response | Awaitable[Response]


def _json(value: object, status: int = 200) -> Response:
    return Response(status, msgspec.json.encode(value), "application/json; charset=utf-8")


def _rfc3339(at: float) -> str:
    return datetime.datetime.fromtimestamp(int(at), datetime.UTC).isoformat().replace("+00:00", "Z")


def _peer(text: str) -> PeerId:
    try:
        return PeerId.parse(text)
    except BadPeerId:
        raise _BadRequest(400, f"Cannot decode peer id {text!r}") from None


def _query(request: Request, name: str) -> str:
    values = request.query.get(name) or [""]
    return values[-1]


def _methods(request: Request, *allowed: str) -> None:
    if request.method not in allowed:
        raise _BadRequest(405, "method not allowed")


@dataclass
class AdminApi:
    ingester: Ingester  # live state, and where sync requests go
    staging: StagingArea  # the durable state the views show (the ingester writes it)
    policy: LivePolicy
    metrics: Metrics
    peer_id: PeerId
    data_dir: Path
    token: str = ""
    refuse_private: bool = False
    clock: Callable[[], float] = time.monotonic
    cluster_view: Callable[[], object | None] | None = None  # a cluster node's (msgspec Struct)
    reload: Callable[[], object] | None = None  # reads the config file again (``indexer.reload``)
    freeze_at_percent: float = 0.0  # <= 0: never frozen by the disk filling
    usage: Callable[[], float] | None = None  # percent of the data disk used (None: measured)
    wall_clock: Callable[[], float] = time.time
    _refused: int = field(default=0, init=False)
    _logged_at: float | None = field(default=None, init=False)

    def authorized(self, request: Request) -> bool:
        """Does ``request`` carry the token (or is none needed)?"""
        if not self.token or request.path.rstrip("/") == _OPEN:
            return True
        scheme, _, credentials = request.header("authorization").strip().partition(" ")
        given = credentials.strip().encode("latin-1")  # headers are decoded as latin-1
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self.token.encode())

    def _unauthorized(self, request: Request) -> Response:
        self._refused += 1
        now = self.clock()
        if self._logged_at is None or now - self._logged_at >= _LOG_EVERY:
            log.warning(
                "admin request refused: missing or wrong token", method=request.method,
                path=request.path[:200], refused_since_last_log=self._refused,
            )  # fmt: skip
            self._refused, self._logged_at = 0, now
        sent = bool(request.header("authorization"))
        challenge = f'{_REALM}, error="invalid_token"' if sent else _REALM
        message = "wrong admin token" if sent else "admin token required"
        return Response.text(
            401,
            f"{message}: send Authorization: Bearer <token> (INDEXER_ADMIN_TOKEN)",
            headers=(("www-authenticate", challenge),),
        )

    def handler(self) -> Handler:
        routes: list[tuple[str, tuple[str, ...], Callable[[Request, str], _Answer]]] = [
            ("/ingest/sync", ("GET", "POST"), self._sync),
            ("/ingest/allow/", ("PUT",), self._allow),
            ("/ingest/block/", ("PUT",), self._block),
            ("/staging", ("GET",), self._staging),
            ("/publishers", ("GET",), self._publishers),
            ("/status", ("GET",), self._status),
            ("/freeze", ("PUT", "DELETE"), self._freeze),
            ("/cluster", ("GET",), self._cluster),
            ("/reloadconfig", ("POST",), self._reload),
            ("/healthcheck", ("GET",), self._healthcheck),
            ("/metrics", ("GET",), self._metrics),
            ("/removeprovider/", ("DELETE",), self._remove_provider),
            ("/markadprocessed/", ("PUT",), self._mark_processed),
            ("/importproviders", ("POST",), self._import_providers),
            ("/telemetry/providers", ("GET",), self._telemetry),
            ("/config/log/level", ("POST",), self._log_level),
            ("/config/log/subsystems", ("GET",), self._log_subsystems),
        ]

        async def handle(request: Request) -> Response:
            if not self.authorized(request):
                return self._unauthorized(request)
            for prefix, methods, route in routes:
                rest = request.path.removeprefix(prefix)
                if rest == request.path or (rest and not prefix.endswith("/") and rest[0] != "/"):
                    continue
                if prefix in _LEAVES and rest.strip("/"):
                    break  # /status/x and the like: not found
                try:
                    _methods(request, *methods)
                    answer = route(request, rest.strip("/"))
                    return await answer if inspect.isawaitable(answer) else answer
                except _BadRequest as exc:
                    allow = (("allow", ", ".join(methods)),) if exc.status == 405 else ()
                    return Response.text(exc.status, str(exc), headers=allow)
            return Response.text(404, "not found")

        return handle

    # --- storetheindex's paths ----------------------------------------------------------

    def _sync(self, request: Request, rest: str) -> Response:
        if request.method == "GET":
            if rest:
                raise _BadRequest(405, "method not allowed")
            return _json([str(PeerId(raw)) for raw in self.ingester.syncing])
        if not rest:
            raise _BadRequest(400, "missing peer id: POST /ingest/sync/{peer}")
        publisher = _peer(rest)
        depth_text, resync_text = _query(request, "depth"), _query(request, "resync")
        if depth_text and not (depth_text.isdigit() or depth_text == "-1"):  # -1: no limit
            raise _BadRequest(
                400, f"depth must be -1 or a non-negative integer, not {depth_text!r}"
            )
        if resync_text and resync_text not in _TRUE | _FALSE:
            raise _BadRequest(400, f"resync must be true or false, not {resync_text!r}")
        addrs = self._addrs(publisher, request.body)
        if not self.policy.publisher_allowed(publisher):
            raise _BadRequest(403, f"publisher {publisher} is not allowed")
        if self.ingester.frozen_at is not None:
            raise _BadRequest(409, "the indexer is frozen: it ingests nothing (DELETE /freeze)")
        if self.ingester.is_syncing(publisher.raw):
            raise _BadRequest(409, f"Peer {publisher} has already a sync in progress")
        if not self.ingester.syncs_here(publisher.raw):
            raise _BadRequest(
                409, f"publisher {publisher} is synced by another cluster node (indexer admin "
                "cluster names it): ask that node",
            )  # fmt: skip
        self.ingester.request_sync(
            publisher, addrs, depth=int(depth_text or 0) or None, resync=resync_text in _TRUE
        )
        return Response(202)

    def _addrs(self, publisher: PeerId, body: bytes) -> list[str]:
        addrs = self._given_or_known_addrs(publisher, body)
        if self.refuse_private:
            try:
                publisher_endpoint(addrs, publisher, refuse_private=True)
            except AddressRefused as exc:
                raise _BadRequest(403, str(exc)) from None
            except SyncError:
                pass  # a known address gone bad: the sync reports it, as without the option
        return addrs

    def _given_or_known_addrs(self, publisher: PeerId, body: bytes) -> list[str]:
        if body.strip():
            try:
                addr = msgspec.json.decode(body, type=str)
                publisher_endpoint([addr], publisher)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise _BadRequest(400, f"body must be a JSON string multiaddr: {exc}") from None
            except SyncError as exc:
                raise _BadRequest(400, f"bad multiaddr: {exc}") from None
            return [addr.rsplit("/p2p/", 1)[0]] if "/p2p/" in addr else [addr]
        for raw, addrs in self.staging.known_publishers():
            if raw == publisher.raw and addrs:
                return addrs
        raise _BadRequest(400, f"no address known for publisher {publisher}: send one")

    def _allow(self, request: Request, rest: str) -> Response:
        peer = _peer(rest)
        self.policy.allow(peer)
        log.info("peer allowed until restart; list it in [policy] to keep it", peer=str(peer))
        return Response(200)

    def _block(self, request: Request, rest: str) -> Response:
        peer = _peer(rest)
        self.policy.block(peer)
        log.info("peer blocked until restart; list it in [policy] to keep it", peer=str(peer))
        return Response(200)

    def disk_usage(self) -> float:
        """Percent of the data directory's disk in use (-1: unknown)."""
        if self.usage is not None:
            return self.usage()
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError:
            return -1.0
        return 100.0 * usage.used / usage.total

    def check_usage(self) -> float:
        """The usage now; freezes the indexer when it reached ``freeze_at_percent``."""
        percent = self.disk_usage()
        at = self.freeze_at_percent
        if at > 0 and percent >= at and self.ingester.frozen_at is None:
            log.warning("data disk nearly full: freezing", usage=percent, freeze_at_percent=at)
            self.ingester.freeze(self.wall_clock())
        return percent

    async def watch_usage(
        self,
        every: float = USAGE_EVERY,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        while self.freeze_at_percent > 0:
            self.check_usage()
            await trio.sleep(every)

    def _status(self, request: Request, rest: str) -> Response:
        percent = self.check_usage()
        frozen_at = self.ingester.frozen_at
        doc: dict[str, object] = {
            "Frozen": frozen_at is not None, "ID": str(self.peer_id), "Usage": percent,
        }  # fmt: skip
        if frozen_at is not None:
            doc["FrozenAt"] = _rfc3339(frozen_at)
        return _json(doc)

    def _freeze(self, request: Request, rest: str) -> Response:
        self._local_only()
        if request.method == "PUT":
            self.ingester.freeze(self.wall_clock())
        else:
            self.ingester.unfreeze()
        frozen_at = self.ingester.frozen_at
        at = None if frozen_at is None else _rfc3339(frozen_at)
        return _json({"Frozen": frozen_at is not None, "FrozenAt": at})

    def _healthcheck(self, request: Request, rest: str) -> Response:
        self.staging.commit_seq()  # a read: the database is open and answers
        return Response(200, b'"OK"', "application/json; charset=utf-8")

    def _metrics(self, request: Request, rest: str) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    # --- ours ---------------------------------------------------------------------------

    def _reload(self, request: Request, rest: str) -> Response:
        if self.reload is None:
            raise _BadRequest(404, "this daemon cannot reload its configuration")
        try:
            return Response(200, msgspec.json.encode(self.reload()), "application/json")
        except ConfigError as exc:
            raise _BadRequest(400, f"not reloaded, the old configuration stays: {exc}") from None

    def _cluster(self, request: Request, rest: str) -> Response:
        if self.cluster_view is None:
            raise _BadRequest(404, "this daemon is a single node (no [cluster] store)")
        view = self.cluster_view()
        if view is None:
            raise _BadRequest(503, "the cluster view is not read yet; try again in a second")
        return Response(200, msgspec.json.encode(view), "application/json")

    def _staging(self, request: Request, rest: str) -> Response:
        if not rest:
            return _json(staging_rows(self.staging, self.ingester.working))
        try:
            return _json(staging_detail(self.staging, self.ingester.index, _peer(rest)))
        except UnknownPeer as exc:
            raise _BadRequest(404, str(exc)) from None

    def _publishers(self, request: Request, rest: str) -> Response:
        ingester = self.ingester
        only = _peer(rest) if rest else None
        try:
            rows = publisher_rows(self.staging, ingester.syncing, ingester.progress, only)
        except UnknownPeer as exc:
            raise _BadRequest(404, str(exc)) from None
        return _json(rows[0] if only else rows)

    # --- storetheindex's controls (``indexer.admin.controls``) ----------------------------

    def _local_only(self) -> None:
        if self.cluster_view is not None:
            raise _BadRequest(501, "not on a cluster node: the cluster's index is shared")

    async def _remove_provider(self, request: Request, rest: str) -> Response:
        if not rest:
            raise _BadRequest(400, "missing provider id: DELETE /removeprovider/{peer}")
        provider = _peer(rest)
        block_text = _query(request, "block")
        if block_text and block_text not in _TRUE | _FALSE:
            raise _BadRequest(400, f"bad value for block: {block_text}")
        self._local_only()
        removed = await controls.remove_provider(
            self.ingester, self.staging, self.policy, provider, block=block_text in _TRUE
        )
        return _json(removed)

    def _mark_processed(self, request: Request, rest: str) -> Response:
        if not rest:
            raise _BadRequest(400, "missing provider id: PUT /markadprocessed/{peer}?cid=...")
        provider = _peer(rest)
        cid_text = _query(request, "cid")
        try:
            ad = Link.parse(cid_text)
        except BadCid as exc:
            raise _BadRequest(400, f"bad cid {cid_text!r}: {exc}") from None
        self._local_only()
        return _json(controls.mark_processed(self.ingester, self.staging, provider, ad))

    async def _import_providers(self, request: Request, rest: str) -> Response:
        self._local_only()
        return _json(await controls.import_providers(self.ingester, self.policy, request.body))

    def _telemetry(self, request: Request, rest: str) -> Response:
        rates = self.metrics.rates
        if not rest:
            every = rates.all()
            if not every:
                return Response(204)
            return _json({str(PeerId(raw)): rate for raw, rate in every.items()})
        provider = _peer(rest)
        rate = rates.get(provider.raw)
        if rate is None:
            raise _BadRequest(404, f"no ingest rate for provider {provider}")
        return _json(rate)

    def _log_level(self, request: Request, rest: str) -> Response:
        if not request.query:
            raise _BadRequest(
                400, "at least one <subsystem>=<level> query parameter must be specified"
            )
        wanted: list[tuple[str, str]] = []
        for pattern, values in request.query.items():
            level = values[-1].lower() if values else ""
            if not level:
                raise _BadRequest(400, f"level is not specified for subsystem: {pattern}")
            if level not in LEVELS:
                raise _BadRequest(400, f"unknown level {level!r}: one of {', '.join(LEVELS)}")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _BadRequest(400, f"bad subsystem pattern {pattern!r}: {exc}") from None
            wanted.append((pattern, level))
        out = []
        for pattern, level in wanted:  # all checked first: a bad one changes nothing
            matched = LOG_LEVELS.set(pattern, LEVELS[level])
            log.info("log level changed", subsystem=pattern, level=level, matched=matched)
            out.append({"Subsystem": pattern, "Level": level, "Matched": matched})
        return _json(out)

    def _log_subsystems(self, request: Request, rest: str) -> Response:
        names = sorted(LOG_LEVELS.names)
        return Response.text(200, "\n".join(names)) if names else Response(204)
