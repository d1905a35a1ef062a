"""The admin API over real HTTP: a real publisher, a real LevelDB, the ingester, the metrics.

The publisher is served through a gate that holds back entry-chunk blocks (or everything), so a
test can look at the node while a sync or a worker is mid-way, then let it finish.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

from indexer.admin import AdminApi, Metrics
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.policy import LivePolicy
from indexer.publisher.chain import Publisher
from indexer.publisher.store import PublisherConfig
from staging import StagingArea
from store import KV
from sync import PeerId, PrivateKey
from sync.ipnisync.fetch import fetcher_factory
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import multihash


class Node:
    """A publisher behind a gate, an ingester, and its admin API, in one nursery."""

    def __init__(self, tmp_path: Path) -> None:
        self.pub = Publisher.init(tmp_path / "pub", ["/ip4/10.0.0.1/tcp/4001"])
        self.pub.store.set_config(PublisherConfig(chunk_size=5))
        self.kv = KV(tmp_path / "indexer")
        self.ingester = Ingester(self.kv, fetcher_factory(timeout=10), config=IngestConfig())
        self.policy = LivePolicy()
        self.ingester.policy = self.policy
        self.staging = StagingArea(self.kv)  # what the views read, as the daemon passes it
        self.metrics = Metrics(self.staging, lambda: self.ingester.syncing)
        self.ingester.observer = self.metrics
        self.gate = trio.Event()
        self.hold_all = False
        self.addr = self.url = ""

    def _gated(self, inner: Handler) -> Handler:
        ads = {record.cid for record in self.pub.chain()}

        async def handle(request: Request) -> Response:
            cid = request.path.rsplit("/", 1)[-1]
            entries = request.path.startswith("/ipni/v1/ad/") and cid not in ads | {"head"}
            if self.hold_all or entries:
                await self.gate.wait()
            return await inner(request)

        return handle

    async def start(self, nursery: trio.Nursery) -> None:
        served = await nursery.start(
            serve_tcp, self._gated(ipnisync_handler(self.pub)), "127.0.0.1", 0
        )
        self.addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"
        await nursery.start(self.ingester.run)
        api = AdminApi(self.ingester, self.staging, self.policy, self.metrics,
                       PrivateKey.generate().peer_id(), Path("."))  # fmt: skip
        admin = await nursery.start(serve_tcp, api.handler(), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{admin[0].socket.getsockname()[1]}"

    @property
    def peer(self) -> str:
        return str(self.pub.peer_id)


NodeT = TypeVar("NodeT", bound=Node)


@contextlib.asynccontextmanager
async def running(n: NodeT) -> AsyncIterator[tuple[NodeT, httpx.AsyncClient]]:
    """``n`` with 3 ads of 7 multihashes (2 chunks each) to serve, started; a client of its
    admin API."""
    for i in range(3):
        n.pub.add(b"ctx%d" % i, [multihash(10 * i + j) for j in range(7)], bitswap())
    async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
        await n.start(nursery)
        client.base_url = httpx.URL(n.url)
        yield n, client
        n.gate.set()
        nursery.cancel_scope.cancel()
    n.pub.close()
    n.kv.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    async with running(Node(tmp_path)) as started:
        yield started


async def _until(predicate: Callable[[Any], object], client: httpx.AsyncClient, path: str) -> Any:
    """The first JSON body at ``path`` that satisfies ``predicate``."""
    with trio.fail_after(20):
        while True:
            body = (await client.get(path)).json()
            if predicate(body):
                return body
            await trio.sleep(0.02)


async def test_sync_shows_staged_work_then_indexes_it(node: tuple[Node, httpx.AsyncClient]) -> None:
    n, client = node
    r = await client.post(f"/ingest/sync/{n.peer}", json=f"{n.addr}/p2p/{n.peer}")
    assert r.status_code == 202, r.text
    # The walk commits (ads are not gated); the worker then waits on the first entry chunk.  The
    # worker starts once the sync has closed its fetcher: a request may land between the two.
    rows = await _until(
        lambda rows: rows and rows[0]["pending_ads"] == 3 and rows[0]["working"], client, "/staging"
    )
    [row] = rows
    assert row["provider"] == n.peer and row["stacks"] == 1 and row["working"] is True
    assert row["publishers"] == [n.peer]
    oldest = n.pub.chain()[-1].cid
    assert row["next_ad"] == oldest
    detail = (await client.get(f"/staging/{n.peer}")).json()
    [stack] = detail["stacks"]
    assert stack["pending"] == 3 and stack["total"] == 3 and stack["publisher"] == n.peer
    assert stack["next_ads"] == [rec.cid for rec in reversed(n.pub.chain())]
    metrics = (await client.get("/metrics")).text
    assert f'ipni_staging_ads{{provider="{n.peer}"}} 3.0' in metrics
    assert "ipni_ads_walked_total 3.0" in metrics

    n.gate.set()
    head = n.pub.chain()[0].cid
    row = await _until(lambda r: r["pending_ads"] == 0, client, f"/publishers/{n.peer}")
    assert row["latest_scanned"] == head and row["latest_processed"] == head
    sync = row["sync"]
    assert isinstance(sync, dict)
    assert (sync["walked"], sync["staged"], sync["processed"], sync["indexed"]) == (3, 3, 3, 21)
    assert sync["running"] is False and sync["error"] is None
    assert (await client.get("/staging")).json() == []
    metrics = (await client.get("/metrics")).text
    assert 'ipni_ads_processed_total{result="ok"} 3.0' in metrics
    assert "ipni_multihashes_indexed_total 21.0" in metrics
    assert 'ipni_syncs_total{result="ok"} 1.0' in metrics
    assert re.search(r"^ipni_sync_duration_seconds_count 1\.0$", metrics, re.M)


async def test_a_second_sync_while_one_runs_is_409(node: tuple[Node, httpx.AsyncClient]) -> None:
    n, client = node
    n.hold_all = True
    assert (await client.post(f"/ingest/sync/{n.peer}", json=n.addr)).status_code == 202
    assert (await client.get("/ingest/sync/")).json() == [n.peer]
    again = await client.post(f"/ingest/sync/{n.peer}", json=n.addr)
    assert again.status_code == 409 and n.peer in again.text
    n.gate.set()
    await _until(lambda peers: peers == [], client, "/ingest/sync/")
    # The daemon now knows the publisher's address: a sync without one is accepted.
    assert (await client.post(f"/ingest/sync/{n.peer}?depth=1&resync=true")).status_code == 202


async def test_block_and_allow(node: tuple[Node, httpx.AsyncClient]) -> None:
    n, client = node
    assert (await client.put(f"/ingest/block/{n.peer}")).status_code == 200
    refused = await client.post(f"/ingest/sync/{n.peer}", json=n.addr)
    assert refused.status_code == 403
    assert (await client.put(f"/ingest/allow/{n.peer}")).status_code == 200
    assert (await client.post(f"/ingest/sync/{n.peer}", json=n.addr)).status_code == 202


async def test_status_and_healthcheck(node: tuple[Node, httpx.AsyncClient]) -> None:
    _, client = node
    status = (await client.get("/status")).json()
    assert set(status) == {"Frozen", "ID", "Usage"} and status["Frozen"] is False
    PeerId.parse(status["ID"])
    assert 0 <= status["Usage"] <= 100
    health = await client.get("/healthcheck")
    assert health.status_code == 200 and health.json() == "OK"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/ingest/sync/not-a-peer", None, 400, "Cannot decode peer id"),
        ("POST", "/ingest/sync/{peer}?depth=-2", "{addr}", 400, "depth"),
        ("POST", "/ingest/sync/{peer}?resync=maybe", "{addr}", 400, "resync"),
        ("POST", "/ingest/sync/{peer}", "not json", 400, "JSON string"),
        ("POST", "/ingest/sync/{peer}", '"/ip4/1.2.3.4/tcp/1/http/foo"', 400, "multiaddr"),
        ("POST", "/ingest/sync/{peer}", None, 400, "no address known"),
        ("POST", "/ingest/sync/", None, 400, "missing peer id"),
        ("DELETE", "/ingest/sync/{peer}", None, 405, "method not allowed"),
        ("GET", "/ingest/allow/{peer}", None, 405, "method not allowed"),
        ("PUT", "/ingest/block/xyz", None, 400, "Cannot decode peer id"),
        ("GET", "/staging/{other}", None, 404, "unknown provider"),
        ("GET", "/staging/nope", None, 400, "Cannot decode peer id"),
        ("GET", "/publishers/{other}", None, 404, "unknown publisher"),
        ("GET", "/nowhere", None, 404, "not found"),
        ("GET", "/status/extra", None, 404, "not found"),
    ],
)
async def test_bad_requests_get_one_line_4xx(
    node: tuple[Node, httpx.AsyncClient],
    method: str,
    path: str,
    body: str | None,
    status: int,
    says: str,
) -> None:
    n, client = node
    other = str(PrivateKey.generate().peer_id())
    fill = {"peer": n.peer, "other": other, "addr": n.addr}
    content = None if body is None else body.replace("{addr}", f'"{n.addr}"').encode()
    r = await client.request(method, path.format(**fill), content=content)
    assert r.status_code == status and says in r.text, r.text
    assert r.text.count("\n") == 1
    if status == 405:
        assert r.headers["allow"]
