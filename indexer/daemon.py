"""``indexer daemon``: every service of an indexer node in ONE trio nursery.

Services start in order with ``await nursery.start(...)``, each listening before the next
starts: the ingester (which first resumes staged work and replays recorded announces), the
ingest server (``PUT /announce``, ``GET /sync/status``), the find server, background index
compaction (``indexer.ingest.maintenance``), the admin server (``indexer.admin``: storetheindex's
admin paths, staging views, ``/metrics``) and, unless disabled, a py-libp2p host subscribed to the
announce topic on gossipsub, which dials the ``[p2p]`` bootstrap peers and keeps the peering
peers connected once subscribed (``sync.announce.peering``).
Cancelling the nursery stops them in reverse order; LevelDB is
closed last, by the ``with`` that opened it.

Rules: the daemon owns the data directory's database (a second daemon gets a clear
``StoreLocked``); announces from HTTP and gossipsub go through the same ``AnnounceIntake``.
The ingester writes the staging area; what shows it (the admin API, ``/sync/status``, the
metrics) is handed a ``StagingArea`` over the same ``KV`` and reads it there.
Before it opens or binds anything it runs ``security.warn_exposed``: an admin API beyond
loopback without a token is a ``ConfigError``, and every server listening beyond loopback is
logged as a warning naming what it exposes.  ``admin_token`` (``""``: none) guards every admin
path but ``/healthcheck``; ``ingest.refuse_private_addrs`` goes to the fetcher and the admin API.
At start it raises its soft open-files limit to the hard one and fits the three servers'
connection caps (``[http]`` settings) inside it, less what LevelDB may hold, so a flood on one
server cannot take the descriptors the others (or LevelDB) need; the ingest server's
``/health`` and ``/sync/status`` answer 405 to anything but GET and HEAD (``OPTIONS`` on
``/sync/status``: 200 with ``Allow``, as storetheindex).  ``/sync/status`` keeps storetheindex's
shape (``sync_status``); the richer per-publisher rows are the admin API's ``/publishers``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import trio

from indexer import __version__
from indexer.admin import AdminApi, Metrics, UnknownPeer, controls, publisher_rows
from indexer.config import DB_DIR, Config, ConfigError, etcd_endpoints, load_config, store_nodes
from indexer.find.info import rfc3339
from indexer.find.request import negotiate
from indexer.ingest.engine import Ingester
from indexer.ingest.intake import ANNOUNCE_PATHS, AnnounceIntake
from indexer.ingest.liveness import Liveness, run_liveness
from indexer.ingest.maintenance import run_compaction
from indexer.ingest.offload import open_offload
from indexer.ingest.register import RegisterIntake
from indexer.policy import AllowedReader, LivePolicy
from indexer.reload import Reloader
from indexer.security import warn_exposed
from staging import StagingArea
from store import KV, IndexStore, ProviderRecord, StoreUnavailable
from sync import BadPeerId, Link, Message, PeerId, PrivateKey
from sync.announce.register import PeerRecord
from sync.errors import BadCid
from sync.ipnisync.fetch import fetcher_factory
from sync.net.httpserver import (
    Handler,
    Limits,
    Request,
    Response,
    fit_connection_caps,
    serve_tcp,
)

if TYPE_CHECKING:
    from indexer.cluster.apply import ClusterApplier
    from indexer.cluster.node import ClusterNode
    from store.cluster import IndexBackend

__all__ = ["ClusterParts", "Daemon", "DaemonInfo"]
STATUS = "/sync/status/"
log = structlog.get_logger("daemon")
_REPUBLISH_QUEUE = 256  # accepted HTTP announces waiting to be re-published on gossipsub


class DaemonInfo(msgspec.Struct, frozen=True):
    peer_id: str
    find_url: str
    ingest_url: str
    admin_url: str
    p2p_addrs: list[str]


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


async def _reload_on_sighup(reloader: Reloader) -> None:
    """SIGHUP reloads the configuration; a bad file is one logged line, the old one stays."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only (a daemon run inside a test's thread)
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            try:
                reloader.reload()
            except ConfigError as exc:
                log.error("configuration not reloaded; the old one stays", error=str(exc))


async def _listen(
    nursery: trio.Nursery, name: str, handler: Handler, addr: str, limits: Limits
) -> Any:
    """Start the ``name`` server on ``addr``; one that cannot bind is an ``OSError`` naming it."""
    serve = functools.partial(serve_tcp, limits=limits, name=name)
    try:
        return await nursery.start(serve, handler, *_split(addr))
    except OSError as exc:
        raise OSError(f"cannot listen on {addr} ({name}): {exc.strerror or exc}") from None


def _url(listeners: Any) -> str:
    host, port = listeners[0].socket.getsockname()[:2]
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class ClusterParts:
    """What a cluster node adds to the daemon (``indexer.cluster``)."""

    node: ClusterNode
    applier: ClusterApplier
    backend: IndexBackend

    def ingester_seams(self) -> dict[str, Any]:
        return {"applier": self.applier, "owns": self.node.owns, "floor": self.node.floor}


@dataclass
class Daemon:
    data_dir: Path
    config: Config
    key: PrivateKey
    admin_token: str = ""
    config_path: Path | None = None  # what a reload reads (None: <data_dir>/config.toml)

    async def run(
        self, *, task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = self.config
        warn_exposed(config, self.admin_token)  # before anything is opened or bound
        policy = LivePolicy(config.policy)
        find_limits, ingest_limits, admin_limits = _http_limits(config)  # raises RLIMIT_NOFILE
        with KV(self.data_dir / DB_DIR, tuning=config.store.tuning()) as kv:  # [store]
            async with (
                open_offload(config.ingest.decode_processes, config.ingest.decode_min_bytes) as (
                    offload
                ),
                self._cluster(kv) as cluster,
                trio.open_nursery() as nursery,
                self._libp2p() as host,
            ):
                ingester = Ingester(
                    kv,
                    fetcher_factory(
                        host=host,
                        max_block=config.ingest.max_block,
                        timeout=config.ingest.fetch_timeout,
                        refuse_private=config.ingest.refuse_private_addrs,
                    ),
                    policy=policy,
                    config=config.ingest,  # the [ingest] section, as decoded
                    offload=offload,  # outlives the ingester's workers (opened first)
                    **cluster.ingester_seams() if cluster else {},
                )
                if cluster:
                    cluster.node.ingester = ingester
                    await nursery.start(cluster.node.run)  # joined: a lease before any work
                staging = StagingArea(kv)  # what the views read; the ingester writes its own
                metrics = Metrics(staging, lambda: ingester.syncing)
                ingester.observer = metrics
                intake = AnnounceIntake(
                    ingester,
                    allow=policy.publisher_allowed,
                    rate=config.ingest.announce_rate,
                    burst=config.ingest.announce_burst,
                    source_rate=config.ingest.source_rate,
                    source_burst=config.ingest.source_burst,
                    refuse_private=config.ingest.refuse_private_addrs,
                    max_publishers=config.ingest.max_pending_publishers,
                    relay=cluster.node.relay if cluster else None,
                    self_id=self.key.peer_id(),
                )
                await nursery.start(ingester.run)
                ingest = await _listen(
                    nursery, "ingest",
                    self._ingest_handler(intake, ingester, staging, self._register(
                        ingester, cluster, policy
                    )),
                    config.server.ingest_addr, ingest_limits,
                )  # fmt: skip
                find = await _listen(
                    nursery, "find", self._find_handler(kv, cluster, policy.provider_allowed),
                    config.server.find_addr,
                    find_limits,
                )  # fmt: skip
                await nursery.start(
                    functools.partial(
                        run_compaction, ingester.index, idle=config.ingest.compact_idle
                    )
                )
                if cluster is None:  # the cluster's registry is not this node's to sweep
                    remove = functools.partial(
                        controls.remove_provider, ingester, staging, policy, block=False
                    )
                    await nursery.start(
                        run_liveness, Liveness(ingester, ingester.index, remove=remove)
                    )
                path = self.config_path or self.data_dir / "config.toml"
                as_read = load_config(path)  # the file without the command line's overrides
                reloader = Reloader(path, policy, intake, ingester, as_read)
                nursery.start_soon(_reload_on_sighup, reloader)
                admin_api = AdminApi(
                    ingester, staging, policy, metrics, self.key.peer_id(), self.data_dir,
                    token=self.admin_token, refuse_private=config.ingest.refuse_private_addrs,
                    cluster_view=(lambda: cluster.node.view) if cluster else None,
                    reload=reloader.reload,
                    freeze_at_percent=0.0 if cluster else config.ingest.freeze_at_percent,
                )  # fmt: skip
                await nursery.start(admin_api.watch_usage)
                admin = await _listen(
                    nursery, "admin", admin_api.handler(), config.server.admin_addr, admin_limits
                )
                p2p_addrs: list[str] = []
                if host is not None:
                    from sync.net.p2p import host_addrs

                    p2p_addrs = host_addrs(host)
                    await nursery.start(self._gossip, host, intake)
                info = DaemonInfo(
                    str(self.key.peer_id()), _url(find), _url(ingest), _url(admin), p2p_addrs
                )
                if cluster:
                    cluster.node.find_url = info.find_url  # for the other nodes' views
                task_status.started(info)
                log.info(
                    "indexer daemon running", find=info.find_url, ingest=info.ingest_url,
                    admin=info.admin_url, p2p=p2p_addrs,
                )  # fmt: skip
                await trio.sleep_forever()

    @contextlib.asynccontextmanager
    async def _cluster(self, kv: KV) -> AsyncIterator[ClusterParts | None]:
        """The cluster's store, etcd and this node's part, when ``[cluster]`` names them."""
        settings = self.config.cluster
        if not settings.store:
            yield None
            return
        from indexer.cluster.apply import ClusterApplier
        from indexer.cluster.etcd import EtcdClient
        from indexer.cluster.node import ClusterNode
        from store.cluster import open_cluster

        name = settings.node or str(self.key.peer_id())
        staging = StagingArea(kv)
        async with (
            EtcdClient(etcd_endpoints(settings.etcd)) as client,
            open_cluster(
                store_nodes(settings.store),
                wait_replicas=settings.wait_replicas,
                record_ttl=settings.record_ttl,
            ) as backend,
        ):
            node = ClusterNode(
                client, backend, staging, name,
                ttl=settings.lease_ttl, interval=settings.interval, root=settings.root,
            )  # fmt: skip
            applier = ClusterApplier(staging, backend, node.ownership, self.config.ingest)
            node.held = lambda: list(applier.held())
            log.info("cluster node", node=name, store=settings.store, etcd=settings.etcd)
            yield ClusterParts(node, applier, backend)

    @contextlib.asynccontextmanager
    async def _libp2p(self) -> AsyncIterator[Any]:
        if not self.config.server.p2p_addr:
            yield None
            return
        from sync.net.p2p import open_host

        async with open_host(self.key, [self.config.server.p2p_addr]) as host:
            yield host

    async def _gossip(
        self,
        host: Any,
        intake: AnnounceIntake,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        from sync.announce.gossip import open_gossip, publish_announce, receive_announces

        topic = self.config.server.topic
        send, queued = trio.open_memory_channel[Message](_REPUBLISH_QUEUE)

        def republish(message: Message) -> None:  # ingest.resend_direct_announce
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                log.warning("announce not re-published: the gossipsub queue is full")

        async def publishing() -> None:
            async for message in queued:
                try:
                    await publish_announce(pubsub, message, topic)
                except Exception as exc:
                    log.warning("announce not re-published", exc_info=exc)

        async with (
            open_gossip(host) as pubsub,
            receive_announces(pubsub, topic) as it,
            trio.open_nursery() as nursery,
        ):
            if self.config.ingest.resend_direct_announce:
                nursery.start_soon(publishing)
                intake.republish = republish
            nursery.start_soon(self._connectivity, host)  # after open_gossip: peers are seen
            task_status.started()
            async for sender, message in it:
                try:  # one message must not end the subscription (nor the daemon)
                    result = await intake.admit(message, PeerId.parse(sender), source=sender)
                except Exception as exc:
                    log.error("gossip announce failed", sender=sender, exc_info=exc)
                    continue
                log.info(
                    "gossip announce", sender=sender, status=result.status, note=result.message
                )

    async def _connectivity(self, host: Any) -> None:
        """Bootstrap and peering (``[p2p]``), for as long as the gossip subscription runs."""
        from sync.announce.peeraddrs import parse_peer_addrs
        from sync.announce.peering import bootstrap, keep_peering

        p2p = self.config.p2p.checked()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                bootstrap, host, parse_peer_addrs(p2p.bootstrap_peers), p2p.bootstrap_min_peers
            )
            nursery.start_soon(keep_peering, host, parse_peer_addrs(p2p.peering_peers))

    def _register(
        self, ingester: Ingester, cluster: ClusterParts | None, policy: LivePolicy
    ) -> RegisterIntake:
        """``POST /register``: the provider's addresses into its registry record."""

        async def save(record: PeerRecord) -> None:
            addrs = list(record.addrs)
            if cluster is not None:  # unfenced: an ad's own record write may follow it
                prior = await cluster.backend.provider(record.peer.raw)
                new = msgspec.structs.replace(prior or ProviderRecord(), addresses=addrs)
                await cluster.backend.put_provider(record.peer.raw, new)
                return
            prior = ingester.index.provider(record.peer.raw)
            new = msgspec.structs.replace(prior or ProviderRecord(), addresses=addrs)
            ingester.index.kv.write_batch(IndexStore.put_provider(record.peer.raw, new))

        return RegisterIntake(save, allow=policy.provider_allowed)

    def _ingest_handler(
        self,
        intake: AnnounceIntake,
        ingester: Ingester,
        staging: StagingArea,
        register: RegisterIntake | None = None,
    ) -> Handler:
        async def handle(request: Request) -> Response:
            if request.path in ANNOUNCE_PATHS:
                return await intake.handle(request)
            if request.path == "/register" and register is not None:
                return await register.handle(request)
            path = request.path
            status = path.rstrip("/") == "/sync/status" or path.startswith("/sync/status/")
            if not status and path != "/health":
                return Response.text(404, "not found")
            if request.method not in ("GET", "HEAD"):
                allow = (("allow", "GET, HEAD"), *(_CORS if status else ()))
                if status and request.method == "OPTIONS":  # storetheindex: 200 with Allow
                    return Response(200, b"", headers=allow)
                return Response.text(405, "method not allowed", headers=allow)
            if not status:
                return Response.text(200, f"ready {__version__}")
            return sync_status(ingester, staging, request)

        return handle

    def _find_handler(
        self,
        kv: KV,
        cluster: ClusterParts | None = None,
        allowed: Callable[[PeerId], bool] | None = None,
    ) -> Handler:
        """The find API, with delegated routing v1 mounted by prefix beside it: over the local
        index, or a cluster node's over the cluster (registry records cached ``record_ttl``);
        providers ``allowed`` refuses left out at query time (``AllowedReader``)."""
        from indexer.find import BackendReader, IndexReader, as_reader, find_handler
        from indexer.routing import PREFIX, routing_handler

        reader: IndexReader = as_reader(IndexStore(kv))
        if cluster is not None:
            reader = BackendReader(cluster.backend, ttl=self.config.cluster.record_ttl)
        if allowed is not None:
            reader = AllowedReader(reader, allowed)
        find, routing = find_handler(reader, __version__), routing_handler(reader)

        async def handle(request: Request) -> Response:
            try:
                if request.path.startswith(PREFIX):
                    return await routing(request)
                return await find(request)
            except StoreUnavailable as exc:  # a cluster failing over, past the retries
                log.warning("find: the index is unavailable", error=str(exc))
                return Response.text(
                    503, "the index is unavailable; try again", headers=(("retry-after", "5"),)
                )

        return handle


def _http_limits(config: Config) -> tuple[Limits, Limits, Limits]:
    """The find, ingest and admin servers' limits, their caps fitted to the open files limit."""
    http = config.http
    base = Limits(
        head_timeout=http.head_timeout, body_timeout=http.body_timeout,
        min_rate=http.min_transfer_rate, send_timeout=http.send_timeout,
        idle_timeout=http.idle_timeout,
    )  # fmt: skip
    wanted = [http.max_find_connections, http.max_ingest_connections, http.max_admin_connections]
    # LevelDB keeps up to max_open_files tables open: descriptors the servers do not get.
    caps = fit_connection_caps(wanted, reserved=config.store.max_open_files + 100)
    log.info("http connection caps", find=caps[0], ingest=caps[1], admin=caps[2])
    find, ingest, admin = (dataclasses.replace(base, max_connections=cap) for cap in caps)
    return find, ingest, admin


STATUS_PAGE = 1000  # publishers of /sync/status per page unless ?limit= says fewer
_CORS = (("access-control-allow-origin", "*"),)


def _go_duration(seconds: float) -> str:
    """Go's ``time.Duration.Round(time.Second).String()``: ``0s``, ``5s``, ``1m5s``, ``1h0m5s``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _phase(start: float | None, end: float | None, error: object, now: float) -> dict[str, object]:
    """storetheindex's phase run fields (``StartTime``, ``EndTime``, ``Ongoing``, ``Elapsed``,
    ``Error``), each left out when empty as Go's ``omitempty`` does."""
    out: dict[str, object] = {}
    if start is not None:
        out["StartTime"] = rfc3339(start)
        if end is None:
            out["Ongoing"] = True
            out["Elapsed"] = _go_duration(now - start)
        else:
            out["EndTime"] = rfc3339(end)
            out["Elapsed"] = _go_duration(end - start)
    elif end is not None:  # known only from the durable record: when it last ended
        out["EndTime"] = rfc3339(end)
    if error:
        out["Error"] = error
    return out


def _placed(out: dict[str, object], name: str, run: dict[str, object]) -> None:
    """A running phase is the current one (``Scan``); a finished one the newest in its history
    (``ScanHistory``), as storetheindex archives a phase when it ends."""
    if run:
        if run.get("Ongoing"):
            out[name] = run
        else:
            out[f"{name}History"] = [run]


def _tracker(row: dict[str, Any], provider: str | None, now: float) -> dict[str, object]:
    """One publisher's row as storetheindex's ``syncStatusJSON`` (PascalCase, RFC 3339)."""
    out: dict[str, object] = {}
    if provider:
        out["Provider"] = provider
    live = row["sync"]
    if live is None:  # nothing since start: what the durable record holds
        scan = _phase(None, row["last_sync"], row["last_error"], now)
        if row["latest_scanned"]:
            scan["HeadAd"] = row["latest_scanned"]
        _placed(out, "Scan", scan)
        return out
    scan = _phase(live["started"], live["finished"], live["error"], now)
    scan.update({k: v for k, v in (("AdsScanned", live["walked"]),) if v})
    if live["finished"] is not None and row["latest_scanned"]:
        scan["HeadAd"] = row["latest_scanned"]
    _placed(out, "Scan", scan)
    total, done, left = live["staged"], live["processed"], row["pending_ads"]
    if total or done or left:
        processing = _phase(live["started"], None if left else live["finished"], None, now)
        if left and not processing.get("Ongoing"):
            processing.pop("EndTime", None)
            processing["Ongoing"] = True
        for key, value in (("AdsProcessed", done), ("AdsTotal", total), ("AdsLeft", left)):
            if value:
                processing[key] = value
        if row["latest_processed"]:
            processing["CurrentAd"] = row["latest_processed"]
        if live["ad_errors"]:
            processing["ErrorCount"] = live["ad_errors"]
        _placed(out, "Processing", processing)
    if live["indexed"]:
        download = _phase(live["started"], None if left else live["finished"], None, now)
        download["MultihashCount"] = live["indexed"]
        _placed(out, "Download", download)
    return out


def _providers_of(staging: StagingArea) -> dict[bytes, bytes]:
    """The provider each publisher's staged ads are for (the first, by provider ID)."""
    found: dict[bytes, bytes] = {}
    for provider in staging.providers():
        for _, stack in staging.stacks(provider):
            found.setdefault(stack.publisher, provider)
    return found


@dataclass
class _Providers:
    """Each publisher's provider: from its staged ads, else the registry (read once, lazily)."""

    ingester: Ingester
    staged: dict[bytes, bytes]
    registry: dict[bytes, bytes] | None = None

    def of(self, publisher: bytes) -> str | None:
        raw = self.staged.get(publisher)
        if raw is None:
            if self.registry is None:
                self.registry = {}
                for peer, record in self.ingester.index.providers():
                    if record.publisher is not None:
                        self.registry.setdefault(record.publisher, peer)
            raw = self.registry.get(publisher)
        return None if raw is None else str(PeerId(raw))


def _status_json(body: object, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    data = msgspec.json.encode(body)
    return Response(200, data, "application/json; charset=utf-8", headers=(*_CORS, *headers))


def _ad_status(staging: StagingArea, text: str) -> Response:
    """``/sync/status/ad/{cid}``: ``{"Ad": cid, "Indexed": bool}`` (processed, ok or not)."""
    try:
        ad = Link.parse(text)
    except BadCid:
        return Response.text(400, "Cannot decode advertisement cid", headers=_CORS)
    return _status_json({"Ad": str(ad), "Indexed": staging.done(ad.raw) is not None})


def sync_status(ingester: Ingester, staging: StagingArea, request: Request) -> Response:
    """storetheindex's ``/sync/status``: an object keyed by publisher peer ID, 204 when none.

    Every known publisher (durable record or live sync) is a tracker of storetheindex's shape
    (``Provider``, ``Scan``/``ScanHistory``, ``Processing``/``ProcessingHistory``,
    ``Download``/``DownloadHistory``), built from ``publisher_rows`` (the admin API's
    ``/publishers`` keeps those richer rows).  Unlike storetheindex the object is bounded:
    ``?limit=N`` (at most ``STATUS_PAGE``) publishers ordered by peer ID, from the first after
    ``?after=<peer ID>``; a ``Link: <...>; rel="next"`` header names the next page.
    ``/sync/status/{peer}`` is one tracker (204 when unknown); ``/sync/status/ad/{cid}`` is
    ``{"Ad", "Indexed"}``.  Every answer carries ``Access-Control-Allow-Origin: *``.
    """
    media = negotiate(request, ("application/json", "*/*"))
    if isinstance(media, Response):
        return dataclasses.replace(media, headers=(*media.headers, *_CORS))
    wanted = request.path.removeprefix("/sync/status").strip("/")
    if wanted.startswith("ad/") or wanted == "ad":
        return _ad_status(staging, wanted.removeprefix("ad").strip("/"))
    try:
        only = PeerId.parse(wanted) if wanted else None
    except BadPeerId:
        return Response.text(400, "Cannot decode peer id", headers=_CORS)
    try:
        after = PeerId.parse(request.query["after"][0]) if "after" in request.query else None
        limit = int(request.query.get("limit", [str(STATUS_PAGE)])[0])
        if not 0 < limit <= STATUS_PAGE:
            raise ValueError(f"limit must be 1 to {STATUS_PAGE}")
        rows = publisher_rows(
            staging, ingester.syncing, ingester.progress, only,
            after=after.raw if after and not only else None,
            limit=None if only else limit + 1,  # one more: is there a next page?
        )  # fmt: skip
    except (BadPeerId, ValueError) as exc:
        return Response.text(400, f"bad request: {exc}", headers=_CORS)
    except UnknownPeer:
        rows = []
    if not rows:
        return Response(204, b"", headers=_CORS)
    now, providers = time.time(), _Providers(ingester, _providers_of(staging))

    def tracker(row: dict[str, Any]) -> dict[str, object]:
        return _tracker(row, providers.of(PeerId.parse(str(row["publisher"])).raw), now)

    if only:
        return _status_json(tracker(rows[0]))
    page = rows[:limit]
    headers: tuple[tuple[str, str], ...] = ()
    if len(rows) > limit:
        nxt = f"/sync/status?limit={limit}&after={page[-1]['publisher']}"
        headers = (("link", f'<{nxt}>; rel="next"'),)
    return _status_json({str(row["publisher"]): tracker(row) for row in page}, headers)
