"""``indexer daemon``: every service of an indexer node in ONE trio nursery.

Services start in order with ``await nursery.start(...)``, each listening before the next
starts: the ingester (which first resumes staged work and replays recorded announces), the
ingest server (``PUT /announce``, ``GET /sync/status``), the find server, background index
compaction (``indexer.ingest.maintenance``), the admin server (``indexer.admin``: storetheindex's
admin paths, staging views, ``/metrics``) and, unless disabled, a py-libp2p host subscribed to the
announce topic on gossipsub.  Cancelling the nursery stops them in reverse order; LevelDB is
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
``/health`` and ``/sync/status`` answer 405 to anything but GET and HEAD.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import trio

from indexer import __version__
from indexer.admin import AdminApi, Metrics, UnknownPeer, publisher_rows
from indexer.config import Config, etcd_endpoints, store_nodes
from indexer.ingest.engine import Ingester
from indexer.ingest.intake import ANNOUNCE_PATHS, AnnounceIntake
from indexer.ingest.maintenance import run_compaction
from indexer.policy import LivePolicy
from indexer.security import warn_exposed
from staging import StagingArea
from store import KV, IndexStore, StoreUnavailable
from sync import BadPeerId, PeerId, PrivateKey
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

__all__ = ["DB_DIR", "ClusterParts", "Daemon", "DaemonInfo"]

DB_DIR = "db"
STATUS = "/sync/status/"
log = structlog.get_logger("daemon")


class DaemonInfo(msgspec.Struct, frozen=True):
    peer_id: str
    find_url: str
    ingest_url: str
    admin_url: str
    p2p_addrs: list[str]


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


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

    async def run(
        self, *, task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = self.config
        warn_exposed(config, self.admin_token)  # before anything is opened or bound
        policy = LivePolicy(config.policy)
        find_limits, ingest_limits, admin_limits = _http_limits(config)  # raises RLIMIT_NOFILE
        with KV(self.data_dir / DB_DIR) as kv:
            async with (
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
                )
                await nursery.start(ingester.run)
                ingest = await _listen(
                    nursery, "ingest", self._ingest_handler(intake, ingester, staging),
                    config.server.ingest_addr, ingest_limits,
                )  # fmt: skip
                find = await _listen(
                    nursery, "find", self._find_handler(kv, cluster), config.server.find_addr,
                    find_limits,
                )  # fmt: skip
                await nursery.start(
                    functools.partial(
                        run_compaction, ingester.index, idle=config.ingest.compact_idle
                    )
                )
                admin_api = AdminApi(
                    ingester, staging, policy, metrics, self.key.peer_id(), self.data_dir,
                    token=self.admin_token, refuse_private=config.ingest.refuse_private_addrs,
                    cluster_view=(lambda: cluster.node.view) if cluster else None,
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
        from sync.announce.gossip import open_gossip, receive_announces

        async with (
            open_gossip(host) as pubsub,
            receive_announces(pubsub, self.config.server.topic) as it,
        ):
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

    def _ingest_handler(
        self, intake: AnnounceIntake, ingester: Ingester, staging: StagingArea
    ) -> Handler:
        async def handle(request: Request) -> Response:
            if request.path in ANNOUNCE_PATHS:
                return await intake.handle(request)
            path = request.path
            status = path.rstrip("/") == "/sync/status" or path.startswith("/sync/status/")
            if not status and path != "/health":
                return Response.text(404, "not found")
            if request.method not in ("GET", "HEAD"):
                return Response.text(405, "method not allowed", headers=(("allow", "GET, HEAD"),))
            if not status:
                return Response.text(200, f"ready {__version__}")
            return sync_status(ingester, staging, request)

        return handle

    def _find_handler(self, kv: KV, cluster: ClusterParts | None = None) -> Handler:
        """The find API, with delegated routing v1 mounted by prefix beside it: over the local
        index, or a cluster node's over the cluster (registry records cached ``record_ttl``)."""
        from indexer.find import BackendReader, IndexReader, as_reader, find_handler
        from indexer.routing import PREFIX, routing_handler

        reader: IndexReader = as_reader(IndexStore(kv))
        if cluster is not None:
            reader = BackendReader(cluster.backend, ttl=self.config.cluster.record_ttl)
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
    caps = fit_connection_caps(wanted)
    log.info("http connection caps", find=caps[0], ingest=caps[1], admin=caps[2])
    find, ingest, admin = (dataclasses.replace(base, max_connections=cap) for cap in caps)
    return find, ingest, admin


STATUS_PAGE = 1000  # rows of /sync/status per page unless ?limit= says fewer


def sync_status(ingester: Ingester, staging: StagingArea, request: Request) -> Response:
    """Both cursors, last sync, last error and staged work of one or every known publisher.

    The list is paged: ``?limit=N`` (at most ``STATUS_PAGE``) rows ordered by peer ID, from the
    first after ``?after=<peer ID>``; a ``Link: <...>; rel="next"`` header names the next page.
    """
    wanted = request.path.removeprefix("/sync/status").strip("/")
    try:
        only = PeerId.parse(wanted) if wanted else None
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
        return Response.text(400, f"bad request: {exc}")
    except UnknownPeer as exc:
        return Response.text(404, str(exc))
    if only:
        return Response(200, msgspec.json.encode(rows[0]), "application/json")
    page = rows[:limit]
    headers: tuple[tuple[str, str], ...] = ()
    if len(rows) > limit:
        nxt = f"/sync/status?limit={limit}&after={page[-1]['publisher']}"
        headers = (("link", f'<{nxt}>; rel="next"'),)
    return Response(200, msgspec.json.encode(page), "application/json", headers=headers)
