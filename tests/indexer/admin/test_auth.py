"""The admin token on a real admin server (LevelDB, ingester, HTTP on 127.0.0.1), and the admin
sync refusing private addresses when ``refuse_private_addrs`` is on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio
from structlog.testing import capture_logs

from indexer.admin import AdminApi, Metrics
from indexer.ingest.engine import IngestConfig, Ingester
from indexer.policy import LivePolicy
from staging import StagingArea
from store import KV
from sync import PrivateKey
from sync.ipnisync.fetch import fetcher_factory
from sync.net.httpserver import Request, Response, serve_tcp

TOKEN = "admin-test-token-0123456789abcdef"
# Every route, a sub-path of a leaf and a path that is no route: all behind the token.
PATHS = ["/status", "/staging", "/publishers", "/metrics", "/ingest/sync/", "/nope", "/status/x"]
CHALLENGE = 'Bearer realm="ipni-indexer admin"'


@dataclass
class Rig:
    api: AdminApi
    client: httpx.AsyncClient
    now: list[float]


@asynccontextmanager
async def admin_rig(
    tmp_path: Path, *, token: str = TOKEN, refuse_private: bool = False
) -> AsyncIterator[Rig]:
    kv = KV(tmp_path / "indexer")
    ingester = Ingester(kv, fetcher_factory(timeout=5), config=IngestConfig())
    staging = StagingArea(kv)
    metrics = Metrics(staging, lambda: ingester.syncing)
    now = [0.0]
    peer = PrivateKey.generate().peer_id()
    api = AdminApi(
        ingester, staging, LivePolicy(), metrics, peer, tmp_path, token=token,
        refuse_private=refuse_private, clock=lambda: now[0],
    )  # fmt: skip
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ingester.run)
            listeners = await nursery.start(serve_tcp, api.handler(), "127.0.0.1", 0)
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                yield Rig(api, client, now)
            nursery.cancel_scope.cancel()
    finally:
        kv.close()


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"authorization": f"{scheme} {token}"}


async def test_no_token_or_a_wrong_one_is_401_on_every_path(tmp_path: Path) -> None:
    async with admin_rig(tmp_path) as rig:
        for path in PATHS:
            r = await rig.client.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == CHALLENGE
            assert r.text == "admin token required: send Authorization: Bearer <token> " + (
                "(INDEXER_ADMIN_TOKEN)\n"
            )
            for headers in (
                bearer(TOKEN[:-1]),
                bearer(TOKEN + "x"),
                {"authorization": "Bearer"},
                bearer(TOKEN, "Basic"),
                bearer(TOKEN, "Token"),
                {"authorization": TOKEN},
                {"authorization": f"Bearer {TOKEN}, Bearer {TOKEN}"},  # a repeated header
            ):
                r = await rig.client.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"] == f'{CHALLENGE}, error="invalid_token"'
                assert r.text.startswith("wrong admin token")
        # A wrong method or a sync request gets 401 before anything is parsed or started.
        r = await rig.client.post("/ingest/sync/not-a-peer", content=b"\xff")
        assert r.status_code == 401 and rig.api.ingester.syncing == []
        r = await rig.client.put(f"/ingest/block/{PrivateKey.generate().peer_id()}")
        assert r.status_code == 401


async def test_the_right_token_opens_every_path_and_healthcheck_needs_none(
    tmp_path: Path,
) -> None:
    async with admin_rig(tmp_path) as rig:
        expected = {"/status": 200, "/staging": 200, "/publishers": 200, "/metrics": 200}
        expected |= {"/ingest/sync/": 200, "/nope": 404, "/status/x": 404}
        for scheme in ("Bearer", "bearer", "BEARER"):
            for path, status in expected.items():
                r = await rig.client.get(path, headers=bearer(TOKEN, scheme))
                assert r.status_code == status, (path, scheme, r.text)
        r = await rig.client.get("/metrics", headers=bearer(TOKEN))
        assert "ipni_publishers_syncing" in r.text
        peer = PrivateKey.generate().peer_id()
        r = await rig.client.put(f"/ingest/block/{peer}", headers=bearer(TOKEN))
        assert r.status_code == 200 and not rig.api.policy.publisher_allowed(peer)
        for headers in ({}, bearer("wrong-wrong-wrong-wrong")):
            for path in ("/healthcheck", "/healthcheck/"):
                r = await rig.client.get(path, headers=headers)
                assert r.status_code == 200 and r.json() == "OK"
        r = await rig.client.post("/healthcheck")
        assert r.status_code == 405  # open, but still only GET


async def test_without_a_token_every_path_is_open(tmp_path: Path) -> None:
    async with admin_rig(tmp_path, token="") as rig:
        assert (await rig.client.get("/status")).status_code == 200
        assert (await rig.client.get("/staging", headers=bearer("anything"))).status_code == 200


async def test_refusals_are_logged_at_most_once_per_ten_seconds(tmp_path: Path) -> None:
    async with admin_rig(tmp_path) as rig:
        with capture_logs() as logs:
            for _ in range(3):
                assert (await rig.client.get("/status")).status_code == 401
            rig.now[0] += 10.0
            assert (await rig.client.get("/metrics")).status_code == 401
        refused = [e for e in logs if e["event"].startswith("admin request refused")]
        assert [(e["path"], e["refused_since_last_log"]) for e in refused] == [
            ("/status", 1),
            ("/metrics", 3),
        ]
        assert all(e["log_level"] == "warning" for e in refused)


async def test_admin_sync_refuses_private_addresses_when_asked(tmp_path: Path) -> None:
    seen: list[str] = []

    async def publisher(request: Request) -> Response:
        seen.append(request.path)
        return Response.text(404, "not found")

    peer = PrivateKey.generate().peer_id()
    auth = bearer(TOKEN)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_tcp, publisher, "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}/http"
        async with admin_rig(tmp_path / "on", refuse_private=True) as rig:
            for body in (addr, f"{addr}/p2p/{peer}", "/dns4/localhost/tcp/1/http"):
                r = await rig.client.post(f"/ingest/sync/{peer}", json=body, headers=auth)
                assert r.status_code == 403, r.text
                assert "refused by refuse_private_addrs" in r.text and "loopback" in r.text
                assert r.text.count("\n") == 1
            assert rig.api.ingester.syncing == []
        assert seen == []
        async with admin_rig(tmp_path / "off") as rig:  # the default: the sync is started
            r = await rig.client.post(f"/ingest/sync/{peer}", json=addr, headers=auth)
            assert r.status_code == 202, r.text
            with trio.fail_after(10):
                await rig.api.ingester.wait_idle()
        assert seen == ["/ipni/v1/ad/head", "/head"]  # the 404 retried at the root (legacy)
        nursery.cancel_scope.cancel()
