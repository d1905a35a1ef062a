"""``indexer publisher serve``: one trio nursery serving a publisher's chain and announcing it.

Services, each started with ``await nursery.start(...)`` so it is listening before the next
starts and before ``task_status.started`` reports the node ready:

1. ipnisync over HTTP on ``listen`` (``GET /ipni/v1/ad/head``, ``GET /ipni/v1/ad/<cid>``);
2. an owner-only unix socket ``<data-dir>/publisher.sock`` where ``indexer publisher add/remove``
   send their requests while this process holds the database;
3. optionally a py-libp2p host serving the same over ``/http/1.1`` and announcing on gossipsub.

Rules: publishes are serialized by one lock and run in a worker thread (LevelDB calls block);
after each publish, and once at start when a head exists, the head is announced to every
configured URL (failures are logged, never fatal) and on gossipsub when libp2p is on.  The TCP
server's deadlines and connection cap are ``NodeConfig.http``; the cap is fitted to the open files
limit, which start raises to the hard limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import structlog
import trio

from indexer.publisher.chain import Publisher
from indexer.publisher.ops import PublishRequest, apply, error_to_json
from sync import Message, SyncError
from sync.announce.sender import send_http_announce
from sync.ipnisync.protocol import IPNI_PATH
from sync.ipnisync.routes import ipnisync_handler
from sync.net.httpserver import (
    Limits,
    Request,
    Response,
    fit_connection_caps,
    serve_tcp,
    serve_unix,
)

__all__ = ["PUBLIC_LIMITS", "SOCKET_NAME", "NodeConfig", "NodeInfo", "PublisherNode", "socket_path"]

SOCKET_NAME = "publisher.sock"
PUBLIC_LIMITS = Limits(max_connections=1024)
log = structlog.get_logger("publisher")


@dataclass(frozen=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 0
    announce_urls: tuple[str, ...] = ()
    announce_json: bool = False
    p2p_listen: tuple[str, ...] = ()
    http: Limits = PUBLIC_LIMITS  # the TCP server's deadlines and connection cap


class NodeInfo(msgspec.Struct, frozen=True):
    url: str
    peer_id: str
    http_multiaddr: str
    p2p_multiaddrs: list[str]
    socket: str
    head: str | None


@dataclass
class PublisherNode:
    publisher: Publisher
    config: NodeConfig
    _lock: trio.Lock = field(default_factory=trio.Lock)
    _announce_addrs: list[str] = field(default_factory=list)
    _gossip: Any = None
    _client: httpx.AsyncClient | None = None

    async def run(
        self, *, task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED
    ) -> None:
        handler = ipnisync_handler(self.publisher)
        sock_path = socket_path(self.publisher.data_dir)
        sock_path.unlink(missing_ok=True)  # we hold the database lock: any socket here is stale
        [cap] = fit_connection_caps([self.config.http.max_connections])
        limits = replace(self.config.http, max_connections=cap)
        log.info("http connection caps", ipnisync=cap)
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(serve_tcp, limits=limits, name="ipnisync"),
                handler, self.config.host, self.config.port,
            )  # fmt: skip
            port = listeners[0].socket.getsockname()[1]
            http_addr = f"/ip4/{self.config.host}/tcp/{port}/http"
            await nursery.start(serve_unix, self._admin, str(sock_path))
            async with self._libp2p(handler) as p2p_addrs:
                self._announce_addrs = [http_addr, *p2p_addrs]
                head = self.publisher.head()
                task_status.started(
                    NodeInfo(
                        url=f"http://{self.config.host}:{port}{IPNI_PATH}",
                        peer_id=str(self.publisher.peer_id),
                        http_multiaddr=f"{http_addr}/p2p/{self.publisher.peer_id}",
                        p2p_multiaddrs=p2p_addrs,
                        socket=str(sock_path),
                        head=str(head) if head else None,
                    )
                )
                self._client = client
                await self.announce()
                await trio.sleep_forever()

    @contextlib.asynccontextmanager
    async def _libp2p(self, handler: Any) -> AsyncIterator[list[str]]:
        if not self.config.p2p_listen:
            yield []
            return
        from sync.announce.gossip import open_gossip  # imported lazily: py-libp2p is slow to import
        from sync.net.p2p import host_addrs, open_host
        from sync.net.p2phttp import serve_http_over_libp2p

        async with open_host(self.publisher.key, list(self.config.p2p_listen)) as host:
            serve_http_over_libp2p(host, handler, {IPNI_PATH: IPNI_PATH + "/"})
            async with open_gossip(host) as pubsub:
                self._gossip = pubsub
                yield host_addrs(host)

    async def announce(self) -> None:
        head = self.publisher.head()
        if head is None:
            return
        message = Message.create(head, self._announce_addrs, self.publisher.peer_id)
        if self.config.announce_urls and self._client is not None:
            results = await send_http_announce(
                self._client, self.config.announce_urls, message, as_json=self.config.announce_json
            )
            for r in results:
                log.info("announced", url=r.url, head=str(head), ok=r.ok, error=r.error)
        if self._gossip is not None:
            from sync.announce.gossip import publish_announce

            await publish_announce(self._gossip, message)
            log.info("announced on gossipsub", head=str(head))

    async def _admin(self, request: Request) -> Response:
        if request.path == "/chain" and request.method == "GET":
            limit = int((request.query.get("limit") or ["0"])[0] or 0)
            records = self.publisher.chain(limit)
            doc = {"peer_id": str(self.publisher.peer_id), "ads": records}
            return Response(200, msgspec.json.encode(doc), "application/json")
        if request.path != "/publish":
            return Response.text(404, "not found")
        if request.method != "POST":
            return Response.text(405, "method not allowed")
        try:
            publish = msgspec.json.decode(request.body, type=PublishRequest)
        except msgspec.DecodeError as exc:
            return Response.text(400, f"bad publish request: {exc}")
        async with self._lock:
            try:
                result = await trio.to_thread.run_sync(apply, self.publisher, publish)
            except SyncError as exc:
                return Response(422, error_to_json(exc), "application/json")
        log.info("published", cid=result.cid, kind=result.kind, count=result.count)
        await self.announce()
        return Response(200, msgspec.json.encode(result), "application/json")


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME
