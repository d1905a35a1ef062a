"""Stop a real ``indexer daemon`` mid-ingest (SIGTERM, or SIGKILL) and start it again.

The publisher is served from this process and answers every entries block slowly, so the daemon
is surely mid-way through the chain when it is stopped.  The restarted daemon gets no new
announce: it must resume from what it staged and finish, with every multihash findable.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from indexer.publisher.chain import Publisher
from indexer.publisher.store import PublisherConfig
from staging import StagingArea
from store import KV
from sync import Link, Message
from sync.ipnisync.routes import ipnisync_handler
from sync.model.metadata import bitswap
from sync.net.httpserver import Handler, Request, Response, serve_tcp
from tests.builders import multihash
from tests.e2e.test_daemon import Daemon

ADS, PER_AD = 30, 6  # chunk size 3: two entries blocks per ad
DELAY = 0.05


def _slow(inner: Handler, ads: set[str]) -> Handler:
    async def handle(request: Request) -> Response:
        if request.path.rsplit("/", 1)[-1] not in ads | {"head"}:
            await trio.sleep(DELAY)
        return await inner(request)

    return handle


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def _publisher_row(daemon: Daemon, peer: str) -> dict[str, Any]:
    r = await _get(f"{daemon.info['admin_url']}/publishers/{peer}")
    return r.json() if r.status_code == 200 else {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_restart_mid_ingest_resumes_and_finishes(tmp_path: Path, sig: signal.Signals) -> None:
    pub = Publisher.init(tmp_path / "pub", ["/ip4/10.0.0.9/tcp/4001"])
    pub.store.set_config(PublisherConfig(chunk_size=3))
    for i in range(ADS):
        pub.add(b"c%d" % i, [multihash(1000 * i + j) for j in range(PER_AD)], bitswap())
    head = pub.chain()[0].cid
    peer = str(pub.peer_id)
    data = tmp_path / "idx"
    async with trio.open_nursery() as nursery:
        ads = {record.cid for record in pub.chain()}
        served = await nursery.start(serve_tcp, _slow(ipnisync_handler(pub), ads), "127.0.0.1", 0)
        addr = f"/ip4/127.0.0.1/tcp/{served[0].socket.getsockname()[1]}/http"

        daemon = Daemon(data, "--no-p2p")
        try:
            message = Message.create(Link.parse(head), [addr], pub.peer_id)
            async with httpx.AsyncClient(timeout=10) as client:
                r = await client.put(
                    f"{daemon.info['ingest_url']}/announce", content=message.to_cbor()
                )
            assert r.status_code == 204, r.text
            with trio.fail_after(30):  # wait until the chain is staged and partly applied
                while True:
                    row = await _publisher_row(daemon, peer)
                    if row.get("latest_processed") and row.get("pending_ads", 0) > 5:
                        break
                    await trio.sleep(0.05)
        finally:
            if sig == signal.SIGTERM:
                assert daemon.stop() == 0
            else:
                daemon.proc.kill()
                daemon.proc.wait(timeout=10)

        with KV(data / "db") as kv:  # the work left is on disk, not in the dead process
            staging = StagingArea(kv)
            left = sum(s.count for p in staging.providers() for _, s in staging.stacks(p))
            assert 0 < left < ADS
            assert staging.publisher(pub.peer_id.raw).latest_scanned == Link.parse(head).raw

        daemon = Daemon(data, "--no-p2p")  # no announce this time
        try:
            with trio.fail_after(60):
                while True:
                    row = await _publisher_row(daemon, peer)
                    if row.get("latest_processed") == head and row.get("pending_ads") == 0:
                        break
                    await trio.sleep(0.1)
            find = daemon.info["find_url"]
            for i in range(ADS):
                for j in (0, PER_AD - 1):
                    found = await _get(f"{find}/multihash/{multihash(1000 * i + j).hex()}")
                    assert found.status_code == 200, (i, j)
                    [result] = found.json()["MultihashResults"]
                    [provider] = result["ProviderResults"]
                    assert provider["Provider"]["ID"] == peer
        finally:
            assert daemon.stop() == 0
        nursery.cancel_scope.cancel()
    pub.close()
